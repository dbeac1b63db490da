"""The performance harness: every benchmark, one table of the targets of issue 8.

Runs each benchmark script in its own process (each starts its own ``smsgw serve``,
and bench_send.py its bare grpc.aio echo baseline, on 127.0.0.1; load bounded by
count and time) and prints, per target: the figure, the baseline, the ratio, the
target and pass/fail. Ratios are the verdict: absolute figures drift on a shared
machine, ratios measured in one run hold.

    .venv/bin/python scripts/bench.py                # full size (about 13 minutes)
    .venv/bin/python scripts/bench.py --quick        # tiny runs: proves it works (CI)
    .venv/bin/python scripts/bench.py --only P1,P5   # some targets
    .venv/bin/python scripts/bench.py --json         # the raw figures too
    .venv/bin/python scripts/bench.py --only P4 --p4-size 300:6000   # a smaller P4

P1 durable SendMessage against the echo server; P2 CreateBatch of 100,000 numbers with
per-number variables against a raw COPY of the same rows; P3 the outbox backlog
during P1's run (dispatch to the loopback provider keeps up when it does not grow);
P4 1,000 WatchMessageStatus streams at 20,000 events/s, next to what a bare grpc.aio
server does with the same streams and rate (bench_grpc_streams.py), with the gateway
as one process and as two (SMSGW_PROCESSES=2), judged against bare (issue 21: events
received >= 0.9x bare's, p99 lag <= 1.5x), with unary latency while the streams run; P5
SendVerification + CheckVerification pairs against the echo server; P6 the time from
SendVerification's answer to the provider (the Skynoo emulator) receiving the code
while a 100,000-number campaign drains, against idle (bench_priority.py; issue 21:
p99 <= 50 ms); B1 (not judged)
a 100,000-number batch through the loopback provider's bulk API against one request
per number, with and without a provider rate (bench_bulk.py); P8 (issue 21) a
100,000-number campaign through the SendCloud emulator's bulk ``send`` (20 ms a
request, the gateway limited to 50 requests/s) against one request per number
(projected from a sample), judged >= 20x (bench_sendcloud.py). Under P1 and P5,
the machine's CPU per call against echo's is the most the ratio can be when both runs
keep every core busy. Exits 0 when every benchmark ran
without errors (a quick run judges nothing); with a full run, 2 when a target failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    target: str
    figure: str
    value: str
    baseline: str
    ratio: float | None
    wanted: str
    passed: bool | None  # None: not judged


def run_script(name: str, args: list[str], quick: bool) -> tuple[dict[str, Any] | None, str]:
    """Runs scripts/<name> with --json; returns its figures, or None and why not."""
    command = [sys.executable, str(HERE / name), *args, "--json"]
    if quick:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    try:
        figures: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = "\n".join((done.stderr or done.stdout).splitlines()[-15:])
        return None, f"{name} exited {done.returncode} without figures:\n{tail}"
    if done.returncode != 0:
        return figures, f"{name} exited {done.returncode}"
    return figures, ""


def cpu_row(target: str, figures: dict[str, Any], unit: str) -> list[Row]:
    """Machine CPU (all processes, all cores) per unit against per echo call. When the
    echo run keeps every core busy, echo/ours is the most the throughput ratio can be."""
    echo = figures["echo"].get("machine_cpu_ms_per_call")
    ours = figures["smsgw"].get("machine_cpu_ms_per_call")
    if not echo or not ours:
        return []
    return [
        Row(
            target,
            f"machine CPU per {unit}, ms (ratio = ceiling)",
            f"{ours:.2f}",
            f"echo {echo:.2f}",
            echo / ours,
            "-",
            None,
        )
    ]


def p1_p3(figures: dict[str, Any]) -> list[Row]:
    echo, ours = figures["echo"], figures["smsgw"]
    ratio = figures["ratio"]
    rows = [
        Row(
            "P1",
            "durable SendMessage, calls/s",
            f"{ours['calls_per_s']:.0f}",
            f"echo {echo['calls_per_s']:.0f}",
            ratio,
            ">= 0.80",
            ratio >= 0.80,
        ),
        *cpu_row("P1", figures, "call"),
    ]
    growth = ours.get("backlog_growth_per_s")
    rate = ours["calls_per_s"]
    share = None if growth is None or not rate else growth / rate
    rows.append(
        Row(
            "P3",
            "outbox backlog growth at P1's rate, msgs/s",
            "-" if growth is None else f"{growth:.1f}",
            f"sends {rate:.0f}/s",
            share,
            "<= 0.02",
            None if share is None else share <= 0.02,
        )
    )
    return rows


def p2(figures: dict[str, Any]) -> list[Row]:
    copy = figures["copy"]["table"]
    ratio = figures["accept_s"] / copy
    return [
        Row(
            "P2",
            f"CreateBatch of {figures['numbers']:,} numbers, s",
            f"{figures['accept_s']:.2f}",
            f"COPY {copy:.2f}",
            ratio,
            "<= 6",
            ratio <= 6,
        )
    ]


def p4(figures: dict[str, Any], wanted_events: float) -> list[Row]:
    reached = figures["events_per_s"] >= 0.95 * wanted_events
    complete = figures.get("missed_events", 0) == 0
    return [
        Row(
            "P4",
            f"{figures['streams']} streams: p99 lag, ms",
            f"{figures['lag_p99_ms']:.0f}",
            f"{figures['events_per_s']:.0f} events/s",
            None,
            "<= 100",
            figures["lag_p99_ms"] <= 100 and reached and complete,
        ),
        *unary_rows(figures, ""),
        Row(
            "P4",
            "server peak memory under P4, MB",
            f"{figures['server_rss_peak_mb']:.0f}",
            "-",
            None,
            "<= 200",
            figures["server_rss_peak_mb"] <= 200,
        ),
    ]


def unary_rows(figures: dict[str, Any], prefix: str) -> list[Row]:
    """Unary latency while the streams run: the sender's paced SendMessage calls, and
    GetMessageStatus one at a time on a connection of its own."""
    return [
        Row(
            "P4",
            f"{prefix}SendMessage p50/p99 streaming, ms",
            f"{figures['send_p50_ms']:.0f}/{figures['send_p99_ms']:.0f}",
            f"{figures['sends_per_s']:.0f} of {figures['target_sends_per_s']:.0f} sends/s",
            None,
            "-",
            None,
        ),
        Row(
            "P4",
            f"{prefix}GetMessageStatus p50/p99, ms",
            f"{figures['unary_p50_ms']:.0f}/{figures['unary_p99_ms']:.0f}",
            "1 call at a time",
            None,
            "-",
            None,
        ),
    ]


def processes_prefix(figures: dict[str, Any]) -> str:
    n = figures["parameters"]["processes"]
    return f"{n} proc{'s' if n > 1 else ''}: "


def p4_processes(figures: dict[str, Any]) -> list[Row]:
    """P4 again with SMSGW_PROCESSES=2 (not judged by itself: see p4_against_bare)."""
    prefix = processes_prefix(figures)
    return [
        Row(
            "P4",
            f"{prefix}p99 lag, ms",
            f"{figures['lag_p99_ms']:.0f}",
            f"{figures['events_per_s']:.0f} events/s",
            None,
            "-",
            None,
        ),
        *unary_rows(figures, prefix),
        Row(
            "P4",
            f"{prefix}peak memory, all processes, MB",
            f"{figures['server_rss_peak_mb']:.0f}",
            "-",
            None,
            "-",
            None,
        ),
    ]


def p4_against_bare(raw: dict[str, Any]) -> list[Row]:
    """Issue 21: smsgw's delivered event rate >= 0.9x the bare grpc.aio server's at the
    same offered rate, and its p99 lag <= 1.5x bare's; with 1 and with 2 processes."""
    bare = next((f for k, f in raw.items() if k.startswith("P4 bench_grpc_streams.py")), None)
    if bare is None:
        return []
    rows = []
    for key, ours in raw.items():
        if not key.startswith("P4 bench_streams.py"):
            continue
        prefix = processes_prefix(ours)
        rate = ours["events_per_s"] / max(bare["events_per_s"], 1e-9)
        lag = ours["lag_p99_ms"] / max(bare["lag_p99_ms"], 1e-9)
        rows += [
            Row(
                "P4",
                f"{prefix}events/s against bare grpc.aio",
                f"{ours['events_per_s']:.0f}",
                f"bare {bare['events_per_s']:.0f}",
                rate,
                ">= 0.90",
                rate >= 0.90,
            ),
            Row(
                "P4",
                f"{prefix}p99 lag against bare grpc.aio, ms",
                f"{ours['lag_p99_ms']:.0f}",
                f"bare {bare['lag_p99_ms']:.0f}",
                lag,
                "<= 1.50",
                lag <= 1.50,
            ),
        ]
    return rows


