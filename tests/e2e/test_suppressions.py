"""SuppressionService end to end: numbers suppressed in any spelling, refused on every
send path (SendMessage, SendVerification, CreateBatch, and at dispatch for messages
accepted before), and suppressed automatically from SendCloud's SMSHook 410/420/430."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sms.v1 import batch_pb2, common_pb2, message_pb2, suppression_pb2, suppression_pb2_grpc

from server.emulators.common import RunningEmulator
from tests.e2e.batch_calls import create
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state, wait_for
from tests.e2e.errors import bad_fields, reason
from tests.e2e.test_providers import send_template
from tests.e2e.test_sendcloud import tune, with_webhook
from tests.e2e.test_verification import otp
from tests.e2e.test_verification import send as send_code

CN = "+8613800138000"
CN2 = "+8613900139000"
CN3 = "+8613700137000"
NOTE = common_pb2.USE_TYPE_NOTIFICATION
PROMO = common_pb2.USE_TYPE_MARKETING
CODE = common_pb2.USE_TYPE_VERIFICATION
R = suppression_pb2


@pytest.fixture(scope="module")
async def running(start_gateway: GatewayFactory) -> Running:
    # National numbers (no +) are read as Chinese ones; codes without per-mobile waits.
    return await start_gateway(default_region="CN", otp=otp())


def stub(running: Running) -> suppression_pb2_grpc.SuppressionServiceAsyncStub:
    made: suppression_pb2_grpc.SuppressionServiceAsyncStub = (
        suppression_pb2_grpc.SuppressionServiceStub(running.channel)
    )
    return made


async def suppress(
    running: Running, client: Client, *mobiles: str, **fields: object
) -> list[R.Suppression]:
    reply = await stub(running).AddSuppressions(
        R.AddSuppressionsRequest(mobiles=mobiles, **fields),  # type: ignore[arg-type]
        metadata=client.metadata,
    )
    return list(reply.suppressions)


async def get(running: Running, client: Client, mobile: str) -> R.Suppression:
    return await stub(running).GetSuppression(
        R.GetSuppressionRequest(mobile=mobile), metadata=client.metadata
    )


async def send_text(client: Client, mobile: str, use_type: int = NOTE, **fields: object) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=mobile,
            use_type=use_type,  # type: ignore[arg-type]
            text="Your parcel is on its way",
            **fields,  # type: ignore[arg-type]
        ),
        metadata=client.metadata,
    )
    return reply.id


async def stored_messages(running: Running, account_id: int) -> int:
    count: int = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", account_id
    )
    return count


async def test_a_number_in_any_spelling_is_stored_once_in_e164_and_can_be_listed_and_removed(
    running: Running,
) -> None:
    client = await running.client()
    added = await suppress(
        running,
        client,
        "+86 138-0013-8000",  # E.164 with spaces and dashes
        "139 0013 9000",  # national, read in SMSGW_DEFAULT_REGION (CN)
        "0086 (137) 0013.7000",  # the 00 international prefix
        "+8613800138000",  # the first one again
    )
    assert [s.mobile for s in added] == ["+8613800138000", "+8613900139000", "+8613700137000"]
    assert all(s.reason == R.SUPPRESSION_REASON_MANUAL for s in added)
    # None given: notification and marketing, not verification.
    assert all(list(s.use_types) == [NOTE, PROMO] for s in added)
    assert all(s.create_time.seconds > 0 for s in added)

    found = await get(running, client, "13800138000")
    assert (found.mobile, found.reason) == (CN, R.SUPPRESSION_REASON_MANUAL)

    # Paged by number, as the other lists are.
    await suppress(running, client, "+8613600136000", "+8613500135000")
    seen: list[str] = []
    token = ""
    while True:
        page = await stub(running).ListSuppressions(
            R.ListSuppressionsRequest(page_size=2, page_token=token), metadata=client.metadata
        )
        assert len(page.suppressions) <= 2
        seen += [s.mobile for s in page.suppressions]
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(
        ["+8613500135000", "+8613600136000", "+8613700137000", CN, "+8613900139000"]
    )

    await stub(running).RemoveSuppression(
        R.RemoveSuppressionRequest(mobile="+86 139 0013 9000"), metadata=client.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await get(running, client, CN2)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason(gone.value) == "SUPPRESSION_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub(running).RemoveSuppression(
            R.RemoveSuppressionRequest(mobile=CN2), metadata=client.metadata
        )
    assert again.value.code() == grpc.StatusCode.NOT_FOUND

    # Another account sees none of it, and can send to these numbers.
    other = await running.client()
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await get(running, other, CN)
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    assert await send_text(other, CN)


async def test_malformed_numbers_are_each_named_and_nothing_is_stored(running: Running) -> None:
    client = await running.client()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await suppress(running, client, CN, "+86 12", CN2, "call me", "+8613700137000")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == {"mobiles[1]", "mobiles[3]"}
    listing = await stub(running).ListSuppressions(
        R.ListSuppressionsRequest(), metadata=client.metadata
    )
    assert list(listing.suppressions) == []
    # The numbers that were fine can still be sent to: nothing was half-stored.
    assert await send_text(client, CN)

    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await suppress(running, client)
    assert bad_fields(empty.value) == {"mobiles"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_type:
        await suppress(running, client, CN, use_types=[7])
    assert bad_fields(bad_type.value) == {"use_types"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_get:
        await get(running, client, "not a number")
    assert bad_fields(bad_get.value) == {"mobile"}


async def test_single_sends_to_a_suppressed_number_are_refused_and_codes_only_when_listed(
    running: Running,
) -> None:
    client = await running.client()
    await suppress(running, client, "+86 138 0013 8000")
    before = await stored_messages(running, client.account_id)
    for use_type in (NOTE, PROMO):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send_text(client, CN, use_type)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(refused.value) == "RECIPIENT_SUPPRESSED"
    # With a request_id (the transactional path) too; a retry answers the same.
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as keyed:
            await send_text(client, CN, NOTE, request_id="order-7")
        assert reason(keyed.value) == "RECIPIENT_SUPPRESSED"
    assert await stored_messages(running, client.account_id) == before

    # Verification codes are exempt unless USE_TYPE_VERIFICATION is listed.
    assert (await send_code(client, CN)).verify_id
    await suppress(running, client, CN, use_types=[CODE])
    assert list((await get(running, client, CN)).use_types) == [CODE, NOTE, PROMO]
    with pytest.raises(grpc.aio.AioRpcError) as code_refused:
        await send_code(client, CN)
    assert code_refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(code_refused.value) == "RECIPIENT_SUPPRESSED"

    # A number suppressed for marketing only still gets notifications.
    await suppress(running, client, CN2, use_types=[PROMO])
    assert await send_text(client, CN2, NOTE)
    with pytest.raises(grpc.aio.AioRpcError) as promo:
        await send_text(client, CN2, PROMO)
    assert reason(promo.value) == "RECIPIENT_SUPPRESSED"


async def test_a_batch_rejects_its_suppressed_numbers_and_sends_the_rest(
    running: Running,
) -> None:
    client = await running.client()
    await suppress(running, client, "138-0013-8000")
    reply = await create(client, content="Sale starts today", numbers=[CN, CN2, CN3])
    assert reply.accepted_count == 2
    assert [(r.number, r.reason.split(":")[0]) for r in reply.rejected] == [
        (CN, "RECIPIENT_SUPPRESSED")
    ]
    sent = await client.batches.GetBatch(
        batch_pb2.GetBatchRequest(task_id=reply.task_id), metadata=client.metadata
    )
    assert sent.total == 2

    # Only suppressed numbers: nothing accepted, the batch failed, nothing to send.
    only = await create(client, content="Sale", numbers=[CN])
    assert only.accepted_count == 0
    assert only.status == common_pb2.BATCH_STATUS_FAILED
    # Verification batches are not held back by a default suppression.
    codes = await create(client, content="Code 1234", numbers=[CN], use_type=CODE)
    assert codes.accepted_count == 1


async def test_a_message_accepted_before_its_number_was_suppressed_ends_rejected(
    running: Running,
) -> None:
    client = await running.client()
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(seconds=1.5))
    message_id = await send_text(client, CN3, send_at=later)
    await suppress(running, client, CN3)
    state = await final_state(client, message_id)
    assert (state.status, state.error_code) == (
        common_pb2.MESSAGE_STATUS_REJECTED,
        "SUPPRESSED",
    )


@pytest.mark.parametrize(
    ("code", "why"),
    [
        (430, R.SUPPRESSION_REASON_PROVIDER_UNSUBSCRIBED),
        (410, R.SUPPRESSION_REASON_PROVIDER_BLOCKED),
        (420, R.SUPPRESSION_REASON_PROVIDER_BLOCKED),
    ],
)
async def test_sendcloud_unsubscribed_and_blocked_receipts_suppress_the_number(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator], code: int, why: int
) -> None:
    gw, emulator = await with_webhook(start_gateway, emulators, delivery_delay=0.1)
    client = await gw.client()
    await tune(emulator, intercepted={"13800138000": code})
    # SendCloud carries templates only; this one goes to CN.
    state = await final_state(client, await send_template(client))
    assert (state.status, state.error_code) == (common_pb2.MESSAGE_STATUS_REJECTED, str(code))

    async def suppressed() -> bool:
        try:
            found = await get(gw, client, CN)
        except grpc.aio.AioRpcError:
            return False
        return found.reason == why and list(found.use_types) == [NOTE, PROMO]

    await wait_for(suppressed)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send_template(client)
    assert reason(refused.value) == "RECIPIENT_SUPPRESSED"
    # Another number of the same account is not touched.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await get(gw, client, CN2)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
