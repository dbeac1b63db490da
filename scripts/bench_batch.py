"""CreateBatch of N numbers with per-number variables against a raw asyncpg COPY of
the same rows, and the sustained dispatch rate of that batch to the loopback provider.

    .venv/bin/python scripts/bench_batch.py              # 100,000 numbers
    .venv/bin/python scripts/bench_batch.py --quick      # 2,000 numbers (CI)

Starts its own ``smsgw serve`` (embedded PostgreSQL in a temp dir, or DATABASE_URL),
bounded in size and time, on 127.0.0.1 only. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from bench_common import database_label, smsgw_dsn, start_smsgw, stop_process, workspace
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2

from server.store.batches import MESSAGE_COLUMNS, UNANNOUNCED
from server.store.pool import init_connection

FINAL = {
    common_pb2.BATCH_STATUS_SUCCEEDED,
    common_pb2.BATCH_STATUS_FAILED,
    common_pb2.BATCH_STATUS_CANCELLED,
}


def request(n: int) -> batch_pb2.CreateBatchRequest:
    numbers = [f"+86138{i:08d}" for i in range(n)]
    return batch_pb2.CreateBatchRequest(
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        content="Hi #name#, your order #order_no# has shipped.",
        numbers=numbers,
        template_data={
            number: batch_pb2.TemplateData(values={"name": f"user{i}", "order_no": f"A-{i}"})
            for i, number in enumerate(numbers)
        },
    )


def same_rows(n: int) -> list[tuple[object, ...]]:
    """The rows CreateBatch stores for request(n): rendered bodies and the values."""
    now = datetime.now(UTC)
    return [
        (
            uuid.uuid4().hex,
            1,
            "b_bench",
            f"+86138{i:08d}",
            2,
            f"Hi user{i}, your order A-{i} has shipped.",
            None,
            1,
            2,
            1,
            now,
            None,
            {"name": f"user{i}", "order_no": f"A-{i}"},
            now + timedelta(hours=24),  # expires_at: the server's message TTL
            0,  # charged: not a prepaid account
            UNANNOUNCED,  # claimed_until: stored unannounced, as CreateBatch does
        )
        for i in range(n)
    ]


async def raw_copy(dsn: str, n: int) -> dict[str, float]:
    """A raw COPY of the same rows, in seconds, two ways.

    ``table``: into a table made LIKE messages (its columns, defaults and indexes), as
    CreateBatch stores them; the baseline for P2. ``temp``: the bodies only, into a
    temporary table without indexes (no WAL): a floor no durable store reaches."""
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        rows = same_rows(n)
        await conn.execute("DROP TABLE IF EXISTS bench_messages")
        await conn.execute("CREATE TABLE bench_messages (LIKE messages INCLUDING ALL)")
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_messages", columns=MESSAGE_COLUMNS, records=rows
            )
        table = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_messages")

        await conn.execute("CREATE TEMP TABLE bench_temp (LIKE messages INCLUDING DEFAULTS)")
        columns = MESSAGE_COLUMNS[:6] + MESSAGE_COLUMNS[7:11]
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_temp", columns=columns, records=[r[:6] + r[7:11] for r in rows]
            )
        temp = time.perf_counter() - start
        return {"table": table, "temp": temp}
    finally:
        await conn.close()


async def run_batch(
    target: str, metadata: tuple[tuple[str, str], ...], n: int, limit: float
) -> dict[str, float]:
    options = [
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        req = request(n)
        start = time.perf_counter()
        reply = await stub.CreateBatch(req, metadata=metadata, timeout=120)
        accepted = time.perf_counter() - start
        assert reply.accepted_count == n, (reply.accepted_count, len(reply.rejected))
        deadline = time.monotonic() + limit
        while True:
            batch = await stub.GetBatch(
                batch_pb2.GetBatchRequest(task_id=reply.task_id), metadata=metadata
            )
            if batch.status in FINAL or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        finished = time.perf_counter() - start
    return {
        "accept_s": accepted,
        "delivered": float(batch.delivered),
        "dispatch_per_s": batch.delivered / max(finished - accepted, 1e-9),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=300, help="limit for the dispatch phase")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.seconds = 2_000, 60
    with workspace("smsgw-bench-batch-") as (procs, tmp):
        gw = start_smsgw(tmp, procs, {"SMSGW_LOOPBACK_DELAY_MS": "5"}, 180)
        # The baseline first, while the database is idle (the batch's dispatch is not).
        dsn = smsgw_dsn(gw.log)
        copies = asyncio.run(raw_copy(dsn, args.numbers)) if dsn else {}
        figures = asyncio.run(run_batch(gw.target, gw.metadata, args.numbers, args.seconds))
        stop_process(gw.proc)
    if args.json:
        print(json.dumps({"numbers": args.numbers, **figures, "copy": copies}, indent=2))
        return 0 if figures["delivered"] == args.numbers else 1
    table_s = copies.get("table", float("nan"))
    temp_s = copies.get("temp", float("nan"))
    print(f"numbers {args.numbers}, database: {database_label()}")
    print(f"{'figure':<52}{'value':>10}")
    print(f"{'CreateBatch accepted (validate + store), s':<52}{figures['accept_s']:>10.2f}")
    print(f"{'raw COPY of the same rows into a messages-like table, s':<52}{table_s:>10.2f}")
    ratio = figures["accept_s"] / table_s
    print(f"{'ratio CreateBatch / that COPY (P2 target <= 6)':<52}{ratio:>10.1f}")
    print(f"{'raw COPY of the bodies into a temp table, s':<52}{temp_s:>10.2f}")
    print(f"{'ratio CreateBatch / temp COPY':<52}{figures['accept_s'] / temp_s:>10.1f}")
    print(f"{'delivered':<52}{figures['delivered']:>10.0f}")
    print(f"{'sustained dispatch to loopback, msgs/s':<52}{figures['dispatch_per_s']:>10.0f}")
    return 0 if figures["delivered"] == args.numbers else 1


if __name__ == "__main__":
    sys.exit(main())