def p5(figures: dict[str, Any]) -> list[Row]:
    echo, ours = figures["echo"], figures["smsgw"]
    ratio = figures["ratio"]
    return [
        Row(
            "P5",
            "SendVerification+CheckVerification pairs/s",
            f"{ours['calls_per_s']:.0f}",
            f"echo {echo['calls_per_s']:.0f}",
            ratio,
            ">= 0.50",
            ratio >= 0.50,
        ),
        *cpu_row("P5", figures, "pair"),
    ]


def p6(figures: dict[str, Any]) -> list[Row]:
    """Issue 21: from SendVerification's answer to the provider receiving the code,
    p99 <= 50 ms while a 100,000-number campaign drains (bench_priority.py)."""
    idle, during = figures["idle"], figures["campaign"]
    p99 = during["to_provider_p99_ms"]
    return [
        Row(
            "P6",
            "code answer->provider p99, campaign, ms",
            f"{p99:.1f}",
            f"idle {idle['to_provider_p99_ms']:.1f}",
            figures["ratio"],
            "<= 50 ms",
            p99 <= figures["target_ms"] and figures["draining_throughout"],
        ),
        Row(
            "P6",
            "SendVerification p50/p99, campaign, ms",
            f"{during['call_p50_ms']:.0f}/{during['call_p99_ms']:.0f}",
            f"idle {idle['call_p50_ms']:.0f}/{idle['call_p99_ms']:.0f}",
            None,
            "-",
            None,
        ),
        Row(
            "P6",
            "campaign meanwhile, msgs/s",
            f"{during['campaign_per_s']:.0f}",
            f"{figures['numbers']:,} numbers",
            None,
            "-",
            None,
        ),
    ]


