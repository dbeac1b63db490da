"""``smsgw serve`` is killed (SIGKILL, no warning) five times while it dispatches a
20,000-number batch and takes a stream of single sends and verification codes.

What a caller sees: every call, retried with its request_id while the server is
gone, ends with an id (or a definite refusal), and each id is stored once; every
accepted message is DELIVERED in the end; the messages a dead worker had claimed
are taken over by the next process once their lease runs out, not before. What the
providers see: SendCloud (our message id is its sendRequestId) never gets a message
twice; Skynoo (no idempotency key) may get again a message that was in flight at a
kill, and only such a message. The kill moments come from a seeded random generator
(SMSGW_CRASH_SEED repeats a run); the seed is printed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from sms.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    template_pb2,
    template_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

from server.domain.models import FINAL_STATUSES
from server.emulators.common import RunningEmulator
from tests.faults.crash_support import (
    CLOUD_PREFIX,
    Kill,
    Lease,
    leased_now,
    routing_config,
    start_emulators,
    until_definite,
    wait_sessions_gone,
)
from tests.faults.outage_support import (
    Metadata,
    Serve,
    background,
    free_port,
    new_account,
    private_postgres,
    serve,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KILLS = 5
BATCH = 20_000  # half to SendCloud (+86), half to Skynoo (+44)
LEASE = 3.0  # SMSGW_LEASE_SECONDS
WORKERS, CLAIM = 2, 100
SENDERS, VERIFIERS = 3, 2  # concurrent callers of SendMessage / SendVerification
DELIVERY_DELAY = 0.2  # emulators: seconds until an accepted message is delivered
CALL_WITHIN = 60.0  # a call's retries across restarts end within this
SETTLE_WITHIN = 90.0  # after the load stops, every accepted message is final within this
TAKEOVER_WITHIN = 20.0  # a dead worker's single or code is sent again within this after its lease
DELIVERED = common_pb2.MESSAGE_STATUS_DELIVERED
BATCH_FINAL = {
    common_pb2.BATCH_STATUS_SUCCEEDED,
    common_pb2.BATCH_STATUS_FAILED,
    common_pb2.BATCH_STATUS_CANCELLED,
}
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
    # Reconnect quickly once the restarted server listens again.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class Stubs:
    metadata: Metadata
    messages: message_pb2_grpc.MessageServiceAsyncStub
    verifications: verification_pb2_grpc.VerificationServiceAsyncStub
    batches: batch_pb2_grpc.BatchServiceAsyncStub
    templates: template_pb2_grpc.TemplateServiceAsyncStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel, metadata: Metadata) -> Stubs:
        return cls(
            metadata,
            message_pb2_grpc.MessageServiceStub(channel),
            verification_pb2_grpc.VerificationServiceStub(channel),
            batch_pb2_grpc.BatchServiceStub(channel),
            template_pb2_grpc.TemplateServiceStub(channel),
        )


@dataclass
class Load:
    """What the callers got: accepted message ids by mobile, and refusals."""

    order_template: int
    code_template: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    accepted: dict[str, str] = field(default_factory=dict)  # single/code id -> mobile
    singles: list[str] = field(default_factory=list)  # the same ids, in order
    refused: list[str] = field(default_factory=list)
    retried: collections.Counter[str] = field(default_factory=collections.Counter)
    batch_id: str = ""
    batch: batch_pb2.Batch | None = None  # as GetBatch reported it at the end
    listed: dict[str, str] = field(default_factory=dict)  # ListBatchMessages: id -> mobile


def batch_numbers() -> list[str]:
    """Every other number to SendCloud, so a kill finds both providers' sends in flight."""
    return [f"+86138{i:08d}" if i % 2 else f"+447912{i:06d}" for i in range(BATCH)]


async def create_batch(stubs: Stubs, load: Load) -> None:
    numbers = batch_numbers()
    request = batch_pb2.CreateBatchRequest(
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        template_id=load.order_template,
        numbers=numbers,
        template_data={
            n: batch_pb2.TemplateData(values={"order_no": f"B{i}"}) for i, n in enumerate(numbers)
        },
        request_id="crash-test-batch",
    )
    outcome = await until_definite(
        lambda: stubs.batches.CreateBatch(request, metadata=stubs.metadata, timeout=30),
        within=CALL_WITHIN,
    )
    load.retried["CreateBatch"] += outcome.retries
    if not isinstance(outcome.reply, batch_pb2.CreateBatchResponse):
        load.refused.append(f"CreateBatch {outcome.code.name} {outcome.details}")
        return
    assert outcome.reply.accepted_count == BATCH, outcome.reply.rejected[:3]
    load.batch_id = outcome.reply.task_id


async def send_messages(stubs: Stubs, load: Load, sender: int) -> None:
    """One caller sending notifications, alternately to SendCloud (a template) and to
    Skynoo (free text), each to a mobile of its own."""
    n = 0
    while not load.stop.is_set():
        n += 1
        if n % 2:
            request = message_pb2.SendMessageRequest(
                mobile=f"+86139{sender:02d}{n:06d}",
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                template_id=load.order_template,
                data={"order_no": f"S{sender}-{n}"},
                request_id=f"send-{sender}-{n}",
            )
        else:
            request = message_pb2.SendMessageRequest(
                mobile=f"+447913{sender:01d}{n:05d}",
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
                text=f"Your parcel {sender}-{n} is on its way.",
                request_id=f"send-{sender}-{n}",
            )
        outcome = await until_definite(
            functools.partial(
                stubs.messages.SendMessage, request, metadata=stubs.metadata, timeout=5
            ),
            within=CALL_WITHIN,
        )
        load.retried["SendMessage"] += outcome.retries
        if isinstance(outcome.reply, message_pb2.SendMessageResponse):
            load.accepted[outcome.reply.id] = request.mobile
            load.singles.append(outcome.reply.id)
        else:
            load.refused.append(f"SendMessage {outcome.code.name} {outcome.details}")
        await asyncio.sleep(0.02)


async def send_codes(stubs: Stubs, load: Load, verifier: int) -> None:
    """One caller sending verification codes: to SendCloud through a template with
    #code#, to Skynoo in the default wording."""
    n = 0
    while not load.stop.is_set():
        n += 1
        cloud = n % 2 == 1
        request = verification_pb2.SendVerificationRequest(
            mobile=f"+86137{verifier:02d}{n:06d}" if cloud else f"+447400{verifier:01d}{n:05d}",
            scene="login",
            template_id=load.code_template if cloud else 0,
            request_id=f"code-{verifier}-{n}",
        )
        outcome = await until_definite(
            functools.partial(
                stubs.verifications.SendVerification, request, metadata=stubs.metadata, timeout=5
            ),
            within=CALL_WITHIN,
        )
        load.retried["SendVerification"] += outcome.retries
        if isinstance(outcome.reply, verification_pb2.SendVerificationResponse):
            load.accepted[outcome.reply.message_id] = request.mobile
            load.singles.append(outcome.reply.message_id)
        else:
            load.refused.append(f"SendVerification {outcome.code.name} {outcome.details}")
        await asyncio.sleep(0.05)


async def create_templates(stubs: Stubs) -> tuple[int, int]:
    order = await stubs.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(
                code="order_shipped",
                content="Your order #order_no# has shipped.",
                use_type=common_pb2.USE_TYPE_NOTIFICATION,
            )
        ),
        metadata=stubs.metadata,
    )
    code = await stubs.templates.CreateTemplate(
        template_pb2.CreateTemplateRequest(
            template=template_pb2.Template(
                code="login_code",
                content="Your login code is #code#.",
                use_type=common_pb2.USE_TYPE_VERIFICATION,
            )
        ),
        metadata=stubs.metadata,
    )
    return order.id, code.id


