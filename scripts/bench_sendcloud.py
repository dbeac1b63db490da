"""P8 (issue 21): a campaign through SendCloud's bulk ``send`` against one request per number.

    .venv/bin/python scripts/bench_sendcloud.py            # 100,000 numbers
    .venv/bin/python scripts/bench_sendcloud.py --quick    # 1,000 numbers (CI)

The provider is the SendCloud emulator (``smsgw emulate sendcloud``, its own process)
answering every request after ``--latency-ms``; the gateway's routing file sends
every number to it with ``rate_per_second = --rate`` (the per-provider outbound
limit). The campaign is one CreateBatch of ``--numbers`` numbers with a stored
template mapped to a SendCloud templateId, the same text for every number (what
SendCloud's multi-phone ``send`` takes). Bulk sends the whole batch; single
(``SMSGW_DISPATCH_BULK=false``, one request per number) sends a sample
(``--sample``) and its time for the whole batch is projected from the sample's rate.

Time runs from the CreateBatch call to every number sent: a large batch's numbers are
claimable as CreateBatch announces them (in chunks, before it answers), so most of a
bulk campaign goes out during the call. A single-mode sample is projected at its rate
while sending (the emulator's first request to its last), which leaves out its
CreateBatch and so favours the baseline. Requests are counted
at the emulator (``/smsapi/send`` calls; the most within one second; those beyond
``--rate`` within one second, which SendCloud's document defines no refusal for, so
the emulator counts them and answers as usual) and by the gateway (its request
metric). Each run checks that every number reached the emulator exactly once and
that the batch counts every message sent and none failed. Receipt polling is off
(the emulator answers a status query by scanning everything it holds, which would
load the machine unevenly between the two modes): messages end SENT.

Each run starts its own emulator and ``smsgw serve`` (embedded PostgreSQL in a temp
dir, or DATABASE_URL), bounded in size and time, on 127.0.0.1 only. Prints a table
(``--json``: the figures). Exits 1 when a run is incomplete or a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from bench_common import (
    HOST,
    database_label,
    free_port,
    smsgw_command,
    start_smsgw,
    stop_process,
    workspace,
)
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2, template_pb2, template_pb2_grpc

PROVIDER = "cloud"
REQUESTS_METRIC = f'smsgw_provider_request_duration_seconds_count{{provider="{PROVIDER}"}}'
TEMPLATE_CODE = "spring_sale"
SENDCLOUD_TEMPLATE = "30300"
TEXT = "Spring sale at our stores today: two for one on everything."
SMS_USER = "bench-user"
TARGET = 20.0  # bulk at least this many times faster than one request per number


@dataclass
class Run:
    mode: str  # bulk | single
    numbers: int  # in this run's batch
    sent: int  # counted sent by the batch
    failed: int
    seconds: float  # the campaign: from the CreateBatch call to every number sent
    accept_seconds: float  # CreateBatch's call (its numbers go out while it announces them)
    first_request_after: float  # s from the call's start to the emulator's first request
    sending_seconds: float  # the emulator's first request to its last
    gateway_requests: int  # the gateway's request metric for the provider
    emulator_requests: int  # /smsapi/send calls the emulator answered
    received: int  # messages the emulator accepted
    distinct: int  # distinct numbers among them
    peak_per_second: int  # most requests the emulator saw within one second
    over_rate: int  # requests beyond the rate within one second (not refused)
    projected: bool  # seconds projected to ``batch`` numbers from this run's rate
    batch: int
    problems: list[str] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        """Numbers a second: over the campaign, or for a sample over its sending alone
        (the emulator's first request to its last; what projects to the whole batch)."""
        return self.sent / max(self.sending_seconds if self.projected else self.seconds, 1e-9)

    @property
    def batch_seconds(self) -> float:
        return self.batch / self.per_s if self.projected else self.seconds


def start_emulator(
    procs: list[subprocess.Popen[bytes]], secret: str, latency_ms: int, rate: float
) -> str:
    """Starts ``smsgw emulate sendcloud`` (appended to procs); returns its base URL."""
    proc = subprocess.Popen(
        [
            *smsgw_command(),
            "emulate",
            "sendcloud",
            "--host",
            HOST,
            "--credential-id",
            SMS_USER,
            "--credential-secret",
            secret,
            "--template",
            f"{SENDCLOUD_TEMPLATE}={TEXT}",
            "--latency",
            str(latency_ms / 1000),
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # {"kind": ..., "base_url": ...} once it listens
    if not line:
        raise RuntimeError(f"smsgw emulate sendcloud exited ({proc.wait(10)})")
    base_url = str(json.loads(line)["base_url"])
    emulator_call(base_url, "/_emulator/sendcloud", {"rate_limit": int(rate)})
    return base_url


def emulator_call(base_url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base_url + path, data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read())


def config_file(tmp: Path, base_url: str, rate: float) -> Path:
    path = tmp / "smsgw-sendcloud.toml"
    path.write_text(
        f"""[providers.{PROVIDER}]
kind = "sendcloud"
base_url = "{base_url}"
credentials = {{ sms_user = "BENCH_SENDCLOUD_USER", sms_key = "BENCH_SENDCLOUD_KEY" }}
rate_per_second = {rate}
timeout_seconds = 10
templates = {{ {TEMPLATE_CODE} = "{SENDCLOUD_TEMPLATE}" }}

[[routes]]
providers = ["{PROVIDER}"]
"""
    )
    return path


def claim_size(mode: str, size: int | None) -> dict[str, str]:
    """SMSGW_DISPATCH_CLAIM_SIZE for a bulk run (``--claim-size``); single runs keep the
    default (a larger claim there only waits longer for rate tokens under its lease)."""
    return {"SMSGW_DISPATCH_CLAIM_SIZE": str(size)} if size and mode == "bulk" else {}


def requests_sent(http_port: int) -> int:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(REQUESTS_METRIC):
                return int(float(line.split()[-1]))
    return 0


async def send_batch(
    target: str, metadata: tuple[tuple[str, str], ...], n: int, limit: float
) -> tuple[int, int, float, float, float]:
    """Creates the template and a batch of n numbers with it; waits until every number
    is sent or failed (or ``limit`` s). Returns (sent, failed, seconds from the
    CreateBatch call, seconds the call took, wall clock when it was made)."""
    numbers = [f"+86138{i:08d}" for i in range(n)]
    options = [("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        templates = template_pb2_grpc.TemplateServiceStub(channel)
        created = await templates.CreateTemplate(
            template_pb2.CreateTemplateRequest(
                template=template_pb2.Template(
                    code=TEMPLATE_CODE, content=TEXT, use_type=common_pb2.USE_TYPE_MARKETING
                )
            ),
            metadata=metadata,
            timeout=30,
        )
        stub = batch_pb2_grpc.BatchServiceStub(channel)
        called, call_start = time.time(), time.perf_counter()
        reply = await stub.CreateBatch(
            batch_pb2.CreateBatchRequest(
                use_type=common_pb2.USE_TYPE_MARKETING,
                template_id=created.id,
                numbers=numbers,
            ),
            metadata=metadata,
            timeout=300,
        )
        assert reply.accepted_count == n, (reply.accepted_count, list(reply.rejected)[:3])
        accept_seconds = time.perf_counter() - call_start
        deadline = time.monotonic() + limit
        while True:
            batch = await stub.GetBatch(
                batch_pb2.GetBatchRequest(task_id=reply.task_id), metadata=metadata
            )
            if batch.sent + batch.failed >= n or time.monotonic() > deadline:
                done = time.perf_counter() - call_start
                return batch.sent, batch.failed, done, accept_seconds, called
            await asyncio.sleep(0.05)


def run(tmp: Path, mode: str, n: int, batch: int, args: argparse.Namespace) -> Run:
    procs: list[subprocess.Popen[bytes]] = []
    secret = secrets.token_hex(16)
    http_port = free_port()
    try:
        base_url = start_emulator(procs, secret, args.latency_ms, args.rate)
        env = {
            "SMSGW_CONFIG": str(config_file(tmp, base_url, args.rate)),
            "SMSGW_HTTP_ADDR": f"{HOST}:{http_port}",
            "SMSGW_DISPATCH_BULK": "true" if mode == "bulk" else "false",
            "SMSGW_POLL_INTERVAL_SECONDS": "3600",
            **claim_size(mode, args.claim_size),
            "BENCH_SENDCLOUD_USER": SMS_USER,
            "BENCH_SENDCLOUD_KEY": secret,
        }
        gw = start_smsgw(tmp, procs, env, 180)
        sent, failed, seconds, accept_seconds, called = asyncio.run(
            send_batch(gw.target, gw.metadata, n, args.seconds)
        )
        gateway_requests = requests_sent(http_port)
        extras = emulator_call(base_url, "/_emulator/sendcloud")
        received = emulator_call(base_url, "/_emulator/state")["received"]
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    result = Run(
        mode,
        n,
        sent,
        failed,
        seconds,
        accept_seconds,
        extras["first_call_at"] - called if extras["first_call_at"] else 0.0,
        extras["last_call_at"] - extras["first_call_at"],
        gateway_requests,
        int(extras["calls"].get("/smsapi/send", 0)),
        len(received),
        len({r["phone"] for r in received}),
        int(extras["peak_per_second"]),
        int(extras["over_rate"]),
        n < batch,
        batch,
    )
    if sent != n or failed:
        result.problems.append(f"{mode}: batch counts {sent} sent, {failed} failed of {n}")
    if result.received != n or result.distinct != n:
        result.problems.append(
            f"{mode}: the emulator accepted {result.received} messages to "
            f"{result.distinct} numbers, for {n} numbers"
        )
    return result


def print_table(runs: list[Run], args: argparse.Namespace) -> float:
    n = args.numbers
    print(
        f"campaign of {n:,} numbers to the SendCloud emulator answering in "
        f"{args.latency_ms} ms, gateway limit {args.rate:g} requests/s"
        + (f", bulk claim size {args.claim_size}" if args.claim_size else "")
        + "; "
        f"database: {database_label()}"
    )
    print(
        f"{'mode':<8}{'numbers':>9}{'requests':>10}{'numbers/req':>12}{'peak req/s':>11}"
        f"{'over rate':>10}{'create, s':>10}{'1st req, s':>11}{'sending, s':>11}"
        f"{'numbers/s':>11}{'batch time, s':>15}  how"
    )
    for r in runs:
        how = f"projected from {r.numbers:,}" if r.projected else "measured"
        print(
            f"{r.mode:<8}{r.numbers:>9,}{r.emulator_requests:>10,}"
            f"{r.sent / max(r.emulator_requests, 1):>12.1f}{r.peak_per_second:>11}"
            f"{r.over_rate:>10}{r.accept_seconds:>10.1f}{r.first_request_after:>11.1f}"
            f"{r.sending_seconds:>11.1f}{r.per_s:>11.1f}{r.batch_seconds:>15.1f}  {how}"
        )
    print(
        "(create: the CreateBatch call, which answers once every number is announced, "
        "sending as it goes; 1st req: from the call to the emulator's first request; "
        "sending: its first request to its last; batch time: from the call to every number "
        "sent, or for a sample, the batch at the sample's rate while sending)"
    )
    bulk, single = runs
    ratio = single.batch_seconds / max(bulk.batch_seconds, 1e-9)
    verdict = "-" if args.quick else ("pass" if ratio >= TARGET else "FAIL")
    print(f"ratio (single time / bulk time): {ratio:.1f}x; target >= {TARGET:g}x: {verdict}")
    checks = "; ".join(p for r in runs for p in r.problems) or (
        "every number sent once (counted at the emulator), none failed"
    )
    print(f"checks: {checks}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=int, default=20, help="emulator answer time")
    parser.add_argument("--rate", type=float, default=50, help="provider requests/s limit")
    parser.add_argument(
        "--sample", type=int, default=2_000, help="numbers sent one request each (projected)"
    )
    parser.add_argument("--claim-size", type=int, help="SMSGW_DISPATCH_CLAIM_SIZE, bulk run only")
    parser.add_argument("--seconds", type=float, default=900, help="limit for each run")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.numbers, args.sample, args.seconds = 1_000, 100, 60
    n = args.numbers
    plan = [("bulk", n), ("single", min(n, args.sample))]
    runs: list[Run] = []
    with workspace("smsgw-bench-sendcloud-") as (_, tmp):
        for mode, count in plan:
            print(f"running {mode}, {count} numbers", file=sys.stderr, flush=True)
            runs.append(run(tmp, mode, count, n, args))
    if args.json:
        bulk, single = runs
        figures = {
            "numbers": n,
            "latency_ms": args.latency_ms,
            "rate": args.rate,
            "ratio": single.batch_seconds / max(bulk.batch_seconds, 1e-9),
            "target": TARGET,
            "runs": [
                {**asdict(r), "per_s": r.per_s, "batch_seconds": r.batch_seconds} for r in runs
            ],
        }
        print(json.dumps(figures, indent=2))
    else:
        print_table(runs, args)
    return 1 if any(r.problems for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
