"""The wire forms of the Connect protocol and of gRPC-Web, as the HTTP port speaks
them (server/http/rpc_bridge.py): which protocol and codec a request uses, message
envelopes, timeouts, and a gRPC status written as a Connect error or gRPC-Web trailers.

Connect (connectrpc.com/docs/protocol): unary calls post the bare message
(``application/json`` or ``application/proto``) and are answered with it, or with an
error as JSON and the HTTP status of its code; streams (``application/connect+json``
or ``+proto``) send enveloped messages (a flags byte, a 4-byte big-endian length) and
end with an end-of-stream envelope (flags 0x02) holding the error, if any, as JSON.
gRPC-Web (``application/grpc-web[+proto|+json]``, ``-text`` for base64) frames like
gRPC and sends its trailers as a last frame (flags 0x80).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct
import urllib.parse
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, symbol_database
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

# The google.rpc detail types our errors carry, registered for their JSON ("debug").
_DETAIL_MODULES = (error_details_pb2,)

ENVELOPE_COMPRESSED = 0x01
CONNECT_END_STREAM = 0x02
GRPC_WEB_TRAILERS = 0x80
_HEADER = struct.Struct(">BI")

STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Connect's code names and the HTTP status each answers a unary call with.
CONNECT_CODES: dict[grpc.StatusCode, tuple[str, int]] = {
    grpc.StatusCode.CANCELLED: ("canceled", 499),
    grpc.StatusCode.UNKNOWN: ("unknown", 500),
    grpc.StatusCode.INVALID_ARGUMENT: ("invalid_argument", 400),
    grpc.StatusCode.DEADLINE_EXCEEDED: ("deadline_exceeded", 504),
    grpc.StatusCode.NOT_FOUND: ("not_found", 404),
    grpc.StatusCode.ALREADY_EXISTS: ("already_exists", 409),
    grpc.StatusCode.PERMISSION_DENIED: ("permission_denied", 403),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ("resource_exhausted", 429),
    grpc.StatusCode.FAILED_PRECONDITION: ("failed_precondition", 400),
    grpc.StatusCode.ABORTED: ("aborted", 409),
    grpc.StatusCode.OUT_OF_RANGE: ("out_of_range", 400),
    grpc.StatusCode.UNIMPLEMENTED: ("unimplemented", 501),
    grpc.StatusCode.INTERNAL: ("internal", 500),
    grpc.StatusCode.UNAVAILABLE: ("unavailable", 503),
    grpc.StatusCode.DATA_LOSS: ("data_loss", 500),
    grpc.StatusCode.UNAUTHENTICATED: ("unauthenticated", 401),
}


class WireError(Exception):
    """A request the bridge cannot pass on (its framing, codec or compression): answered
    with ``code`` in the request's protocol, without reaching the gRPC server."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Protocol:
    """How one request is spoken: Connect or gRPC-Web, its codec, base64 or not."""

    grpc_web: bool
    streaming: bool  # enveloped messages (Connect streams; gRPC-Web always)
    json: bool
    text: bool = False  # grpc-web-text: the body is base64
    content_type: str = ""


_CONTENT_TYPES: dict[str, Protocol] = {
    "application/json": Protocol(grpc_web=False, streaming=False, json=True),
    "application/proto": Protocol(grpc_web=False, streaming=False, json=False),
    "application/connect+json": Protocol(grpc_web=False, streaming=True, json=True),
    "application/connect+proto": Protocol(grpc_web=False, streaming=True, json=False),
    "application/grpc-web": Protocol(grpc_web=True, streaming=True, json=False),
    "application/grpc-web+proto": Protocol(grpc_web=True, streaming=True, json=False),
    "application/grpc-web+json": Protocol(grpc_web=True, streaming=True, json=True),
    "application/grpc-web-text": Protocol(grpc_web=True, streaming=True, json=False, text=True),
    "application/grpc-web-text+proto": Protocol(
        grpc_web=True, streaming=True, json=False, text=True
    ),
}


def protocol_for(content_type: str) -> Protocol | None:
    """The protocol of a request by its Content-Type (parameters such as charset
    ignored), or None for a type neither protocol uses."""
    base = content_type.split(";", 1)[0].strip().lower()
    found = _CONTENT_TYPES.get(base)
    if found is None:
        return None
    return Protocol(found.grpc_web, found.streaming, found.json, found.text, base)


