"""WatchMessageStatus: snapshot, live changes, end on final, resume with after_event_id."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sms.v1 import common_pb2, message_pb2

from tests.e2e.conftest import Client, Running

CN = "+8613800138000"
S = common_pb2


async def send(client: Client, text: str = "hello") -> str:
    reply = await client.messages.SendMessage(
        message_pb2.SendMessageRequest(mobile=CN, use_type=S.USE_TYPE_NOTIFICATION, text=text),
        metadata=client.metadata,
    )
    return reply.id


async def collect(
    client: Client, request: message_pb2.WatchMessageStatusRequest, within: float = 10
):
    events: list[message_pb2.MessageStatusEvent] = []

    async def run() -> None:
        async for event in client.messages.WatchMessageStatus(request, metadata=client.metadata):
            events.append(event)

    await asyncio.wait_for(run(), within)
    return events


async def test_watch_sends_snapshot_then_changes_and_ends_when_final(gw: Running) -> None:
    client = await gw.client()
    ids = [await send(client, f"m{i}") for i in range(3)]
    events = await collect(client, message_pb2.WatchMessageStatusRequest(ids=ids))
    by_message: dict[str, list[int]] = {}
    for event in events:
        by_message.setdefault(event.message_id, []).append(event.status)
        assert event.to_number == CN
        assert event.batch_id == ""
    assert set(by_message) == set(ids)
    for statuses in by_message.values():
        assert statuses[-1] == S.MESSAGE_STATUS_DELIVERED
        assert statuses == sorted(statuses), "status never moves backwards"
    event_ids = [e.event_id for e in events]
    assert len(set(event_ids)) == len(event_ids)
    assert event_ids[len(ids) :] == sorted(event_ids[len(ids) :])


async def test_watch_of_final_messages_sends_their_state_and_ends(gw: Running) -> None:
    client = await gw.client()
    message_id = await send(client)
    first = await collect(client, message_pb2.WatchMessageStatusRequest(ids=[message_id]))
    assert first[-1].status == S.MESSAGE_STATUS_DELIVERED
    again = await collect(client, message_pb2.WatchMessageStatusRequest(ids=[message_id]))
    assert [(e.event_id, e.status) for e in again] == [(first[-1].event_id, first[-1].status)]


async def test_resume_after_event_id_replays_what_was_missed(gw: Running) -> None:
    client = await gw.client()
    message_id = await send(client)
    full = await collect(client, message_pb2.WatchMessageStatusRequest(ids=[message_id]))
    history = await gw.gateway.pool.fetch(
        "SELECT event_id, status FROM message_events WHERE message_id = $1 ORDER BY event_id",
        message_id,
    )
    assert [r["status"] for r in history] == [
        S.MESSAGE_STATUS_PENDING,
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_DELIVERED,
    ]
    assert full[-1].event_id == history[-1]["event_id"]
    resumed = await collect(
        client,
        message_pb2.WatchMessageStatusRequest(
            ids=[message_id], after_event_id=history[0]["event_id"]
        ),
    )
    assert [(e.event_id, e.status) for e in resumed] == [
        (r["event_id"], r["status"]) for r in history[1:]
    ]


async def test_watch_all_streams_new_messages_of_the_account_only(gw: Running) -> None:
    alice, bob = await gw.client(), await gw.client()
    seen: list[message_pb2.MessageStatusEvent] = []
    call = alice.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(), metadata=alice.metadata
    )

    async def read() -> None:
        async for event in call:
            seen.append(event)
            if event.status == S.MESSAGE_STATUS_DELIVERED:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)  # the stream is open before the sends
    await send(bob, "not for alice")
    mine = await send(alice)
    await asyncio.wait_for(reader, 10)
    call.cancel()
    assert {e.message_id for e in seen} == {mine}
    assert [e.status for e in seen] == [
        S.MESSAGE_STATUS_PENDING,
        S.MESSAGE_STATUS_SENT,
        S.MESSAGE_STATUS_DELIVERED,
    ]


async def test_watch_of_unknown_or_foreign_id_is_not_found(gw: Running) -> None:
    alice, bob = await gw.client(), await gw.client()
    theirs = await send(bob)
    for ids in (["does-not-exist"], [theirs]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(alice, message_pb2.WatchMessageStatusRequest(ids=ids))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
