"""Both providers fail half of their requests, in every way an HTTP API can fail, and
still every message is delivered, once; a provider that goes down is cut off by its
breaker and taken back when it recovers.

The gateway talks real HTTP to two Skynoo emulators. Each answers half of its API
calls (sends and status polls) with a fault; the fault changes every few tenths of a
second between a 500, a hang past the client's timeout, a truncated 200, an HTML 502
and a dropped connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from sms.v1 import common_pb2, message_pb2

from server.emulators.common import FAULTS, RunningEmulator
from tests.e2e.conftest import Client, GatewayFactory, Running, wait_for
from tests.e2e.emulated import failover, only, sky, start_skynoo

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CN = "+8613800138000"
MESSAGES = 150
CONCURRENCY = 10
FAULT_PERIOD = 0.3  # seconds each kind of fault lasts
DELIVERED = common_pb2.MESSAGE_STATUS_DELIVERED


@contextlib.asynccontextmanager
async def rotating_faults(emulators: list[RunningEmulator]) -> AsyncIterator[list[str]]:
    """Cycles every emulator through every kind of fault while the block runs."""
    seen: list[str] = []

    async def rotate() -> None:
        for fault in itertools.cycle(FAULTS):
            for emulator in emulators:
                emulator.state.settings.controls.fault = fault
            seen.append(fault)
            await asyncio.sleep(FAULT_PERIOD)

    task = asyncio.create_task(rotate())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send_all(client: Client, texts: list[str], send_at: float | None = None) -> list[str]:
    """Sends each text once (CONCURRENCY at a time), at ``send_at`` (epoch seconds) if
    given; returns the message ids in order."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(text: str) -> str:
        request = message_pb2.SendMessageRequest(
            mobile=CN, use_type=common_pb2.USE_TYPE_NOTIFICATION, text=text
        )
        if send_at is not None:
            request.send_at.FromNanoseconds(int(send_at * 1e9))
        async with gate:
            reply = await client.messages.SendMessage(
                request,
                metadata=client.metadata,
                timeout=10,
            )
            return reply.id

    return list(await asyncio.gather(*(one(t) for t in texts)))


async def states(client: Client, ids: list[str]) -> list[message_pb2.MessageState]:
    found: list[message_pb2.MessageState] = []
    for start in range(0, len(ids), 100):
        reply = await client.messages.GetMessageStatus(
            message_pb2.GetMessageStatusRequest(ids=ids[start : start + 100]),
            metadata=client.metadata,
        )
        found.extend(reply.messages)
    return found


async def all_delivered(client: Client, ids: list[str], within: float) -> None:
    async def done() -> bool:
        return all(s.status >= DELIVERED for s in await states(client, ids))

    await wait_for(done, within=within, interval=0.5)


def texts_received(*emulators: RunningEmulator) -> collections.Counter[str]:
    return collections.Counter(r.content for e in emulators for r in e.state.received)


async def watch_breakers(running: Running, seen: dict[str, set[str]]) -> None:
    while True:
        for name, state in running.gateway.providers().breaker_states().items():
            seen[name].add(state)
        await asyncio.sleep(0.01)


