"""Every sms.v1 RPC on the HTTP port, over the Connect protocol and gRPC-Web.

One implementation: each call is passed, as bytes, to the gateway's own gRPC server
over a private channel (a Unix socket in a directory only this process's user can
enter), so the same interceptor authenticates it, applies the limits, counts it in
the metrics and maps its errors, and the same servicer answers it. The bridge only
translates: JSON to protobuf and back (the generated descriptors), envelopes and
trailers, the status to a Connect error (details as ``type`` and base64 ``value``,
with their JSON as ``debug``) or gRPC-Web trailers, and Connect-Timeout-Ms or
Grpc-Timeout to the call's deadline.

Forwarded: Authorization, X-Request-Id and the trace context headers. The caller's
address goes with the bridge's token (``BRIDGE_PEER_KEY``); the interceptor believes
an address only next to that token, so the auth throttle and a credential's
allowed networks see the HTTP client, not the socket.

A server stream is cancelled on the gRPC side when its HTTP client goes away.
CORS is off unless origins are configured (SMSGW_HTTP_CORS_ORIGINS).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from google.rpc import status_pb2

from server.api.errors import to_status
from server.api.interceptors import BRIDGE_PEER_KEY
from server.api.server import MAX_MESSAGE_BYTES, SERVICE_NAMES
from server.domain.errors import FieldViolation, InvalidArgument
from server.http.rpc_wire import (
    Protocol,
    WireError,
    connect_end_stream,
    connect_error,
    decompress,
    envelope,
    grpc_web_trailers,
    parse_timeout,
    protocol_for,
    single_envelope,
    status_code,
    status_from_trailers,
)
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

FORWARDED_HEADERS = ("authorization", "x-request-id", "traceparent", "tracestate")
# JSON bodies above this size are parsed off the event loop (a large CreateBatch).
JSON_IN_THREAD_BYTES = 256 * 1024
DISCONNECT_POLL_SECONDS = 0.5

CORS_ALLOW_HEADERS = (
    "Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Connect-Content-Encoding, "
    "Connect-Accept-Encoding, Grpc-Timeout, X-Grpc-Web, X-User-Agent, Authorization, "
    "X-Request-Id, Traceparent, Tracestate"
)
CORS_EXPOSE_HEADERS = (
    "Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, Content-Encoding, Connect-Content-Encoding"
)
CORS_MAX_AGE = "7200"


@dataclass(frozen=True)
class RpcMethod:
    path: str  # "/sms.v1.MessageService/SendMessage"
    request: type[Message]
    response: type[Message]
    server_streaming: bool


def sms_methods() -> dict[str, RpcMethod]:
    """The sms.v1 methods by path, from the generated descriptors."""
    pool = descriptor_pool.Default()
    methods = {}
    for name in SERVICE_NAMES:
        for method in pool.FindServiceByName(name).methods:
            path = f"/{name}/{method.name}"
            methods[path] = RpcMethod(
                path,
                message_factory.GetMessageClass(method.input_type),
                message_factory.GetMessageClass(method.output_type),
                method.server_streaming,
            )
    return methods


class RpcBridge:
    """The Connect and gRPC-Web routes, calling the gRPC server at ``target``."""

    def __init__(
        self,
        target: str,
        token: str,
        cors_origins: Sequence[str] = (),
        metrics: GatewayMetrics | None = None,
    ) -> None:
        """``metrics``: where a call refused here, before the gRPC server (its JSON,
        framing or compression), is counted, as the server counts the calls it answers."""
        self._target = target
        self._metrics = metrics
        self._token = token
        self._origins = frozenset(cors_origins)
        self._methods = sms_methods()
        self._channel: grpc.aio.Channel | None = None

    def add_routes(self, app: web.Application) -> None:
        path = r"/{service:sms\.v1\.[A-Za-z0-9_]+}/{method:[A-Za-z0-9_]+}"
        app.router.add_post(path, self.handle)
        if self._origins:
            app.router.add_route("OPTIONS", path, self.preflight)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _channel_now(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self._target,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
            )
        return self._channel

    # --- CORS ---------------------------------------------------------------------

    def _allowed_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if not origin or not self._origins:
            return None
        if "*" in self._origins:
            return "*"
        return origin if origin in self._origins else None

    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = self._allowed_origin(request)
        if origin is None:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
            "Vary": "Origin",
        }

    async def preflight(self, request: web.Request) -> web.Response:
        origin = self._allowed_origin(request)
        if origin is None:
            return web.Response(status=403, text="origin not allowed\n")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
                "Vary": "Origin",
            },
        )

    # --- calls ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        protocol = protocol_for(request.headers.get("Content-Type", ""))
        if protocol is None:
            return web.Response(
                status=415,
                headers={
                    **self._cors(request),
                    "Accept-Post": "application/json, application/proto, "
                    "application/connect+json, application/connect+proto, "
                    "application/grpc-web, application/grpc-web+proto, "
                    "application/grpc-web+json, application/grpc-web-text",
                },
            )
        method = self._methods.get(request.path)
        if (
            method is not None
            and not protocol.grpc_web
            and protocol.streaming != method.server_streaming
        ):
            # Connect: a unary method takes application/json|proto, a stream connect+...
            return web.Response(status=415, headers=self._cors(request))
        if method is None:
            status = status_pb2.Status(
                code=grpc.StatusCode.UNIMPLEMENTED.value[0],
                message=f"{request.path} is not a method",
            )
            return await self._refuse(request, protocol, status)
        started = time.perf_counter()
        try:
            payload, metadata, deadline = await self._request(request, protocol, method)
        except (WireError, _BadMessage) as exc:
            if isinstance(exc, WireError):
                status = status_pb2.Status(code=exc.code.value[0], message=exc.message)
            else:
                status = exc.status
            if self._metrics is not None:
                code = status_code(status.code).name
                self._metrics.rpc(method.path).done(code, time.perf_counter() - started)
            return await self._refuse(request, protocol, status)
        if not protocol.streaming:
            return await self._connect_unary(request, protocol, method, payload, metadata, deadline)
        return await self._stream(request, protocol, method, payload, metadata, deadline)

    async def _request(
        self, request: web.Request, protocol: Protocol, method: RpcMethod
    ) -> tuple[bytes, list[tuple[str, str]], float | None]:
        """The request message as protobuf bytes, the call's metadata and deadline."""
        headers = request.headers
        version = headers.get("Connect-Protocol-Version")
        if version is not None and version != "1" and not protocol.grpc_web:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "Connect-Protocol-Version must be 1")
        timeout = parse_timeout(headers.get("Connect-Timeout-Ms"), headers.get("Grpc-Timeout"))
        body = await _read_body(request)
        if protocol.text:
            try:
                body = base64.b64decode(body)
            except ValueError as exc:
                raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "the body is not base64") from exc
        if not protocol.streaming:
            data = decompress(body, headers.get("Content-Encoding"))
        elif protocol.grpc_web:
            data = single_envelope(body, headers.get("Grpc-Encoding"))
        else:
            data = single_envelope(body, headers.get("Connect-Content-Encoding"))
        metadata = [(key, headers[key]) for key in FORWARDED_HEADERS if key in headers]
        metadata.append((BRIDGE_PEER_KEY, f"{self._token} {request.remote or ''}"))
        if protocol.json:
            if len(data) > JSON_IN_THREAD_BYTES:
                data = await asyncio.to_thread(_json_to_proto, method, data, metadata)
            else:
                data = _json_to_proto(method, data, metadata)
        return data, metadata, timeout

    async def _refuse(
        self, request: web.Request, protocol: Protocol, status: status_pb2.Status
    ) -> web.StreamResponse:
        """A call answered with an error before it reached the gRPC server."""
        if not protocol.streaming:
            error, http_status = connect_error(status)
            return web.json_response(error, status=http_status, headers=self._cors(request))
        response = self._stream_response(request, protocol)
        await response.prepare(request)
        await response.write(self._end(protocol, status))
        await response.write_eof()
        return response

    async def _connect_unary(
        self,
        request: web.Request,
        protocol: Protocol,
        method: RpcMethod,
        payload: bytes,
        metadata: list[tuple[str, str]],
        deadline: float | None,
    ) -> web.StreamResponse:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel_now().unary_unary(
            method.path
        )
        try:
            reply: bytes = await call(payload, metadata=metadata, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            error, http_status = connect_error(_status_of(exc))
            return web.json_response(error, status=http_status, headers=self._cors(request))
        body = _proto_to_json(method, reply) if protocol.json else reply
        return web.Response(
            body=body, headers={**self._cors(request), "Content-Type": protocol.content_type}
        )

    def _stream_response(self, request: web.Request, protocol: Protocol) -> web.StreamResponse:
        return web.StreamResponse(
            status=200,
            headers={**self._cors(request), "Content-Type": protocol.content_type},
        )

    def _end(self, protocol: Protocol, status: status_pb2.Status | None) -> bytes:
        if protocol.grpc_web:
            return _text(protocol, grpc_web_trailers(status, {}))
        return connect_end_stream(status, {})

    async def _stream(
        self,
        request: web.Request,
        protocol: Protocol,
        method: RpcMethod,
        payload: bytes,
        metadata: list[tuple[str, str]],
        deadline: float | None,
    ) -> web.StreamResponse:
        """A Connect server stream, or any gRPC-Web call: envelopes, then the status."""
        channel = self._channel_now()
        call: Any
        if method.server_streaming:
            streaming: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                method.path
            )
            call = streaming(payload, metadata=metadata, timeout=deadline)
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method.path)
            call = unary(payload, metadata=metadata, timeout=deadline)
        response = self._stream_response(request, protocol)
        watcher = asyncio.create_task(_cancel_when_gone(request, call))
        status: status_pb2.Status | None = None
        try:
            await response.prepare(request)
            async for item in _items(call, method.server_streaming):
                data = _proto_to_json(method, item) if protocol.json else item
                await response.write(_text(protocol, envelope(0, data)))
        except grpc.aio.AioRpcError as exc:
            status = _status_of(exc)
        except ConnectionResetError:
            call.cancel()  # the HTTP client went away during a write
            return response
        except asyncio.CancelledError:
            call.cancel()
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this handler is cancelled (the server stops)
            return response  # the watcher cancelled the call: its client went away
        finally:
            watcher.cancel()
        try:
            await response.write(self._end(protocol, status))
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response