def p4_ceiling(figures: dict[str, Any]) -> list[Row]:
    """The same streams and rate from a bare grpc.aio server: what grpc.aio does here."""
    return [
        Row(
            "P4",
            "bare grpc.aio, same streams: p99 lag, ms",
            f"{figures['lag_p99_ms']:.0f}",
            f"{figures['events_per_s']:.0f} events/s",
            None,
            "-",
            None,
        ),
        Row(
            "P4",
            "bare grpc.aio: echo p50 while streaming, ms",
            f"{figures['unary_p50_ms']:.0f}",
            "1 call at a time",
            None,
            "-",
            None,
        ),
    ]


def b1(figures: dict[str, Any]) -> list[Row]:
    """A batch through the loopback provider's bulk API against one request per number
    (issue 15), with the provider's request rate limited: not judged (no target)."""
    runs = {(r["mode"], r["rate"] is not None): r for r in figures["runs"]}
    rows = []
    for limited in (False, True):
        bulk, single = runs[("bulk", limited)], runs[("single", limited)]
        rate = f"{bulk['rate']:g} req/s" if limited else "no rate limit"
        rows.append(
            Row(
                "B1",
                f"{figures['numbers']:,}-number batch, {rate}, s",
                f"{bulk['batch_seconds']:.1f}",
                f"single {single['batch_seconds']:.1f}"
                + (" (proj.)" if single["projected"] else ""),
                single["batch_seconds"] / max(bulk["batch_seconds"], 1e-9),
                "-",
                None,
            )
        )
    bulk = runs[("bulk", True)]
    rows.append(
        Row(
            "B1",
            "provider requests for that batch",
            f"{bulk['requests']:,}",
            f"single {figures['numbers']:,}",
            figures["numbers"] / max(bulk["requests"], 1),
            "-",
            None,
        )
    )
    return rows


def p8(figures: dict[str, Any]) -> list[Row]:
    """Issue 21: a campaign through SendCloud's bulk ``send`` (the emulator answering in
    20 ms, the gateway limited to 50 requests/s) against one request per number."""
    bulk, single = figures["runs"]
    checked = not bulk["problems"] and not single["problems"]
    ratio = figures["ratio"]
    return [
        Row(
            "P8",
            f"{figures['numbers']:,} numbers to SendCloud, {figures['rate']:g} req/s, s",
            f"{bulk['batch_seconds']:.1f}",
            f"single {single['batch_seconds']:.0f}" + (" (proj.)" if single["projected"] else ""),
            ratio,
            f">= {figures['target']:g}",
            ratio >= figures["target"] and checked,
        ),
        Row(
            "P8",
            "SendCloud requests for that campaign",
            f"{bulk['emulator_requests']:,}",
            f"single {figures['numbers']:,}",
            figures["numbers"] / max(bulk["emulator_requests"], 1),
            "-",
            None,
        ),
    ]


