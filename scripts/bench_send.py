"""Durable SendMessage throughput against a bare grpc.aio echo server.

Runs the same client (one process, grpc.aio, --channels channels, --concurrency
coroutines) first against a bare grpc.aio server that answers SendMessage with a
fixed response (no auth, no database), then against ``smsgw serve``; each server
runs in its own process. Prints calls/s, latency percentiles and errors for both.

    .venv/bin/python scripts/bench_send.py                 # embedded PostgreSQL (temp dir)
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python scripts/bench_send.py             # an existing PostgreSQL
    .venv/bin/python scripts/bench_send.py --quick         # tiny run (CI)
    .venv/bin/python scripts/bench_send.py --json          # figures as one JSON object
    .venv/bin/python scripts/bench_send.py --rpc verify    # OTP send+check pairs vs echo
    .venv/bin/python scripts/bench_send.py --limits off    # without the rate-limit checks

Exits 0 only if both servers answered every call without an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from bench_common import (
    HOST,
    Metadata,
    database_label,
    free_port,
    machine_busy_seconds,
    percentile_ms,
    postgres_cpu_seconds,
    process_cpu_seconds,
    smsgw_dsn,
    start_smsgw,
    stop_process,
    tail,
    workspace,
)
from sms.v1 import (
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

CALL_TIMEOUT = 10.0  # seconds; bounds every single call
PARAMETERS = (
    "rpc",
    "concurrency",
    "channels",
    "count",
    "seconds",
    "warmup",
    "loopback_delay_ms",
    "limits",
)
# --rpc verify measures the OTP path, not its limits: the server runs with them off.
VERIFY_ENV = {
    "SMSGW_OTP_MOBILE_INTERVAL_SECONDS": "0",
    "SMSGW_OTP_ACCOUNT_PER_HOUR": "0",
    "SMSGW_OTP_PREFIX_LIMIT": "0",
    "SMSGW_OTP_COUNTRY_LIMIT": "0",
}


# The rate limits run on every call but are set high enough never to refuse one
# (the bench measures their cost, not their effect); --limits off turns them off.
LIMITS_ON_ENV = {
    "SMSGW_GLOBAL_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_QUERY_RATE": "1000000",
}
LIMITS_OFF_ENV = {name: "0" for name in LIMITS_ON_ENV}


class EchoServicer(message_pb2_grpc.MessageServiceServicer):
    RESPONSE = message_pb2.SendMessageResponse(
        id="0" * 32,
        to_number="+8613800138000",
        status=common_pb2.MESSAGE_STATUS_PENDING,
        segments=1,
    )

    async def SendMessage(
        self, request: message_pb2.SendMessageRequest, context: Any
    ) -> message_pb2.SendMessageResponse:
        return self.RESPONSE


async def serve_echo(port: int) -> None:
    server = grpc.aio.server()
    # The other methods answer UNIMPLEMENTED (the generated base); only SendMessage is measured.
    servicer = EchoServicer()  # type: ignore[abstract]
    message_pb2_grpc.add_MessageServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"{HOST}:{port}") == 0:
        raise OSError(f"echo server cannot listen on {HOST}:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


@dataclass
class Result:
    calls: int = 0
    seconds: float = 0.0
    calls_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu_pct: float = 0.0
    server_cpu_pct: float | None = None
    # Every postgres process on the machine, and the whole machine (all cores: 100 per
    # core), over the measured phase; machine CPU per unit is what the ratio trades in.
    postgres_cpu_pct: float | None = None
    machine_cpu_pct: float | None = None
    machine_cpu_ms_per_call: float | None = None
    # P3: messages accepted and not yet handed to a provider, sampled during the
    # measured phase, and the growth of that backlog (least squares, messages/s).
    backlog: list[tuple[float, int]] = field(default_factory=list)
    backlog_growth_per_s: float | None = None


BACKLOG_SQL = "SELECT count(*) FROM messages WHERE status IN (1, 2)"  # PENDING, QUEUED
BACKLOG_EVERY = 0.5  # seconds between samples


async def sample_backlog(dsn: str, samples: list[tuple[float, int]]) -> None:
    """Appends (seconds since start, backlog) every BACKLOG_EVERY s until cancelled."""
    conn = await asyncpg.connect(dsn)
    start = time.perf_counter()
    try:
        while True:
            samples.append((time.perf_counter() - start, await conn.fetchval(BACKLOG_SQL)))
            await asyncio.sleep(BACKLOG_EVERY)
    finally:
        await conn.close()


def growth_per_s(samples: list[tuple[float, int]]) -> float | None:
    """The least-squares slope of the backlog over time, in messages per second."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_b = sum(b for _, b in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (b - mean_b) for t, b in samples)
    return round(cov / var, 1) if var else None


