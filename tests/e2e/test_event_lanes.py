"""The event log is ordered per account (store/events.py): one account's status changes
never wait for another's, and a stream misses nothing when one account's event, drawn
first, commits after another account's later ones."""

from __future__ import annotations

import asyncio
import contextlib

from sms.v1 import common_pb2, message_pb2

from server.store.events import EVENT_LANES, lock_account_lanes
from server.store.messages import insert_messages
from tests.e2e.conftest import Client, Running, final_state, wait_for
from tests.e2e.test_watch import send
from tests.integration.builders import new_message

S = common_pb2


async def two_accounts(gw: Running) -> tuple[Client, Client]:
    a, b = await gw.client(name="a"), await gw.client(name="b")
    assert a.account_id % EVENT_LANES != b.account_id % EVENT_LANES  # consecutive ids
    return a, b


async def test_a_held_lane_does_not_hold_another_accounts_sends(gw: Running) -> None:
    a, b = await two_accounts(gw)
    async with gw.gateway.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            # A long transaction of account a's (a campaign's status changes).
            await lock_account_lanes(conn, [a.account_id])
            held = asyncio.create_task(send(a, "waits for its lane"))
            # b's send is answered while a's lane is held...
            message_id = await asyncio.wait_for(send(b, "not held"), 5)
            assert (await final_state(b, message_id)).status == S.MESSAGE_STATUS_DELIVERED
            # ...and a's own waits for it.
            assert not held.done()
        finally:
            await transaction.rollback()
        assert (await final_state(a, await asyncio.wait_for(held, 5))).status >= (
            S.MESSAGE_STATUS_DELIVERED
        )


async def test_an_event_committed_after_other_accounts_later_ones_is_streamed(
    gw: Running,
) -> None:
    a, b = await two_accounts(gw)
    cursors = {}
    for client in (a, b):
        await final_state(client, await send(client, "before the streams"))
        cursors[client.account_id] = await gw.gateway.pool.fetchval(
            "SELECT max(event_id) FROM message_events WHERE account_id = $1", client.account_id
        )
    seen: dict[int, list[message_pb2.MessageStatusEvent]] = {a.account_id: [], b.account_id: []}

    async def watch(client: Client) -> None:
        request = message_pb2.WatchMessageStatusRequest(after_event_id=cursors[client.account_id])
        async for event in client.messages.WatchMessageStatus(request, metadata=client.metadata):
            seen[client.account_id].append(event)

    streams = [asyncio.create_task(watch(c)) for c in (a, b)]
    try:
        late = new_message(b.account_id)
        async with gw.gateway.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            # b's message and its PENDING event: an id drawn now, committed below.
            await insert_messages(conn, [late])
            late_event = await conn.fetchval(
                "SELECT event_id FROM message_events WHERE message_id = $1", late.id
            )
            # Meanwhile a's message is stored, sent and delivered: later ids, committed.
            delivered = await send(a, "after b's event id")

            async def a_delivered() -> bool:
                return any(
                    e.message_id == delivered and e.status == S.MESSAGE_STATUS_DELIVERED
                    for e in seen[a.account_id]
                )

            await wait_for(a_delivered)
            assert min(e.event_id for e in seen[a.account_id]) > late_event
            await transaction.commit()

        async def b_delivered() -> bool:
            return [e.status for e in seen[b.account_id] if e.message_id == late.id] == [
                S.MESSAGE_STATUS_PENDING,
                S.MESSAGE_STATUS_SENT,
                S.MESSAGE_STATUS_DELIVERED,
            ]

        await wait_for(b_delivered)
        assert seen[b.account_id][0].event_id == late_event
    finally:
        for stream in streams:
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream
