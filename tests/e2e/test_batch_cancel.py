"""CancelBatch during a full-speed drain (issue 16, item 9).

Found measuring OTP latency during a campaign: CancelBatch deadlocked with a worker
recording a sent group of the same batch; PostgreSQL broke the deadlock, CancelBatch
answered INTERNAL, and the worker's group, already taken by the provider, was left
to its lease to be claimed and sent again. Here batches drain through a Skynoo
emulator with several workers and small claims (so recordings are many and
constant) and each is cancelled mid-drain: every CancelBatch answers OK, and the
provider receives no message twice.
"""

from __future__ import annotations

import asyncio
import collections
import random

import grpc
from sms.v1 import batch_pb2, common_pb2

from server.emulators.common import RunningEmulator
from tests.e2e.batch_calls import create, final, numbers
from tests.e2e.conftest import GatewayFactory
from tests.e2e.emulated import only, sky, start_skynoo

S = common_pb2
ROUNDS = 20
PER_BATCH = 40


async def test_cancel_during_a_drain_never_fails_and_never_sends_twice(
    start_gateway: GatewayFactory, emulators: list[RunningEmulator]
) -> None:
    emulator = await start_skynoo(emulators, delivery_delay=0.05)
    running = await start_gateway(
        routing=only(sky(emulator)),
        dispatch_workers=4,
        dispatch_claim_size=5,
        poll_interval_seconds=0.2,
    )
    client = await running.client()
    rng = random.Random(16_9)
    codes: collections.Counter[str] = collections.Counter()
    task_ids: list[str] = []
    for round_ in range(ROUNDS):
        reply = await create(
            client,
            content=f"Round {round_}: your parcel is on its way.",
            numbers=numbers(PER_BATCH, start=round_ * 1000),
        )
        task_ids.append(reply.task_id)
        await asyncio.sleep(rng.uniform(0.0, 0.05))  # the drain is under way
        try:
            await client.batches.CancelBatch(
                batch_pb2.CancelBatchRequest(task_id=reply.task_id), metadata=client.metadata
            )
            codes["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
    assert codes == {"OK": ROUNDS}

    batches = [await final(client, task_id) for task_id in task_ids]
    assert all(b.status == S.BATCH_STATUS_CANCELLED for b in batches)
    # Nothing handed to the provider stays in flight: the drain has settled.
    await asyncio.sleep(0.3)

    received = collections.Counter((r.phone, r.content) for r in emulator.state.received)
    twice = {key: n for key, n in received.items() if n > 1}
    assert twice == {}, f"sent more than once: {twice}"
    all_cancelled = 0
    for round_, task_id in enumerate(task_ids):
        rows = await running.gateway.pool.fetch(
            "SELECT status FROM messages WHERE batch_id = $1", task_id
        )
        handed = sum(1 for r in rows if r["status"] in (3, 4, 5))
        cancelled = sum(1 for r in rows if r["status"] == 8)
        content = f"Round {round_}: your parcel is on its way."
        got = sum(n for (_, c), n in received.items() if c == content)
        assert got == handed, (round_, got, handed)
        assert handed + cancelled == PER_BATCH, (round_, [r["status"] for r in rows])
        all_cancelled += cancelled
    # The cancels really raced the drain: some messages went, some were stopped.
    assert 0 < sum(b.sent for b in batches) < ROUNDS * PER_BATCH
    assert all_cancelled > 0
