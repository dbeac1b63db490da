"""Every string has a maximum length and every list a maximum count: past them, and
for text PostgreSQL cannot store (NUL), the answer is INVALID_ARGUMENT naming the
field, never INTERNAL. Several of these were INTERNAL before (found by test_fuzz.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sms.v1 import batch_pb2, common_pb2, message_pb2, template_pb2, verification_pb2

from tests.e2e.conftest import Client, Running
from tests.e2e.errors import bad_fields, details

CN = "+8613800138000"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
LONG_ID = "m" * 65
HUGE = "x" * 1_000_000

m, v, b, t = message_pb2, verification_pb2, batch_pb2, template_pb2


def send(**fields: Any) -> Callable[[Client], Awaitable[object]]:
    content = {} if "template_id" in fields else {"text": "Hello"}
    fields = {"mobile": CN, "use_type": NOTE, **content, **fields}
    return lambda c: c.messages.SendMessage(m.SendMessageRequest(**fields), metadata=c.metadata)


def status(*ids: str) -> Callable[[Client], Awaitable[Any]]:
    return lambda c: c.messages.GetMessageStatus(
        m.GetMessageStatusRequest(ids=ids), metadata=c.metadata
    )


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def watch(*ids: str) -> Callable[[Client], Awaitable[object]]:
    return lambda c: _drain(
        c.messages.WatchMessageStatus(
            m.WatchMessageStatusRequest(ids=ids), metadata=c.metadata, timeout=5
        )
    )


def send_code(**fields: Any) -> Callable[[Client], Awaitable[object]]:
    fields = {"mobile": CN, **fields}
    return lambda c: c.verifications.SendVerification(
        v.SendVerificationRequest(**fields), metadata=c.metadata
    )


def check_code(verify_id: str) -> Callable[[Client], Awaitable[object]]:
    return lambda c: c.verifications.CheckVerification(
        v.CheckVerificationRequest(verify_id=verify_id, mobile=CN, code="123456"),
        metadata=c.metadata,
    )


def batch(**fields: Any) -> Callable[[Client], Awaitable[object]]:
    fields = {"use_type": NOTE, "content": "Hello", "numbers": [CN], **fields}
    return lambda c: c.batches.CreateBatch(b.CreateBatchRequest(**fields), metadata=c.metadata)


def by_task_id(task_id: str) -> list[Callable[[Client], Awaitable[object]]]:
    """Every BatchService call that takes a task id."""
    return [
        lambda c: c.batches.GetBatch(b.GetBatchRequest(task_id=task_id), metadata=c.metadata),
        lambda c: c.batches.ListBatchMessages(
            b.ListBatchMessagesRequest(task_id=task_id), metadata=c.metadata
        ),
        lambda c: _drain(
            c.batches.WatchBatch(b.WatchBatchRequest(task_id=task_id), metadata=c.metadata)
        ),
        lambda c: c.batches.CancelBatch(b.CancelBatchRequest(task_id=task_id), metadata=c.metadata),
    ]


def template(content: str) -> Callable[[Client], Awaitable[object]]:
    return lambda c: c.templates.CreateTemplate(
        t.CreateTemplateRequest(template=t.Template(code="c1", content=content, use_type=NOTE)),
        metadata=c.metadata,
    )


def stamp(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


# (call, the fields BadRequest must name)
CASES: dict[str, tuple[Callable[[Client], Awaitable[object]], set[str]]] = {
    # Timestamps a Timestamp cannot hold: ValueError in the conversion (was INTERNAL).
    "send_at negative nanos": (send(send_at=stamp(1_800_000_000, -1)), {"send_at"}),
    "send_at nanos past a second": (send(send_at=stamp(1_800_000_000, 10**9)), {"send_at"}),
    "send_at before year 1": (send(send_at=stamp(-62_135_596_801)), {"send_at"}),
    "send_at after year 9999": (send(send_at=stamp(253_402_300_800)), {"send_at"}),
    "batch send_at out of range": (batch(send_at=stamp(0, -1)), {"send_at"}),
    # NUL reached PostgreSQL, which refuses it in text and jsonb (was INTERNAL).
    "text with NUL": (send(text="Hel\x00lo"), {"text"}),
    "request_id with NUL": (send(request_id="r\x00"), {"request_id"}),
    "status id with NUL": (status("\x00"), {"ids[0]"}),
    "watch id with NUL": (watch("ok", "a\x00"), {"ids[1]"}),
    "verification request_id with NUL": (send_code(request_id="\x00"), {"request_id"}),
    "verify_id with NUL": (check_code("v_\x00"), {"verify_id"}),
    "batch content with NUL": (batch(content="Hi\x00"), {"content"}),
    "batch number with NUL": (batch(numbers=[CN, "+86\x00"]), {"numbers[1]"}),
    "batch request_id with NUL": (batch(request_id="\x00"), {"request_id"}),
    "template content with NUL": (template("Hi \x00 there"), {"template.content"}),
    # Lengths and counts that had no limit.
    "status id too long": (status("ok", LONG_ID), {"ids[1]"}),
    "status id empty": (status(""), {"ids[0]"}),
    "watch id too long": (watch(HUGE), {"ids[0]"}),
    "verify_id too long": (check_code("v_" + HUGE), {"verify_id"}),
    "batch number too long": (batch(numbers=[HUGE]), {"numbers[0]"}),
    "batch template_data key too long": (
        batch(template_data={HUGE: b.TemplateData()}),
        {"template_data"},
    ),
}
for index, call in enumerate(by_task_id("\x00")):
    CASES[f"task id with NUL ({index})"] = (call, {"task_id"})
for index, call in enumerate(by_task_id(HUGE)):
    CASES[f"task id too long ({index})"] = (call, {"task_id"})
for index, call in enumerate(by_task_id("")):
    CASES[f"task id empty ({index})"] = (call, {"task_id"})


@pytest.mark.parametrize("case", CASES)
async def test_bad_input_is_invalid_argument_naming_the_field(gw: Running, case: str) -> None:
    client = await gw.client()
    call, fields = CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(client)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert bad_fields(caught.value) == fields
    # The error never echoes a huge input back (it must fit in the trailers).
    assert len(details(caught.value).SerializeToString()) < 4_000


async def test_template_values_are_bounded_and_storable(gw: Running) -> None:
    client = await gw.client()
    created = await client.templates.CreateTemplate(
        t.CreateTemplateRequest(template=t.Template(code="hi", content="Hi #name#", use_type=NOTE)),
        metadata=client.metadata,
    )
    cases = {
        # A value with NUL was stored in jsonb and the body (was INTERNAL).
        "nul": ({"name": "a\x00b"}, {"data.name"}),
        # Too many values, and a key no variable could have, are named by the map.
        "count": ({"name": "x", **{f"k{i}": "" for i in range(200)}}, {"data"}),
        "absurd key": ({"name": "x", "#" * 10_000: "y"}, {"data"}),
    }
    for data, fields in cases.values():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await send(template_id=created.id, data=data)(client)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == fields
        assert len(details(caught.value).SerializeToString()) < 4_000


async def test_many_bad_numbers_are_reported_in_one_short_error(gw: Running) -> None:
    client = await gw.client()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await batch(numbers=["+" + "1" * 100] * 5_000)(client)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_fields(caught.value)
    assert {"numbers[0]", "numbers[18]", "numbers"} <= fields
    assert len(fields) == 20
    assert len(details(caught.value).SerializeToString()) < 4_000


async def test_a_rejected_number_gives_a_short_reason(gw: Running) -> None:
    """A number with many bad values is rejected with its first few problems only."""
    client = await gw.client()
    values = {f"unknown_{i}": "x" for i in range(50)}
    reply = await batch(
        content="Hi #name#",
        numbers=[CN, "+8613800138001"],
        template_data={
            CN: b.TemplateData(values={"name": "ok"}),
            "+8613800138001": b.TemplateData(values=values),
        },
    )(client)
    assert isinstance(reply, b.CreateBatchResponse)
    assert reply.accepted_count == 1
    [rejected] = reply.rejected
    assert rejected.number == "+8613800138001"
    assert "name" in rejected.reason and "more problems" in rejected.reason
    assert len(rejected.reason) < 500


async def test_ids_at_the_limit_are_still_looked_up(gw: Running) -> None:
    """64 characters is a well-formed id: unknown ones are simply not found."""
    client = await gw.client()
    reply = await status("m" * 64)(client)
    assert list(reply.not_found_ids) == ["m" * 64]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await by_task_id("b" * 64)[0](client)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
