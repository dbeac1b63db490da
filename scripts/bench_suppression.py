"""CreateBatch against a large suppression list: the batch's check is one join in
PostgreSQL, so a 100,000-number batch should cost about the same with 1,000,000
suppressed numbers as with none (issue 19: within P2, <= 6x a raw COPY).

    .venv/bin/python scripts/bench_suppression.py               # 100,000 vs 1,000,000
    .venv/bin/python scripts/bench_suppression.py --quick       # 2,000 vs 20,000 (CI)

Starts its own ``smsgw serve`` (embedded PostgreSQL in a temp dir, or DATABASE_URL)
with no dispatch workers (accept only), on 127.0.0.1, and two accounts: one with the
suppression list (COPYed into the database directly: AddSuppressions would take 100
calls; 1% of the batch's numbers are on it), one without. Their CreateBatch calls
alternate, so both see the same load on a shared machine. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time

import asyncpg
import grpc
from bench_batch import raw_copy, request
from bench_common import (
    database_label,
    smsgw_command,
    smsgw_dsn,
    start_smsgw,
    stop_process,
    workspace,
)
from sms.v1 import batch_pb2_grpc

from server.domain.suppression import DEFAULT_USE_TYPES, SuppressionReason
from server.store.suppressions import matches

OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


Metadata = tuple[tuple[str, str], ...]


async def create_batches(
    target: str, accounts: list[Metadata], n: int, runs: int
) -> list[tuple[list[float], int, str]]:
    """For each account: seconds each of ``runs`` CreateBatch calls of request(n)
    took (the accounts' calls alternate), the numbers rejected, the last batch id."""
    times: list[list[float]] = [[] for _ in accounts]
    rejected = [0 for _ in accounts]
    last = ["" for _ in accounts]
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        req = request(n)
        for _ in range(runs):
            for i, metadata in enumerate(accounts):
                start = time.perf_counter()
                reply = await stub.CreateBatch(req, metadata=metadata, timeout=300)
                times[i].append(time.perf_counter() - start)
                rejected[i] = len(reply.rejected)
                last[i] = reply.task_id
                assert reply.accepted_count + rejected[i] == n
    return list(zip(times, rejected, last, strict=True))


async def join_alone(dsn: str, batch_id: str, account_id: int, explain: bool) -> float:
    """Seconds the batch check's join takes on its own (as a SELECT, best of 3)."""
    query = "SELECT count(*) FROM messages m, suppressions s WHERE m.batch_id = $1 AND " + matches(
        "$2", "m.to_number", "2"
    )
    conn = await asyncpg.connect(dsn)
    try:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            await conn.fetchval(query, batch_id, account_id)
            best = min(best, time.perf_counter() - start)
        if explain:
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {query}", batch_id, account_id)
            print("\n".join(r[0] for r in plan))
        return best
    finally:
        await conn.close()


def second_account(dsn: str) -> Metadata:
    """Another account (the CLI, on smsgw's database), with no suppressions."""
    env = {**os.environ, "DATABASE_URL": dsn}
    created = subprocess.run(
        [*smsgw_command(), "account", "create", "clean"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    account = json.loads(created.stdout.strip().splitlines()[-1])
    token = base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


async def bench_account(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        account_id: int = await conn.fetchval("SELECT max(id) FROM accounts WHERE name = 'bench'")
        return account_id
    finally:
        await conn.close()


async def fill_suppressions(dsn: str, entries: int, batch_numbers: int) -> int:
    """COPYs ``entries`` suppressions for the bench account: every 100th number of the
    batch, and the rest numbers outside it. Returns how many of the batch's are on it."""
    conn = await asyncpg.connect(dsn)
    try:
        account_id = await conn.fetchval("SELECT max(id) FROM accounts WHERE name = 'bench'")
        in_batch = [f"+86138{i:08d}" for i in range(0, batch_numbers, 100)][:entries]
        others = (f"+86139{i:08d}" for i in range(entries - len(in_batch)))
        use_types = [int(t) for t in DEFAULT_USE_TYPES]
        reason = int(SuppressionReason.MANUAL)
        records = ((account_id, m, reason, use_types) for m in [*in_batch, *others])
        await conn.copy_records_to_table(
            "suppressions",
            columns=("account_id", "mobile", "reason", "use_types"),
            records=records,
        )
        await conn.execute("ANALYZE suppressions")
        return len(in_batch)
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--suppressions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="CreateBatch calls per case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--explain", action="store_true", help="print the join's plan")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.suppressions, args.runs = 2_000, 20_000, 2
    with workspace("smsgw-bench-suppression-") as (procs, tmp):
        gw = start_smsgw(tmp, procs, {"SMSGW_DISPATCH_WORKERS": "0"}, 180)
        dsn = smsgw_dsn(gw.log)
        if dsn is None:
            raise RuntimeError("cannot find the database smsgw uses")
        clean = second_account(dsn)
        copy_s = asyncio.run(raw_copy(dsn, args.numbers))["table"]
        start = time.perf_counter()
        listed = asyncio.run(fill_suppressions(dsn, args.suppressions, args.numbers))
        fill_s = time.perf_counter() - start
        # A small batch each first: connections and plans warm, as in a running server.
        asyncio.run(create_batches(gw.target, [clean, gw.metadata], 1_000, 1))
        (without, none_rejected, _), (with_list, rejected, listed_batch) = asyncio.run(
            create_batches(gw.target, [clean, gw.metadata], args.numbers, args.runs)
        )
        account_id = asyncio.run(bench_account(dsn))
        join_s = asyncio.run(join_alone(dsn, listed_batch, account_id, args.explain))
        stop_process(gw.proc)
    assert none_rejected == 0 and rejected == listed, (none_rejected, rejected, listed)
    base, checked = statistics.median(without), statistics.median(with_list)
    print(
        f"batch {args.numbers:,} numbers, {args.suppressions:,} suppressions "
        f"({listed:,} of the batch's numbers), {args.runs} runs each (median), "
        f"database: {database_label()}"
    )
    rows = [
        ("raw COPY of the same rows into a messages-like table, s", f"{copy_s:.2f}"),
        ("CreateBatch, account with no suppressions, s (median)", f"{base:.2f}"),
        (f"  the same, account with {args.suppressions:,} suppressions", f"{checked:.2f}"),
        ("CreateBatch, no suppressions, s (fastest run)", f"{min(without):.2f}"),
        (f"  the same, {args.suppressions:,} suppressions", f"{min(with_list):.2f}"),
        ("numbers rejected RECIPIENT_SUPPRESSED", f"{rejected:,}"),
        ("the check's join alone (batch x suppressions), s", f"{join_s:.3f}"),
        ("ratio with / without suppressions", f"{checked / base:.2f}"),
        ("ratio with suppressions / raw COPY (P2 target <= 6)", f"{checked / copy_s:.1f}"),
        ("setting up the list (COPY + ANALYZE), s", f"{fill_s:.1f}"),
    ]
    print(f"{'figure':<58}{'value':>12}")
    for name, value in rows:
        print(f"{name:<58}{value:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
