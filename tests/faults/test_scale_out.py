"""Three ``smsgw serve`` processes on one PostgreSQL, as replicas behind a balancer.

What an operator relies on when running more than one: they can all start at the same
moment on an empty database (the migrations run once, under an advisory lock); the
outbox hands each message to exactly one of them (a few thousand sends accepted by
all three reach the provider exactly once and are delivered); a status stream open
on one replica sees what the others accept; and the verification limit per mobile,
kept in PostgreSQL, holds whichever replica a call lands on.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from sms.v1 import (
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

from server.store.migrate import MIGRATION_LOCK_KEY, load_migrations
from tests.conftest import DatabaseFactory
from tests.e2e.errors import details, reason
from tests.eventually import eventually
from tests.faults.outage_support import (
    Metadata,
    Serve,
    background,
    new_account,
    skynoo_config,
    wait_until_delivered,
)
from tests.faults.replicas_support import (
    EmulatorProcess,
    channels,
    log_messages,
    replicas,
    skynoo_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

REPLICAS = 3
MESSAGES = 3000  # sent in total, spread evenly over the replicas
SENDERS = 30  # concurrent callers, each talking to one replica
PENDING = int(common_pb2.MESSAGE_STATUS_PENDING)
DELIVERED = int(common_pb2.MESSAGE_STATUS_DELIVERED)


@dataclass
class Cluster:
    servers: list[Serve]
    channels: list[grpc.aio.Channel]
    dsn: str
    provider: EmulatorProcess
    lock_waiters: int  # replicas seen waiting together for the migration lock

    def messages(self, replica: int) -> message_pb2_grpc.MessageServiceAsyncStub:
        return message_pb2_grpc.MessageServiceStub(self.channels[replica])

    def verifications(self, replica: int) -> verification_pb2_grpc.VerificationServiceAsyncStub:
        return verification_pb2_grpc.VerificationServiceStub(self.channels[replica])


@pytest.fixture(scope="module")
async def cluster(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Cluster]:
    """Three replicas started at the same moment on a new, empty database, sending
    through one Skynoo emulator (its own process).

    Python takes a second or two to start, too uneven for three processes to reach
    their migrations together by chance; so the test holds the migration lock until
    all three wait for it, and then lets them go at once."""
    folder: Path = tmp_path_factory.mktemp("scale-out")
    dsn = await databases.new(migrate=False)
    secret_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    async with skynoo_process(folder / "emulator.log", latency=0.05, delivery_delay=0.2) as sky:
        env = {
            "DATABASE_URL": dsn,
            **skynoo_config(folder, sky.base_url),
            "SMSGW_SECRET_KEY": secret_key,
            "SMSGW_POLL_INTERVAL_SECONDS": "0.5",
            # Small claims: the replicas' workers claim often and side by side.
            "SMSGW_DISPATCH_CLAIM_SIZE": "25",
            "SMSGW_SHUTDOWN_GRACE": "3",
        }
        gate = await asyncpg.connect(dsn)
        await gate.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        opening = asyncio.create_task(open_when_waiting(gate, REPLICAS, within=60))
        try:
            async with replicas(env, folder, REPLICAS) as servers, channels(servers) as opened:
                # SERVING before the gate opened: a replica migrated without the lock.
                waiters = opening.result() if opening.done() else 0
                yield Cluster(servers, opened, dsn, sky, waiters)
        finally:
            opening.cancel()
            await gate.close()


async def open_when_waiting(gate: asyncpg.Connection, count: int, within: float) -> int:
    """Releases the migration lock once ``count`` sessions wait for it (or when time
    is up); returns how many waited."""

    async def waiting_sessions() -> int:
        waiting: int = await gate.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = $1 AND objid = $2 AND objsubid = 1",
            MIGRATION_LOCK_KEY >> 32,
            MIGRATION_LOCK_KEY & 0xFFFF_FFFF,
        )
        return waiting

    waiting = await eventually(
        waiting_sessions, until=lambda n: n >= count, within=within, raise_on_timeout=False
    )
    await gate.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return int(waiting)


async def test_replicas_starting_together_apply_each_migration_once(cluster: Cluster) -> None:
    assert cluster.lock_waiters == REPLICAS, "the replicas did not wait for the migration lock"
    for server, channel in zip(cluster.servers, cluster.channels, strict=True):
        assert await server.health(channel) == health_pb2.HealthCheckResponse.SERVING
    expected = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    applied = collections.Counter(
        message.removeprefix("applied migration ")
        for server in cluster.servers
        for message in log_messages(server)
        if message.startswith("applied migration ")
    )
    assert applied == collections.Counter(expected), applied
    conn = await asyncpg.connect(cluster.dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [f"{r['version']:04d}_{r['name']}" for r in rows] == expected


async def test_verification_interval_per_mobile_holds_across_replicas(cluster: Cluster) -> None:
    metadata = await new_account(cluster.dsn, "scale-otp")
    mobile = "+8613700000001"

    async def send_code(replica: int, to: str) -> verification_pb2.SendVerificationResponse:
        request = verification_pb2.SendVerificationRequest(mobile=to, scene="login")
        return await cluster.verifications(replica).SendVerification(
            request, metadata=metadata, timeout=10
        )

    first = await send_code(0, mobile)
    assert first.verify_id
    for replica in (1, 2):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send_code(replica, mobile)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(refused.value) == "MOBILE_INTERVAL"
        wait = retry_delay(refused.value)
        assert 0 < wait.seconds + wait.nanos / 1e9 <= 60, wait
    # The refusal is about that mobile: another one goes through on the same replica.
    assert (await send_code(1, "+8613700000002")).verify_id


def retry_delay(error: grpc.aio.AioRpcError) -> duration_pb2.Duration:
    for detail in details(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay: duration_pb2.Duration = info.retry_delay
            return delay
    raise AssertionError("no RetryInfo in the details")


async def test_a_stream_on_one_replica_sees_sends_accepted_by_the_others(
    cluster: Cluster,
) -> None:
    metadata = await new_account(cluster.dsn, "scale-watch")
    seen: list[message_pb2.MessageStatusEvent] = []

    async def watch() -> None:
        stream = cluster.messages(0).WatchMessageStatus(
            message_pb2.WatchMessageStatusRequest(), metadata=metadata
        )
        async for event in stream:
            seen.append(event)

    def statuses(message_id: str) -> list[int]:
        return [e.status for e in seen if e.message_id == message_id]

    # Callable[..., bool]: callers bind a loop variable as a default (lambda m=marker: ...).
    async def until(done: Callable[..., bool], within: float) -> None:
        def seen() -> bool:
            assert not stream.done(), f"the stream ended: {stream.exception()!r}"
            return done()

        await eventually(seen, within=within, what="the events on the stream")

    async with background(watch()) as (stream,):
        # Sends through the stream's own replica until one is seen: a stream opened
        # with after_event_id 0 follows from the newest event when it starts, so a
        # marker sent before it started is (rightly) never shown. Once one is there,
        # the stream follows live changes.
        for n in range(20):
            marker = await send(cluster.messages(0), metadata, f"+86136000000{n:02d}")
            try:
                await until(lambda m=marker: PENDING in statuses(m), within=1)
                break
            except AssertionError:
                assert not stream.done(), f"the stream ended: {stream.exception()!r}"
        else:
            raise AssertionError("the stream never showed a send made through its replica")
        ids = [
            await send(cluster.messages(replica), metadata, f"+8613600{replica}{n:05d}")
            for replica in (1, 2)
            for n in range(20)
        ]
        await until(lambda: all(DELIVERED in statuses(i) for i in ids), within=30)
    for message_id in ids:
        assert statuses(message_id)[0] == PENDING, statuses(message_id)
        assert statuses(message_id)[-1] == DELIVERED, statuses(message_id)
    event_ids = [e.event_id for e in seen]
    assert event_ids == sorted(set(event_ids)), "events repeated or out of order"


async def send(
    stub: message_pb2_grpc.MessageServiceAsyncStub, metadata: Metadata, mobile: str
) -> str:
    request = message_pb2.SendMessageRequest(
        mobile=mobile, use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Your parcel is here."
    )
    reply = await stub.SendMessage(request, metadata=metadata, timeout=10)
    return reply.id


async def test_each_message_reaches_the_provider_once_whichever_replica_took_it(
    cluster: Cluster,
) -> None:
    metadata = await new_account(cluster.dsn, "scale-send")
    numbers = itertools.count()
    accepted: dict[str, str] = {}  # message id -> mobile
    per_replica = collections.Counter[int]()

    async def sender(index: int) -> None:
        replica = index % REPLICAS
        stub = cluster.messages(replica)
        while (n := next(numbers)) < MESSAGES:
            mobile = f"+86139{n:08d}"
            accepted[await send(stub, metadata, mobile)] = mobile
            per_replica[replica] += 1

    started = time.monotonic()
    await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    sent_in = time.monotonic() - started
    assert len(accepted) == MESSAGES
    assert min(per_replica.values()) > MESSAGES / REPLICAS / 2, per_replica

    states = await wait_until_delivered(cluster.dsn, list(accepted), within=90)
    delivered_in = time.monotonic() - started
    not_delivered = {i: s for i, s in states.items() if s != DELIVERED}
    assert len(states) == MESSAGES, "accepted messages are missing from the database"
    assert not not_delivered, list(not_delivered.items())[:5]

    # The other tests of the module send to other numbers (+86136…, +86137…).
    at_provider = collections.Counter(
        r["phone"] for r in await cluster.provider.received() if r["phone"].startswith("+86139")
    )
    twice = {mobile: n for mobile, n in at_provider.items() if n > 1}
    print(
        f"\n{MESSAGES} sends over {REPLICAS} replicas ({dict(per_replica)}) in {sent_in:.1f} s, "
        f"all delivered after {delivered_in:.1f} s; at the provider: "
        f"{sum(at_provider.values())}, more than once: {len(twice)}"
    )
    assert not twice, f"sent more than once: {list(twice.items())[:5]}"
    assert set(at_provider) == set(accepted.values())
