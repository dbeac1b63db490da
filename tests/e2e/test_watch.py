"""WatchMessageStatus: snapshot, live changes, end on final, resume with after_event_id."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest
from sms.v1 import common_pb2, message_pb2

from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.conftest import Client, GatewayFactory, Running, final_state
from tests.e2e.errors import reason

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
) -> list[message_pb2.MessageStatusEvent]:
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


async def watch_until(
    client: Client, request: message_pb2.WatchMessageStatusRequest, last_id: str
) -> list[message_pb2.MessageStatusEvent]:
    """An account-wide stream read until ``last_id`` is DELIVERED (sent meanwhile)."""
    seen: list[message_pb2.MessageStatusEvent] = []
    call = client.messages.WatchMessageStatus(request, metadata=client.metadata)

    async def read() -> None:
        async for event in call:
            seen.append(event)
            if event.message_id == last_id and event.status == S.MESSAGE_STATUS_DELIVERED:
                return

    try:
        await asyncio.wait_for(read(), 10)
    finally:
        call.cancel()
    return seen


async def test_account_wide_watch_from_zero_replays_nothing(gw: Running) -> None:
    client = await gw.client()
    old = await send(client, "before the stream")
    await final_state(client, old)
    seen: list[message_pb2.MessageStatusEvent] = []
    call = client.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(after_event_id=0), metadata=client.metadata
    )

    async def read() -> None:
        async for event in call:
            seen.append(event)
            if event.status == S.MESSAGE_STATUS_DELIVERED:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)  # the stream is open before the send
    new = await send(client, "after")
    await asyncio.wait_for(reader, 10)
    call.cancel()
    assert {e.message_id for e in seen} == {new}, "the old message's history was replayed"


async def test_account_wide_resume_replays_after_the_cursor(gw: Running) -> None:
    client = await gw.client()
    first = await send(client, "one")
    await final_state(client, first)
    history = await gw.gateway.pool.fetch(
        "SELECT event_id FROM message_events WHERE message_id = $1 ORDER BY event_id", first
    )
    later = await send(client, "two")
    seen = await watch_until(
        client,
        message_pb2.WatchMessageStatusRequest(after_event_id=history[0]["event_id"]),
        later,
    )
    replayed = [e.event_id for e in seen if e.message_id == first]
    assert replayed == [r["event_id"] for r in history[1:]]


async def test_a_replay_longer_than_the_limit_is_refused(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(max_replay_events=4)
    client = await running.client()
    ids = [await send(client, f"m{i}") for i in range(2)]
    for message_id in ids:
        await final_state(client, message_id)
    events = await running.gateway.pool.fetch(
        "SELECT event_id, message_id FROM message_events WHERE account_id = $1 ORDER BY event_id",
        client.account_id,
    )
    assert len(events) == 6  # PENDING, SENT, DELIVERED twice
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(
            client, message_pb2.WatchMessageStatusRequest(after_event_id=events[0]["event_id"])
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "REPLAY_TOO_LONG"
    # With ids the bound counts only those messages' events: 2 after the first.
    resumed = await collect(
        client,
        message_pb2.WatchMessageStatusRequest(ids=ids[:1], after_event_id=events[0]["event_id"]),
    )
    assert [e.status for e in resumed] == [S.MESSAGE_STATUS_SENT, S.MESSAGE_STATUS_DELIVERED]
    # Four events are within the limit (the last is a DELIVERED: of whichever message
    # the provider answered last).
    seen = await watch_until(
        client,
        message_pb2.WatchMessageStatusRequest(after_event_id=events[1]["event_id"]),
        events[-1]["message_id"],
    )
    assert [e.event_id for e in seen] == [e["event_id"] for e in events[2:]]


async def test_revoking_a_credential_ends_its_open_streams(gw: Running) -> None:
    client = await gw.client()
    store = PgAccountStore(gw.gateway.pool)
    other, other_secret = await store.create_credential(client.account_id)
    call = client.messages.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(), metadata=client.metadata
    )
    seen: list[message_pb2.MessageStatusEvent] = []

    async def read() -> None:
        async for event in call:
            seen.append(event)

    reader = asyncio.create_task(read())
    await asyncio.sleep(1.5)  # open for more than one credential check
    assert not reader.done()
    assert await store.revoke_credential(client.api_key)
    revoked = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(reader, 5)
    ended_after = time.monotonic() - revoked
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(caught.value) == "CREDENTIAL_REVOKED"
    assert ended_after < 2.0, f"the stream lived {ended_after:.2f} s after the revocation"
    # Sent with the account's other credential: nothing reaches the revoked stream.
    await send(dataclasses.replace(client, metadata=basic_auth(other.api_key, other_secret)))
    await asyncio.sleep(0.5)
    assert seen == []
