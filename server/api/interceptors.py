"""The server interceptor: request id, Basic authentication, rate limits, error mapping
and the RPC metrics (calls by method and code, latency, rate-limit refusals).

Every method of the sms.v1 services is wrapped; reflection and health are left
open. Domain errors become their mapped status (api/errors.py); a method not built
yet answers UNIMPLEMENTED; anything unexpected is logged once, with the request
id, and answered INTERNAL without internals.

Requests arrive as bytes and are decoded here, before authentication: a body that
is not the method's message answers INVALID_ARGUMENT (grpc's own decoding would
answer UNKNOWN with the parser's internals and log a traceback per call).

Server streams (WatchMessageStatus, WatchBatch) are capped per account and per
process (``StreamCaps``), and their credentials are re-checked every
``recheck_seconds`` by one task for all of them: a revoked credential's streams end
with UNAUTHENTICATED (CREDENTIAL_REVOKED).

On shutdown ``end_streams`` ends the open server streams with UNAVAILABLE: they may
last forever, so waiting for them would hold every shutdown for the whole grace, and
grpc's cancel at its end leaves the caller a status without the reason or RetryInfo.
The caller resumes at once on another replica (``after_event_id`` makes that
lossless).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import secrets
import time
import traceback
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from server.api.context import request_id_var, set_caller
from server.api.errors import internal_status, status_code_for, to_status
from server.domain.auth import Authenticator
from server.domain.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from server.domain.limits import RateLimits, StreamCaps
from server.domain.messaging import Caller
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

# The HTTP port's Connect/gRPC-Web bridge (server/http/rpc_bridge.py) sends its
# caller's address in this key, after the bridge's token: "<token> <address>".
BRIDGE_PEER_KEY = "x-smsgw-bridge-peer"

SHUTTING_DOWN = (
    "the server is shutting down; call again (another replica), streams resume from "
    "the last event_id received"
)


@dataclass(eq=False)
class _OpenStream:
    """A server stream being answered, for ``end_streams`` and the credential check."""

    task: asyncio.Task[Any]
    authorization: str | None
    in_servicer: bool = False  # awaiting the servicer's next item, not a write
    ending: DomainError | None = None  # why the server ends it (shutdown, revocation)
    cancelled: bool = False  # its task was cancelled for ``ending``


Decoder = Callable[[bytes], Any]


def _decoder(handler: grpc.RpcMethodHandler[Any, Any]) -> Decoder | None:
    """The method's request parser, run by the wrapper instead of grpc."""
    parse: Decoder | None = handler.request_deserializer
    return parse


def _decode(parse: Decoder | None, request: Any, method: str) -> Any:
    if parse is None or not isinstance(request, bytes):
        return request
    try:
        return parse(request)
    except (DecodeError, ValueError, TypeError) as exc:
        name = method.rsplit("/", 1)[-1]
        raise InvalidArgument(
            FieldViolation("request", f"the body is not a valid {name} request message")
        ) from exc


def peer_ip(peer: str | None) -> str | None:
    """'ipv4:127.0.0.1:5000' -> '127.0.0.1'; 'ipv6:[::1]:5000' -> '::1'.

    gRPC writes the peer as a URI: recent versions percent-encode the brackets
    ('ipv6:%5B::1%5D:5000') and a zone ('%25eth0')."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        host = urllib.parse.unquote(rest.rsplit(":", 1)[0])
        return host.strip("[]")
    return None


def _passing_bytes(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A stream's serializer that also takes items already serialized: an event sent
    to many streams is serialized once (MessageServicer.WatchMessageStatus)."""
    if serialize is None:
        return None
    encode = serialize

    def serializer(item: Any) -> bytes:
        return item if type(item) is bytes else encode(item)

    return serializer


