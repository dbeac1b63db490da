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
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from bench_common import cleanup, database_label, start_smsgw, stop_process
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2

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


async def raw_copy(dsn: str, n: int) -> float:
    """COPY of the same rows (rendered bodies) into a scratch table shaped like messages."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TEMP TABLE bench_messages (LIKE messages INCLUDING DEFAULTS)")
        now = datetime.now(UTC)
        rows = [
            (
                uuid.uuid4().hex,
                1,
                "b_bench",
                f"+86138{i:08d}",
                2,
                f"Hi user{i}, your order A-{i} has shipped.",
                1,
                2,
                1,
                now,
            )
            for i in range(n)
        ]
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_messages",
                columns=(
                    "id",
                    "account_id",
                    "batch_id",
                    "to_number",
                    "use_type",
                    "body",
                    "segments",
                    "priority",
                    "status",
                    "not_before",
                ),
                records=rows,
            )
        return time.perf_counter() - start
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
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.seconds = 2_000, 60
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="smsgw-bench-batch-"))
    try:
        gw = start_smsgw(tmp, procs, {"SMSGW_LOOPBACK_DELAY_MS": "5"}, 180)
        figures = asyncio.run(run_batch(gw.target, gw.metadata, args.numbers, args.seconds))
        dsn = _dsn(gw.log)
        copy_s = asyncio.run(raw_copy(dsn, args.numbers)) if dsn else float("nan")
        stop_process(gw.proc)
    finally:
        cleanup(procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = figures["accept_s"] / copy_s
    print(f"numbers {args.numbers}, database: {database_label()}")
    print(f"{'figure':<44}{'value':>12}")
    print(f"{'CreateBatch accepted (validate + store), s':<44}{figures['accept_s']:>12.2f}")
    print(f"{'raw asyncpg COPY of the same rows, s':<44}{copy_s:>12.2f}")
    print(f"{'ratio CreateBatch / COPY (target <= 6)':<44}{ratio:>12.1f}")
    print(f"{'delivered':<44}{figures['delivered']:>12.0f}")
    print(f"{'sustained dispatch to loopback, msgs/s':<44}{figures['dispatch_per_s']:>12.0f}")
    return 0 if figures["delivered"] == args.numbers else 1


def _dsn(log: Path) -> str | None:
    import os

    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    for line in log.read_text().splitlines():
        if "embedded PostgreSQL running in " in line:
            pgdata = line.split("embedded PostgreSQL running in ")[1].split('"')[0]
            return f"postgresql://postgres@/postgres?host={pgdata}"
    return None


if __name__ == "__main__":
    sys.exit(main())