def requests(n: int = 1000) -> list[message_pb2.SendMessageRequest]:
    return [
        message_pb2.SendMessageRequest(
            mobile=f"+861380013{i:04d}",
            use_type=common_pb2.USE_TYPE_NOTIFICATION,
            text=f"Your parcel {i} is on its way.",
        )
        for i in range(n)
    ]


async def run_calls(
    channels: list[grpc.aio.Channel],
    metadata: Metadata | None,
    args: argparse.Namespace,
    count: int,
    latencies: list[float],
    errors: Counter[str],
) -> None:
    """Runs units from --concurrency coroutines until `count` units or --seconds.

    A unit is one SendMessage, or with --rpc verify against smsgw, one
    SendVerification + CheckVerification pair (the echo baseline stays one call)."""
    reqs = requests()
    deadline = time.monotonic() + args.seconds
    issued = 0
    pairs = args.rpc == "verify" and metadata is not None

    async def worker(w: int) -> None:
        nonlocal issued
        channel = channels[w % len(channels)]
        stub = message_pb2_grpc.MessageServiceStub(channel)
        otp = verification_pb2_grpc.VerificationServiceStub(channel)
        while issued < count and time.monotonic() < deadline:
            request = reqs[issued % len(reqs)]
            n = issued
            issued += 1
            start = time.perf_counter()
            try:
                if pairs:
                    mobile = f"+86138{n % 100_000_000:08d}"
                    sent = await otp.SendVerification(
                        verification_pb2.SendVerificationRequest(mobile=mobile, code="4711"),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                    checked = await otp.CheckVerification(
                        verification_pb2.CheckVerificationRequest(
                            verify_id=sent.verify_id, mobile=mobile, code="4711"
                        ),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                    if not checked.valid:
                        errors["CHECK_NOT_VALID"] += 1
                        continue
                else:
                    await stub.SendMessage(request, metadata=metadata, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            else:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))


async def bench(
    target: str,
    metadata: Metadata | None,
    args: argparse.Namespace,
    pid: int,
    dsn: str | None = None,
) -> Result:
    """Warm-up, then the measured phase, through --channels channels to `target`."""
    options = [("grpc.use_local_subchannel_pool", 1)] if args.channels > 1 else []
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(args.channels)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        warm_errors: Counter[str] = Counter()
        await run_calls(channels, metadata, args, args.warmup, [], warm_errors)
        errors.update({f"{code} (warm-up)": n for code, n in warm_errors.items()})
        backlog: list[tuple[float, int]] = []
        sampler = asyncio.create_task(sample_backlog(dsn, backlog)) if dsn else None
        server0, client0 = process_cpu_seconds(pid), time.process_time()
        db0, machine0, start = postgres_cpu_seconds(), machine_busy_seconds(), time.perf_counter()
        await run_calls(channels, metadata, args, args.count, latencies, errors)
        elapsed = time.perf_counter() - start
        server1, client1 = process_cpu_seconds(pid), time.process_time()
        db1, machine1 = postgres_cpu_seconds(), machine_busy_seconds()
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    latencies.sort()

    def pct(before: float | None, after: float | None) -> float | None:
        return (
            None if before is None or after is None else round(100 * (after - before) / elapsed, 1)
        )

    machine = None if machine0 is None or machine1 is None else machine1 - machine0
    return Result(
        calls=len(latencies),
        seconds=round(elapsed, 3),
        calls_per_s=round(len(latencies) / elapsed, 1),
        p50_ms=percentile_ms(latencies, 0.50, 2),
        p99_ms=percentile_ms(latencies, 0.99, 2),
        errors=dict(errors),
        client_cpu_pct=round(100 * (client1 - client0) / elapsed, 1),
        server_cpu_pct=pct(server0, server1),
        postgres_cpu_pct=pct(db0, db1) if metadata is not None else None,
        machine_cpu_pct=pct(machine0, machine1),
        machine_cpu_ms_per_call=None
        if machine is None or not latencies
        else round(1000 * machine / len(latencies), 3),
        backlog=backlog,
        backlog_growth_per_s=growth_per_s(backlog),
    )


def print_table(figures: dict[str, Any]) -> None:
    p = figures["parameters"]
    print(
        f"rpc {p['rpc']}, concurrency {p['concurrency']}, channels {p['channels']}, "
        f"count {p['count']}, "
        f"seconds {p['seconds']}, warmup {p['warmup']}, database: {p['database']}, "
        f"loopback delay {p['loopback_delay_ms']} ms, rate limits {p['limits']}"
    )
    head = f"{'figure':<30}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(
        head + f"{'calls':>8}{'client cpu%':>13}{'server cpu%':>13}{'db cpu%':>9}"
        f"{'machine cpu%':>14}{'cpu ms/call':>13}"
    )
    ours = "smsgw Send+CheckVerification" if p["rpc"] == "verify" else "smsgw SendMessage (durable)"
    if p["rpc"] == "verify":
        print("(verify: the smsgw row counts Send+Check pairs per second)")
    for label, key in (("echo (bare grpc.aio)", "echo"), (ours, "smsgw")):
        r = figures[key]
        cpu, db, machine, per_call = (
            "-" if r[k] is None else f"{r[k]:.{d}f}"
            for k, d in (
                ("server_cpu_pct", 0),
                ("postgres_cpu_pct", 0),
                ("machine_cpu_pct", 0),
                ("machine_cpu_ms_per_call", 3),
            )
        )
        print(
            f"{label:<30}{r['calls_per_s']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{sum(r['errors'].values()):>8}{r['calls']:>8}{r['client_cpu_pct']:>13.0f}{cpu:>13}"
            f"{db:>9}{machine:>14}{per_call:>13}"
        )
    print(f"{'ratio smsgw/echo':<30}{figures['ratio']:>9.2f}")
    print(
        f"machine: {p['cpus']} cores ({100 * p['cpus']} cpu% in all). When the echo run uses "
        "them all, the ratio cannot exceed echo cpu ms/call over smsgw cpu ms/call."
    )
    growth = figures["smsgw"]["backlog_growth_per_s"]
    if growth is not None:
        peak = max(b for _, b in figures["smsgw"]["backlog"])
        print(
            f"{'backlog growth, msgs/s':<30}{growth:>9.1f}   (PENDING+QUEUED, peak {peak}; "
            f"dispatch keeps up when this stays near 0)"
        )
    for key in ("echo", "smsgw"):
        for code, n in figures[key]["errors"].items():
            print(f"{key} error {code}: {n}")


