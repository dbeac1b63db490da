"""Several ``smsgw serve`` processes on one database, and a provider emulator in a
process of its own, for the scale-out and shutdown tests.

The emulator runs as ``smsgw emulate`` in a subprocess, not in the test's event
loop: under a few thousand sends the test process is busy being the clients, and an
emulator sharing its loop would make the provider the bottleneck. What it received
is read over HTTP (``GET /_emulator/state``), as an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from tests.e2e.emulated import SKY
from tests.faults.outage_support import ROOT, Serve, spawn_serve


@dataclass
class EmulatorProcess:
    """A provider emulator started with ``smsgw emulate``."""

    proc: asyncio.subprocess.Process
    base_url: str

    async def received(self) -> list[dict[str, Any]]:
        """Every message the provider accepted (phone, content, provider id, ...)."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{self.base_url}/_emulator/state") as reply,
        ):
            reply.raise_for_status()
            state: dict[str, Any] = await reply.json()
        received: list[dict[str, Any]] = state["received"]
        return received


@contextlib.asynccontextmanager
async def skynoo_process(
    log: Path, *, latency: float = 0.0, delivery_delay: float = 0.2
) -> AsyncIterator[EmulatorProcess]:
    """A Skynoo emulator with tests.e2e.emulated's credentials (so
    ``outage_support.skynoo_config`` points smsgw at it); stopped after the block."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "emulate", "skynoo", "--port", "0",
            "--credential-id", SKY["api_key"], "--credential-secret", SKY["api_secret"],
            "--latency", str(latency), "--delivery-delay", str(delivery_delay),
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            first = await proc.stdout.readline()
        if not first:
            raise AssertionError(f"smsgw emulate exited; see {log}")
        yield EmulatorProcess(proc, json.loads(first)["base_url"])
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


@contextlib.asynccontextmanager
async def replicas(env: Mapping[str, str], folder: Path, count: int) -> AsyncIterator[list[Serve]]:
    """``count`` serve processes on the same database, started together (none waits
    for another), each with its own ports and log ``replica-N.log``; the block runs
    once all are SERVING. Those still running afterwards are killed."""
    started: list[Serve] = []
    try:
        for n in range(count):
            started.append(await spawn_serve(env, folder / f"replica-{n + 1}.log"))
        await asyncio.gather(*(s.wait_serving() for s in started))
        yield started
    finally:
        for server in started:
            if not server.exited:
                server.kill_group()
        for server in started:
            await server.proc.wait()


@contextlib.asynccontextmanager
async def channels(servers: Sequence[Serve]) -> AsyncIterator[list[grpc.aio.Channel]]:
    """One insecure channel per server, closed after the block."""
    opened = [grpc.aio.insecure_channel(s.target) for s in servers]
    try:
        yield opened
    finally:
        for channel in opened:
            await channel.close()


def log_messages(server: Serve) -> list[str]:
    """The ``msg`` of each JSON log line the process wrote."""
    return [str(entry.get("msg", "")) for entry in server.logs()]
