"""Bytes that are not the method's protobuf message answer INVALID_ARGUMENT with a
BadRequest, no internals and no ERROR log line, before authentication."""

from __future__ import annotations

import logging

import grpc
import pytest
from sms.v1 import common_pb2, message_pb2

from tests.e2e.conftest import Running
from tests.e2e.errors import bad_fields

# Truncated varint, a field with wire type 7 (invalid), a length past the end, and
# invalid UTF-8 in a string field (SendMessageRequest.mobile is field 1).
GARBAGE = [b"\xff\xff\xff\xff", b"\x0f", b"\x0a\x64abc", b"\x0a\x02\xff\xfe"]
UNARY = "/sms.v1.MessageService/SendMessage"
STREAM = "/sms.v1.MessageService/WatchMessageStatus"


def assert_rejected(err: grpc.aio.AioRpcError) -> None:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err) == {"request"}
    text = err.details() or ""
    assert "DecodeError" not in text and "class" not in text and "Traceback" not in text


@pytest.mark.parametrize("body", GARBAGE)
async def test_garbage_to_a_unary_method_is_invalid_argument_without_auth(
    gw: Running, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # No serializers: raw bytes on the wire.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = gw.channel.unary_unary(UNARY)
    with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(body)  # no credentials either: decoding comes first
    assert_rejected(caught.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("body", GARBAGE)
async def test_garbage_to_a_stream_is_invalid_argument(
    gw: Running, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gw.client()
    call: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = gw.channel.unary_stream(STREAM)
    with caplog.at_level(logging.WARNING), pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call(body, metadata=client.metadata):
            raise AssertionError("a malformed request streamed an item")
    assert_rejected(caught.value)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_well_formed_bytes_still_work(gw: Running) -> None:
    client = await gw.client()
    request = message_pb2.SendMessageRequest(
        mobile="+8613800138000", text="raw", use_type=common_pb2.USE_TYPE_NOTIFICATION
    )
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = gw.channel.unary_unary(UNARY)
    reply = message_pb2.SendMessageResponse.FromString(
        await call(request.SerializeToString(), metadata=client.metadata)
    )
    assert reply.id
