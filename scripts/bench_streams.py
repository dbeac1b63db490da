"""Status fan-out: many WatchMessageStatus streams under a steady event load (P4).

Starts its own ``smsgw serve`` (loopback provider, rate limits set too high to bind),
creates --accounts accounts and opens --streams watch-all streams spread evenly
over them (WatchMessageStatusRequest with no ids: every event of the account) from
--readers reader processes. The main process sends SendMessage calls, paced and
spread over the accounts, so that the events all streams receive add up to
--events-per-second: each message makes three events (PENDING, SENT, DELIVERED) and
every stream of its account receives them, so the send rate is
events-per-second / (3 x streams per account) per account.

Per received event the lag is the reader's clock minus the event's ``occurred_at``
(the same machine clock). After the warm-up the run measures for --seconds, then
stops sending, waits until every message is final and every stream has received
every event of its account (a stream missing one counts as missed), and prints the
lag percentiles, the events received per second, the server's peak RSS and the CPU
of the server, PostgreSQL and the client, and the latency of unary calls made while
measuring (the sender's SendMessage; a paced GetMessageStatus on a connection of its
own). --processes sets SMSGW_PROCESSES (RSS and CPU are then summed over them).
Bounded by time and by message count.

    .venv/bin/python scripts/bench_streams.py              # 1,000 streams, 20,000 events/s
    .venv/bin/python scripts/bench_streams.py --quick      # 50 streams, 1,000 events/s (CI)
    .venv/bin/python scripts/bench_streams.py --json       # figures as one JSON object
    .venv/bin/python scripts/bench_streams.py --readers 1  # all streams in one process
    .venv/bin/python scripts/bench_streams.py --processes 2  # SMSGW_PROCESSES=2
    .venv/bin/python scripts/bench_streams.py --profile /tmp/p4.txt   # py-spy the server

Exits 0 when the run completed with no stream error, every message delivered and no
event missed (a speed verdict is the table's, not the exit code's; SendMessage errors
such as DEADLINE_EXCEEDED under overload are reported, and their events still checked).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from bench_common import (
    ROOT,
    Metadata,
    database_label,
    machine_busy_seconds,
    percentile_ms,
    process_cpu_seconds,
    smsgw_command,
    start_smsgw,
    stop_process,
    tail,
    workspace,
)
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.domain.models import FINAL_STATUSES

CALL_TIMEOUT = 10.0  # seconds; bounds every unary call
LIVE_TIMEOUT = 60.0  # seconds for every stream to receive its first event
DRAIN_TIMEOUT = 30.0  # seconds for the last messages to be final and reach every stream
STREAM_TIMEOUT = 600.0  # no stream outlives this
RSS_EVERY = 0.2  # seconds between samples of the server's RSS
EVENTS_PER_MESSAGE = 3  # PENDING, SENT, DELIVERED with the loopback provider
PARAMETERS = (
    "streams",
    "accounts",
    "events_per_second",
    "seconds",
    "warmup",
    "readers",
    "channels",
    "loopback_delay_ms",
    "processes",
)
# The limits run on every call but never refuse one: the bench measures the fan-out.
LIMITS_ENV = {
    "SMSGW_GLOBAL_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_SEND_RATE": "1000000",
    "SMSGW_ACCOUNT_QUERY_RATE": "1000000",
    # The stream caps (issue 16) would refuse the bench's own streams: it measures
    # fan-out to as many as it opens (bench_stream_caps.py measures the caps).
    "SMSGW_MAX_STREAMS_PER_ACCOUNT": "100000",
    "SMSGW_MAX_STREAMS": "100000",
}
LAG_TARGET_MS = 100.0
RSS_TARGET_MB = 200.0
# grpc serves at most 100 concurrent streams per connection by default: more wait
# (client side) and never see an event, so each connection carries at most 50.
STREAMS_PER_CHANNEL = 50
PROBE_EVERY = 0.05  # seconds between two probing unary calls
REACHED_SHARE = 0.95  # events/s below this share of the target: the load was not reached


# --- reader processes ------------------------------------------------------------------


@dataclass(eq=False)
class StreamStats:
    account: int
    ids: array[int] = field(default_factory=lambda: array("q"))  # increasing event ids
    repeated: int = 0  # an event_id not above the previous one (a repeat, or out of order)
    last_id: int = 0
    done_id: int = 1 << 62  # the account's last event (set once sending has stopped)
    error: str = ""
    by_status: Counter[int] = field(default_factory=Counter)


def emit(out: IO[bytes], message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


class Reader:
    """One reader process: its share of the streams, each consumed by one task."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.stats = [StreamStats(account=a) for a in spec["stream_accounts"]]
        self.recv = array("d")  # receive time of each event (time.time())
        self.lags = array("d")  # receive time - occurred_at, seconds
        self.statuses = array("d")  # the event's status
        self.waiting_live = len(self.stats)
        self.live = asyncio.Event()
        self.incomplete = len(self.stats)
        self.complete = asyncio.Event()

    async def consume(self, call: Any, st: StreamStats) -> None:
        recv, lags, statuses, ids = self.recv, self.lags, self.statuses, st.ids
        try:
            async for event in call:
                now = time.time()
                at = event.occurred_at
                recv.append(now)
                lags.append(now - at.seconds - at.nanos * 1e-9)
                statuses.append(event.status)
                event_id = event.event_id
                if event_id <= st.last_id:
                    st.repeated += 1
                    continue
                if not ids:
                    self.waiting_live -= 1
                    if not self.waiting_live:
                        self.live.set()
                st.last_id = event_id
                ids.append(event_id)
                st.by_status[event.status] += 1
                if event_id >= st.done_id:
                    self.stream_complete(st)
            st.error = "ENDED"  # a watch-all stream never ends on its own
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                st.error = exc.code().name
        except asyncio.CancelledError:
            pass

    def stream_complete(self, st: StreamStats) -> None:
        st.done_id = 1 << 62  # counted once
        self.incomplete -= 1
        if not self.incomplete:
            self.complete.set()

    async def run(self, out: IO[bytes]) -> None:
        spec = self.spec
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(spec["target"], options=options)
            for _ in range(spec["channels"])
        ]
        stubs = [message_pb2_grpc.MessageServiceStub(c) for c in channels]
        metadata = [tuple((k, v) for k, v in md) for md in spec["metadata"]]
        request = message_pb2.WatchMessageStatusRequest(after_event_id=spec["after_event_id"])
        tasks = []
        command: dict[str, Any] = {}
        try:
            for i, st in enumerate(self.stats):
                call = stubs[i % len(stubs)].WatchMessageStatus(
                    request, metadata=metadata[st.account], timeout=STREAM_TIMEOUT
                )
                tasks.append(asyncio.create_task(self.consume(call, st)))
            emit(out, {"opened": len(tasks)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.live.wait(), LIVE_TIMEOUT)
            emit(out, {"live": self.live.is_set(), "waiting": self.waiting_live})
            # The main process names the window and, per account, every event after
            # the primer up to the last one (a sentinel message's final event).
            line = await asyncio.to_thread(sys.stdin.buffer.readline)
            command = json.loads(line or b"{}")
            done = {int(k): v for k, v in command.get("done_id", {}).items()}
            self.incomplete = len(self.stats)
            for st in self.stats:
                if st.last_id >= done.get(st.account, 0):
                    self.stream_complete(st)
                else:
                    st.done_id = done[st.account]
            if self.incomplete:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.complete.wait(), command.get("drain_s", 10.0))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for channel in channels:
                await channel.close()
        emit(out, self.result(command))

    def result(self, command: dict[str, Any]) -> dict[str, Any]:
        t0, t1 = command.get("window", [0.0, 0.0])
        chosen = [i for i, t in enumerate(self.recv) if t0 <= t <= t1]
        with open(self.spec["lag_file"], "wb") as f:
            array("d", (self.lags[i] for i in chosen)).tofile(f)
            array("d", (self.statuses[i] for i in chosen)).tofile(f)
        reference = {int(k): array("q", v) for k, v in command.get("reference", {}).items()}
        missed = extra = 0
        by_status: Counter[int] = Counter()
        for st in self.stats:
            by_status.update(st.by_status)
            ref = reference.get(st.account, array("q"))
            got = st.ids[: bisect.bisect_right(st.ids, ref[-1])] if ref else array("q")
            if got != ref:
                missed += len(set(ref) - set(got))
                extra += len(set(got) - set(ref))
        return {
            "streams": len(self.stats),
            "received_total": sum(len(st.ids) for st in self.stats),
            "received_in_window": len(chosen),
            "missed": missed,
            "extra": extra,
            "repeated": sum(st.repeated for st in self.stats),
            "incomplete": self.incomplete,
            "errors": dict(Counter(st.error for st in self.stats if st.error)),
            "by_status": {common_pb2.MessageStatus.Name(k): n for k, n in by_status.items()},
        }


