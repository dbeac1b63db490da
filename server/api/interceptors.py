"""The server interceptor: request id, Basic authentication, rate limits, error mapping
and the RPC metrics (calls by method and code, latency, rate-limit refusals).

Every method of the sms.v1 services is wrapped; reflection and health are left
open. Domain errors become their mapped status (api/errors.py); a method not built
yet answers UNIMPLEMENTED; anything unexpected is logged once, with the request
id, and answered INTERNAL without internals.

On shutdown ``end_streams`` ends the open server streams (WatchMessageStatus,
WatchBatch) with UNAVAILABLE: they may last forever, so waiting for them would hold
every shutdown for the whole grace, and grpc's cancel at its end leaves the caller a
status without the reason or RetryInfo. The caller resumes at once on another replica
(``after_event_id`` makes that lossless).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
import traceback
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from server.api.context import request_id_var, set_caller
from server.api.errors import internal_status, status_code_for, to_status
from server.domain.auth import Authenticator
from server.domain.errors import DomainError, ResourceExhausted, Unavailable
from server.domain.limits import RateLimits
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

SHUTTING_DOWN = (
    "the server is shutting down; call again (another replica), streams resume from "
    "the last event_id received"
)


@dataclass(eq=False)
class _OpenStream:
    """A server stream being answered, for ``end_streams``."""

    task: asyncio.Task[Any]
    in_servicer: bool = False  # awaiting the servicer's next item, not a write
    ended: bool = False  # cancelled by end_streams


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
    ) -> None:
        self._authenticator = authenticator
        self._limits = limits
        self._metrics = metrics or GatewayMetrics()
        # One wrapped handler per method, built on first use (not on every call).
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # Request ids: a random per-process prefix and a counter (no syscall per call).
        self._id_prefix = secrets.token_hex(6)
        self._id_counter = itertools.count(1)
        self._streams: set[_OpenStream] = set()
        self._closing = False
        self._metrics.count_streams(self._streams.__len__)

    def end_streams(self) -> None:
        """Ends every open server stream with UNAVAILABLE, and refuses new ones.

        A stream waiting in its servicer (for the next event) is cancelled there; one
        writing to a slow client ends after that write. Cancelling a task inside
        grpc's write would end the call without a status the caller can act on."""
        self._closing = True
        for stream in self._streams:
            if stream.in_servicer and not stream.ended:
                stream.ended = True
                stream.task.cancel()

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
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=_passing_bytes(handler.response_serializer),
            )
        return None

    async def _begin(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> str:
        metadata = context.invocation_metadata()
        request_id = _metadata_value(metadata, "x-request-id") or self._new_request_id()
        request_id_var.set(request_id[:64])
        caller = await self._authenticator.authenticate(
            _metadata_value(metadata, "authorization"), peer_ip(context.peer())
        )
        set_caller(caller)
        if self._limits is not None:
            self._limits.admit(caller, method)
        return request_id

    def _wrap_unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        rpc = self._metrics.rpc(method)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                await self._begin(context, method)
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = self._code_of(exc, context)
                # grpc keeps an aborted call in a reference cycle until a GC: not its
                # request (a refused 100k-number batch would stay in memory).
                del request
                traceback.clear_frames(exc.__traceback__)
                await self._abort(exc, context, method)
            finally:
                rpc.done(code, time.perf_counter() - started)

        return unary

    def _wrap_stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        rpc = self._metrics.rpc(method)

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            task = asyncio.current_task()
            assert task is not None
            this = _OpenStream(task)
            started = time.perf_counter()
            code = "OK"
            try:
                await self._begin(context, method)
                self._streams.add(this)
                items: AsyncGenerator[Any, None] = behavior(request, context)
                async with contextlib.aclosing(items):
                    while not self._closing:
                        this.in_servicer = True
                        try:
                            item = await anext(items)
                        except StopAsyncIteration:
                            return
                        finally:
                            this.in_servicer = False
                        yield item
                raise Unavailable(SHUTTING_DOWN, reason="SHUTTING_DOWN")
            except GeneratorExit:
                code = "CANCELLED"  # closed by grpc: the caller went away
                raise
            except asyncio.CancelledError:
                if not this.ended:
                    code = "CANCELLED"
                    raise  # the caller went away, or grpc cancels the call
                task.uncancel()
                code = "UNAVAILABLE"
                await self._abort(
                    Unavailable(SHUTTING_DOWN, reason="SHUTTING_DOWN"), context, method
                )
            except Exception as exc:
                code = self._code_of(exc, context)
                await self._abort(exc, context, method)
            finally:
                self._streams.discard(this)
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