async def final_states(stubs: Stubs, load: Load, within: float) -> dict[str, int]:
    """Each accepted message's status as the API reports it, once the batch is final
    and every single message is final, or as they are when time runs out."""
    deadline = time.monotonic() + within
    md = stubs.metadata
    states: dict[str, int] = {}
    pending = list(load.singles)
    while pending and time.monotonic() < deadline:
        for start in range(0, len(pending), 100):
            reply = await stubs.messages.GetMessageStatus(
                message_pb2.GetMessageStatusRequest(ids=pending[start : start + 100]), metadata=md
            )
            states.update((m.id, m.status) for m in reply.messages)
        pending = [i for i in pending if states.get(i) not in FINAL_STATUSES]
        if pending:
            await asyncio.sleep(0.5)
    if load.batch_id:
        get = batch_pb2.GetBatchRequest(task_id=load.batch_id)
        while (batch := await stubs.batches.GetBatch(get, metadata=md)).status not in BATCH_FINAL:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        load.batch = batch
        token = ""
        while True:
            page = await stubs.batches.ListBatchMessages(
                batch_pb2.ListBatchMessagesRequest(
                    task_id=load.batch_id, page_size=100, page_token=token
                ),
                metadata=md,
            )
            for m in page.messages:
                states[m.id] = m.status
                load.listed[m.id] = m.to_number
            token = page.next_page_token
            if not token:
                break
    return states


async def after_kill(
    conn: asyncpg.Connection, sky: RunningEmulator, cloud: RunningEmulator
) -> Kill:
    """What was in flight when the server died (it is dead when this runs)."""
    await wait_sessions_gone(conn)
    kill = Kill(await leased_now(conn))
    kill.at_provider = {r.phone for r in sky.state.received}
    kill.at_provider |= {CLOUD_PREFIX + r.phone for r in cloud.state.received}
    return kill


def gateway_env(
    dsn: str, folder: Path, sky: RunningEmulator, cloud: RunningEmulator
) -> dict[str, str]:
    return {
        "DATABASE_URL": dsn,
        **routing_config(folder, sky.base_url, cloud.base_url),
        "SMSGW_LEASE_SECONDS": str(LEASE),
        "SMSGW_DISPATCH_WORKERS": str(WORKERS),
        "SMSGW_DISPATCH_CLAIM_SIZE": str(CLAIM),
        "SMSGW_POLL_INTERVAL_SECONDS": "0.5",
        "SMSGW_RETRY_BASE_SECONDS": "0.2",
        # The same key in every process: codes sealed by one are opened by the next.
        "SMSGW_SECRET_KEY": "Y3Jhc2gtdGVzdC1rZXktMzItYnl0ZXMtbG9uZy1lbm91Z2g=",
        # Every code goes to a new mobile; the per-account and pumping limits are not
        # what this test is about.
        "SMSGW_OTP_MOBILE_INTERVAL_SECONDS": "0",
        "SMSGW_OTP_ACCOUNT_PER_HOUR": "0",
        "SMSGW_OTP_PREFIX_LIMIT": "0",
        "SMSGW_OTP_COUNTRY_LIMIT": "0",
    }