def reader_main() -> int:
    spec = json.loads(sys.stdin.buffer.readline())
    asyncio.run(Reader(spec).run(sys.stdout.buffer))
    return 0


# --- the main process: server, accounts, sender, measurement ----------------------------


@dataclass
class Result:
    streams: int = 0
    accounts: int = 0
    readers: int = 0
    target_events_per_s: float = 0.0
    events_per_s: float = 0.0
    events_received_in_window: int = 0
    window_s: float = 0.0
    lag_p50_ms: float = 0.0
    lag_p95_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_max_ms: float = 0.0
    messages_sent: int = 0
    sends_per_s: float = 0.0
    target_sends_per_s: float = 0.0
    send_errors: dict[str, int] = field(default_factory=dict)
    send_p50_ms: float = 0.0
    send_p99_ms: float = 0.0
    sender_late_p99_ms: float = 0.0  # how far behind its schedule the sender fell
    # GetMessageStatus, one every PROBE_EVERY s on a channel of its own, while measuring
    unary_p50_ms: float = 0.0
    unary_p99_ms: float = 0.0
    unary_calls: int = 0
    undelivered: int = 0
    events_expected: int = 0
    events_received: int = 0
    missed_events: int = 0
    extra_events: int = 0  # received by a stream, not in its account's reference
    repeated_events: int = 0  # an event_id not above the stream's previous one
    incomplete_streams: int = 0  # streams that never got their account's last event
    reference_by_status: dict[str, int] = field(default_factory=dict)
    stream_errors: dict[str, int] = field(default_factory=dict)
    events_by_status: dict[str, int] = field(default_factory=dict)
    lag_ms_by_status: dict[str, dict[str, float]] = field(default_factory=dict)
    all_live: bool = False
    live_after_s: float = 0.0
    server_rss_start_mb: float = 0.0
    # VmHWM of the serve process at the end (with SMSGW_PROCESSES > 1: summed over
    # the parent and its server processes; CPU too)
    server_rss_peak_mb: float = 0.0
    server_rss_sampled_peak_mb: float = 0.0  # the largest VmRSS sampled during the run
    server_cpu_pct: float | None = None
    postgres_cpu_pct: float | None = None
    client_cpu_pct: float = 0.0
    machine_cpu_pct: float | None = None  # every process, in % of one core
    other_cpu_pct: float | None = None  # machine minus server, PostgreSQL and client
    sender_cpu_pct: float = 0.0
    reader_cpu_pct: list[float] = field(default_factory=list)
    load_reached: bool = False


