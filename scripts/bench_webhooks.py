"""Webhooks: SendMessage throughput with and without them, and delivery latency.

(a) SendMessage calls/s (--concurrency coroutines, --seconds) against ``smsgw serve``
    with no webhook, then against a fresh ``smsgw serve`` whose account has an
    endpoint subscribed to every message status change; the ratio is the cost of
    webhooks on the send path (target >= 0.85).
(b) On a third fresh ``smsgw serve`` (no backlog of (a) ahead), endpoint on, messages
    sent at a fixed pace (--events-per-s / 3: each
    message makes three status changes, accepted, sent, delivered); the receiver
    measures, for each event, the time from its ``occurred_at`` (when the change was
    stored: the call's acceptance, the provider's answer or its receipt) to the
    request reaching it. p50/p99 (target p99 <= 200 ms).

The receiver is an aiohttp server in a process of its own (this script with
--receiver); the provider is the loopback one. Everything on 127.0.0.1.

    .venv/bin/python scripts/bench_webhooks.py            # embedded PostgreSQL (temp dir)
    .venv/bin/python scripts/bench_webhooks.py --quick    # tiny run
    .venv/bin/python scripts/bench_webhooks.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from bench_common import (
    HOST,
    Metadata,
    database_label,
    free_port,
    percentile_ms,
    start_smsgw,
    stop_process,
    workspace,
)
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc, webhook_pb2, webhook_pb2_grpc

CALL_TIMEOUT = 10.0
EVENTS_PER_MESSAGE = 3  # PENDING (accepted), SENT, DELIVERED with the loopback provider
SERVE_ENV = {
    "SMSGW_LOOPBACK_DELAY_MS": "20",
    "SMSGW_WEBHOOK_ALLOW_INSECURE": "1",  # the receiver is on 127.0.0.1 over http
    # The rate limits are not what this measures.
    "SMSGW_GLOBAL_SEND_RATE": "0",
    "SMSGW_ACCOUNT_SEND_RATE": "0",
    "SMSGW_ACCOUNT_QUERY_RATE": "0",
}


# --- the receiver (its own process) -------------------------------------------------


def serve_receiver(port: int) -> None:
    """Answers 200 to every POST and keeps, per event, received - occurred_at."""
    lags: list[float] = []
    phase = {"since": 0.0}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        event = json.loads(body)
        occurred = datetime.fromisoformat(event["occurredAt"].replace("Z", "+00:00"))
        if occurred.timestamp() >= phase["since"]:
            lags.append(now - occurred.timestamp())
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        ordered = sorted(lags)
        return web.json_response(
            {
                "count": len(ordered),
                "p50_ms": percentile_ms(ordered, 0.50),
                "p90_ms": percentile_ms(ordered, 0.90),
                "p99_ms": percentile_ms(ordered, 0.99),
                "max_ms": percentile_ms(ordered, 1.0),
            }
        )

    async def reset(request: web.Request) -> web.Response:
        lags.clear()
        phase["since"] = time.time()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


async def receiver_call(port: int, verb: str, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(verb, f"http://{HOST}:{port}{path}") as reply,
    ):
        answer: dict[str, Any] = await reply.json()
        return answer


async def wait_receiver(port: int) -> None:
    for _ in range(100):
        try:
            await receiver_call(port, "GET", "/stats")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the receiver did not start")


# --- the load -----------------------------------------------------------------------


def request(n: int) -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(
        mobile=f"+8613{n % 1_000_000_000:09d}",
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        text=f"Your parcel {n} is on its way.",
    )


async def throughput(
    target: str, md: Metadata, concurrency: int, seconds: float, warmup: int
) -> dict[str, Any]:
    """Closed loop: ``concurrency`` callers, each sending as fast as answered."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        issued = 0

        async def worker(limit: int | None, deadline: float, record: bool) -> None:
            nonlocal issued
            while time.monotonic() < deadline and (limit is None or issued < limit):
                issued += 1
                start = time.perf_counter()
                try:
                    await stub.SendMessage(request(issued), metadata=md, timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                else:
                    if record:
                        latencies.append(time.perf_counter() - start)

        forever = time.monotonic() + 120
        await asyncio.gather(*(worker(warmup, forever, False) for _ in range(concurrency)))
        start = time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(None, deadline, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "calls": len(latencies),
        "calls_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile_ms(latencies, 0.5, 2),
        "p99_ms": percentile_ms(latencies, 0.99, 2),
        "errors": dict(errors),
    }


async def paced(target: str, md: Metadata, per_s: float, seconds: float) -> dict[str, Any]:
    """Open loop: one SendMessage every 1/per_s seconds, whatever the answers take."""
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)

        async def one(n: int) -> None:
            try:
                await stub.SendMessage(request(10_000_000 + n), metadata=md, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        total = int(per_s * seconds)
        for n in range(total):
            await asyncio.sleep(max(0.0, start + n / per_s - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - start
    return {"messages": total, "messages_per_s": round(total / elapsed, 1), "errors": dict(errors)}


async def subscribe(target: str, md: Metadata, url: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = webhook_pb2_grpc.WebhookServiceStub(channel)
        await stub.CreateWebhook(
            webhook_pb2.CreateWebhookRequest(
                url=url, event_types=[webhook_pb2.EVENT_TYPE_MESSAGE_STATUS]
            ),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )


async def first_delivery(target: str, md: Metadata, port: int) -> None:
    """One message, and its first event at the receiver: the gateway's delivery process
    (started once an endpoint exists) is up before anything is measured."""
    await receiver_call(port, "POST", "/reset")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        await stub.SendMessage(request(99_999_999), metadata=md, timeout=CALL_TIMEOUT)
    got = await drain(port, 1, 30)
    if got["count"] < 1:
        raise RuntimeError("no webhook arrived within 30 s of the endpoint's creation")


async def drain(port: int, expected: int, within: float) -> dict[str, Any]:
    """The receiver's figures once it got ``expected`` events (or time ran out)."""
    deadline = time.monotonic() + within
    while True:
        got = await receiver_call(port, "GET", "/stats")
        if got["count"] >= expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


def run(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]], tmp: Path) -> int:
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(port)], start_new_session=True
    )
    procs.append(receiver)
    asyncio.run(wait_receiver(port))

    none: dict[str, Any] = {"calls": 0, "calls_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    without: dict[str, Any] = {**none, "errors": {}}
    if not args.latency_only:
        (tmp / "plain").mkdir()
        plain = start_smsgw(tmp / "plain", procs, SERVE_ENV, 180)
        without = asyncio.run(
            throughput(plain.target, plain.metadata, args.concurrency, args.seconds, args.warmup)
        )
        stop_process(plain.proc)

    with_hooks: dict[str, Any] = {**none, "errors": {}}
    if not args.latency_only:
        (tmp / "hooked").mkdir()
        hooked = start_smsgw(tmp / "hooked", procs, SERVE_ENV, 180)
        asyncio.run(subscribe(hooked.target, hooked.metadata, f"http://{HOST}:{port}/hook"))
        asyncio.run(first_delivery(hooked.target, hooked.metadata, port))
        with_hooks = asyncio.run(
            throughput(hooked.target, hooked.metadata, args.concurrency, args.seconds, args.warmup)
        )
        stop_process(hooked.proc)

    # (b) on a gateway of its own: no backlog left by (a) ahead of the measured events.
    (tmp / "paced").mkdir()
    paced_gw = start_smsgw(tmp / "paced", procs, SERVE_ENV, 180)
    asyncio.run(subscribe(paced_gw.target, paced_gw.metadata, f"http://{HOST}:{port}/hook"))
    asyncio.run(first_delivery(paced_gw.target, paced_gw.metadata, port))
    asyncio.run(receiver_call(port, "POST", "/reset"))
    per_s = args.events_per_s / EVENTS_PER_MESSAGE
    load = asyncio.run(paced(paced_gw.target, paced_gw.metadata, per_s, args.latency_seconds))
    lag = asyncio.run(drain(port, EVENTS_PER_MESSAGE * load["messages"], 60))
    stop_process(paced_gw.proc)
    load_average = Path("/proc/loadavg").read_text().split()[:3]

    ratio = round(with_hooks["calls_per_s"] / max(without["calls_per_s"], 1e-9), 3)
    figures = {
        "parameters": {
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "events_per_s": args.events_per_s,
            "latency_seconds": args.latency_seconds,
            "database": database_label(),
            "cpus": os.cpu_count(),
        },
        "send_without_webhooks": without,
        "send_with_webhooks": with_hooks,
        "ratio": ratio,
        "load_average": load_average,
        "latency_load": load,
        "latency": lag,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    complete = lag["count"] >= EVENTS_PER_MESSAGE * load["messages"]
    errors = without["errors"] or with_hooks["errors"] or load["errors"]
    return 0 if complete and not errors else 1


def print_table(f: dict[str, Any]) -> None:
    p = f["parameters"]
    print(
        f"concurrency {p['concurrency']}, {p['seconds']} s per run, warm-up {p['warmup']}, "
        f"database: {p['database']}"
    )
    print(f"{'(a) SendMessage':<34}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for label, key in (("without webhooks", "send_without_webhooks"),
                       ("every status to an endpoint", "send_with_webhooks")):  # fmt: skip
        r = f[key]
        print(
            f"{label:<34}{r['calls_per_s']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{sum(r['errors'].values()):>8}"
        )
    print(f"{'ratio (target >= 0.85)':<34}{f['ratio']:>9.2f}")
    load, lag = f["latency_load"], f["latency"]
    print(
        f"(b) status change -> receiver, {load['messages_per_s']:.0f} messages/s "
        f"(~{EVENTS_PER_MESSAGE * load['messages_per_s']:.0f} events/s) "
        f"for {p['latency_seconds']} s"
    )
    print(f"{'events':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}  (target p99 <= 200)")
    print(
        f"{lag['count']:>8}{lag['p50_ms']:>9.1f}{lag['p90_ms']:>9.1f}{lag['p99_ms']:>9.1f}"
        f"{lag['max_ms']:>9.1f}"
    )
    print(
        f"machine: {p['cpus']} cores, load average at the end {' '.join(f['load_average'])} "
        "(other work on the machine slows the gateway, the receiver and PostgreSQL alike)"
    )
    expected = EVENTS_PER_MESSAGE * load["messages"]
    if lag["count"] < expected:
        print(f"only {lag['count']} of {expected} events arrived within 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput run")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--events-per-s", type=float, default=500.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="tiny run")
    parser.add_argument("--latency-only", action="store_true", help="(b) only")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        serve_receiver(args.receiver)
        return 0
    if args.quick:
        args.seconds, args.warmup, args.latency_seconds = 2.0, 50, 2.0
    with workspace("smsgw-bench-webhooks-") as (procs, tmp):
        return run(args, procs, tmp)


if __name__ == "__main__":
    sys.exit(main())