async def test_five_kills_lose_nothing_and_send_twice_only_without_a_key(
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("SMSGW_CRASH_SEED") or random.randrange(1 << 32))
    print(f"\ncrash test seed {seed} (SMSGW_CRASH_SEED={seed} repeats the kill moments)")
    started = time.monotonic()
    ports = free_port(), free_port()  # gRPC, HTTP: the same for every process
    emulators: list[RunningEmulator] = []
    sky, cloud = await start_emulators(
        emulators, f"http://127.0.0.1:{ports[1]}/webhooks/sendcloud", DELIVERY_DELAY
    )
    try:
        with private_postgres() as pg:
            env = gateway_env(pg.dsn, tmp_path, sky, cloud)
            log = tmp_path / "smsgw.log"
            async with contextlib.AsyncExitStack() as stack:
                conn: asyncpg.Connection = await asyncpg.connect(pg.dsn)
                stack.push_async_callback(conn.close)

                async def start() -> Serve:
                    return await stack.enter_async_context(serve(env, log, ports))

                server = await start()
                channel = await stack.enter_async_context(
                    grpc.aio.insecure_channel(server.target, options=CHANNEL_OPTIONS)
                )
                stubs = Stubs.on(channel, await new_account(pg.dsn, "crash"))
                load = Load(*await create_templates(stubs))
                callers = [
                    create_batch(stubs, load),
                    *(send_messages(stubs, load, i) for i in range(SENDERS)),
                    *(send_codes(stubs, load, i) for i in range(VERIFIERS)),
                ]
                kills: list[Kill] = []
                async with background(*callers) as tasks:
                    rng = random.Random(seed)
                    for k in range(KILLS):
                        # The first kill may land in CreateBatch; later ones in dispatch.
                        await asyncio.sleep(rng.uniform(0.3, 2.5) if k == 0 else rng.uniform(1, 5))
                        assert not server.exited, server.log_tail()
                        server.kill_group()
                        await server.proc.wait()
                        kills.append(await after_kill(conn, sky, cloud))
                        server = await start()
                    await asyncio.sleep(3)
                    load.stop.set()  # each caller ends after its call in hand
                    await asyncio.gather(*tasks)
                load_done = time.monotonic()
                states = await final_states(stubs, load, SETTLE_WITHIN)
                settled = time.monotonic()
                await check(conn, load, states, kills, sky, cloud)
                assert not server.exited, server.log_tail()
                print(
                    f"load {load_done - started:.1f} s, settled {settled - load_done:.1f} s "
                    f"after it; test {time.monotonic() - started:.1f} s"
                )
    finally:
        for emulator in emulators:
            await emulator.stop()


async def check(
    conn: asyncpg.Connection,
    load: Load,
    states: dict[str, int],
    kills: list[Kill],
    sky: RunningEmulator,
    cloud: RunningEmulator,
) -> None:
    print(f"retried calls: {dict(load.retried)}; refused: {len(load.refused)}")
    assert not load.refused, load.refused[:5]
    assert load.batch_id, "the batch was never accepted"
    # The batch holds each of its numbers once, however often CreateBatch was retried.
    assert sorted(load.listed.values()) == sorted(batch_numbers()), len(load.listed)
    everything = {**load.accepted, **load.listed}
    ids = list(everything)
    lost = [i for i in ids if states.get(i) != DELIVERED]
    # Each accepted call stored its message once: retries with the same request_id
    # added nothing, and no message exists that no caller was told about.
    stored = await conn.fetchval("SELECT count(*) FROM messages")
    to_sky = collections.Counter(r.phone for r in sky.state.received)
    to_cloud = collections.Counter(CLOUD_PREFIX + r.phone for r in cloud.state.received)
    twice_sky = {m: n - 1 for m, n in to_sky.items() if n > 1}
    twice_cloud = {m: n - 1 for m, n in to_cloud.items() if n > 1}
    leased_at = collections.Counter(lease.mobile for k in kills for lease in k.leased.values())
    summary = (
        f"crashes survived {len(kills)}, messages checked {len(ids)}, lost {len(lost)}, "
        f"duplicated {sum(twice_sky.values())} (skynoo), {sum(twice_cloud.values())} (sendcloud)"
    )
    print(summary)
    resent = [sum(lease.mobile in k.at_provider for lease in k.leased.values()) for k in kills]
    print(f"per kill: leased {[len(k.leased) for k in kills]}, of them at a provider {resent}")
    assert not lost, f"{summary}; not delivered: {[(i, states.get(i)) for i in lost[:5]]}"
    # The batch's own counts agree: every message counted once, however often resent.
    b = load.batch
    assert b is not None and b.status == common_pb2.BATCH_STATUS_SUCCEEDED, (summary, b)
    assert (b.total, b.sent, b.delivered, b.failed) == (BATCH, BATCH, BATCH, 0), (summary, b)
    assert stored == len(ids), f"{summary}; stored {stored} messages for {len(ids)} accepted"
    # Every message reached its provider: +86 SendCloud, the rest Skynoo.
    mobiles = set(everything.values())
    assert {m for m in mobiles if m.startswith(CLOUD_PREFIX)} == set(to_cloud), summary
    assert {m for m in mobiles if not m.startswith(CLOUD_PREFIX)} == set(to_sky), summary
    # With its idempotency key SendCloud never got a message twice; Skynoo got again
    # only messages in flight at a kill, at most once per kill that caught them.
    assert not twice_cloud, f"{summary}; {list(twice_cloud.items())[:5]}"
    beyond = {m: n for m, n in twice_sky.items() if n > leased_at[m]}
    assert not beyond, f"{summary}; sent again though not in flight at a kill: {beyond}"
    # A process has at most WORKERS groups of CLAIM messages in flight.
    assert sum(twice_sky.values()) <= len(kills) * WORKERS * CLAIM, summary
    await check_takeover(conn, kills, summary)


