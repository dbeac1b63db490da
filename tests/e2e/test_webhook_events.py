"""Webhooks for batch status changes and verification outcomes, to real aiohttp
receivers started by the test; every delivery's signature is checked with the
independent Standard Webhooks implementation of test_webhooks.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from sms.v1 import batch_pb2, common_pb2, verification_pb2, webhook_pb2

from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from tests.e2e import batch_calls
from tests.e2e.conftest import Client, GatewayFactory, Running, wait_for
from tests.e2e.errors import bad_fields, details
from tests.e2e.test_webhooks import Receiver, hooks, verify

S = common_pb2
W = webhook_pb2
CN = "+8613800138000"
TAGS = {"campaign": "spring", "team": "growth"}


# Codes to one mobile back to back, with no pumping guard in the way.
OTP = OtpSettings(mobile_interval_seconds=0.0, guard=GuardSettings(prefix_limit=0, country_limit=0))


@pytest.fixture(scope="module")
async def insecure(start_gateway: GatewayFactory) -> Running:
    return await start_gateway(
        webhook_allow_insecure=True, webhook_retry_base_seconds=0.05, otp=OTP
    )


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    runners: list[web.AppRunner] = []

    async def start(statuses: list[int]) -> Receiver:
        receiver = Receiver(statuses)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        return receiver

    for _ in range(2):
        made.append(await start([200]))
    yield made
    for runner in runners:
        await runner.cleanup()


async def subscribe(
    running: Running, client: Client, url: str, *types: W.EventType.ValueType
) -> W.Webhook:
    return await hooks(running).CreateWebhook(
        W.CreateWebhookRequest(url=url, event_types=list(types)), metadata=client.metadata
    )


def signed(hook: W.Webhook, receiver: Receiver) -> list[dict[str, Any]]:
    """The accepted events, each checked against its signature."""
    for headers, body, _ in receiver.requests:
        assert verify(hook.secret, headers, body)
    return receiver.accepted()


def violation(err: grpc.aio.AioRpcError, field: str) -> str:
    for item in details(err).details:
        if item.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            item.Unpack(request)
            for v in request.field_violations:
                if v.field == field:
                    return str(v.description)
    raise AssertionError(f"no violation of {field}")


async def received(receiver: Receiver, n: int, within: float = 20) -> None:
    async def enough() -> bool:
        return len(receiver.accepted()) >= n

    await wait_for(enough, within=within)


async def test_a_batchs_status_changes_arrive_signed_in_order_and_nothing_else(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    batch_only, messages_only = receivers
    batch_hook = await subscribe(insecure, client, batch_only.url, W.EVENT_TYPE_BATCH_STATUS)
    await subscribe(insecure, client, messages_only.url, W.EVENT_TYPE_MESSAGE_STATUS)
    created = await batch_calls.create(
        client,
        content="Spring sale",
        numbers=batch_calls.numbers(3),
        reference="campaign-7",
        metadata=TAGS,
    )
    final = await batch_calls.final(client, created.task_id)
    assert final.status == S.BATCH_STATUS_SUCCEEDED
    logged = await insecure.gateway.pool.fetch(
        "SELECT event_id, status FROM account_events WHERE subject_id = $1 ORDER BY event_id",
        created.task_id,
    )
    want = [(str(r["event_id"]), r["status"]) for r in logged]
    # Stored in the transactions that changed it: created, sending, done.
    assert [s for _, s in want] == [
        S.BATCH_STATUS_PENDING,
        S.BATCH_STATUS_EXECUTING,
        S.BATCH_STATUS_SUCCEEDED,
    ]
    await received(batch_only, len(want))
    # The other endpoint has had every message event of the batch meanwhile, so the
    # batch-only endpoint would have had them too were it sent them.
    message_events = await insecure.gateway.pool.fetchval(
        "SELECT count(*) FROM message_events WHERE batch_id = $1", created.task_id
    )
    await received(messages_only, message_events)
    events = signed(batch_hook, batch_only)
    assert [(e["id"], S.BatchStatus.Value(e["batchStatus"]["status"])) for e in events] == want
    assert all(e["type"] == "EVENT_TYPE_BATCH_STATUS" and "messageStatus" not in e for e in events)
    for event in events:
        payload = event["batchStatus"]
        assert payload["taskId"] == created.task_id
        assert (payload["reference"], payload["metadata"]) == ("campaign-7", TAGS)
        assert payload["total"] == 3
        assert event["occurredAt"] == payload["occurredAt"]
    assert (events[-1]["batchStatus"].get("sent"), events[-1]["batchStatus"].get("delivered")) == (
        3,
        3,
    )
    # The messages of the batch carry the batch's reference in their own events...
    for event in messages_only.accepted():
        status = event["messageStatus"]
        assert (status["batchId"], status["reference"], status["metadata"]) == (
            created.task_id,
            "campaign-7",
            TAGS,
        )
    # ...and in the batch's answers.
    assert (final.reference, dict(final.metadata)) == ("campaign-7", TAGS)
    page = await client.batches.ListBatchMessages(
        batch_pb2.ListBatchMessagesRequest(task_id=created.task_id), metadata=client.metadata
    )
    assert len(page.messages) == 3
    assert all((m.reference, dict(m.metadata)) == ("campaign-7", TAGS) for m in page.messages)
    deliveries = await hooks(insecure).ListWebhookDeliveries(
        W.ListWebhookDeliveriesRequest(webhook_id=batch_hook.id), metadata=client.metadata
    )
    assert {d.event_type for d in deliveries.deliveries} == {W.EVENT_TYPE_BATCH_STATUS}
    assert len(deliveries.deliveries) == len(want)

    # A redelivery sends the batch events again, and only those.
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(final.created_at.ToDatetime() - timedelta(minutes=1))
    end.GetCurrentTime()
    end.seconds += 60
    again = await hooks(insecure).RedeliverWebhookEvents(
        W.RedeliverWebhookEventsRequest(webhook_id=batch_hook.id, start_time=start, end_time=end),
        metadata=client.metadata,
    )
    assert again.count == len(want)
    await received(batch_only, 2 * len(want))
    assert [e["id"] for e in signed(batch_hook, batch_only)] == [i for i, _ in want] * 2


async def test_a_cancelled_batch_reports_its_cancellation(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    receiver = receivers[0]
    hook = await subscribe(insecure, client, receiver.url, W.EVENT_TYPE_BATCH_STATUS)
    later = timestamp_pb2.Timestamp()
    later.GetCurrentTime()
    later.seconds += 3600
    created = await batch_calls.create(
        client, content="Later", numbers=batch_calls.numbers(2), send_at=later
    )
    await client.batches.CancelBatch(
        batch_pb2.CancelBatchRequest(task_id=created.task_id), metadata=client.metadata
    )
    await received(receiver, 2)
    events = signed(hook, receiver)
    assert [e["batchStatus"]["status"] for e in events] == [
        "BATCH_STATUS_PENDING",
        "BATCH_STATUS_CANCELLED",
    ]
    assert {e["batchStatus"]["taskId"] for e in events} == {created.task_id}
    # An empty reference and metadata are left out of proto3 JSON.
    assert "reference" not in events[0]["batchStatus"]


async def test_verification_outcomes_arrive_without_the_code(
    insecure: Running, receivers: list[Receiver]
) -> None:
    client = await insecure.client()
    receiver, messages_only = receivers
    hook = await subscribe(insecure, client, receiver.url, W.EVENT_TYPE_VERIFICATION)
    await subscribe(insecure, client, messages_only.url, W.EVENT_TYPE_MESSAGE_STATUS)

    async def send(code: str) -> verification_pb2.SendVerificationResponse:
        return await client.verifications.SendVerification(
            verification_pb2.SendVerificationRequest(
                mobile=CN, code=code, scene="login", reference="signup-9", metadata={"user": "u9"}
            ),
            metadata=client.metadata,
        )

    async def check(verify_id: str, code: str) -> verification_pb2.CheckVerificationResponse:
        return await client.verifications.CheckVerification(
            verification_pb2.CheckVerificationRequest(verify_id=verify_id, mobile=CN, code=code),
            metadata=client.metadata,
        )

    verified = await send("482913")
    assert not (await check(verified.verify_id, "111111")).valid  # an attempt, no outcome
    assert (await check(verified.verify_id, "482913")).valid
    exhausted = await send("739164")
    for _ in range(3):
        assert not (await check(exhausted.verify_id, "000000")).valid
    expired = await send("905172")
    await insecure.gateway.pool.execute(
        "UPDATE verifications SET expires_at = now() - interval '1 second' WHERE id = $1",
        expired.verify_id,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await check(expired.verify_id, "905172")

    await received(receiver, 3)
    events = signed(hook, receiver)
    assert [(e["verification"]["verifyId"], e["verification"]["state"]) for e in events] == [
        (verified.verify_id, "VERIFICATION_STATE_VERIFIED"),
        (exhausted.verify_id, "VERIFICATION_STATE_EXHAUSTED"),
        (expired.verify_id, "VERIFICATION_STATE_EXPIRED"),
    ]
    sent = {
        verified.verify_id: verified,
        exhausted.verify_id: exhausted,
        expired.verify_id: expired,
    }
    for event in events:
        payload = event["verification"]
        assert event["type"] == "EVENT_TYPE_VERIFICATION"
        assert payload["messageId"] == sent[payload["verifyId"]].message_id
        assert (payload["mobile"], payload["scene"]) == (CN, "login")
        assert (payload["reference"], payload["metadata"]) == ("signup-9", {"user": "u9"})
    # No code, right or wrong, is in any body.
    for _, body, _ in receiver.requests:
        for code in ("482913", "111111", "739164", "000000", "905172"):
            assert code.encode() not in body
    # The codes' messages' events went to the message-status endpoint only.
    code_messages = {v.message_id for v in sent.values()}

    async def codes_delivered() -> bool:
        return code_messages <= {
            e["messageStatus"]["messageId"]
            for e in messages_only.accepted()
            if e["messageStatus"]["status"] == "MESSAGE_STATUS_DELIVERED"
        }

    await wait_for(codes_delivered, within=20)
    assert len(receiver.requests) == 3
    assert all("verification" in e for e in receiver.accepted())


async def test_the_expiry_sweep_reports_expired_verifications(
    insecure: Running, receivers: list[Receiver]
) -> None:
    running = insecure
    client = await running.client()
    receiver = receivers[0]
    hook = await subscribe(running, client, receiver.url, W.EVENT_TYPE_VERIFICATION)
    sent = await client.verifications.SendVerification(
        verification_pb2.SendVerificationRequest(mobile=CN, code="4711"), metadata=client.metadata
    )
    await running.gateway.pool.execute(
        "UPDATE verifications SET expires_at = now() - interval '1 second' WHERE id = $1",
        sent.verify_id,
    )
    # The sweep maintenance runs every 30 s, run now.
    pool = running.gateway.pool
    assert await PgVerificationStore(pool, PgVelocityCounters(pool)).expire_pending() >= 1
    await received(receiver, 1)
    (event,) = signed(hook, receiver)
    assert event["verification"]["verifyId"] == sent.verify_id
    assert event["verification"]["state"] == "VERIFICATION_STATE_EXPIRED"


@pytest.mark.parametrize(
    ("refused", "name"),
    [
        (W.EVENT_TYPE_UNSPECIFIED, "EVENT_TYPE_UNSPECIFIED"),
        (W.EventType.ValueType(99), "99"),
    ],
)
async def test_event_types_without_a_source_are_refused_by_name(
    insecure: Running, refused: W.EventType.ValueType, name: str
) -> None:
    client = await insecure.client()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await subscribe(
            insecure, client, "http://127.0.0.1:9/hook", W.EVENT_TYPE_BATCH_STATUS, refused
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == {"event_types"}
    assert violation(err.value, "event_types").startswith(f"not available yet: {name};")
    accepted = await subscribe(
        insecure,
        client,
        "http://127.0.0.1:9/hook",
        W.EVENT_TYPE_BATCH_STATUS,
        W.EVENT_TYPE_VERIFICATION,
    )
    assert list(accepted.event_types) == [W.EVENT_TYPE_BATCH_STATUS, W.EVENT_TYPE_VERIFICATION]
