"""Verification codes while a campaign drains (issue 21, P6): how long after
SendVerification's answer the provider receives the code, idle and during a
100,000-number campaign at full speed.

    .venv/bin/python scripts/bench_priority.py              # 100,000-number campaign
    .venv/bin/python scripts/bench_priority.py --quick      # 3,000 numbers, few codes (CI)

Starts the Skynoo emulator (``smsgw emulate skynoo``, a process of its own, answering
after ``--latency-ms``) and ``smsgw serve`` (embedded PostgreSQL in a temp dir, or
DATABASE_URL) with a routing file that sends everything to it; 127.0.0.1 only,
bounded in size and time. Idle: ``--codes`` SendVerification calls one at a time
(``--gap-ms`` apart), each to a number of its own. Then the same account creates a
campaign of ``--numbers`` numbers (CreateBatch, per-number values) and, once it is
draining, the same calls again until they are done or the campaign is. Per call: the
call's duration, and the time from its answer reaching the client to the emulator
accepting the code (both read CLOCK_MONOTONIC, one clock for the whole machine; it
may be negative: the worker is woken before the answer is written). The campaign's
rate is its messages sent during the codes' window. Prints a table (``--json``: the
figures); exits 1 when a code never reached the provider or the campaign was not
draining while the codes were sent (a full run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from bench_common import (
    HOST,
    ROOT,
    Metadata,
    database_label,
    free_port,
    percentile_ms,
    smsgw_command,
    start_smsgw,
    workspace,
)
from sms.v1 import (
    batch_pb2,
    batch_pb2_grpc,
    common_pb2,
    verification_pb2,
    verification_pb2_grpc,
)

TARGET_MS = 50.0  # during the campaign: p99 from answer to provider
CODE_PREFIX = "+86139"  # the codes' numbers; the campaign's are +86138...
OPTIONS = [("grpc.max_send_message_length", 64 << 20)]
# The limits are not what this measures: OTP limits off, send rates out of the way.
LIMITS_ENV = {
    "SMSGW_OTP_MOBILE_INTERVAL_SECONDS": "0",
    "SMSGW_OTP_ACCOUNT_PER_HOUR": "0",
    "SMSGW_OTP_PREFIX_LIMIT": "0",
    "SMSGW_OTP_COUNTRY_LIMIT": "0",
    "SMSGW_GLOBAL_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_QUERY_RATE": "1000000",
}


@dataclass
class Phase:
    name: str  # idle | campaign
    codes: int  # calls answered
    reached: int  # of those, codes the provider received
    call_p50_ms: float
    call_p99_ms: float
    to_provider_p50_ms: float
    to_provider_p99_ms: float
    to_provider_max_ms: float
    campaign_per_s: float | None = None  # campaign messages sent per second meanwhile
    window_s: float = 0.0


def routing_file(tmp: Path, base_url: str) -> Path:
    path = tmp / "priority.toml"
    path.write_text(
        "[providers.sky]\n"
        'kind = "skynoo"\n'
        f'base_url = "{base_url}"\n'
        'credentials = { api_key = "SKY_KEY", api_secret = "SKY_SECRET" }\n'
        "[[routes]]\n"
        'providers = ["sky"]\n'
    )
    return path


def start_emulator(
    tmp: Path, procs: list[subprocess.Popen[bytes]], latency_ms: float
) -> tuple[str, Path]:
    port = free_port()
    log = tmp / "emulator.log"
    with log.open("wb") as out:
        procs.append(
            subprocess.Popen(
                [
                    *smsgw_command(),
                    "emulate",
                    "skynoo",
                    "--port",
                    str(port),
                    "--credential-id",
                    "bench",
                    "--credential-secret",
                    "bench-secret",
                    "--latency",
                    str(latency_ms / 1000),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        )
    base_url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/_emulator/state?phone_prefix=x", timeout=2):
                return base_url, log
        except OSError:
            if time.monotonic() > deadline or procs[-1].poll() is not None:
                raise RuntimeError(f"the emulator did not start:\n{log.read_text()}") from None
            time.sleep(0.2)


def received_at(base_url: str) -> dict[str, float]:
    """When the emulator accepted each code, by number (CLOCK_MONOTONIC seconds)."""
    url = f"{base_url}/_emulator/state?phone_prefix=%2B{CODE_PREFIX[1:]}"
    with urllib.request.urlopen(url, timeout=60) as reply:
        state = json.loads(reply.read())
    return {r["phone"]: r["accepted_at"] for r in state["received"]}


async def send_codes(
    stub: verification_pb2_grpc.VerificationServiceStub,
    metadata: Metadata,
    first: int,
    count: int,
    gap: float,
    keep_going: asyncio.Event | None = None,
) -> list[tuple[str, float, float]]:
    """SendVerification one at a time: (number, call seconds, answered at)."""
    calls = []
    for i in range(first, first + count):
        if keep_going is not None and not keep_going.is_set():
            break
        mobile = f"{CODE_PREFIX}{i:08d}"
        started = time.monotonic()
        await stub.SendVerification(
            verification_pb2.SendVerificationRequest(mobile=mobile, scene="login"),
            metadata=metadata,
            timeout=30,
        )
        answered = time.monotonic()
        calls.append((mobile, answered - started, answered))
        await asyncio.sleep(gap)
    return calls


def phase(
    name: str, calls: list[tuple[str, float, float]], arrivals: dict[str, float]
) -> tuple[Phase, int]:
    durations = sorted(c[1] for c in calls)
    delays = sorted(arrivals[m] - answered for m, _, answered in calls if m in arrivals)
    p = Phase(
        name,
        len(calls),
        len(delays),
        percentile_ms(durations, 0.5),
        percentile_ms(durations, 0.99),
        percentile_ms(delays, 0.5),
        percentile_ms(delays, 0.99),
        round(1000 * delays[-1], 1) if delays else 0.0,
    )
    return p, len(calls) - len(delays)


async def campaign(
    target: str,
    metadata: Metadata,
    numbers: int,
    codes: int,
    gap: float,
    limit: float,
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]], float, float, bool]:
    """Idle codes, then codes during the campaign. Returns (idle calls, campaign
    calls, campaign messages/s during them, window seconds, drained throughout)."""
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        otp = verification_pb2_grpc.VerificationServiceStub(channel)
        batches = batch_pb2_grpc.BatchServiceStub(channel)
        await send_codes(otp, metadata, 10_000_000, 5, gap)  # warm-up, not counted
        idle = await send_codes(otp, metadata, 0, codes, gap)
        await asyncio.sleep(1.0)  # the idle codes' outcomes recorded
        numbers_list = [f"+86138{i:08d}" for i in range(numbers)]
        request = batch_pb2.CreateBatchRequest(
            use_type=common_pb2.USE_TYPE_MARKETING,
            content="Hi #name#, 20% off today only.",
            numbers=numbers_list,
            template_data={
                n: batch_pb2.TemplateData(values={"name": f"user{i}"})
                for i, n in enumerate(numbers_list)
            },
        )
        created = await batches.CreateBatch(request, metadata=metadata, timeout=300)
        assert created.accepted_count == numbers, (created.accepted_count, len(created.rejected))

        async def sent() -> int:
            batch = await batches.GetBatch(
                batch_pb2.GetBatchRequest(task_id=created.task_id), metadata=metadata
            )
            return int(batch.sent + batch.failed)

        deadline = time.monotonic() + limit
        # Draining: wait until the first messages went out (and the workers are busy).
        while time.monotonic() < deadline:
            if await sent() >= min(numbers // 50, 2_000):
                break
            await asyncio.sleep(0.02)
        draining = asyncio.Event()
        draining.set()

        async def watch() -> None:
            while time.monotonic() < deadline:
                if await sent() >= numbers:
                    break
                await asyncio.sleep(0.05)
            draining.clear()

        watcher = asyncio.create_task(watch())
        start_sent, start = await sent(), time.monotonic()
        during = await send_codes(otp, metadata, 1_000_000, codes, gap, draining)
        end_sent, end = await sent(), time.monotonic()
        throughout = draining.is_set() and end_sent < numbers
        await watcher  # the rest of the campaign, so the run ends clean
        rate = (end_sent - start_sent) / max(end - start, 1e-9)
        return idle, during, rate, end - start, throughout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000, help="campaign size")
    parser.add_argument("--codes", type=int, default=200, help="SendVerification calls a phase")
    parser.add_argument("--gap-ms", type=float, default=30, help="pause between two calls")
    parser.add_argument("--latency-ms", type=float, default=0, help="emulator answer time")
    parser.add_argument("--workers", type=int, help="SMSGW_DISPATCH_WORKERS (default: server's)")
    parser.add_argument(
        "--urgent-workers",
        type=int,
        help="SMSGW_DISPATCH_URGENT_WORKERS (default: server's; 0: as before issue 21)",
    )
    parser.add_argument("--seconds", type=float, default=300, help="limit for the campaign")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.codes, args.seconds = 5_000, 10, 60
    with workspace("smsgw-bench-priority-") as (procs, tmp):
        base_url, _ = start_emulator(tmp, procs, args.latency_ms)
        env = {
            **LIMITS_ENV,
            "SMSGW_CONFIG": str(routing_file(tmp, base_url)),
            "SKY_KEY": "bench",
            "SKY_SECRET": "bench-secret",
        }
        if args.workers is not None:
            env["SMSGW_DISPATCH_WORKERS"] = str(args.workers)
        if args.urgent_workers is not None:
            env["SMSGW_DISPATCH_URGENT_WORKERS"] = str(args.urgent_workers)
        gw = start_smsgw(tmp, procs, env, 180)
        gap = args.gap_ms / 1000
        idle_calls, during_calls, per_s, window, throughout = asyncio.run(
            campaign(gw.target, gw.metadata, args.numbers, args.codes, gap, args.seconds)
        )
        arrivals = received_at(base_url)
    idle, idle_lost = phase("idle", idle_calls, arrivals)
    during, during_lost = phase("campaign", during_calls, arrivals)
    during.campaign_per_s, during.window_s = round(per_s, 1), round(window, 2)
    ratio = during.to_provider_p99_ms / max(idle.to_provider_p99_ms, 0.1)
    passed = throughout and during.to_provider_p99_ms <= TARGET_MS
    if args.json:
        print(
            json.dumps(
                {
                    "numbers": args.numbers,
                    "latency_ms": args.latency_ms,
                    "idle": asdict(idle),
                    "campaign": asdict(during),
                    "ratio": ratio,
                    "target_ms": TARGET_MS,
                    "draining_throughout": throughout,
                    "lost_codes": idle_lost + during_lost,
                    "passed": passed,
                    "load": os.getloadavg()[0],
                },
                indent=2,
            )
        )
    else:
        print(
            f"codes during a campaign of {args.numbers:,} numbers to the Skynoo emulator "
            f"(answers after {args.latency_ms:g} ms); database: {database_label()}"
        )
        print(
            f"{'phase':<10}{'codes':>6}{'call p50':>10}{'call p99':>10}"
            f"{'->provider p50':>16}{'p99':>8}{'max':>8}{'campaign msgs/s':>17}"
        )
        for p in (idle, during):
            rate = "-" if p.campaign_per_s is None else f"{p.campaign_per_s:.0f}"
            print(
                f"{p.name:<10}{p.codes:>6}{p.call_p50_ms:>10.1f}{p.call_p99_ms:>10.1f}"
                f"{p.to_provider_p50_ms:>16.1f}{p.to_provider_p99_ms:>8.1f}"
                f"{p.to_provider_max_ms:>8.1f}{rate:>17}"
            )
        verdict = "pass" if passed else "FAIL"
        print(
            f"answer->provider p99 during/idle: {ratio:.2f}; target during <= {TARGET_MS:.0f} ms: "
            f"{verdict}" + ("" if throughout else " (the campaign was not draining throughout)")
        )
    if idle_lost or during_lost:
        print(f"{idle_lost + during_lost} codes never reached the provider", file=sys.stderr)
        return 1
    return 0 if throughout or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
