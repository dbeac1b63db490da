"""The Connect and gRPC-Web wire forms (server/http/rpc_wire.py) on their own: content
types, envelopes, timeouts, and a status as a Connect error or gRPC-Web trailers."""

from __future__ import annotations

import base64
import gzip
import json

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from server.api.errors import to_status
from server.config import ConfigError, Settings
from server.domain.errors import FieldViolation, InvalidArgument, ResourceExhausted
from server.http.rpc_wire import (
    CONNECT_CODES,
    WireError,
    connect_end_stream,
    connect_error,
    envelope,
    grpc_web_trailers,
    parse_timeout,
    protocol_for,
    single_envelope,
    status_from_trailers,
)


def test_content_types() -> None:
    unary = protocol_for("application/json; charset=utf-8")
    assert unary is not None and unary.json and not unary.streaming and not unary.grpc_web
    stream = protocol_for("application/connect+proto")
    assert stream is not None and stream.streaming and not stream.json
    web = protocol_for("application/grpc-web-text")
    assert web is not None and web.grpc_web and web.text
    assert protocol_for("text/plain") is None and protocol_for("") is None


def test_single_envelope() -> None:
    assert single_envelope(envelope(0, b"abc"), None) == b"abc"
    assert single_envelope(envelope(1, gzip.compress(b"abc")), "gzip") == b"abc"
    for bad in (b"", b"\0\0\0", envelope(0, b"abc")[:-1], envelope(0, b"abc") + b"x"):
        with pytest.raises(WireError) as caught:
            single_envelope(bad, None)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(WireError) as caught:
        single_envelope(envelope(1, b"abc"), "br")
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_timeouts() -> None:
    assert parse_timeout(None, None) is None
    assert parse_timeout("1500", "1S") == 1.5  # Connect's header wins
    assert parse_timeout(None, "250m") == 0.25
    assert parse_timeout(None, "2M") == 120
    for connect_ms, grpc_timeout in (("-1", None), ("12345678901", None), (None, "1x")):
        with pytest.raises(WireError):
            parse_timeout(connect_ms, grpc_timeout)


def _status(error: InvalidArgument | ResourceExhausted) -> status_pb2.Status:
    status = to_status(error, "req-1")
    return status_from_trailers(status.code, status.details, status.trailing_metadata)


def test_connect_error_carries_the_details() -> None:
    status = _status(InvalidArgument(FieldViolation("mobile", "not a number")))
    error, http_status = connect_error(status)
    assert http_status == 400 and error["code"] == "invalid_argument"
    bad = next(d for d in error["details"] if d["type"] == "google.rpc.BadRequest")
    value = base64.b64decode(bad["value"] + "=" * (-len(bad["value"]) % 4))
    parsed = error_details_pb2.BadRequest.FromString(value)
    assert [v.field for v in parsed.field_violations] == ["mobile"]
    assert bad["debug"]["fieldViolations"][0]["field"] == "mobile"


def test_every_code_has_a_connect_name_and_http_status() -> None:
    assert set(CONNECT_CODES) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert CONNECT_CODES[grpc.StatusCode.RESOURCE_EXHAUSTED] == ("resource_exhausted", 429)
    assert CONNECT_CODES[grpc.StatusCode.UNAUTHENTICATED] == ("unauthenticated", 401)


def test_end_of_stream_and_trailers() -> None:
    ok = connect_end_stream(None, {})
    assert ok[0] == 0x02 and json.loads(ok[5:]) == {}
    status = _status(ResourceExhausted("slow down", retry_after=2.0, reason="RATE_LIMITED"))
    end = json.loads(connect_end_stream(status, {})[5:])
    assert end["error"]["code"] == "resource_exhausted"
    assert "google.rpc.RetryInfo" in {d["type"] for d in end["error"]["details"]}

    frame = grpc_web_trailers(status, {})
    assert frame[0] == 0x80
    lines = dict(line.split(": ", 1) for line in frame[5:].decode().split("\r\n") if line)
    assert lines["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    details = status_pb2.Status.FromString(base64.b64decode(lines["grpc-status-details-bin"]))
    assert details.code == status.code and len(details.details) == len(status.details)


def test_cors_origins_setting() -> None:
    assert Settings.from_env({}).http_cors_origins == ()
    origins = "https://app.example.com, http://localhost:5173/"
    assert Settings.from_env({"SMSGW_HTTP_CORS_ORIGINS": origins}).http_cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
    )
    assert Settings.from_env({"SMSGW_HTTP_CORS_ORIGINS": "*"}).http_cors_origins == ("*",)
    for bad in ("app.example.com", "https://app.example.com/path", "ftp://x"):
        with pytest.raises(ConfigError, match="SMSGW_HTTP_CORS_ORIGINS"):
            Settings.from_env({"SMSGW_HTTP_CORS_ORIGINS": bad})


def test_http_rpc_setting() -> None:
    assert Settings.from_env({}).http_rpc is True
    assert Settings.from_env({"SMSGW_HTTP_RPC": "false"}).http_rpc is False
    with pytest.raises(ConfigError, match="SMSGW_HTTP_RPC"):
        Settings.from_env({"SMSGW_HTTP_RPC": "maybe"})
