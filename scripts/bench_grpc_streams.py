"""P4's ceiling: a bare grpc.aio server pushing ready-made events to many streams.

No smsgw, no database: a grpc.aio server (its own process) answers
WatchMessageStatus by registering the stream with an in-memory publisher, which
makes --events-per-second events in total reach the streams (each event goes to
every stream of one of --accounts accounts, as a watch-all stream would get it), and
answers SendMessage at once (an echo). --readers processes open --streams streams
over --channels channels each and time every event (receive time minus the event's
``occurred_at``). While the streams run, a prober times one SendMessage at a time on
its own channel, then --concurrency at a time, to show how the server takes new
calls under the stream load. Prints one table.

    .venv/bin/python scripts/bench_grpc_streams.py            # 1,000 streams, 20,000 events/s
    .venv/bin/python scripts/bench_grpc_streams.py --events-per-second 10000
    .venv/bin/python scripts/bench_grpc_streams.py --quick    # 50 streams, 1,000 events/s
    .venv/bin/python scripts/bench_grpc_streams.py --json

Exits 0 when every stream opened and received events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import deque
from typing import Any

import grpc
from bench_common import (
    HOST,
    free_port,
    machine_busy_seconds,
    percentile_ms,
    process_cpu_seconds,
    workspace,
)
from google.protobuf.timestamp_pb2 import Timestamp
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

CALL_TIMEOUT = 30.0
TICK = 0.01  # seconds between the publisher's rounds
ECHO = message_pb2.SendMessageResponse(
    id="0" * 32, to_number="+8613800138000", status=common_pb2.MESSAGE_STATUS_PENDING, segments=1
)


class Stream:
    def __init__(self) -> None:
        self.buffer: deque[message_pb2.MessageStatusEvent] = deque()
        self.ready = asyncio.Event()


class Servicer(message_pb2_grpc.MessageServiceServicer):
    def __init__(self, accounts: int) -> None:
        self.streams: list[set[Stream]] = [set() for _ in range(accounts)]
        self.opened = 0

    async def SendMessage(
        self, request: message_pb2.SendMessageRequest, context: Any
    ) -> message_pb2.SendMessageResponse:
        return ECHO

    async def WatchMessageStatus(  # type: ignore[override]
        self, request: message_pb2.WatchMessageStatusRequest, context: Any
    ) -> Any:
        stream = Stream()
        account = self.opened % len(self.streams)
        self.opened += 1
        self.streams[account].add(stream)
        try:
            while True:
                while not stream.buffer:
                    stream.ready.clear()
                    await stream.ready.wait()
                yield stream.buffer.popleft()
        finally:
            self.streams[account].discard(stream)

    async def publish(self, events_per_second: float, total_streams: int) -> None:
        """Every TICK, the events due: each goes to every stream of one account."""
        accounts = len(self.streams)
        per_event = max(total_streams / accounts, 1)
        rate = events_per_second / per_event  # events made per second
        loop = asyncio.get_running_loop()
        start, made, n = loop.time(), 0, 0
        while True:
            await asyncio.sleep(TICK)
            due = int((loop.time() - start) * rate) - made
            for _ in range(due):
                stamp = Timestamp()
                stamp.GetCurrentTime()
                event = message_pb2.MessageStatusEvent(
                    event_id=n + 1,
                    message_id=f"{n:032x}",
                    to_number="+8613800138000",
                    status=common_pb2.MESSAGE_STATUS_DELIVERED,
                    occurred_at=stamp,
                )
                for stream in self.streams[n % accounts]:
                    stream.buffer.append(event)
                    stream.ready.set()
                n += 1
            made += due


async def serve(port: int, accounts: int, events_per_second: float, streams: int) -> None:
    server = grpc.aio.server()
    servicer = Servicer(accounts)  # type: ignore[abstract]
    message_pb2_grpc.add_MessageServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"{HOST}:{port}") == 0:
        raise OSError(f"cannot listen on {HOST}:{port}")
    await server.start()
    publisher = asyncio.create_task(servicer.publish(events_per_second, streams))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    publisher.cancel()
    await server.stop(0)


async def read(target: str, streams: int, channels: int, window: tuple[float, float]) -> None:
    """Opens the streams, then prints {"opened": n}; at the end, the window's figures."""
    chans = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    lags: list[float] = []
    received = 0

    async def one(i: int) -> None:
        nonlocal received
        stub = message_pb2_grpc.MessageServiceStub(chans[i % channels])
        call = stub.WatchMessageStatus(message_pb2.WatchMessageStatusRequest())
        async for event in call:
            now = time.time()
            if window[0] <= now < window[1]:
                received += 1
                lags.append(now - event.occurred_at.ToNanoseconds() / 1e9)
            elif now >= window[1]:
                return

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    await asyncio.sleep(0)
    print(json.dumps({"opened": streams}), flush=True)
    await asyncio.wait(tasks, timeout=window[1] - time.time() + 5)
    for task in tasks:
        task.cancel()
    # At most about 20,000 lags per reader: a sample is enough for the percentiles.
    lags.sort()
    print(
        json.dumps({"received": received, "lags_sample": lags[:: max(len(lags) // 20000, 1)]}),
        flush=True,
    )
    for chan in chans:
        await chan.close()


async def probe(target: str, seconds: float, concurrency: int) -> dict[str, float]:
    """One SendMessage at a time for half the time, then `concurrency` at a time."""
    request = message_pb2.SendMessageRequest(mobile="+8613800138000", text="hi")
    async with grpc.aio.insecure_channel(target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        single: list[float] = []
        end = time.monotonic() + seconds / 2
        while time.monotonic() < end:
            start = time.perf_counter()
            await stub.SendMessage(request, timeout=CALL_TIMEOUT)
            single.append(time.perf_counter() - start)
        calls = 0
        end = time.monotonic() + seconds / 2

        async def worker() -> None:
            nonlocal calls
            while time.monotonic() < end:
                await stub.SendMessage(request, timeout=CALL_TIMEOUT)
                calls += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    single.sort()
    return {
        "unary_p50_ms": percentile_ms(single, 0.50),
        "unary_p99_ms": percentile_ms(single, 0.99),
        "unary_calls_per_s": round(calls / (seconds / 2), 1),
    }


def run(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]) -> int:
    port = free_port()
    target = f"{HOST}:{port}"
    here = __file__
    serve = ["--serve", str(port), "--accounts", str(args.accounts)]
    serve += ["--events-per-second", str(args.events_per_second), "--streams", str(args.streams)]
    server = subprocess.Popen([sys.executable, here, *serve], start_new_session=True)
    procs.append(server)
    time.sleep(1.0)
    window_start = time.time() + args.open_seconds + args.warmup
    window = (window_start, window_start + args.seconds)
    readers: list[subprocess.Popen[bytes]] = []
    for r in range(args.readers):
        count = args.streams // args.readers + (r < args.streams % args.readers)
        read = ["--read", target, "--streams", str(count), "--channels", str(args.channels)]
        read += ["--window", f"{window[0]},{window[1]}"]
        readers.append(
            subprocess.Popen(
                [sys.executable, here, *read], stdout=subprocess.PIPE, start_new_session=True
            )
        )
    procs.extend(readers)
    opened = sum(json.loads(r.stdout.readline())["opened"] for r in readers if r.stdout)
    time.sleep(max(window[0] - time.time(), 0))
    cpu0, machine0, t0 = process_cpu_seconds(server.pid), machine_busy_seconds(), time.monotonic()
    probed = asyncio.run(probe(target, args.seconds, args.concurrency))
    cpu1, machine1 = process_cpu_seconds(server.pid), machine_busy_seconds()
    elapsed = time.monotonic() - t0
    results = [json.loads(r.stdout.readline()) for r in readers if r.stdout]
    lags = sorted(lag for r in results for lag in r["lags_sample"])
    received = sum(r["received"] for r in results)
    figures = {
        "parameters": {
            k: getattr(args, k)
            for k in ("streams", "accounts", "events_per_second", "readers", "channels", "seconds")
        },
        "streams_opened": opened,
        "events_per_s": round(received / args.seconds, 1),
        "lag_p50_ms": percentile_ms(lags, 0.50),
        "lag_p99_ms": percentile_ms(lags, 0.99),
        "server_cpu_pct": None
        if cpu0 is None or cpu1 is None
        else round(100 * (cpu1 - cpu0) / elapsed, 1),
        "machine_cpu_pct": None
        if machine0 is None or machine1 is None
        else round(100 * (machine1 - machine0) / elapsed, 1),
        **probed,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        p = figures["parameters"]
        print(
            f"bare grpc.aio: {opened} streams over {p['accounts']} accounts, target "
            f"{p['events_per_second']:,} events/s, {p['readers']} readers x {p['channels']} "
            f"channels, {p['seconds']} s measured"
        )
        rows = [
            ("events received/s (all streams)", f"{figures['events_per_s']:,.0f}"),
            ("lag p50 ms", f"{figures['lag_p50_ms']}"),
            ("lag p99 ms", f"{figures['lag_p99_ms']}"),
            ("server cpu %", f"{figures['server_cpu_pct']}"),
            ("machine cpu % (all processes, all cores)", f"{figures['machine_cpu_pct']}"),
            ("SendMessage (echo) p50 ms, 1 at a time", f"{figures['unary_p50_ms']}"),
            ("SendMessage (echo) p99 ms, 1 at a time", f"{figures['unary_p99_ms']}"),
            (
                f"SendMessage (echo) calls/s, {args.concurrency} at a time",
                f"{figures['unary_calls_per_s']:,.0f}",
            ),
        ]
        for label, value in rows:
            print(f"{label:<44}{value:>10}")
    return 0 if opened == args.streams and received > 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--events-per-second", type=float, default=20000)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--channels", type=int, default=10, help="channels per reader")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured phase")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--open-seconds", type=float, default=5.0, help="time to open streams")
    parser.add_argument("--concurrency", type=int, default=64, help="the prober's second phase")
    parser.add_argument("--quick", action="store_true", help="50 streams, 1,000 events/s, 3 s")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--read", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("--window", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve, args.accounts, args.events_per_second, args.streams))
        return 0
    if args.read is not None:
        start, end = (float(v) for v in args.window.split(","))
        asyncio.run(read(args.read, args.streams, args.channels, (start, end)))
        return 0
    if args.quick:
        args.streams, args.events_per_second, args.seconds, args.warmup = 50, 1000, 3.0, 1.0
        args.open_seconds = 2.0
    with workspace() as (procs, _):
        return run(args, procs)


if __name__ == "__main__":
    sys.exit(main())