def status_kb(pid: int, key: str) -> int | None:
    """A VmRSS/VmHWM line of /proc/<pid>/status, in kB; None when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every RSS_EVERY s in a thread (independent of the loop)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(RSS_EVERY):
            self.peak_kb = max(self.peak_kb, server_kb(self.pid, "VmRSS"))


def server_pids(pid: int) -> list[int]:
    """``smsgw serve`` and its child processes (SMSGW_PROCESSES > 1: the server
    processes under the parent; the embedded PostgreSQL is not among them)."""
    children: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [pid, *children]


def server_kb(pid: int, key: str) -> int:
    """A VmRSS/VmHWM figure summed over ``smsgw serve`` and its child processes."""
    return sum(status_kb(p, key) or 0 for p in server_pids(pid))


def postmaster_pid(tmp: Path) -> int | None:
    """The embedded PostgreSQL's postmaster, when smsgw runs one in tmp."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pgdata = tmp / "smsgw" / "pgdata"
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        if str(pgdata).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of a process and its children (PostgreSQL's backends)."""
    if pid is None:
        return None
    total = process_cpu_seconds(pid)
    if total is None:
        return None
    with contextlib.suppress(OSError, ValueError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += process_cpu_seconds(int(child)) or 0.0
    return total


def create_accounts(tmp: Path, n: int) -> list[Metadata]:
    """``smsgw account create`` n times, side by side, against the running server's database."""
    env = {**os.environ, "SMSGW_DATA_DIR": str(tmp / "smsgw")}
    running = [
        subprocess.Popen(
            [*smsgw_command(), "account", "create", f"bench-streams-{i}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for i in range(n)
    ]
    accounts: list[Metadata] = []
    for proc in running:
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"smsgw account create failed:\n{err.decode(errors='replace')}")
        account = json.loads(out.decode().strip().splitlines()[-1])
        token = base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode())
        accounts.append((("authorization", f"Basic {token.decode()}"),))
    return accounts


def send_request(n: int) -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(
        mobile=f"+86138{n % 100_000_000:08d}",
        use_type=common_pb2.USE_TYPE_NOTIFICATION,
        text=f"Your parcel {n} is on its way.",
    )


async def primer(stub: Any, accounts: list[Metadata]) -> int:
    """One message per account, watched until final: the newest event id after them.

    Every stream then starts with after_event_id at that id, so a stream the server
    subscribes late replays what it missed: no event is lost to the opening race."""
    newest = 0
    for n, metadata in enumerate(accounts):
        sent = await stub.SendMessage(send_request(n), metadata=metadata, timeout=CALL_TIMEOUT)
        watch = stub.WatchMessageStatus(
            message_pb2.WatchMessageStatusRequest(ids=[sent.id]), metadata=metadata, timeout=30
        )
        async for event in watch:
            newest = max(newest, event.event_id)
    return newest


class Sender:
    """SendMessage at a fixed total rate, round-robin over the accounts, until stopped."""

    def __init__(self, stub: Any, accounts: list[Metadata], rate: float, limit: int) -> None:
        self.stub = stub
        self.accounts = accounts
        self.rate = rate
        self.limit = limit
        self.ids: list[list[str]] = [[] for _ in accounts]
        self.errors: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.in_flight = asyncio.Semaphore(256)
        self.calls: set[asyncio.Task[None]] = set()
        self.latencies: list[float] = []  # seconds per answered SendMessage
        self.late: list[float] = []  # seconds each call started after it was due

    async def send(self, n: int) -> None:
        account = n % len(self.accounts)
        start = time.perf_counter()
        try:
            sent = await self.stub.SendMessage(
                send_request(n + len(self.accounts)),
                metadata=self.accounts[account],
                timeout=CALL_TIMEOUT,
            )
            self.ids[account].append(sent.id)
            self.latencies.append(time.perf_counter() - start)
        except grpc.aio.AioRpcError as exc:
            self.errors[exc.code().name] += 1
        finally:
            self.in_flight.release()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        for n in range(self.limit):
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
            if self.stop.is_set():
                break
            await self.in_flight.acquire()
            self.late.append(loop.time() - due)
            task = asyncio.create_task(self.send(n))
            self.calls.add(task)
            task.add_done_callback(self.calls.discard)
            due += 1 / self.rate  # the rate may change while running
        if self.calls:
            await asyncio.gather(*self.calls, return_exceptions=True)

    @property
    def sent(self) -> int:
        return sum(len(ids) for ids in self.ids)


async def probe(target: str, metadata: Metadata, ids: list[str], seconds: float) -> list[float]:
    """Times GetMessageStatus, one every PROBE_EVERY s for ``seconds``, on a channel
    (connection) of its own: how the server answers a unary call under the streams."""
    latencies: list[float] = []
    request = message_pb2.GetMessageStatusRequest(ids=ids)
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        await stub.GetMessageStatus(request, metadata=metadata, timeout=CALL_TIMEOUT)  # connect
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            await stub.GetMessageStatus(request, metadata=metadata, timeout=CALL_TIMEOUT)
            took = time.perf_counter() - start
            latencies.append(took)
            await asyncio.sleep(max(0.0, PROBE_EVERY - took))
    return latencies


async def wait_final(
    stub: Any, accounts: list[Metadata], ids: list[list[str]], within: float
) -> Counter[str]:
    """Polls GetMessageStatus until every message is final; their final statuses."""
    deadline = time.monotonic() + within
    pending = [list(account_ids) for account_ids in ids]
    finals: Counter[str] = Counter()
    while any(pending) and time.monotonic() < deadline:
        for account, metadata in enumerate(accounts):
            still: list[str] = []
            for i in range(0, len(pending[account]), 100):
                reply = await stub.GetMessageStatus(
                    message_pb2.GetMessageStatusRequest(ids=pending[account][i : i + 100]),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT,
                )
                for state in reply.messages:
                    if state.status in FINAL_STATUSES:
                        finals[common_pb2.MessageStatus.Name(state.status)] += 1
                    else:
                        still.append(state.id)
            pending[account] = still
        if any(pending):
            await asyncio.sleep(0.2)
    if any(pending):
        finals["NOT_FINAL"] += sum(len(p) for p in pending)
    return finals


@dataclass
class CpuSnapshot:
    """CPU seconds so far of the server, PostgreSQL, this process, the readers, everyone."""

    server: float | None
    postgres: float | None
    sender: float
    readers: list[float]
    machine: float | None

    @classmethod
    def take(
        cls, server_pid: int, pg_pid: int | None, readers: list[subprocess.Popen[bytes]]
    ) -> CpuSnapshot:
        return cls(
            tree_cpu_seconds(server_pid),
            tree_cpu_seconds(pg_pid),
            time.process_time(),
            [process_cpu_seconds(p.pid) or 0.0 for p in readers],
            machine_busy_seconds(),
        )

    def fill(self, result: Result, start: CpuSnapshot, elapsed: float) -> None:
        """Sets the result's CPU figures: this snapshot minus start, in % of one core."""

        def pct(end: float | None, begin: float | None) -> float | None:
            return None if end is None or begin is None else round(100 * (end - begin) / elapsed, 1)

        result.server_cpu_pct = pct(self.server, start.server)
        result.postgres_cpu_pct = pct(self.postgres, start.postgres)
        result.sender_cpu_pct = pct(self.sender, start.sender) or 0.0
        result.reader_cpu_pct = [
            pct(b, a) or 0.0 for a, b in zip(start.readers, self.readers, strict=True)
        ]
        result.client_cpu_pct = round(result.sender_cpu_pct + sum(result.reader_cpu_pct), 1)
        result.machine_cpu_pct = pct(self.machine, start.machine)
        if result.machine_cpu_pct is not None:
            ours = result.client_cpu_pct + (result.server_cpu_pct or 0.0)
            ours += result.postgres_cpu_pct or 0.0
            result.other_cpu_pct = round(max(0.0, result.machine_cpu_pct - ours), 1)


async def reference_events(
    stub: Any, metadata: Metadata, after_event_id: int, n: int
) -> tuple[list[int], Counter[str]]:
    """An account's event ids after the primer, up to a sentinel message's final event.

    Read by a fresh watch-all stream that replays from after_event_id (event ids follow
    commit order, so the replay holds every event committed before the sentinel's)."""
    watch = stub.WatchMessageStatus(
        message_pb2.WatchMessageStatusRequest(after_event_id=after_event_id),
        metadata=metadata,
        timeout=DRAIN_TIMEOUT,
    )
    sentinel = await stub.SendMessage(send_request(n), metadata=metadata, timeout=CALL_TIMEOUT)
    ids: list[int] = []
    statuses: Counter[str] = Counter()
    async for event in watch:
        ids.append(event.event_id)
        statuses[common_pb2.MessageStatus.Name(event.status)] += 1
        if event.message_id == sentinel.id and event.status in FINAL_STATUSES:
            break
    watch.cancel()
    return ids, statuses


async def read_line(proc: subprocess.Popen[bytes], within: float) -> dict[str, Any]:
    """The reader's next JSON line, waiting at most `within` seconds."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), within)
    if not line:
        raise RuntimeError(f"reader {proc.pid} exited ({proc.poll()})")
    return dict(json.loads(line))


def write_line(proc: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()


def start_profile(pid: int, seconds: float, path: str) -> subprocess.Popen[bytes] | None:
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        print(f"no py-spy next to {sys.executable}; not profiling", file=sys.stderr)
        return None
    duration = str(max(1, int(seconds)))
    return subprocess.Popen(
        [str(py_spy), "record", "-p", str(pid), "-d", duration, "-f", "raw", "-o", path, "-n"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def spawn_readers(
    args: argparse.Namespace,
    procs: list[subprocess.Popen[bytes]],
    tmp: Path,
    target: str,
    accounts: list[Metadata],
    after_event_id: int,
) -> list[subprocess.Popen[bytes]]:
    """Starts the reader processes and hands each its streams.

    Stream s watches account s % accounts; reader r holds every readers-th stream, so
    each reader has streams of every account."""
    readers: list[subprocess.Popen[bytes]] = []
    for r in range(args.readers):
        with (tmp / f"reader-{r}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--reader"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        procs.append(proc)
        readers.append(proc)
        spec = {
            "target": target,
            "channels": args.channels,
            "metadata": [list(md) for md in accounts],
            "stream_accounts": [s % args.accounts for s in range(r, args.streams, args.readers)],
            "after_event_id": after_event_id,
            "lag_file": str(tmp / f"reader-{r}.lags"),
        }
        write_line(proc, spec)
    return readers


async def measure(
    args: argparse.Namespace,
    procs: list[subprocess.Popen[bytes]],
    tmp: Path,
    target: str,
    accounts: list[Metadata],
    server_pid: int,
) -> Result:
    result = Result(streams=args.streams, accounts=args.accounts, readers=args.readers)
    result.target_events_per_s = float(args.events_per_second)
    send_rate = args.events_per_second * args.accounts / (EVENTS_PER_MESSAGE * args.streams)
    result.target_sends_per_s = round(send_rate, 2)
    pg_pid = postmaster_pid(tmp)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        after_event_id = await primer(stub, accounts)

        readers = spawn_readers(args, procs, tmp, target, accounts, after_event_id)
        for proc in readers:
            await read_line(proc, 60)  # {"opened": n}

        # While the streams open, one message per account a second (every stream sees
        # an event soon); the full rate once every stream is live.
        limit = math.ceil(send_rate * (LIVE_TIMEOUT + args.warmup + args.seconds)) + 1
        sender = Sender(stub, accounts, min(send_rate, float(args.accounts)), limit)
        sending = asyncio.create_task(sender.run())
        started = time.monotonic()
        rss = RssSampler(server_pid)
        rss.start()
        result.server_rss_start_mb = round(server_kb(server_pid, "VmRSS") / 1024, 1)
        lives = [await read_line(proc, LIVE_TIMEOUT + 10) for proc in readers]
        result.all_live = all(live["live"] for live in lives)
        result.live_after_s = round(time.monotonic() - started, 2)
        sender.rate = send_rate
        await asyncio.sleep(args.warmup)

        profile = start_profile(server_pid, args.seconds, args.profile) if args.profile else None
        if profile is not None:
            procs.append(profile)
        t0, mono0 = time.time(), time.monotonic()
        cpu0 = CpuSnapshot.take(server_pid, pg_pid, readers)
        sent0 = sender.sent
        probing = asyncio.create_task(probe(target, accounts[0], sender.ids[0][:1], args.seconds))
        await asyncio.sleep(args.seconds)
        t1, elapsed = time.time(), time.monotonic() - mono0
        cpu1 = CpuSnapshot.take(server_pid, pg_pid, readers)
        sent1 = sender.sent
        sender.stop.set()
        await sending

        # Every message final, then per account every event after the primer up to a
        # sentinel's final event, as one replaying stream sees them: the reference
        # each stream of the account is compared with.
        finals = await wait_final(stub, accounts, sender.ids, DRAIN_TIMEOUT)
        references = await asyncio.gather(
            *(
                reference_events(stub, md, after_event_id, 10_000_000 + a)
                for a, md in enumerate(accounts)
            )
        )
        command = {
            "window": [t0, t1],
            "done_id": {a: ids[-1] for a, (ids, _) in enumerate(references) if ids},
            "reference": {a: ids for a, (ids, _) in enumerate(references)},
            "drain_s": DRAIN_TIMEOUT,
        }
        for proc in readers:
            write_line(proc, command)
        figures = [await read_line(proc, DRAIN_TIMEOUT + 30) for proc in readers]
        rss.stopped.set()
        rss.join()
        result.server_rss_peak_mb = round(server_kb(server_pid, "VmHWM") / 1024, 1)
        result.server_rss_sampled_peak_mb = round(rss.peak_kb / 1024, 1)
        for proc in readers:
            stop_process(proc, 10)
        if profile is not None:
            profile.wait(args.seconds + 30)

    lags, statuses = array("d"), array("d")
    for r in range(args.readers):
        both = array("d")
        with (tmp / f"reader-{r}.lags").open("rb") as f:
            both.frombytes(f.read())
        half = len(both) // 2
        lags.extend(both[:half])
        statuses.extend(both[half:])
    by_status: dict[int, list[float]] = {}
    for lag, status in zip(lags, statuses, strict=True):
        by_status.setdefault(int(status), []).append(lag)
    for status, values in sorted(by_status.items()):
        values.sort()
        result.lag_ms_by_status[common_pb2.MessageStatus.Name(status)] = {
            "p50": percentile_ms(values, 0.50),
            "p99": percentile_ms(values, 0.99),
        }
    lags = array("d", sorted(lags))
    result.window_s = round(elapsed, 3)
    result.events_received_in_window = len(lags)
    result.events_per_s = round(len(lags) / elapsed, 1)
    result.lag_p50_ms = percentile_ms(lags, 0.50)
    result.lag_p95_ms = percentile_ms(lags, 0.95)
    result.lag_p99_ms = percentile_ms(lags, 0.99)
    result.lag_max_ms = round(1000 * lags[-1], 1) if lags else 0.0
    result.messages_sent = sender.sent
    result.sends_per_s = round((sent1 - sent0) / elapsed, 1)
    result.send_errors = dict(sender.errors)
    send_latencies = sorted(sender.latencies)
    result.send_p50_ms = percentile_ms(send_latencies, 0.50)
    result.send_p99_ms = percentile_ms(send_latencies, 0.99)
    result.sender_late_p99_ms = percentile_ms(sorted(sender.late), 0.99)
    unary = sorted(await probing)
    result.unary_p50_ms = percentile_ms(unary, 0.50)
    result.unary_p99_ms = percentile_ms(unary, 0.99)
    result.unary_calls = len(unary)
    result.undelivered = sum(
        n for status, n in finals.items() if status != "MESSAGE_STATUS_DELIVERED"
    )
    streams_of = Counter(s % args.accounts for s in range(args.streams))
    result.events_expected = sum(len(references[a][0]) * n for a, n in streams_of.items())
    for _, statuses in references:
        for key, n in statuses.items():
            result.reference_by_status[key] = result.reference_by_status.get(key, 0) + n
    result.events_received = sum(f["received_total"] for f in figures)
    result.missed_events = sum(f["missed"] for f in figures)
    result.extra_events = sum(f["extra"] for f in figures)
    result.repeated_events = sum(f["repeated"] for f in figures)
    result.incomplete_streams = sum(f["incomplete"] for f in figures)
    for f in figures:
        for key, n in f["errors"].items():
            result.stream_errors[key] = result.stream_errors.get(key, 0) + n
        for key, n in f["by_status"].items():
            result.events_by_status[key] = result.events_by_status.get(key, 0) + n
    cpu1.fill(result, cpu0, elapsed)
    result.load_reached = result.events_per_s >= REACHED_SHARE * args.events_per_second
    return result


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def print_table(figures: dict[str, Any], quick: bool) -> None:
    p = figures["parameters"]
    print(
        f"streams {p['streams']} over {p['accounts']} accounts, target "
        f"{p['events_per_second']:,} events/s ({figures['target_sends_per_s']} sends/s), "
        f"seconds {p['seconds']}, warmup {p['warmup']}, readers {p['readers']} x "
        f"{p['channels']} channels, loopback delay {p['loopback_delay_ms']} ms, "
        f"server processes {p['processes']}, "
        f"database: {p['database']}, cpus {p['cpus']}"
    )
    reached = figures["load_reached"]
    complete = figures["missed_events"] == 0 and not figures["stream_errors"]
    lag_ok = figures["lag_p99_ms"] <= LAG_TARGET_MS and reached and complete
    lag_note = "" if reached else " (load not reached)"
    lag_note += "" if complete else " (events missed)"
    rows = [
        (
            "events received/s (all streams)",
            f"{figures['events_per_s']:,.0f}",
            f">= {REACHED_SHARE * p['events_per_second']:,.0f}",
            verdict(reached),
        ),
        ("lag p50 ms", f"{figures['lag_p50_ms']:.1f}", "", ""),
        ("lag p95 ms", f"{figures['lag_p95_ms']:.1f}", "", ""),
        (
            "p99 lag ms",
            f"{figures['lag_p99_ms']:.1f}",
            f"<= {LAG_TARGET_MS:.0f}",
            verdict(lag_ok) + lag_note,
        ),
        ("lag max ms", f"{figures['lag_max_ms']:.1f}", "", ""),
        (
            "server peak RSS MB",
            f"{figures['server_rss_peak_mb']:.1f}",
            f"<= {RSS_TARGET_MB:.0f}",
            verdict(figures["server_rss_peak_mb"] <= RSS_TARGET_MB),
        ),
        (
            "missed events",
            f"{figures['missed_events']:,}",
            "0",
            verdict(figures["missed_events"] == 0),
        ),
        ("server cpu %", fmt_pct(figures["server_cpu_pct"]), "", ""),
        ("postgres cpu %", fmt_pct(figures["postgres_cpu_pct"]), "", ""),
        (
            "machine cpu % (all processes)",
            fmt_pct(figures["machine_cpu_pct"]),
            f"{100 * p['cpus']}",
            f"others {fmt_pct(figures['other_cpu_pct'])}",
        ),
        (
            "client cpu % (sender+readers)",
            f"{figures['client_cpu_pct']:.0f}",
            "",
            f"sender {figures['sender_cpu_pct']:.0f}, readers "
            + "/".join(f"{c:.0f}" for c in figures["reader_cpu_pct"]),
        ),
    ]
    print(f"{'figure':<32}{'value':>10}  {'target':<10}{'verdict'}")
    for label, value, wanted, ok in rows:
        judged = ok.startswith(("pass", "FAIL"))
        print(f"{label:<32}{value:>10}  {wanted:<10}{'-' if quick and judged else ok}")
    f = figures
    print(
        f"sent {f['messages_sent']:,} messages ({f['sends_per_s']}/s measured, target "
        f"{f['target_sends_per_s']}/s; SendMessage p50/p99 {f['send_p50_ms']}/{f['send_p99_ms']} "
        f"ms, sender behind schedule p99 {f['sender_late_p99_ms']} ms; GetMessageStatus "
        f"p50/p99 {f['unary_p50_ms']}/{f['unary_p99_ms']} ms, {f['unary_calls']} calls one "
        f"every {PROBE_EVERY * 1000:.0f} ms); events expected "
        f"{f['events_expected']:,}, received "
        f"{f['events_received']:,}, extra {f['extra_events']}, repeated/out of order "
        f"{f['repeated_events']}, streams incomplete {f['incomplete_streams']}; messages not "
        f"delivered {f['undelivered']}"
    )
    print(
        f"server RSS at start {f['server_rss_start_mb']} MB, sampled peak "
        f"{f['server_rss_sampled_peak_mb']} MB; every stream live {f['all_live']} "
        f"after {f['live_after_s']} s (1 message/s per account until then)"
    )
    print(
        "reference events by status (one stream per account): "
        + ", ".join(f"{k} {v:,}" for k, v in f["reference_by_status"].items())
    )
    print(
        "events by status: "
        + ", ".join(f"{k} {v:,}" for k, v in figures["events_by_status"].items())
    )
    print(
        "lag p50/p99 ms by status: "
        + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in figures["lag_ms_by_status"].items())
    )
    for code, n in figures["send_errors"].items():
        print(f"send error {code}: {n}")
    for code, n in figures["stream_errors"].items():
        print(f"stream error {code}: {n}")
    if quick:
        print("(quick run: proves the script works; too small to judge)")


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def run(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]], tmp: Path) -> int:
    env = {
        "SMSGW_LOOPBACK_DELAY_MS": str(args.loopback_delay_ms),
        "SMSGW_PROCESSES": str(args.processes),
        **LIMITS_ENV,
    }
    gw = start_smsgw(tmp, procs, env, 180)
    accounts = [gw.metadata, *create_accounts(tmp, args.accounts - 1)]
    result = asyncio.run(measure(args, procs, tmp, gw.target, accounts, gw.proc.pid))
    stop_process(gw.proc)
    if gw.proc.returncode != 0:
        print(f"smsgw serve exited with {gw.proc.returncode}:\n{tail(gw.log)}", file=sys.stderr)
    figures = {
        "parameters": {
            **{k: getattr(args, k) for k in PARAMETERS},
            "database": database_label(),
            "cpus": os.cpu_count(),
        },
        **asdict(result),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures, args.quick)
    ok = (
        result.events_received > 0
        and result.missed_events == 0
        and result.extra_events == 0
        and result.repeated_events == 0
        and result.incomplete_streams == 0
        and not result.stream_errors
        and result.undelivered == 0
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=10, help="streams are spread over them")
    parser.add_argument(
        "--events-per-second",
        type=int,
        default=20000,
        help="events received by all streams together, per second",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured phase")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds after every stream is live"
    )
    parser.add_argument("--readers", type=int, default=2, help="reader processes")
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help=f"channels (connections) per reader process; 0: one per {STREAMS_PER_CHANNEL} streams",
    )
    parser.add_argument("--loopback-delay-ms", type=int, default=10)
    parser.add_argument(
        "--processes", type=int, default=1, help="SMSGW_PROCESSES: server processes on the port"
    )
    parser.add_argument("--profile", metavar="FILE", help="py-spy the server (raw) while measuring")
    parser.add_argument(
        "--quick", action="store_true", help="tiny run: 50 streams, 1,000 events/s, 5 s"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        return reader_main()
    if args.quick:
        args.streams, args.events_per_second, args.seconds, args.warmup = 50, 1000, 5.0, 2.0
        args.accounts, args.readers = min(args.accounts, 5), 1
    if args.channels == 0:
        args.channels = math.ceil(args.streams / args.readers / STREAMS_PER_CHANNEL)
    if min(args.streams, args.accounts, args.events_per_second, args.readers, args.channels) < 1:
        parser.error(
            "--streams, --accounts, --events-per-second, --readers, --channels must be >= 1"
        )
    if args.accounts > args.streams or args.seconds <= 0 or args.warmup < 0:
        parser.error("--accounts must be <= --streams, --seconds > 0, --warmup >= 0")
    with workspace() as (procs, tmp):
        return run(args, procs, tmp)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