class _BadMessage(Exception):
    """A JSON body that is not the method's request message."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        self.status = status


def _json_to_proto(method: RpcMethod, data: bytes, metadata: list[tuple[str, str]]) -> bytes:
    """The protobuf bytes of a proto3 JSON request (unknown fields ignored, as Connect's
    servers do); one that is not the method's message answers INVALID_ARGUMENT with a
    BadRequest, as the gRPC port does for bytes it cannot decode."""
    message = method.request()
    try:
        json_format.Parse(data.decode("utf-8") or "{}", message, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        request_id = dict(metadata).get("x-request-id") or secrets.token_hex(11)
        name = method.path.rsplit("/", 1)[-1]
        error = InvalidArgument(
            FieldViolation("request", f"the body is not a valid {name} request: {exc}"[:400])
        )
        grpc_status = to_status(error, request_id[:64])
        raise _BadMessage(
            status_from_trailers(
                grpc_status.code, grpc_status.details, grpc_status.trailing_metadata
            )
        ) from exc
    return message.SerializeToString()


def _proto_to_json(method: RpcMethod, data: bytes) -> bytes:
    message = method.response.FromString(data)
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


def _text(protocol: Protocol, frame: bytes) -> bytes:
    return base64.b64encode(frame) if protocol.text else frame


def _status_of(exc: grpc.aio.AioRpcError) -> status_pb2.Status:
    return status_from_trailers(exc.code(), exc.details() or "", exc.trailing_metadata() or ())


async def _items(call: Any, streaming: bool) -> AsyncIterator[bytes]:
    if streaming:
        async for item in call:
            yield item
    else:
        yield await call


async def _read_body(request: web.Request) -> bytes:
    """The request body, up to the gRPC port's message limit."""
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        raise WireError(grpc.StatusCode.RESOURCE_EXHAUSTED, "the body is too large")
    chunks = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise WireError(grpc.StatusCode.RESOURCE_EXHAUSTED, "the body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _cancel_when_gone(request: web.Request, call: Any) -> None:
    """Cancels ``call`` once the HTTP client's connection is closed (a stream waiting
    for its next event writes nothing that would notice)."""
    while True:
        await asyncio.sleep(DISCONNECT_POLL_SECONDS)
        transport = request.transport
        if transport is None or transport.is_closing():
            call.cancel()
            return