def decompress(data: bytes, encoding: str | None) -> bytes:
    """The bytes of a body or message sent with ``encoding`` (identity or gzip)."""
    if not encoding or encoding == "identity":
        return data
    if encoding != "gzip":
        raise WireError(grpc.StatusCode.UNIMPLEMENTED, f"unsupported compression {encoding!r}")
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "the body is not valid gzip") from exc


def envelope(flags: int, data: bytes) -> bytes:
    return _HEADER.pack(flags, len(data)) + data


def single_envelope(body: bytes, encoding: str | None) -> bytes:
    """The one message a server-stream or gRPC-Web request body holds."""
    if len(body) < _HEADER.size:
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "the body holds no enveloped message")
    flags, length = _HEADER.unpack_from(body)
    data = body[_HEADER.size :]
    if len(data) != length:
        raise WireError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the body's envelope announces {length} bytes and holds {len(data)}",
        )
    if flags & ENVELOPE_COMPRESSED:
        if not encoding or encoding == "identity":
            raise WireError(
                grpc.StatusCode.INTERNAL, "a compressed message without a message encoding"
            )
        return decompress(data, encoding)
    return data


def parse_timeout(connect_ms: str | None, grpc_timeout: str | None) -> float | None:
    """The call's deadline in seconds from ``Connect-Timeout-Ms`` or ``Grpc-Timeout``."""
    if connect_ms:
        if not connect_ms.isdigit() or len(connect_ms) > 10:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "Connect-Timeout-Ms is malformed")
        return int(connect_ms) / 1000
    if grpc_timeout:
        match = re.fullmatch(r"(\d{1,8})([HMSmun])", grpc_timeout)
        if match is None:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "Grpc-Timeout is malformed")
        unit = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
        return int(match.group(1)) * unit[match.group(2)]
    return None


def status_from_trailers(
    code: grpc.StatusCode, message: str, trailers: Iterable[tuple[str, Any]]
) -> status_pb2.Status:
    """The call's google.rpc.Status: the details trailer our server attaches
    (server/api/errors.py), or the bare code and message."""
    for key, value in trailers:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:
                break
            return status
    return status_pb2.Status(code=code.value[0], message=message)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _debug(detail: Any) -> dict[str, Any] | None:
    """A detail's JSON form, for people reading it with curl (its type is ours)."""
    try:
        message_class = symbol_database.Default().GetSymbol(detail.TypeName())
    except KeyError:
        return None
    message: Message = message_class()
    if not detail.Unpack(message):
        return None
    value: dict[str, Any] = json_format.MessageToDict(message)
    return value


def connect_error(status: status_pb2.Status) -> tuple[dict[str, Any], int]:
    """The Connect error JSON for a gRPC status, and the HTTP status of its code."""
    code = status_code(status.code)
    name, http_status = CONNECT_CODES.get(code, ("unknown", 500))
    error: dict[str, Any] = {"code": name}
    if status.message:
        error["message"] = status.message
    details = []
    for detail in status.details:
        entry: dict[str, Any] = {"type": detail.TypeName(), "value": _b64(detail.value)}
        debug = _debug(detail)
        if debug is not None:
            entry["debug"] = debug
        details.append(entry)
    if details:
        error["details"] = details
    return error, http_status


def connect_end_stream(status: status_pb2.Status | None, metadata: dict[str, list[str]]) -> bytes:
    """The end-of-stream envelope: the error (None when the stream ended well) and the
    trailers."""
    end: dict[str, Any] = {}
    if status is not None:
        end["error"], _ = connect_error(status)
    if metadata:
        end["metadata"] = metadata
    return envelope(CONNECT_END_STREAM, json.dumps(end).encode())


def grpc_web_trailers(status: status_pb2.Status | None, metadata: dict[str, str]) -> bytes:
    """The gRPC-Web trailers frame: grpc-status, grpc-message (percent-encoded), the
    details trailer, and the call's other trailers."""
    lines = [f"grpc-status: {status.code if status is not None else 0}"]
    if status is not None:
        if status.message:
            lines.append(f"grpc-message: {urllib.parse.quote(status.message, safe=' ')}")
        if status.details:
            value = base64.b64encode(status.SerializeToString()).decode()
            lines.append(f"{STATUS_DETAILS_KEY}: {value}")
    lines.extend(f"{key}: {value}" for key, value in metadata.items())
    return envelope(GRPC_WEB_TRAILERS, ("\r\n".join(lines) + "\r\n").encode())


def status_code(number: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN
