"""Tenant isolation: every RPC that takes an id, called by another account with the
owner's real ids, answers exactly as for an id that does not exist, shows none of the
owner's data, and changes nothing of it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sms.v1 import batch_pb2, common_pb2, message_pb2, template_pb2, verification_pb2

from tests.e2e.conftest import Client, Running
from tests.e2e.errors import reason

CN = "+8613800138000"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
CODE = "73915582"
m, v, b, t = message_pb2, verification_pb2, batch_pb2, template_pb2


@dataclass
class Owned:
    """The owner's resources, and ids of the same shape that do not exist."""

    owner: Client
    message_id: str
    batch_id: str
    batch_page_token: str
    template_id: int
    otp_template_id: int
    template_page_token: str
    verify_id: str
    missing_message_id: str = "0" * 32
    missing_batch_id: str = "b_" + "0" * 24
    missing_verify_id: str = "v_" + "0" * 24
    missing_template_id: int = 2**62


@pytest.fixture(scope="module")
async def owned(gw: Running) -> Owned:
    owner = await gw.client(name="owner")
    md = owner.metadata
    sent = await owner.messages.SendMessage(
        m.SendMessageRequest(mobile=CN, use_type=NOTE, text="owner's secret text"), metadata=md
    )
    tomorrow = timestamp_pb2.Timestamp()
    tomorrow.GetCurrentTime()
    tomorrow.seconds += 86_400
    # Scheduled for tomorrow: it stays PENDING, so a cancel would show.
    batch = await owner.batches.CreateBatch(
        b.CreateBatchRequest(
            use_type=NOTE,
            content="Owner's campaign",
            numbers=[CN, "+8613800138001"],
            send_at=tomorrow,
        ),
        metadata=md,
    )
    page = await owner.batches.ListBatchMessages(
        b.ListBatchMessagesRequest(task_id=batch.task_id, page_size=1), metadata=md
    )
    templates = [
        await owner.templates.CreateTemplate(
            t.CreateTemplateRequest(template=t.Template(code=code, content=text, use_type=use)),
            metadata=md,
        )
        for code, text, use in (
            ("owner_note", "Owner note #name#", NOTE),
            ("owner_otp", "Owner code #code#", common_pb2.USE_TYPE_VERIFICATION),
        )
    ]
    template_page = await owner.templates.ListTemplates(
        t.ListTemplatesRequest(page_size=1), metadata=md
    )
    verification = await owner.verifications.SendVerification(
        v.SendVerificationRequest(mobile=CN, code=CODE), metadata=md
    )
    assert page.next_page_token and template_page.next_page_token
    return Owned(
        owner,
        sent.id,
        batch.task_id,
        page.next_page_token,
        templates[0].id,
        templates[1].id,
        template_page.next_page_token,
        verification.verify_id,
    )


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


# Each call, made by the intruder with an id: the owner's, or a missing one.
IdCall = Callable[[Client, Owned, bool], Awaitable[Any]]


def _pick(o: Owned, real: bool, kind: str) -> Any:
    return getattr(o, kind if real else f"missing_{kind}")


CALLS: dict[str, IdCall] = {
    "WatchMessageStatus": lambda c, o, real: _drain(
        c.messages.WatchMessageStatus(
            m.WatchMessageStatusRequest(ids=[_pick(o, real, "message_id")]),
            metadata=c.metadata,
            timeout=5,
        )
    ),
    "CheckVerification right code": lambda c, o, real: c.verifications.CheckVerification(
        v.CheckVerificationRequest(verify_id=_pick(o, real, "verify_id"), mobile=CN, code=CODE),
        metadata=c.metadata,
    ),
    "CheckVerification wrong code": lambda c, o, real: c.verifications.CheckVerification(
        v.CheckVerificationRequest(
            verify_id=_pick(o, real, "verify_id"), mobile=CN, code="11111111"
        ),
        metadata=c.metadata,
    ),
    "GetBatch": lambda c, o, real: c.batches.GetBatch(
        b.GetBatchRequest(task_id=_pick(o, real, "batch_id")), metadata=c.metadata
    ),
    "ListBatchMessages": lambda c, o, real: c.batches.ListBatchMessages(
        b.ListBatchMessagesRequest(task_id=_pick(o, real, "batch_id")), metadata=c.metadata
    ),
    "ListBatchMessages with the owner's token": lambda c, o, real: c.batches.ListBatchMessages(
        b.ListBatchMessagesRequest(
            task_id=_pick(o, real, "batch_id"), page_token=o.batch_page_token
        ),
        metadata=c.metadata,
    ),
    "WatchBatch": lambda c, o, real: _drain(
        c.batches.WatchBatch(
            b.WatchBatchRequest(task_id=_pick(o, real, "batch_id")),
            metadata=c.metadata,
            timeout=5,
        )
    ),
    "CancelBatch": lambda c, o, real: c.batches.CancelBatch(
        b.CancelBatchRequest(task_id=_pick(o, real, "batch_id")), metadata=c.metadata
    ),
    "GetTemplate": lambda c, o, real: c.templates.GetTemplate(
        t.GetTemplateRequest(id=_pick(o, real, "template_id")), metadata=c.metadata
    ),
    "DeleteTemplate": lambda c, o, real: c.templates.DeleteTemplate(
        t.DeleteTemplateRequest(id=_pick(o, real, "template_id")), metadata=c.metadata
    ),
    "SendMessage with template": lambda c, o, real: c.messages.SendMessage(
        m.SendMessageRequest(
            mobile=CN,
            use_type=NOTE,
            template_id=_pick(o, real, "template_id"),
            data={"name": "x"},
        ),
        metadata=c.metadata,
    ),
    "CreateBatch with template": lambda c, o, real: c.batches.CreateBatch(
        b.CreateBatchRequest(
            use_type=NOTE, template_id=_pick(o, real, "template_id"), numbers=[CN]
        ),
        metadata=c.metadata,
    ),
    "SendVerification with template": lambda c, o, real: c.verifications.SendVerification(
        v.SendVerificationRequest(
            mobile="+8613800138002",
            template_id=o.otp_template_id if real else o.missing_template_id,
        ),
        metadata=c.metadata,
    ),
}


async def _refusal(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), reason(caught.value), caught.value.details() or ""


@pytest.mark.parametrize("name", CALLS)
async def test_another_accounts_id_is_not_found_like_a_missing_one(
    gw: Running, owned: Owned, name: str
) -> None:
    intruder = await gw.client(name="intruder")
    call = CALLS[name]
    code, why, message = await _refusal(call(intruder, owned, True))
    missing_code, missing_why, missing_message = await _refusal(call(intruder, owned, False))
    assert code == grpc.StatusCode.NOT_FOUND
    assert (code, why) == (missing_code, missing_why)
    # The same message but for the id itself: nothing tells the two apart.
    for real_id, missing_id in (
        (owned.message_id, owned.missing_message_id),
        (owned.batch_id, owned.missing_batch_id),
        (owned.verify_id, owned.missing_verify_id),
        (owned.template_id, owned.missing_template_id),
        (owned.otp_template_id, owned.missing_template_id),
    ):
        message = re.sub(rf"\b{real_id}\b", str(missing_id), message)
    assert message == missing_message


async def test_status_queries_list_another_accounts_ids_as_not_found(
    gw: Running, owned: Owned
) -> None:
    intruder = await gw.client(name="intruder")
    own = await intruder.messages.SendMessage(
        m.SendMessageRequest(mobile=CN, use_type=NOTE, text="mine"), metadata=intruder.metadata
    )
    reply = await intruder.messages.GetMessageStatus(
        m.GetMessageStatusRequest(ids=[owned.message_id, own.id]), metadata=intruder.metadata
    )
    assert [s.id for s in reply.messages] == [own.id]
    assert list(reply.not_found_ids) == [owned.message_id]


