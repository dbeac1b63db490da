"""Marketing quiet hours end to end: held in the recipient's night, sent when the
window opens; other use types and other countries are not held."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sms.v1 import common_pb2, message_pb2

from server.domain.quiet_hours import QuietHours
from server.store.accounts import PgAccountStore
from tests.e2e.batch_calls import create, final
from tests.e2e.conftest import Client, Running, final_state

S = common_pb2
SHANGHAI = ZoneInfo("Asia/Shanghai")


async def send(client: Client, mobile: str, use_type: common_pb2.UseType.ValueType) -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=mobile, text="Spring sale!", use_type=use_type),
        metadata=client.metadata,
    )
    return reply.id


async def status(client: Client, message_id: str) -> int:
    reply = await client.messages.GetMessageStatus(
        message_pb2.GetMessageStatusRequest(ids=[message_id]), metadata=client.metadata
    )
    return reply.messages[0].status


async def test_marketing_waits_for_the_recipients_quiet_hours_to_end(gw: Running) -> None:
    client = await gw.client()
    # A window in Shanghai's local time that began an hour ago and closes in 4 s.
    now = datetime.now(UTC)
    opens = now + timedelta(seconds=4)
    start = (now - timedelta(hours=1)).astimezone(SHANGHAI).time().replace(microsecond=0)
    end = opens.astimezone(SHANGHAI).time().replace(microsecond=0)
    opens = opens.replace(microsecond=0)
    hours = QuietHours.parse([f"CN={start:%H:%M:%S}-{end:%H:%M:%S}"])
    await PgAccountStore(gw.gateway.pool).set_quiet_hours(client.account_id, hours)

    held = await send(client, "+8613800138000", S.USE_TYPE_MARKETING)
    batch = await create(
        client,
        use_type=S.USE_TYPE_MARKETING,
        content="Spring sale!",
        numbers=["+8613800138001", "+8613800138002", "+14155550123"],
    )
    notice = await send(client, "+8613800138003", S.USE_TYPE_NOTIFICATION)
    abroad = await send(client, "+14155550124", S.USE_TYPE_MARKETING)

    # Not held: another use type, and a country without a window.
    assert (await final_state(client, notice)).status == S.MESSAGE_STATUS_DELIVERED
    assert (await final_state(client, abroad)).status == S.MESSAGE_STATUS_DELIVERED
    if datetime.now(UTC) < opens:
        assert await status(client, held) == S.MESSAGE_STATUS_PENDING

    assert (await final_state(client, held, within=30)).status == S.MESSAGE_STATUS_DELIVERED
    done = await final(client, batch.task_id, within=30)
    assert done.delivered == 3
    sent = await gw.gateway.pool.fetch(
        "SELECT to_number, sent_at FROM messages WHERE batch_id = $1 OR id = $2",
        batch.task_id,
        held,
    )
    by_number = {r["to_number"]: r["sent_at"] for r in sent}
    for number in ("+8613800138000", "+8613800138001", "+8613800138002"):
        assert by_number[number] >= opens, number
    assert by_number["+14155550123"] < opens