def _metadata_value(metadata: Any, key: str) -> str | None:
    for item in metadata or ():
        if item[0] == key:
            value = item[1]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        limits: RateLimits | None = None,
        metrics: GatewayMetrics | None = None,
        streams: StreamCaps | None = None,
        decoders: Mapping[str, Decoder] | None = None,
        bridge_token: str | None = None,
    ) -> None:
        """``bridge_token``: calls carrying it in BRIDGE_PEER_KEY come from the HTTP
        port's bridge, and the address after it is the caller's."""
        self._authenticator = authenticator
        self._bridge_token = bridge_token
        # Methods decoded otherwise than by their generated parser (full method name).
        self._decoders = dict(decoders or {})
        self._limits = limits
        self._caps = streams
        self._metrics = metrics or GatewayMetrics()
        # One wrapped handler per method, built on first use (not on every call).
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # Request ids: a random per-process prefix and a counter (no syscall per call).
        self._id_prefix = secrets.token_hex(6)
        self._id_counter = itertools.count(1)
        self._streams: set[_OpenStream] = set()
        self._closing = False
        self._checker: asyncio.Task[None] | None = None
        self._metrics.count_streams(self._streams.__len__)

    def end_streams(self) -> None:
        """Ends every open server stream with UNAVAILABLE, and refuses new ones."""
        self._closing = True
        if self._checker is not None:
            self._checker.cancel()
        for stream in self._streams:
            self._end(stream, Unavailable(SHUTTING_DOWN, reason="SHUTTING_DOWN"))

    @staticmethod
    def _end(stream: _OpenStream, why: DomainError) -> None:
        """Ends one stream with ``why``. A stream waiting in its servicer (for the next
        event) is cancelled there; one writing to a slow client ends after that write.
        Cancelling a task inside grpc's write would end the call without a status the
        caller can act on."""
        if stream.ending is None:
            stream.ending = why
        if stream.in_servicer and not stream.cancelled:
            stream.cancelled = True
            stream.task.cancel()

    def _watch_credentials(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_credentials(), name="stream-auth")

    async def _check_credentials(self) -> None:
        """Re-checks the credentials of the open streams, each one once per round,
        every ``recheck_seconds`` (the time a revocation takes on calls too)."""
        while self._streams:
            await asyncio.sleep(self._authenticator.recheck_seconds)
            by_credential: dict[str | None, list[_OpenStream]] = {}
            for stream in self._streams:
                if stream.ending is None:
                    by_credential.setdefault(stream.authorization, []).append(stream)
            for authorization, streams in by_credential.items():
                try:
                    await self._authenticator.recheck(authorization)
                except Unauthenticated as exc:
                    for stream in streams:
                        self._end(stream, exc)
                except Exception as exc:  # the database is away: keep them open
                    log.warning("stream credential check failed (%s)", type(exc).__name__)
                    break

    def _new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):010x}"

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        wrapped = self._wrap(handler, method)
        if wrapped is not None:
            self._wrapped[method] = wrapped
            return wrapped
        return handler

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # Requests reach the wrappers as bytes (no request_deserializer): they decode.
        parse = self._decoders.get(method) or _decoder(handler)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method, parse),
                response_serializer=_passing_bytes(handler.response_serializer),
            )
        return None

    async def _begin(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> Caller:
        metadata = context.invocation_metadata()
        request_id = _metadata_value(metadata, "x-request-id") or self._new_request_id()
        request_id_var.set(request_id[:64])
        caller = await self._authenticator.authenticate(
            _metadata_value(metadata, "authorization"), self._caller_ip(context, metadata)
        )
        set_caller(caller)
        if self._limits is not None:
            self._limits.admit(caller, method)
        return caller

    def _caller_ip(self, context: grpc.aio.ServicerContext[Any, Any], metadata: Any) -> str | None:
        """The caller's address: the HTTP client's for a call the bridge passes on (its
        token vouches for it), else the connection's peer."""
        forwarded = _metadata_value(metadata, BRIDGE_PEER_KEY)
        if forwarded is not None and self._bridge_token is not None:
            token, _, address = forwarded.partition(" ")
            if hmac.compare_digest(token.encode(), self._bridge_token.encode()):
                return address or None
        return peer_ip(context.peer())

    def _wrap_unary(
        self, behavior: Callable[..., Any], method: str, parse: Decoder | None
    ) -> Callable[..., Any]:
        rpc = self._metrics.rpc(method)

        async def unary(raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            request: Any = None
            try:
                request = _decode(parse, raw, method)
                await self._begin(context, method)
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = self._code_of(exc, context)
                # grpc keeps an aborted call in a reference cycle until a GC: not its
                # request (a refused 100k-number batch would stay in memory), nor its
                # bytes.
                request = raw = None
                traceback.clear_frames(exc.__traceback__)
                await self._abort(exc, context, method)
            finally:
                rpc.done(code, time.perf_counter() - started)

        return unary

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, parse: Decoder | None
    ) -> Callable[..., Any]:
        rpc = self._metrics.rpc(method)

        async def stream(
            raw: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            task = asyncio.current_task()
            assert task is not None
            authorization = _metadata_value(context.invocation_metadata(), "authorization")
            this = _OpenStream(task, authorization)
            counted: int | None = None  # the account whose stream cap counts this one
            started = time.perf_counter()
            code = "OK"
            try:
                request = _decode(parse, raw, method)
                caller = await self._begin(context, method)
                if self._caps is not None:
                    self._caps.open(caller.account_id)
                    counted = caller.account_id
                if self._closing:
                    this.ending = Unavailable(SHUTTING_DOWN, reason="SHUTTING_DOWN")
                self._streams.add(this)
                if not self._closing:
                    self._watch_credentials()
                items: AsyncGenerator[Any, None] = behavior(request, context)
                async with contextlib.aclosing(items):
                    while this.ending is None:
                        this.in_servicer = True
                        try:
                            item = await anext(items)
                        except StopAsyncIteration:
                            return
                        finally:
                            this.in_servicer = False
                        yield item
                raise this.ending
            except GeneratorExit:
                code = "CANCELLED"  # closed by grpc: the caller went away
                raise
            except asyncio.CancelledError:
                if not this.cancelled or this.ending is None:
                    code = "CANCELLED"
                    raise  # the caller went away, or grpc cancels the call
                task.uncancel()
                code = self._code_of(this.ending, context)
                await self._abort(this.ending, context, method)
            except Exception as exc:
                code = self._code_of(exc, context)
                await self._abort(exc, context, method)
            finally:
                self._streams.discard(this)
                if counted is not None and self._caps is not None:
                    self._caps.close(counted)
                rpc.done(code, time.perf_counter() - started)

        return stream

    def _code_of(self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """The status code a failed call is answered with (as ``_abort`` maps it);
        counts rate-limit refusals by their reason on the way."""
        if isinstance(exc, DomainError):
            if isinstance(exc, ResourceExhausted):
                self._metrics.rate_limited.labels(exc.reason).inc()
            return status_code_for(exc).name
        if isinstance(exc, NotImplementedError):
            return "UNIMPLEMENTED"
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
        return "INTERNAL"

    async def _abort(
        self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any], method: str
    ) -> None:
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        request_id = request_id_var.get()
        if isinstance(exc, DomainError):
            status = to_status(exc, request_id)
        elif isinstance(exc, NotImplementedError):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet")
            return
        else:
            log.error("unexpected error in %s (request id %s)", method, request_id, exc_info=exc)
            status = internal_status(request_id)
        await context.abort(status.code, status.details, status.trailing_metadata)
