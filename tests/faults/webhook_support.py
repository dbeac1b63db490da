"""A webhook receiver for the fault tests and the webhook bench, and what it got.

The receiver is a real aiohttp server on 127.0.0.1 started in the test's process. It
verifies every request with the ``standardwebhooks`` package (the reference library
of the Standard Webhooks specification, not our server code), records it, and
answers with what ``answer`` says (200 by default). ``check_events`` compares what
was received with the status changes stored in message_events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import grpc
import standardwebhooks
from aiohttp import web
from sms.v1 import common_pb2, webhook_pb2, webhook_pb2_grpc

from tests.faults.outage_support import Metadata

STATUS_EVENTS = webhook_pb2.EVENT_TYPE_MESSAGE_STATUS


@dataclass(frozen=True)
class Arrival:
    """One request the receiver got (signature valid)."""

    webhook_id: str  # the header: one per delivery, the same on each retry
    event_id: int
    message_id: str
    status: int
    occurred_at: str  # RFC 3339, as the event carries it
    received: float  # time.time() when it arrived
    answered: int  # the HTTP status the receiver answered


@dataclass
class Receiver:
    answer: Callable[[], int] = lambda: 200
    delay: float = 0.0  # seconds each answer takes
    url: str = ""
    secret: str = ""
    arrivals: list[Arrival] = field(default_factory=list)
    forged: int = 0  # requests whose signature did not verify
    _verifier: standardwebhooks.Webhook | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def use_secret(self, secret: str) -> None:
        self.secret = secret
        self._verifier = standardwebhooks.Webhook(secret)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = time.time()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            assert self._verifier is not None
            self._verifier.verify(body, headers)
        except (AssertionError, standardwebhooks.WebhookVerificationError):
            self.forged += 1
            return web.Response(status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.answer()
        event = json.loads(body)
        self.arrivals.append(
            Arrival(
                headers["webhook-id"],
                int(event["id"]),
                event["messageStatus"]["messageId"],
                common_pb2.MessageStatus.Value(event["messageStatus"]["status"]),
                event["occurredAt"],
                received,
                status,
            )
        )
        self._arrived.set()
        return web.Response(status=status)

    def accepted(self) -> list[Arrival]:
        """The requests answered 2xx, in the order they arrived."""
        return [a for a in self.arrivals if 200 <= a.answered < 300]


@contextlib.asynccontextmanager
async def receiver(
    answer: Callable[[], int] = lambda: 200, delay: float = 0.0
) -> AsyncIterator[Receiver]:
    got = Receiver(answer, delay)
    app = web.Application()
    app.router.add_post("/hook", got.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        got.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        yield got
    finally:
        await runner.cleanup()


async def subscribe(channel: grpc.aio.Channel, metadata: Metadata, got: Receiver) -> int:
    """Creates an endpoint for every message status change, pointing at ``got``."""
    stub: webhook_pb2_grpc.WebhookServiceAsyncStub = webhook_pb2_grpc.WebhookServiceStub(channel)
    hook = await stub.CreateWebhook(
        webhook_pb2.CreateWebhookRequest(url=got.url, event_types=[STATUS_EVENTS]),
        metadata=metadata,
        timeout=10,
    )
    got.use_secret(hook.secret)
    return int(hook.id)


@dataclass(frozen=True)
class Stored:
    event_id: int
    message_id: str
    status: int
    occurred_at: datetime


async def stored_events(conn: asyncpg.Connection, message_ids: Sequence[str]) -> list[Stored]:
    rows = await conn.fetch(
        "SELECT event_id, message_id, status, occurred_at FROM message_events "
        "WHERE message_id = ANY($1::text[]) ORDER BY event_id",
        list(message_ids),
    )
    return [Stored(r["event_id"], r["message_id"], r["status"], r["occurred_at"]) for r in rows]


async def all_settled(conn: asyncpg.Connection, webhook_id: int) -> tuple[int, int]:
    """(deliveries of the endpoint, of them not SUCCEEDED yet)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE state <> 2) AS open "
        "FROM webhook_deliveries WHERE webhook_id = $1",
        webhook_id,
    )
    assert row is not None
    return int(row["n"]), int(row["open"])


@dataclass
class Report:
    events: int  # status changes stored
    received: int  # requests answered 2xx
    duplicates: int  # of them, events received before
    missing: list[int]  # stored events never received
    invented: list[Arrival]  # received events that match no stored status change
    out_of_order: dict[str, tuple[list[int], list[int]]]  # message: (first receipts, stored)

    def summary(self) -> str:
        return (
            f"events {self.events}, received {self.received} (duplicates {self.duplicates}), "
            f"missing {len(self.missing)}, invented {len(self.invented)}, "
            f"messages out of order {len(self.out_of_order)}"
        )


def check_events(stored: Sequence[Stored], accepted: Sequence[Arrival]) -> Report:
    """Every stored event received at least once, nothing else received, and the
    events of each message first received in the order they were stored."""
    by_id: Mapping[int, Stored] = {s.event_id: s for s in stored}
    invented = [
        a
        for a in accepted
        if (s := by_id.get(a.event_id)) is None
        or (s.message_id, s.status) != (a.message_id, a.status)
    ]
    seen = {a.event_id for a in accepted}
    firsts: dict[str, list[int]] = collections.defaultdict(list)
    first_seen: set[int] = set()
    for a in accepted:
        if a.event_id not in first_seen:
            first_seen.add(a.event_id)
            firsts[a.message_id].append(a.event_id)
    wanted: dict[str, list[int]] = collections.defaultdict(list)
    for s in stored:
        wanted[s.message_id].append(s.event_id)
    out_of_order = {
        m: (firsts.get(m, []), ids) for m, ids in wanted.items() if firsts.get(m, []) != ids
    }
    return Report(
        events=len(stored),
        received=len(accepted),
        duplicates=len(accepted) - len(seen),
        missing=[s.event_id for s in stored if s.event_id not in seen],
        invented=invented,
        out_of_order=out_of_order,
    )


def delivery_children(parent: int) -> list[int]:
    """The pids of ``parent``'s webhook delivery processes (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
            if ppid == parent and b"server.webhooks.process" in cmdline:
                found.append(int(entry.name))
    return found
