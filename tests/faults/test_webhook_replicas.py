"""Two ``smsgw serve`` replicas on one database deliver the webhooks of one endpoint.

Both are woken by every committed event and race for the same deliveries; the lease
(``FOR UPDATE SKIP LOCKED``) hands each to one of them. What the receiver sees: every
status change once, in order per message, and both replicas did part of the work
(their own metrics say how much). Delivery is at least once, so a duplicate is
allowed only where a lease ran out mid-request, which a request's timeout (a third
of the lease) rules out here: the duplicates are counted, printed and must be none.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import secrets
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from tests.conftest import DatabaseFactory
from tests.eventually import eventually
from tests.faults.outage_support import Serve, new_account, skynoo_config, wait_until_delivered
from tests.faults.replicas_support import channels, replicas, skynoo_process
from tests.faults.webhook_support import (
    all_settled,
    check_events,
    delivery_children,
    receiver,
    stored_events,
    subscribe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPLICAS = 2
MESSAGES = 300
SUCCEEDED = re.compile(r'^smsgw_webhook_deliveries_total\{result="succeeded"\} (\S+)$', re.M)


async def succeeded(server: Serve) -> int:
    """Deliveries the replica settled as succeeded, from its /metrics."""
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        text = await reply.text()
    found = SUCCEEDED.search(text)
    return int(float(found.group(1))) if found else 0


async def test_two_replicas_deliver_each_event_once(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    started = time.monotonic()
    dsn = await databases.new()
    async with (
        skynoo_process(tmp_path / "emulator.log", delivery_delay=0.2) as sky,
        receiver(delay=0.005) as got,
    ):
        env = {
            "DATABASE_URL": dsn,
            **skynoo_config(tmp_path, sky.base_url),
            "SMSGW_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "SMSGW_POLL_INTERVAL_SECONDS": "0.5",
            "SMSGW_WEBHOOK_ALLOW_INSECURE": "1",
            "SMSGW_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
        }
        async with replicas(env, tmp_path, REPLICAS) as servers, channels(servers) as opened:
            md = await new_account(dsn, "webhook-replicas")
            hook_id = await subscribe(opened[0], md, got)
            # A replica starts its delivery process once an endpoint exists: the one it
            # was created on at once, the other when it next looks.
            for server in servers:
                await eventually(
                    functools.partial(delivery_children, server.proc.pid),
                    until=bool,
                    within=20,
                    what="each replica's delivery process",
                )
            stubs = [message_pb2_grpc.MessageServiceStub(c) for c in opened]

            async def send(n: int) -> str:
                reply = await stubs[n % REPLICAS].SendMessage(
                    message_pb2.SendMessageRequest(
                        mobile=f"+4479130{n:05d}",
                        use_type=common_pb2.USE_TYPE_NOTIFICATION,
                        text=f"Parcel {n} is on its way.",
                    ),
                    metadata=md,
                    timeout=10,
                )
                return str(reply.id)

            sent: list[str] = []
            for start in range(0, MESSAGES, 20):
                sent += await asyncio.gather(*(send(n) for n in range(start, start + 20)))
            states = await wait_until_delivered(dsn, sent, within=45)
            assert all(s == common_pb2.MESSAGE_STATUS_DELIVERED for s in states.values())
            conn = await asyncpg.connect(dsn)
            try:
                stored = await stored_events(conn, sent)
                settled = await eventually(
                    lambda: all_settled(conn, hook_id),
                    until=lambda counts: counts == (len(stored), 0),
                    within=30,
                    interval=0.2,
                    raise_on_timeout=False,
                )
            finally:
                await conn.close()
            # Each replica's delivery process reports its results to it a few times
            # a second: the counts follow the database shortly.
            by_replica = await eventually(
                lambda: asyncio.gather(*(succeeded(s) for s in servers)),
                until=lambda counts: sum(counts) >= len(stored),
                within=10,
                interval=0.2,
                raise_on_timeout=False,
            )
            report = check_events(stored, got.accepted())
            print(
                f"\n{REPLICAS} replicas delivered {by_replica}; {report.summary()}; "
                f"test {time.monotonic() - started:.1f} s"
            )
            assert got.forged == 0
            assert settled == (len(stored), 0), settled
            assert not report.missing, report.missing[:10]
            assert not report.invented, report.invented[:5]
            assert not report.out_of_order, list(report.out_of_order.items())[:3]
            assert report.duplicates == 0, report.summary()
            # Both replicas delivered, and together exactly one success per event.
            assert all(n > 0 for n in by_replica), by_replica
            assert sum(by_replica) == len(stored), (by_replica, len(stored))