async def test_watching_everything_shows_only_the_accounts_own_events(
    gw: Running, owned: Owned
) -> None:
    intruder = await gw.client(name="intruder")
    own = await intruder.messages.SendMessage(
        m.SendMessageRequest(mobile=CN, use_type=NOTE, text="mine"), metadata=intruder.metadata
    )
    # Replay from the start of the log (every account's events are in it), then live.
    stream = intruder.messages.WatchMessageStatus(
        m.WatchMessageStatusRequest(after_event_id=1), metadata=intruder.metadata, timeout=1.5
    )
    seen: list[m.MessageStatusEvent] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stream:
            seen.append(event)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert own.id in {e.message_id for e in seen}  # the stream does work
    assert {e.message_id for e in seen} == {own.id}
    assert owned.batch_id not in {e.batch_id for e in seen}


async def test_lists_and_page_tokens_stay_within_the_account(gw: Running, owned: Owned) -> None:
    intruder = await gw.client(name="intruder")
    md = intruder.metadata
    mine = await intruder.templates.CreateTemplate(
        t.CreateTemplateRequest(
            template=t.Template(code="owner_note", content="Mine", use_type=NOTE)
        ),
        metadata=md,
    )
    listed = await intruder.templates.ListTemplates(t.ListTemplatesRequest(), metadata=md)
    assert [x.id for x in listed.templates] == [mine.id]
    assert listed.total_size == 1
    # The owner's page token is refused, not read as a position in the owner's list.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await intruder.templates.ListTemplates(
            t.ListTemplatesRequest(page_token=owned.template_page_token), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    own_batch = await intruder.batches.CreateBatch(
        b.CreateBatchRequest(use_type=NOTE, content="Mine", numbers=[CN, "+8613800138001"]),
        metadata=md,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await intruder.batches.ListBatchMessages(
            b.ListBatchMessagesRequest(
                task_id=own_batch.task_id, page_token=owned.batch_page_token
            ),
            metadata=md,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_request_ids_are_per_account(gw: Running, owned: Owned) -> None:
    """The same request_id from another account is a new request, not the owner's."""
    first = await owned.owner.messages.SendMessage(
        m.SendMessageRequest(mobile=CN, use_type=NOTE, text="owner", request_id="shared-key"),
        metadata=owned.owner.metadata,
    )
    for text in ("owner", "intruder"):  # the same content, and other content
        intruder = await gw.client(name="intruder")
        reply = await intruder.messages.SendMessage(
            m.SendMessageRequest(mobile=CN, use_type=NOTE, text=text, request_id="shared-key"),
            metadata=intruder.metadata,
        )
        assert reply.id != first.id


async def test_the_owners_resources_are_unchanged_by_the_intruder(
    gw: Running, owned: Owned
) -> None:
    """Every intruder call above (and these again) left the owner's resources alone."""
    intruder = await gw.client(name="intruder")
    for name in ("CancelBatch", "DeleteTemplate", "CheckVerification wrong code") * 2:
        with pytest.raises(grpc.aio.AioRpcError):
            await CALLS[name](intruder, owned, True)
    with pytest.raises(grpc.aio.AioRpcError):
        await CALLS["CheckVerification right code"](intruder, owned, True)

    owner, md = owned.owner, owned.owner.metadata
    batch = await owner.batches.GetBatch(b.GetBatchRequest(task_id=owned.batch_id), metadata=md)
    assert batch.status == common_pb2.BATCH_STATUS_PENDING
    assert (batch.total, batch.failed) == (2, 0)
    got = await owner.templates.GetTemplate(t.GetTemplateRequest(id=owned.template_id), metadata=md)
    assert got.code == "owner_note"
    status = await owner.messages.GetMessageStatus(
        m.GetMessageStatusRequest(ids=[owned.message_id]), metadata=md
    )
    assert [s.id for s in status.messages] == [owned.message_id]
    # No attempt was used: the first wrong one leaves 2 of 3, and the code still works.
    wrong = await owner.verifications.CheckVerification(
        v.CheckVerificationRequest(verify_id=owned.verify_id, mobile=CN, code="11111111"),
        metadata=md,
    )
    assert (wrong.valid, wrong.remaining_attempts) == (False, 2)
    right = await owner.verifications.CheckVerification(
        v.CheckVerificationRequest(verify_id=owned.verify_id, mobile=CN, code=CODE),
        metadata=md,
    )
    assert right.valid and right.state == common_pb2.VERIFICATION_STATE_VERIFIED
