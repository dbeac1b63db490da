"""PostgreSQL stops for 10 s while ``smsgw serve`` is under load.

What a caller sees: every SendMessage during the outage answers UNAVAILABLE, fast and
well within its deadline (never INTERNAL, never a hang); grpc.health.v1 reports
NOT_SERVING; once the database is back the same process serves again by itself; and
every message it accepted, before or after, is stored, reaches the provider exactly
once and is delivered. A status stream opened before the outage sees it all.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.emulators.common import RunningEmulator
from tests.e2e.conftest import wait_for
from tests.e2e.emulated import start_skynoo
from tests.faults.outage_support import (
    Metadata,
    PrivatePostgres,
    Serve,
    background,
    new_account,
    private_postgres,
    serve,
    skynoo_config,
    wait_until_delivered,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DEADLINE = 2.0  # every SendMessage's deadline, seconds
OUTAGE = 10.0  # seconds PostgreSQL is down
SENDERS = 6
OK, UNAVAILABLE = grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DELIVERED = int(common_pb2.MESSAGE_STATUS_DELIVERED)


@dataclass
class Call:
    started: float
    ended: float
    code: grpc.StatusCode
    details: str = ""
    message_id: str = ""
    mobile: str = ""


@dataclass
class Probe:
    at: float
    status: int | None  # None: the Check itself failed


async def send_steadily(
    stub: message_pb2_grpc.MessageServiceAsyncStub,
    metadata: Metadata,
    calls: list[Call],
    stop: asyncio.Event,
    sender: int,
) -> None:
    """One client sending to a new mobile each time, as a service would; after an
    error it waits a little (a client backing off) and goes on."""
    n = 0
    while not stop.is_set():
        n += 1
        mobile = f"+86138{sender:03d}{n:05d}"
        request = message_pb2.SendMessageRequest(
            mobile=mobile,
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            text="Your parcel is on its way.",
        )
        started = time.monotonic()
        try:
            reply = await stub.SendMessage(request, metadata=metadata, timeout=DEADLINE)
        except grpc.aio.AioRpcError as exc:
            calls.append(Call(started, time.monotonic(), exc.code(), exc.details() or ""))
            await asyncio.sleep(0.05)
        else:
            calls.append(Call(started, time.monotonic(), OK, "", reply.id, mobile))
            await asyncio.sleep(0.03)


async def probe_health(
    server: Serve, channel: grpc.aio.Channel, probes: list[Probe], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        at = time.monotonic()
        try:
            status: int | None = await server.health(channel)
        except grpc.aio.AioRpcError:
            status = None
        probes.append(Probe(at, status))
        await asyncio.sleep(0.2)


async def watch_everything(
    stub: message_pb2_grpc.MessageServiceAsyncStub, metadata: Metadata, delivered: set[str]
) -> None:
    """One stream over every message of the account, open across the outage."""
    async for event in stub.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(), metadata=metadata
    ):
        if event.status == DELIVERED:
            delivered.add(event.message_id)


async def test_database_outage_answers_unavailable_and_recovers_without_loss(
    tmp_path: Path,
) -> None:
    emulators: list[RunningEmulator] = []
    sky = await start_skynoo(emulators, latency=0.2, delivery_delay=0.2)
    try:
        with private_postgres() as pg:
            env = {
                "DATABASE_URL": pg.dsn,
                **skynoo_config(tmp_path, sky.base_url),
                "SMSGW_POLL_INTERVAL_SECONDS": "0.5",
                "SMSGW_SHUTDOWN_GRACE": "5",
            }
            async with serve(env, tmp_path / "smsgw.log") as server:
                await run_outage(server, pg, sky)
    finally:
        for emulator in emulators:
            await emulator.stop()


async def run_outage(server: Serve, pg: PrivatePostgres, sky: RunningEmulator) -> None:
    metadata = await new_account(pg.dsn)
    calls: list[Call] = []
    probes: list[Probe] = []
    streamed: set[str] = set()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        senders = [send_steadily(stub, metadata, calls, stop, i) for i in range(SENDERS)]
        async with (
            background(*senders, probe_health(server, channel, probes, stop)) as load,
            background(watch_everything(stub, metadata, streamed)) as (stream,),
        ):
            await asyncio.sleep(2.0)
            stopping = time.monotonic()
            await asyncio.to_thread(pg.stop, "fast")
            down = time.monotonic()
            await asyncio.sleep(OUTAGE - (down - stopping))
            starting = time.monotonic()
            await asyncio.to_thread(pg.start)
            up = time.monotonic()
            # The load goes on until calls have succeeded again for a few seconds.
            recovered: float | None = None
            while time.monotonic() < up + 30:
                back = [c.ended for c in calls if c.code == OK and c.started >= starting]
                recovered = min(back, default=None)
                if recovered is not None and time.monotonic() > recovered + 3:
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*load)
            assert not stream.done(), "the status stream ended during the outage"
            assert not server.exited, "smsgw serve exited; it must recover by itself"

            codes = collections.Counter(c.code.name for c in calls)
            outage = [c for c in calls if down <= c.started and c.ended < starting]
            before = [c for c in calls if c.ended < stopping and c.code == OK]
            after = [c for c in calls if c.started > up and c.code == OK]
            print(
                f"\ncalls: {dict(codes)}; during the outage: {len(outage)} "
                f"{dict(collections.Counter(c.code.name for c in outage))}, slowest "
                f"{max((c.ended - c.started for c in outage), default=0):.3f} s; "
                f"pg_ctl stop {down - stopping:.2f} s, start {up - starting:.2f} s; "
                f"first success {None if recovered is None else round(recovered - up, 2)} s "
                "after PostgreSQL was up"
            )
            # Every answer is one a client can act on: OK, or UNAVAILABLE (retry).
            assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
            # While the database was down every call answered UNAVAILABLE, saying why,
            # and fast: nothing waited for its deadline.
            assert len(outage) >= 50, "the outage was not under load"
            assert {c.code for c in outage} == {UNAVAILABLE}
            assert all("database" in c.details for c in outage), outage[0].details
            assert max(c.ended - c.started for c in outage) < DEADLINE / 2
            # The same process serves again, without a restart.
            assert len(before) >= 50 and len(after) >= 50, (len(before), len(after))
            assert recovered is not None and recovered - up < 10

            check_health(probes, down, starting, up)

            accepted = [c for c in calls if c.code == OK]
            ids = [c.message_id for c in accepted]
            states = await wait_until_delivered(pg.dsn, ids, within=60)
            missing = set(ids) - set(states)
            undelivered = {i: s for i, s in states.items() if s != DELIVERED}
            print(
                f"accepted {len(ids)}, stored {len(states)}, lost {len(missing)}, "
                f"not delivered {len(undelivered)}"
            )
            assert not missing, f"accepted but not stored: {sorted(missing)[:5]}"
            assert not undelivered, f"not delivered: {list(undelivered.items())[:5]}"
            # Each accepted message reached the provider once: outcomes that could
            # not be recorded during the outage were recorded after it, not resent.
            at_provider = collections.Counter(r.phone for r in sky.state.received)
            twice = {m: n for m, n in at_provider.items() if n > 1}
            print(f"sent to the provider: {sum(at_provider.values())}, twice: {len(twice)}")
            assert not twice, f"sent more than once: {list(twice.items())[:5]}"
            assert {c.mobile for c in accepted} <= set(at_provider)

            # The stream opened before the outage saw every delivery, after it too
            # (the status hub's LISTEN connection came back).
            async def all_streamed() -> bool:
                return set(ids) <= streamed

            await wait_for(all_streamed, within=15)
            assert not stream.done()


def check_health(probes: list[Probe], down: float, starting: float, up: float) -> None:
    """grpc.health.v1 said SERVING before, NOT_SERVING during, SERVING again after."""
    before = [p.status for p in probes if p.at < down - 0.5]
    # The watchdog probes every second; give it a moment to notice either change.
    during = [p.status for p in probes if down + 2.5 <= p.at < starting]
    serving_again = [p.at for p in probes if p.at > up and p.status == SERVING]
    print(
        f"health: before {dict(collections.Counter(before))}, "
        f"during {dict(collections.Counter(during))}, SERVING again "
        f"{round(serving_again[0] - up, 2) if serving_again else None} s after PostgreSQL"
    )
    assert before and set(before) == {SERVING}
    assert len(during) >= 20 and set(during) == {NOT_SERVING}
    assert serving_again and serving_again[0] - up < 5
    assert probes[-1].status == SERVING