STREAM_EVENTS = 20_000.0
P4_ARGS = ["--events-per-second", str(int(STREAM_EVENTS))]
P4_PROCESSES_ARGS = [*P4_ARGS, "--processes", "2"]
# (target, script, arguments, rows from its figures), run in this order
BENCHMARKS: list[tuple[str, str, list[str], Callable[[dict[str, Any]], list[Row]]]] = [
    ("P1", "bench_send.py", ["--count", "30000", "--seconds", "20"], p1_p3),
    ("P2", "bench_batch.py", ["--seconds", "120"], p2),
    ("P4", "bench_streams.py", P4_ARGS, lambda f: p4(f, f["target_events_per_s"])),
    ("P4", "bench_streams.py", P4_PROCESSES_ARGS, p4_processes),
    ("P4", "bench_grpc_streams.py", P4_ARGS, p4_ceiling),
    ("P5", "bench_send.py", ["--rpc", "verify", "--count", "10000", "--seconds", "20"], p5),
    ("P6", "bench_priority.py", [], p6),
    ("B1", "bench_bulk.py", [], b1),
    ("P8", "bench_sendcloud.py", [], p8),
]


def run_key(target: str, script: str, args: list[str]) -> str:
    """How one run's figures are named (in --json too): target, script, arguments."""
    return " ".join([target, script, *args])


def print_table(rows: list[Row], quick: bool) -> None:
    print(
        f"{'':<4}{'figure':<44}{'value':>11}  {'baseline':<20}{'ratio':>7}  "
        f"{'target':<9}{'verdict':<8}"
    )
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        verdict = "-" if quick or r.passed is None else ("pass" if r.passed else "FAIL")
        print(
            f"{r.target:<4}{r.figure:<44}{r.value:>11}  {r.baseline:<20}{ratio:>7}  "
            f"{r.wanted:<9}{verdict:<8}"
        )
    if quick:
        print("(quick run: too small to judge; run without --quick for the verdicts)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs (CI)")
    parser.add_argument(
        "--only", default="P1,P2,P3,P4,P5,P6,B1,P8", help="targets, comma-separated"
    )
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    parser.add_argument(
        "--p4-size",
        metavar="STREAMS:EVENTS",
        help="P4 with fewer streams and events/s than 1,000:20,000 (a machine busy otherwise)",
    )
    args = parser.parse_args()
    benchmarks = BENCHMARKS
    if args.p4_size:
        streams, _, events = args.p4_size.partition(":")
        size = ["--streams", str(int(streams)), "--events-per-second", str(int(events))]
        benchmarks = [
            (t, script, [*size, *script_args[2:]] if t == "P4" else script_args, to_rows)
            for t, script, script_args, to_rows in BENCHMARKS
        ]
    wanted = {t.strip().upper() for t in args.only.split(",") if t.strip()}
    if "P3" in wanted:
        wanted.add("P1")  # P3 is measured during P1's run
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    problems: list[str] = []
    started = time.monotonic()
    for target, script, script_args, to_rows in benchmarks:
        if target not in wanted:
            continue
        if args.quick and "--processes" in script_args:
            continue  # CI's quick run: tests/faults/test_processes.py runs that setup
        print(f"running {target}: {script} {' '.join(script_args)}", file=sys.stderr, flush=True)
        figures, problem = run_script(script, script_args, args.quick)
        if problem:
            problems.append(f"{target}: {problem}")
        if figures is not None:
            raw[run_key(target, script, script_args)] = figures
            rows.extend(r for r in to_rows(figures) if r.target in wanted)
    if "P4" in wanted:
        rows.extend(p4_against_bare(raw))
    print_table(rows, args.quick)
    print(f"(took {time.monotonic() - started:.0f} s)")
    if args.json:
        print(json.dumps(raw, indent=2))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    if not args.quick and any(r.passed is False for r in rows):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
