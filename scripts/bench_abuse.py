"""Large batches as abuse: server memory and another account's SendMessage latency.

Four accounts each send one CreateBatch of --numbers numbers (100,000 by default,
the maximum, each with its own template values) at the same moment; a refused call
(RESOURCE_EXHAUSTED) is sent again after the RetryInfo delay, as a client should.
Meanwhile a fifth account sends one SendMessage at a time, and the peak resident
memory of the ``smsgw serve`` process, alone and with its child processes (the
batch preparation processes), is sampled every 20 ms.

    .venv/bin/python scripts/bench_abuse.py              # 4 x 100,000 numbers
    .venv/bin/python scripts/bench_abuse.py --quick      # 4 x 5,000 numbers (CI)

Starts its own ``smsgw serve`` (embedded PostgreSQL in a temp dir, or DATABASE_URL),
bounded in size and time, on 127.0.0.1 only. Prints a table; exits 1 if a target
(p99 during <= 3x idle p99, peak RSS <= 500 MB) is missed or a batch is not stored.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from bench_common import (
    ROOT,
    Metadata,
    database_label,
    percentile_ms,
    smsgw_command,
    start_smsgw,
    stop_process,
    workspace,
)
from google.rpc import error_details_pb2, status_pb2
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2, message_pb2, message_pb2_grpc

ABUSERS = 4
RSS_TARGET_MB = 500.0
P99_FACTOR = 3.0
OPTIONS = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


def rss_mb(pid: int) -> float:
    """Resident memory of one process, in MB (Linux /proc); 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def create_account(tmp: Path, name: str) -> Metadata:
    env = {**os.environ, "SMSGW_DATA_DIR": str(tmp / "smsgw")}
    created = subprocess.run(
        [*smsgw_command(), "account", "create", name],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    account = json.loads(created.stdout.strip().splitlines()[-1])
    token = base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def batch_request(n: int, offset: int) -> batch_pb2.CreateBatchRequest:
    numbers = [f"+86138{offset + i:08d}" for i in range(n)]
    return batch_pb2.CreateBatchRequest(
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        content="Hi #name#, your order #order_no# has shipped.",
        numbers=numbers,
        template_data={
            number: batch_pb2.TemplateData(values={"name": f"user{i}", "order_no": f"A-{i}"})
            for i, number in enumerate(numbers)
        },
    )


def retry_delay(exc: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a RESOURCE_EXHAUSTED answer, or None if it has none."""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)  # type: ignore[arg-type]
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the server's batch preparation processes)."""
    found: list[int] = []
    # Each thread lists the children it started (these start from a worker thread).
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self.peak_with_children = 0.0
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        own = rss_mb(self.pid)
        self.peak = max(self.peak, own)
        total = own + sum(rss_mb(c) for c in children(self.pid))
        self.peak_with_children = max(self.peak_with_children, total)

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self._sample()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return self.peak


async def sends(
    stub: message_pb2_grpc.MessageServiceStub, metadata: Metadata, stop: asyncio.Event, gap: float
) -> tuple[list[float], int]:
    """SendMessage one at a time until ``stop``; durations in seconds and errors."""
    durations: list[float] = []
    errors = 0
    i = 0
    while not stop.is_set():
        i += 1
        start = time.perf_counter()
        try:
            await stub.SendMessage(
                message_pb2.SendMessageRequest(
                    mobile=f"+86139{i % 100_000:08d}",
                    use_type=common_pb2.USE_TYPE_NOTIFICATION,
                    text=f"Your parcel {i} is on its way.",
                ),
                metadata=metadata,
                timeout=60,
            )
        except grpc.aio.AioRpcError:
            errors += 1
        durations.append(time.perf_counter() - start)
        await asyncio.sleep(gap)
    return sorted(durations), errors


async def abuse(
    target: str, metadata: Metadata, req: batch_pb2.CreateBatchRequest, limit: float
) -> dict[str, float]:
    """One CreateBatch, sent again after each refusal until accepted or ``limit`` s pass."""
    start = time.perf_counter()
    refusals = 0
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        while True:
            try:
                reply = await stub.CreateBatch(req, metadata=metadata, timeout=300)
            except grpc.aio.AioRpcError as exc:
                delay = retry_delay(exc)
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or delay is None:
                    raise
                refusals += 1
                if time.perf_counter() - start > limit:
                    return {"accepted": 0.0, "refusals": refusals, "seconds": limit}
                await asyncio.sleep(delay)
                continue
            return {
                "accepted": float(reply.accepted_count),
                "refusals": refusals,
                "seconds": time.perf_counter() - start,
            }


def abuser(
    target: str,
    metadata: Metadata,
    n: int,
    offset: int,
    ready: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue[dict[str, float]],
) -> None:
    """A client process of its own: builds its request, waits for the others, sends."""
    req = batch_request(n, offset)
    ready.wait()
    results.put(asyncio.run(abuse(target, metadata, req, 600)))


async def run(
    pid: int, target: str, victim: Metadata, abusers: list[Metadata], n: int, idle_s: float
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        messages = message_pb2_grpc.MessageServiceStub(channel)
        gap = 0.005
        # Warm up, then the idle figures.
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        await sends(messages, victim, stop, gap)
        idle_rss = rss_mb(pid)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(idle_s, stop.set)
        idle, idle_errors = await sends(messages, victim, stop, gap)

        # Each abuser is a process of its own (building and encoding a 100k request
        # would stall this one's event loop and so the latencies it measures).
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Barrier(len(abusers) + 1)
        queue: multiprocessing.Queue[dict[str, float]] = ctx.Queue()
        procs = [
            ctx.Process(target=abuser, args=(target, md, n, k * n, ready, queue))
            for k, md in enumerate(abusers)
        ]
        for p in procs:
            p.start()
        await asyncio.to_thread(ready.wait)
        sampler = Sampler(pid)
        sampler.start()
        stop = asyncio.Event()
        victim_task = asyncio.create_task(sends(messages, victim, stop, gap))
        start = time.perf_counter()
        results = [await asyncio.to_thread(queue.get, True, 900) for _ in procs]
        elapsed = time.perf_counter() - start
        stop.set()
        busy, busy_errors = await victim_task
        peak = await sampler.stop()
        peak_all = sampler.peak_with_children
        for p in procs:
            p.join(30)
    return {
        "idle_rss": idle_rss,
        "peak_rss": peak,
        "peak_rss_with_children": peak_all,
        "idle_n": len(idle),
        "idle_p50": percentile_ms(idle, 0.50),
        "idle_p99": percentile_ms(idle, 0.99),
        "busy_n": len(busy),
        "busy_p50": percentile_ms(busy, 0.50),
        "busy_p99": percentile_ms(busy, 0.99),
        "busy_max": percentile_ms(busy, 1.0),
        "errors": idle_errors + busy_errors,
        "accepted": sum(r["accepted"] for r in results),
        "refusals": sum(r["refusals"] for r in results),
        "batches_s": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--abusers", type=int, default=ABUSERS, help="accounts sending a batch")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.idle_seconds = 5_000, 3.0
    with workspace("smsgw-bench-abuse-") as (procs, tmp):
        gw = start_smsgw(tmp, procs, {}, 180)
        abusers = [create_account(tmp, f"abuser{k}") for k in range(args.abusers)]
        f = asyncio.run(
            run(gw.proc.pid, gw.target, gw.metadata, abusers, args.numbers, args.idle_seconds)
        )
        stop_process(gw.proc)
    expected = args.abusers * args.numbers
    if args.json:
        print(json.dumps({"numbers": args.numbers, **f}, indent=2))
    else:
        print(
            f"{args.abusers} concurrent CreateBatch x {args.numbers} numbers, database: "
            f"{database_label()}"
        )
        rows = [
            ("server RSS idle, MB", f"{f['idle_rss']:.0f}"),
            ("server RSS peak during the batches, MB", f"{f['peak_rss']:.0f}"),
            (
                f"  with its batch preparation processes, MB (target <= {RSS_TARGET_MB:.0f})",
                f"{f['peak_rss_with_children']:.0f}",
            ),
            ("messages accepted, of", f"{f['accepted']:.0f} / {expected}"),
            ("CreateBatch refusals (RESOURCE_EXHAUSTED, retried)", f"{f['refusals']:.0f}"),
            ("all batches stored after, s", f"{f['batches_s']:.1f}"),
            ("other account SendMessage idle: calls", f"{f['idle_n']:.0f}"),
            ("  p50 / p99, ms", f"{f['idle_p50']:.1f} / {f['idle_p99']:.1f}"),
            ("other account SendMessage during: calls", f"{f['busy_n']:.0f}"),
            (
                "  p50 / p99 / max, ms",
                f"{f['busy_p50']:.1f} / {f['busy_p99']:.1f} / {f['busy_max']:.0f}",
            ),
            (
                f"  p99 during / idle (target <= {P99_FACTOR:g})",
                f"{f['busy_p99'] / max(f['idle_p99'], 1e-9):.1f}",
            ),
            ("SendMessage errors", f"{f['errors']:.0f}"),
        ]
        width = max(len(r[0]) for r in rows) + 2
        print(f"{'figure':<{width}}{'value':>18}")
        for label, value in rows:
            print(f"{label:<{width}}{value:>18}")
    ok = (
        f["accepted"] == expected
        and f["errors"] == 0
        and f["peak_rss_with_children"] <= RSS_TARGET_MB
        and f["busy_p99"] <= P99_FACTOR * f["idle_p99"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