async def check_takeover(conn: asyncpg.Connection, kills: list[Kill], summary: str) -> None:
    """The messages a dead worker held were claimed again and sent by a later process
    after their lease ran out, not before. Codes and single sends (claimed first)
    within TAKEOVER_WITHIN s of that; batch rows whenever their turn comes: rows of
    one batch share their due time, and a row taken over queues behind the rest."""
    leases: dict[str, list[Lease]] = collections.defaultdict(list)
    for kill in kills:
        for message_id, lease in kill.leased.items():
            leases[message_id].append(lease)
    assert leases, "no kill caught a message in flight: the test proved nothing"
    rows = await conn.fetch(
        "SELECT m.id, m.attempts, m.batch_id IS NOT NULL AS bulk, "
        "  m.to_number LIKE $2 || '%' AND m.status = $3 AS delivered_by_sendcloud, "
        "  (SELECT min(e.occurred_at) FROM message_events e "
        "   WHERE e.message_id = m.id AND e.status >= 3) AS sent_at "
        "FROM messages m WHERE m.id = ANY($1::text[])",
        list(leases),
        CLOUD_PREFIX,
        common_pb2.MESSAGE_STATUS_DELIVERED,
    )
    assert len(rows) == len(leases), summary
    lags: dict[bool, list[float]] = {False: [], True: []}
    confirmed = 0
    for row in rows:
        last = max(leases[row["id"]], key=lambda lease: lease.until)
        if row["attempts"] == last.attempts and row["delivered_by_sendcloud"]:
            # SendCloud's SMSHook names our message (the tag sent with it): the send
            # the dead worker made is confirmed by its receipt, so it is final before
            # its lease runs out and is neither claimed nor sent again.
            confirmed += 1
            continue
        assert row["attempts"] > last.attempts, f"{summary}; {row['id']} never claimed again"
        assert row["sent_at"] is not None, f"{summary}; {row['id']} never sent"
        lags[row["bulk"]].append((row["sent_at"] - last.until).total_seconds())
    for bulk, kind in ((False, "single/code"), (True, "batch")):
        if lags[bulk]:
            print(
                f"leases taken over: {len(lags[bulk])} {kind} messages sent again "
                f"{min(lags[bulk]):.2f} to {max(lags[bulk]):.2f} s after their lease ran out"
            )
    if confirmed:
        print(f"leases settled by a SendCloud receipt before their takeover: {confirmed}")
    all_lags = lags[False] + lags[True]
    assert min(all_lags, default=1.0) > 0, (
        f"{summary}; a message was taken over before its lease ran out"
    )
    late = max(lags[False], default=0.0)
    assert late < TAKEOVER_WITHIN, f"{summary}; a single message taken over {late:.1f} s late"
