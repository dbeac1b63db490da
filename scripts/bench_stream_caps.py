"""One account opens thousands of status streams: are they capped, and do another
account's SendMessage calls stay fast?

Starts ``smsgw serve`` (embedded PostgreSQL in a temp dir, or DATABASE_URL), creates
two accounts, measures account B's SendMessage latency idle, then while account A
tries to open --streams account-wide WatchMessageStatus streams and sends a message
every 50 ms (so its admitted streams have events to carry). Prints one table.

    .venv/bin/python scripts/bench_stream_caps.py
    .venv/bin/python scripts/bench_stream_caps.py --streams 3000 --calls 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
from bench_common import (
    ROOT,
    Metadata,
    percentile_ms,
    smsgw_command,
    start_smsgw,
    workspace,
)
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

CN = "+8613800138000"


def second_account(tmp: Path, key: str) -> Metadata:
    env = {**os.environ, "SMSGW_DATA_DIR": str(tmp / "smsgw"), "SMSGW_SECRET_KEY": key}
    created = subprocess.run(
        [*smsgw_command(), "account", "create", "other"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    account = json.loads(created.stdout.strip().splitlines()[-1])
    token = base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


def request(text: str) -> message_pb2.SendMessageRequest:
    return message_pb2.SendMessageRequest(
        mobile=CN, text=text, use_type=common_pb2.USE_TYPE_NOTIFICATION
    )


async def latencies(stub: message_pb2_grpc.MessageServiceStub, md: Metadata, n: int) -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        await stub.SendMessage(request(f"b{i}"), metadata=md)
        out.append(time.perf_counter() - started)
    return sorted(out)


async def hold_stream(
    stub: message_pb2_grpc.MessageServiceStub, md: Metadata, outcome: Counter[str]
) -> None:
    call = stub.WatchMessageStatus(message_pb2.WatchMessageStatusRequest(), metadata=md)
    first = True
    try:
        async for _ in call:
            if first:
                outcome["open"] += 1  # it carries A's events
                first = False
    except grpc.aio.AioRpcError as err:
        outcome[err.code().name] += 1


async def run(target: str, a: Metadata, b: Metadata, streams: int, calls: int) -> None:
    channels = [grpc.aio.insecure_channel(target) for _ in range(10)]
    stubs = [message_pb2_grpc.MessageServiceStub(c) for c in channels]
    b_stub = stubs[0]
    await latencies(b_stub, b, 20)  # warm-up (B's secret verified once)
    idle = await latencies(b_stub, b, calls)

    outcome: Counter[str] = Counter()
    holders = [
        asyncio.create_task(hold_stream(stubs[i % len(stubs)], a, outcome)) for i in range(streams)
    ]

    async def a_sends() -> None:
        i = 0
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stubs[1].SendMessage(request(f"a{i}"), metadata=a)
            i += 1
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(a_sends())
    await asyncio.sleep(3)  # the streams are opened (or refused)
    busy = await latencies(b_stub, b, calls)
    opened, refused = outcome["open"], outcome["RESOURCE_EXHAUSTED"]
    sender.cancel()
    for task in holders:
        task.cancel()
    await asyncio.gather(sender, *holders, return_exceptions=True)
    for channel in channels:
        await channel.close()

    print("| phase | B SendMessage p50 | p99 | A streams carrying events | refused | no answer |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| idle | {percentile_ms(idle, 0.5)} ms | {percentile_ms(idle, 0.99)} ms | - | - | - |")
    print(
        f"| A opens {streams} streams | {percentile_ms(busy, 0.5)} ms | "
        f"{percentile_ms(busy, 0.99)} ms | {opened} | {refused} | {streams - opened - refused} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    key = (
        os.environ.get("SMSGW_SECRET_KEY")
        or base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )
    with workspace("smsgw-bench-streams-") as (procs, tmp):
        smsgw = start_smsgw(tmp, procs, {"SMSGW_SECRET_KEY": key}, timeout=60)
        other = second_account(tmp, key)
        asyncio.run(run(smsgw.target, smsgw.metadata, other, args.streams, args.calls))
    sys.exit(0)


if __name__ == "__main__":
    main()
