"""Webhook delivery in a process of its own (SMSGW_WEBHOOK_PROCESS=1).

``smsgw serve`` runs the delivery loop in a child process at a lower CPU priority.
What the receiver sees is the same as in one process: every status change, signed
(verified with the ``standardwebhooks`` package), each message's in order. The child
is killed with SIGKILL while requests are in flight: the gateway goes on serving,
starts a new child, and the deliveries the dead one held (leased) arrive once their
leases run out; nothing is lost. A gateway killed with SIGKILL leaves no child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from tests.eventually import eventually
from tests.faults.outage_support import (
    Metadata,
    new_account,
    private_postgres,
    serve,
    wait_until_delivered,
)
from tests.faults.webhook_support import (
    all_settled,
    check_events,
    delivery_children,
    receiver,
    stored_events,
    subscribe,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MESSAGES = 60
NICE = 7


async def send(stub: message_pb2_grpc.MessageServiceAsyncStub, md: Metadata, n: int) -> str:
    reply = await stub.SendMessage(
        message_pb2.SendMessageRequest(
            mobile=f"+861380013{n:04d}",
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            text=f"Parcel {n} is on its way.",
        ),
        metadata=md,
        timeout=10,
    )
    return str(reply.id)


async def test_a_killed_delivery_process_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    with private_postgres() as pg:
        # Each answer takes a while: the kill catches requests in flight.
        async with receiver(delay=0.3) as got, contextlib.AsyncExitStack() as stack:
            env = {
                "DATABASE_URL": pg.dsn,
                "SMSGW_SECRET_KEY": "d2ViaG9vay1wcm9jZXNzLXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmc=",
                "SMSGW_LOOPBACK_DELAY_MS": "20",
                "SMSGW_WEBHOOK_PROCESS": "1",
                "SMSGW_WEBHOOK_NICE": str(NICE),
                "SMSGW_WEBHOOK_ALLOW_INSECURE": "1",
                "SMSGW_WEBHOOK_TIMEOUT_SECONDS": "1",  # leased for 3 s
                "SMSGW_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
            }
            server = await stack.enter_async_context(serve(env, tmp_path / "smsgw.log"))
            conn: asyncpg.Connection = await asyncpg.connect(pg.dsn)
            stack.push_async_callback(conn.close)
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.target))
            md = await new_account(pg.dsn, "webhook-process")
            # No endpoint yet: no delivery process (its memory is spent only when used).
            assert delivery_children(server.proc.pid) == []
            hook_id = await subscribe(channel, md, got)
            stub = message_pb2_grpc.MessageServiceStub(channel)

            # The endpoint created here starts it.
            [child] = await eventually(
                lambda: delivery_children(server.proc.pid),
                until=lambda pids: len(pids) == 1,
                within=15,
                what="the delivery process",
            )
            sent = list(await asyncio.gather(*(send(stub, md, n) for n in range(MESSAGES))))
            await eventually(lambda: len(got.arrivals) >= 10, within=20, what="first webhooks")
            # Delivering, it runs at the lower priority it set itself.
            assert (
                os.getpriority(os.PRIO_PROCESS, child)
                - os.getpriority(os.PRIO_PROCESS, server.proc.pid)
                == NICE
            )
            os.kill(child, signal.SIGKILL)
            killed_at = time.monotonic()
            leased = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 1 AND lease_until > now()"
            )
            arrived_at_kill = len(got.arrivals)
            # The gateway goes on: a new child delivers, sends are still answered.
            sent.append(await send(stub, md, MESSAGES))
            restarted = await eventually(
                lambda: delivery_children(server.proc.pid),
                until=lambda pids: bool(pids) and child not in pids,
                within=20,
                what="a new delivery process",
            )
            assert len(restarted) == 1

            states = await wait_until_delivered(pg.dsn, sent, within=30)
            assert all(s == common_pb2.MESSAGE_STATUS_DELIVERED for s in states.values())
            stored = await stored_events(conn, sent)
            settled = await eventually(
                lambda: all_settled(conn, hook_id),
                until=lambda counts: counts == (len(stored), 0),
                within=40,
                interval=0.2,
                raise_on_timeout=False,
            )
            report = check_events(stored, got.accepted())
            print(
                f"\n{len(sent)} messages, {leased} deliveries leased at the kill, "
                f"{arrived_at_kill} arrivals before it; {report.summary()}; "
                f"settled {time.monotonic() - killed_at:.1f} s after the kill"
            )
            assert leased > 0, "the kill caught no delivery in flight: proved nothing"
            assert got.forged == 0
            assert not report.missing, report.missing[:10]
            assert not report.invented, report.invented[:5]
            assert not report.out_of_order, list(report.out_of_order.items())[:3]
            assert settled == (len(stored), 0), settled
            assert report.duplicates <= leased, report.summary()
            assert not server.exited, server.log_tail()

            # The gateway killed with SIGKILL (not its group): its child stops too.
            server.proc.send_signal(signal.SIGKILL)
            await server.proc.wait()
            await eventually(
                lambda: (
                    not Path(f"/proc/{restarted[0]}").exists()
                    or b"zombie" in Path(f"/proc/{restarted[0]}/status").read_bytes().lower()
                ),
                within=15,
                what="the delivery process to stop after its gateway was killed",
            )
