"""A large batch through a provider's bulk API against one request per number (issue 15).

    .venv/bin/python scripts/bench_bulk.py                 # 100,000 numbers
    .venv/bin/python scripts/bench_bulk.py --quick         # 2,000 numbers (CI)

The provider is the loopback one, answering each request after ``--latency-ms``;
each mode runs once without an outbound rate and once at ``--rate`` requests per
second (what real providers allow). Bulk sends the whole batch; single sends a
sample (``--sample``, or ten seconds' worth at the rate) and its time for the whole
batch is projected from the sample's rate. Requests are counted by the gateway
(``smsgw_provider_request_duration_seconds_count``). Each run starts its own
``smsgw serve`` (embedded PostgreSQL in a temp dir, or DATABASE_URL), bounded in
size and time, on 127.0.0.1 only. Prints a table (``--json``: the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from bench_common import HOST, database_label, free_port, start_smsgw, stop_process, workspace
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2

REQUESTS_METRIC = 'smsgw_provider_request_duration_seconds_count{provider="loopback"}'


@dataclass
class Run:
    mode: str  # bulk | single
    rate: float | None  # requests/s the provider allows; None: no limit
    numbers: int  # sent in this run
    requests: int
    seconds: float  # from accepted to every number sent
    projected: bool  # seconds projected to ``batch`` numbers from this run's rate
    batch: int

    @property
    def per_s(self) -> float:
        return self.numbers / max(self.seconds, 1e-9)

    @property
    def batch_seconds(self) -> float:
        return self.batch / self.per_s if self.projected else self.seconds


def config_file(tmp: Path, rate: float | None) -> Path:
    path = tmp / f"smsgw-{rate}.toml"
    limit = f"rate_per_second = {rate}\n" if rate else ""
    path.write_text(f'[providers.loopback]\nkind = "loopback"\n{limit}')
    return path


def requests_sent(http_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(REQUESTS_METRIC):
                return int(float(line.split()[-1]))
    return 0


async def send_batch(
    target: str, metadata: tuple[tuple[str, str], ...], n: int, limit: float
) -> tuple[int, float]:
    """Creates a batch of n numbers; waits until all are sent. Returns (sent, seconds)."""
    numbers = [f"+86138{i:08d}" for i in range(n)]
    req = batch_pb2.CreateBatchRequest(
        use_type=common_pb2.USE_TYPE_MARKETING,
        content="Hi #name#, 20% off today only.",
        numbers=numbers,
        template_data={
            number: batch_pb2.TemplateData(values={"name": f"user{i}"})
            for i, number in enumerate(numbers)
        },
    )
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        reply = await stub.CreateBatch(req, metadata=metadata, timeout=300)
        assert reply.accepted_count == n, (reply.accepted_count, len(reply.rejected))
        start = time.perf_counter()
        deadline = time.monotonic() + limit
        while True:
            batch = await stub.GetBatch(
                batch_pb2.GetBatchRequest(task_id=reply.task_id), metadata=metadata
            )
            if batch.sent + batch.failed >= n or time.monotonic() > deadline:
                return batch.sent, time.perf_counter() - start
            await asyncio.sleep(0.05)


def run(
    tmp: Path, mode: str, rate: float | None, n: int, batch: int, latency_ms: int, limit: float
) -> Run:
    procs: list[subprocess.Popen[bytes]] = []
    http_port = free_port()
    env = {
        "SMSGW_CONFIG": str(config_file(tmp, rate)),
        "SMSGW_HTTP_ADDR": f"{HOST}:{http_port}",
        "SMSGW_DISPATCH_BULK": "true" if mode == "bulk" else "false",
        "SMSGW_LOOPBACK_LATENCY_MS": str(latency_ms),
        "SMSGW_LOOPBACK_DELAY_MS": "5",
    }
    try:
        gw = start_smsgw(tmp, procs, env, 180)
        sent, seconds = asyncio.run(send_batch(gw.target, gw.metadata, n, limit))
        requests = requests_sent(http_port)
    finally:
        for proc in procs:
            stop_process(proc)
    return Run(mode, rate, sent, requests, seconds, n < batch, batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=50, help="loopback answer time")
    parser.add_argument("--rate", type=float, default=20, help="provider requests/s limit")
    parser.add_argument("--sample", type=int, default=10_000, help="single sends, no limit")
    parser.add_argument("--seconds", type=float, default=600, help="limit for each run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.sample, args.seconds = 2_000, 500, 60
    n = args.numbers
    limited_sample = min(n, max(20, int(args.rate * 10)))
    plan = [
        ("bulk", None, n),
        ("single", None, min(n, args.sample)),
        ("bulk", args.rate, n),
        ("single", args.rate, limited_sample),
    ]
    runs: list[Run] = []
    with workspace("smsgw-bench-bulk-") as (_, tmp):
        for mode, rate, count in plan:
            print(f"running {mode}, rate {rate}, {count} numbers", file=sys.stderr, flush=True)
            runs.append(run(tmp, mode, rate, count, n, args.latency_ms, args.seconds))
    if args.json:
        figures = [{**asdict(r), "per_s": r.per_s, "batch_seconds": r.batch_seconds} for r in runs]
        print(json.dumps({"numbers": n, "latency_ms": args.latency_ms, "runs": figures}, indent=2))
    else:
        print(
            f"batch of {n:,} numbers to loopback answering in {args.latency_ms} ms a request; "
            f"database: {database_label()}"
        )
        print(
            f"{'mode':<8}{'provider rate':>14}{'numbers sent':>14}{'requests':>10}"
            f"{'numbers/req':>12}{'numbers/s':>11}{'batch time, s':>15}  how"
        )
        for r in runs:
            rate = "none" if r.rate is None else f"{r.rate:g} req/s"
            how = f"projected from {r.numbers:,}" if r.projected else "measured"
            print(
                f"{r.mode:<8}{rate:>14}{r.numbers:>14,}{r.requests:>10,}"
                f"{r.numbers / max(r.requests, 1):>12.1f}{r.per_s:>11.0f}"
                f"{r.batch_seconds:>15.1f}  {how}"
            )
    complete = all(r.numbers == count for r, (_, _, count) in zip(runs, plan, strict=True))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