def run(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]], tmp: Path) -> int:
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, __file__, "--echo-server", str(echo_port)], start_new_session=True
    )
    procs.append(echo)
    echo_result = asyncio.run(bench(f"{HOST}:{echo_port}", None, args, echo.pid))
    stop_process(echo)

    env = {"SMSGW_LOOPBACK_DELAY_MS": str(args.loopback_delay_ms)}
    env.update(LIMITS_ON_ENV if args.limits == "on" else LIMITS_OFF_ENV)
    if args.rpc == "verify":
        env.update(VERIFY_ENV)
    gw = start_smsgw(tmp, procs, env, 180)
    dsn = smsgw_dsn(gw.log) if args.rpc == "send" else None
    smsgw_result = asyncio.run(bench(gw.target, gw.metadata, args, gw.proc.pid, dsn))
    stop_process(gw.proc)
    if gw.proc.returncode != 0:
        print(f"smsgw serve exited with {gw.proc.returncode}:\n{tail(gw.log)}", file=sys.stderr)

    figures = {
        "parameters": {
            **{k: getattr(args, k) for k in PARAMETERS},
            "database": database_label(),
            "cpus": os.cpu_count(),
        },
        "echo": asdict(echo_result),
        "smsgw": asdict(smsgw_result),
        "ratio": round(smsgw_result.calls_per_s / max(echo_result.calls_per_s, 1e-9), 3),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    ok = smsgw_result.calls > 0 and not smsgw_result.errors and not echo_result.errors
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rpc",
        choices=("send", "verify"),
        default="send",
        help="send: SendMessage; verify: SendVerification+CheckVerification pairs",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--count", type=int, default=20000, help="measured calls (at most)")
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--loopback-delay-ms", type=int, default=5)
    parser.add_argument(
        "--limits",
        choices=("on", "off"),
        default="on",
        help="on: rate limits checked on every call (never binding); off: not checked",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run: warmup 50, count 500")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server is not None:
        asyncio.run(serve_echo(args.echo_server))
        return 0
    if args.quick:
        args.warmup, args.count, args.seconds = 50, 500, 5.0
    if min(args.concurrency, args.channels, args.count) < 1 or args.warmup < 0:
        parser.error("--concurrency, --channels and --count must be >= 1, --warmup >= 0")
    with workspace() as (procs, tmp):
        return run(args, procs, tmp)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