async def test_half_the_requests_failing_every_way_still_delivers_everything_once(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    faults = {"fail_rate": 0.5, "timeout_seconds": 2.0, "delivery_delay": 0.1}
    first = await start_skynoo(emulators, **faults)
    second = await start_skynoo(emulators, **faults)
    routing = failover(sky(first, "first"), sky(second, "second"))
    running = await start_gateway(
        routing=routing,
        retries_per_provider=1,
        max_attempts=40,
        retry_base_seconds=0.02,
        breaker_failures=4,
        # Half failing sits right at the default threshold (0.5), where opening is a
        # coin toss; below it, half failing opens the breakers for sure.
        breaker_failure_rate=0.3,
        breaker_reset_seconds=0.3,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    breakers: dict[str, set[str]] = collections.defaultdict(set)
    watcher = asyncio.create_task(watch_breakers(running, breakers))
    texts = [f"Order {i} has shipped." for i in range(MESSAGES)]
    try:
        async with rotating_faults([first, second]) as kinds:
            ids = await send_all(client, texts)
            await all_delivered(client, ids, within=150)
    finally:
        watcher.cancel()

    assert set(FAULTS) <= set(kinds), "every kind of fault was in play"
    final = await states(client, ids)
    assert [s.status for s in final] == [DELIVERED] * MESSAGES
    assert {s.provider for s in final} == {"first", "second"}
    # Faults happen before the emulator takes a message, so none may arrive twice.
    received = texts_received(first, second)
    assert sorted(received) == sorted(texts)
    assert max(received.values()) == 1
    retried = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE id = ANY($1::text[]) AND attempts > 1", ids
    )
    assert retried > MESSAGES // 4, "half the sends failed, so many messages were retried"
    assert "open" in breakers["first"] | breakers["second"]


async def test_a_provider_that_goes_down_is_cut_off_and_taken_back(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    flaky = await start_skynoo(emulators, delivery_delay=0.1)
    steady = await start_skynoo(emulators, delivery_delay=0.1)
    routing = failover(sky(flaky, "flaky"), sky(steady, "steady"))
    running = await start_gateway(
        routing=routing,
        retries_per_provider=1,
        breaker_failures=3,
        breaker_reset_seconds=1.0,
        retry_base_seconds=0.02,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    breaker = running.gateway.providers().breaker_states

    # Down: every request fails; after three failures the breaker opens and the other
    # provider carries everything without the down one being asked.
    flaky.state.settings.controls.fail_rate = 1.0
    down = await send_all(client, [f"During the outage {i}." for i in range(20)])
    await all_delivered(client, down, within=30)
    assert breaker()["flaky"] == "open"
    assert {s.provider for s in await states(client, down)} == {"steady"}
    assert texts_received(flaky) == collections.Counter()

    # Back: after the reset time one probe goes through and closes the breaker; the
    # recovered provider takes its share again.
    flaky.state.settings.controls.fail_rate = 0.0
    await asyncio.sleep(1.1)
    back = await send_all(client, [f"After the outage {i}." for i in range(20)])
    await all_delivered(client, back, within=30)
    assert breaker()["flaky"] == "closed"
    assert "flaky" in {s.provider for s in await states(client, back)}


async def test_waiting_on_open_breakers_uses_up_no_attempts(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    down = await start_skynoo(emulators, fail_rate=1.0, delivery_delay=0.1)
    running = await start_gateway(
        routing=only(sky(down, "only")),
        breaker_failures=1,
        breaker_reset_seconds=1.5,
        max_attempts=2,
        retry_base_seconds=0.01,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    [message_id] = await send_all(client, ["Sent while the only provider is down."])
    # The first attempt fails and opens the breaker; while it is open the message is
    # not tried, so it still has its second attempt when the provider is back.
    await wait_for(lambda: _breaker_open(running), within=10)
    down.state.settings.controls.fail_rate = 0.0
    await all_delivered(client, [message_id], within=15)
    attempts = await running.gateway.pool.fetchval(
        "SELECT attempts FROM messages WHERE id = $1", message_id
    )
    assert attempts == 2  # one failed, one delivered; none spent waiting


async def _breaker_open(running: Running) -> bool:
    return running.gateway.providers().breaker_states()["only"] == "open"


async def test_a_slow_provider_rate_never_outlasts_the_lease(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # 24 messages at 4 a second take 6 s, two leases: a worker must not go on
    # sending what another worker may have claimed since. The lease leaves a quarter
    # of itself (here 0.75 s) to record what was sent; a stall longer than that lets
    # the other worker take the messages (leases are 30 s in life). With a 2 s lease
    # (0.5 s to record) one run on a loaded CI machine sent a message twice.
    emulator = await start_skynoo(emulators, delivery_delay=0.05)
    spec = dataclasses.replace(sky(emulator), rate_per_second=4.0)
    running = await start_gateway(
        routing=only(spec),
        lease_seconds=3.0,
        dispatch_workers=2,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    texts = [f"Paced message {i}." for i in range(24)]
    ids = await send_all(client, texts)
    await all_delivered(client, ids, within=40)
    received = texts_received(emulator)
    assert sorted(received) == sorted(texts)
    assert max(received.values()) == 1, "a message was sent twice"


async def test_a_slow_claim_does_not_stretch_the_lease(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    # The database starts a lease when the claim's transaction begins. A claim held
    # up for 1.2 s (a table lock here; load or a slow network in life) leaves the
    # worker 0.8 s of its 2 s lease; counting 2 s from the claim's return, it would
    # go on sending after the other worker may have claimed the same messages.
    emulator = await start_skynoo(emulators, delivery_delay=0.05)
    spec = dataclasses.replace(sky(emulator), rate_per_second=4.0)
    running = await start_gateway(
        routing=only(spec),
        lease_seconds=2.0,
        dispatch_workers=2,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    due = time.time() + 2.0
    texts = [f"Held-up message {i}." for i in range(12)]
    ids = await send_all(client, texts, send_at=due)
    async with running.gateway.pool.acquire() as conn, conn.transaction():
        await asyncio.sleep(max(due + 0.1 - time.time(), 0))
        await conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")  # claims wait
        await asyncio.sleep(1.2)
    await all_delivered(client, ids, within=40)
    received = texts_received(emulator)
    assert sorted(received) == sorted(texts)
    assert max(received.values()) == 1, "a message was sent twice"
