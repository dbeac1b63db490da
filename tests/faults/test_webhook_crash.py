"""``smsgw serve`` is killed (SIGKILL) several times while it delivers webhooks.

What the receiver sees: every status change stored for the messages sent reaches it
at least once, signed (verified with the ``standardwebhooks`` package); it gets no
event that was not stored (none invented); the events of each message arrive first
in the order they happened. A delivery that was in flight at a kill may arrive
again once its lease runs out: the duplicates are counted and printed, and bounded
by what was in flight. The kill moments come from a seeded random generator
(SMSGW_CRASH_SEED repeats a run); the seed is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from tests.eventually import eventually
from tests.faults.crash_support import until_definite, wait_sessions_gone
from tests.faults.outage_support import (
    Metadata,
    Serve,
    background,
    free_port,
    new_account,
    private_postgres,
    serve,
    skynoo_config,
    wait_until_delivered,
)
from tests.faults.replicas_support import skynoo_process
from tests.faults.webhook_support import (
    all_settled,
    check_events,
    receiver,
    stored_events,
    subscribe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KILLS = 3
SENDERS = 4  # callers sending until the last kill is over (a few hundred messages)
WEBHOOK_TIMEOUT = 1.0  # SMSGW_WEBHOOK_TIMEOUT_SECONDS: a delivery is leased for 3 s
SETTLE_WITHIN = 45.0
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


async def send_messages(
    stub: message_pb2_grpc.MessageServiceAsyncStub,
    md: Metadata,
    sender: int,
    sent: list[str],
    stop: asyncio.Event,
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        request = message_pb2.SendMessageRequest(
            mobile=f"+447912{sender:02d}{n:04d}",
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            text=f"Parcel {sender}-{n} is on its way.",
            request_id=f"hook-{sender}-{n}",
        )
        outcome = await until_definite(
            functools.partial(stub.SendMessage, request, metadata=md, timeout=5), within=60
        )
        assert isinstance(outcome.reply, message_pb2.SendMessageResponse), outcome
        sent.append(outcome.reply.id)
        await asyncio.sleep(0.04)


async def test_kills_mid_delivery_lose_and_invent_no_event(tmp_path: Path) -> None:
    seed = int(os.environ.get("SMSGW_CRASH_SEED") or random.randrange(1 << 32))
    print(f"\nwebhook crash test seed {seed} (SMSGW_CRASH_SEED={seed} repeats the kill moments)")
    rng = random.Random(seed)
    started = time.monotonic()
    ports = free_port(), free_port()  # the same for every process
    with private_postgres() as pg:
        async with (
            skynoo_process(tmp_path / "emulator.log", delivery_delay=0.2) as sky,
            receiver(delay=0.02) as got,  # each request stays open a while: kills catch some
            contextlib.AsyncExitStack() as stack,
        ):
            env = {
                "DATABASE_URL": pg.dsn,
                **skynoo_config(tmp_path, sky.base_url),
                "SMSGW_SECRET_KEY": "d2ViaG9vay1jcmFzaC10ZXN0LWtleS0zMi1ieXRlcy1sb25n",
                "SMSGW_LEASE_SECONDS": "2",
                "SMSGW_POLL_INTERVAL_SECONDS": "0.5",
                "SMSGW_WEBHOOK_ALLOW_INSECURE": "1",
                "SMSGW_WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT),
                "SMSGW_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
            }
            log = tmp_path / "smsgw.log"
            conn: asyncpg.Connection = await asyncpg.connect(pg.dsn)
            stack.push_async_callback(conn.close)

            async def start() -> Serve:
                return await stack.enter_async_context(serve(env, log, ports))

            server = await start()
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(server.target, options=CHANNEL_OPTIONS)
            )
            md = await new_account(pg.dsn, "webhook-crash")
            hook_id = await subscribe(channel, md, got)
            stub = message_pb2_grpc.MessageServiceStub(channel)
            sent: list[str] = []
            stop = asyncio.Event()
            in_flight: list[int] = []  # deliveries leased by the process at each kill
            async with background(
                *(send_messages(stub, md, i, sent, stop) for i in range(SENDERS))
            ) as senders:
                for _ in range(KILLS):
                    mark = len(got.arrivals) + 20
                    # Deliveries flow from this process: kill it in the middle of them.
                    await eventually(
                        lambda: len(got.arrivals) >= mark,  # noqa: B023 (awaited here)
                        within=15,
                        what="webhooks delivered by the new process",
                    )
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    server.kill_group()
                    await server.proc.wait()
                    await wait_sessions_gone(conn)
                    in_flight.append(
                        await conn.fetchval(
                            "SELECT count(*) FROM webhook_deliveries "
                            "WHERE state = 1 AND lease_until > now()"
                        )
                    )
                    server = await start()
                await asyncio.sleep(1)
                stop.set()  # each caller ends after its call in hand
                await asyncio.gather(*senders)
            states = await wait_until_delivered(pg.dsn, sent, within=SETTLE_WITHIN)
            assert all(s == common_pb2.MESSAGE_STATUS_DELIVERED for s in states.values()), states
            stored = await stored_events(conn, sent)
            settled = await eventually(
                lambda: all_settled(conn, hook_id),
                until=lambda counts: counts == (len(stored), 0),
                within=SETTLE_WITHIN,
                interval=0.2,
                raise_on_timeout=False,
            )
            report = check_events(stored, got.accepted())
            print(
                f"{KILLS} kills, {len(sent)} messages, deliveries in flight at each kill "
                f"{in_flight}; {report.summary()}; "
                f"test {time.monotonic() - started:.1f} s"
            )
            assert got.forged == 0
            assert sum(in_flight) > 0, "no kill caught a delivery in flight: proved nothing"
            assert not report.missing, report.missing[:10]
            assert not report.invented, report.invented[:5]
            assert not report.out_of_order, list(report.out_of_order.items())[:3]
            assert settled == (len(stored), 0), settled
            # A duplicate carries its first receipt's webhook-id: receivers deduplicate.
            webhook_ids: dict[int, set[str]] = {}
            for arrival in got.accepted():
                webhook_ids.setdefault(arrival.event_id, set()).add(arrival.webhook_id)
            assert all(len(ids) == 1 for ids in webhook_ids.values())
            # Only what was in flight at a kill is received twice.
            assert report.duplicates <= sum(in_flight), report.summary()
            # Each message's changes: accepted, handed to Skynoo, delivered.
            assert len(stored) >= 2 * len(sent)
            assert not server.exited, server.log_tail()
