"""``SMSGW_PROCESSES=2``: one ``smsgw serve`` as two server processes on one port.

What an operator relies on: with port 0 the parent picks the ports and both processes
serve them; connections land on both (each answers /metrics with its own index and
pid, and counts the calls it answered); a message sent is delivered; a process killed
is logged and started again while the other keeps answering; SIGTERM to ``smsgw
serve`` stops every process within SMSGW_SHUTDOWN_GRACE and exits 0; a port in use
is refused at once; and the processes stop when the parent is killed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from tests.eventually import eventually
from tests.faults.outage_support import ROOT, new_account

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRACE = 3.0  # SMSGW_SHUTDOWN_GRACE
MARGIN = 3.0  # for the interpreters to wind down after the gateways stopped
CHANNELS = 16  # separate connections: all on one process by chance: 2 in 2**16
SERVING = re.compile(r"smsgw serving gRPC on (\S+), HTTP on (\S+) \(2 processes\)")
PROCESS = re.compile(r'^smsgw_process\{index="(\d+)",pid="(\d+)"\} 1\.0$', re.M)
SEND_CALLS = re.compile(
    r'^smsgw_rpc_requests_total\{code="OK",method="/sms.v1.MessageService/SendMessage"\} (\S+)$',
    re.M,
)
DELIVERED = int(common_pb2.MESSAGE_STATUS_DELIVERED)


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    log: Path
    grpc_target: str
    http: str
    dsn: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def scrape(self) -> str:
        """GET /metrics on a connection of its own (so any process may answer)."""
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"http://{self.http}/metrics") as reply,
        ):
            assert reply.status == 200
            return await reply.text()

    async def processes(self, scrapes: int = 40) -> dict[int, int]:
        """index -> pid of the processes that answered ``scrapes`` scrapes."""
        seen: dict[int, int] = {}
        for _ in range(scrapes):
            found = PROCESS.search(await self.scrape())
            assert found is not None
            seen[int(found[1])] = int(found[2])
        return seen


async def spawn(tmp_path: Path, http_addr: str = "127.0.0.1:0") -> asyncio.subprocess.Process:
    """``smsgw serve`` with SMSGW_PROCESSES=2 (gRPC on port 0), logging to serve.log."""
    env = {
        **os.environ,
        "SMSGW_DATA_DIR": str(tmp_path / "smsgw-data"),
        "SMSGW_PROCESSES": "2",
        "SMSGW_GRPC_ADDR": "127.0.0.1:0",
        "SMSGW_HTTP_ADDR": http_addr,
        "SMSGW_SHUTDOWN_GRACE": str(GRACE),
        "SMSGW_LOOPBACK_DELAY_MS": "50",
    }
    env.pop("DATABASE_URL", None)  # the parent runs the embedded PostgreSQL
    with (tmp_path / "serve.log").open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


@contextlib.asynccontextmanager
async def serve_two(tmp_path: Path) -> AsyncIterator[Served]:
    """``smsgw serve`` with SMSGW_PROCESSES=2 on ports 0, until it serves."""
    log = tmp_path / "serve.log"
    proc = await spawn(tmp_path)
    try:

        def serving() -> re.Match[str] | None:
            if proc.returncode is not None:
                raise AssertionError(f"smsgw serve exited:\n{log.read_text()[-3000:]}")
            return SERVING.search(log.read_text(errors="replace"))

        found = await eventually(
            serving, within=90, interval=0.2, what=lambda: log.read_text()[-3000:]
        )
        assert found is not None
        pgdata = re.search(r"embedded PostgreSQL running in ([^\"]+)", log.read_text())
        assert pgdata is not None
        yield Served(
            proc, log, found[1], found[2], f"postgresql://postgres@/postgres?host={pgdata[1]}"
        )
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        stop_postmaster(tmp_path / "smsgw-data" / "pgdata")


def stop_postmaster(pgdata: Path) -> None:
    """A parent killed before it stopped its embedded PostgreSQL leaves it running (in
    a session of its own): a fast shutdown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        if str(pgdata).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGINT)


def running(pid: int) -> bool:
    """Whether the process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def stop_within_grace(served: Served, pids: list[int]) -> None:
    started = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(GRACE + MARGIN + 5):
        code = await served.proc.wait()
    took = time.monotonic() - started
    assert code == 0, served.text()[-3000:]
    assert took <= GRACE + MARGIN, f"stopped after {took:.1f} s"
    for pid in pids:
        assert not running(pid), f"server process {pid} still runs"


async def test_two_processes_share_the_ports_deliver_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    async with serve_two(tmp_path) as served:
        processes = await served.processes()
        assert sorted(processes) == [0, 1]
        assert len(set(processes.values())) == 2
        assert served.proc.pid not in processes.values()

        metadata = await new_account(served.dsn)
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection each
        channels = [
            grpc.aio.insecure_channel(served.grpc_target, options=options) for _ in range(CHANNELS)
        ]
        try:
            ids = []
            for n, channel in enumerate(channels):
                reply = await message_pb2_grpc.MessageServiceStub(channel).SendMessage(
                    message_pb2.SendMessageRequest(
                        mobile=f"+8613800{n:06d}",
                        use_type=common_pb2.USE_TYPE_NOTIFICATION,
                        text=f"parcel {n}",
                    ),
                    metadata=metadata,
                    timeout=10,
                )
                ids.append(reply.id)

            # Every process answered some of the calls: their counts add up to all.
            counts: dict[int, float] = {}
            for _ in range(40):
                text = await served.scrape()
                index = PROCESS.search(text)
                calls = SEND_CALLS.search(text)
                assert index is not None
                counts[int(index[1])] = float(calls[1]) if calls else 0.0
            assert sorted(counts) == [0, 1]
            assert counts[0] > 0 and counts[1] > 0, counts
            assert sum(counts.values()) == CHANNELS, counts

            stub = message_pb2_grpc.MessageServiceStub(channels[0])

            async def statuses() -> list[int]:
                reply = await stub.GetMessageStatus(
                    message_pb2.GetMessageStatusRequest(ids=ids), metadata=metadata, timeout=5
                )
                return [m.status for m in reply.messages]

            final = await eventually(
                statuses, until=lambda s: s == [DELIVERED] * CHANNELS, within=30
            )
            assert final == [DELIVERED] * CHANNELS
        finally:
            for channel in channels:
                await channel.close()
        await stop_within_grace(served, list(processes.values()))


async def test_a_killed_process_is_started_again_while_the_other_answers(
    tmp_path: Path,
) -> None:
    async with serve_two(tmp_path) as served:
        before = await served.processes()
        os.kill(before[1], signal.SIGKILL)
        # (A connection the kernel had handed to the killed process before it was
        # gone is reset: a client tries again, as after any server's crash.)
        await eventually(lambda: not running(before[1]), within=10, interval=0.05)

        # The other process answers at once, on new connections too. (A connection
        # made while the replacement process starts listening can be reset before
        # that process serves: a client waiting for ready tries again, within the
        # call's 3 s.)
        for _ in range(10):
            async with grpc.aio.insecure_channel(served.grpc_target) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=3, wait_for_ready=True
                )
                assert reply.status == health_pb2.HealthCheckResponse.SERVING

        async def answering() -> dict[int, int]:
            return await served.processes(scrapes=20)

        after = await eventually(
            answering,
            until=lambda seen: sorted(seen) == [0, 1] and seen[1] != before[1],
            within=60,
            interval=0.5,
            ignoring=(aiohttp.ClientError,),
        )
        assert after[0] == before[0]  # the other was left alone
        logged = collections.Counter(
            line for line in served.text().splitlines() if "starting it again" in line
        )
        assert len(logged) == 1 and f"pid {before[1]}" in next(iter(logged)), logged
        await stop_within_grace(served, [after[0], after[1]])


async def test_a_port_in_use_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = await spawn(tmp_path, http_addr=addr)
        async with asyncio.timeout(60):
            code = await proc.wait()
    text = (tmp_path / "serve.log").read_text()
    assert code == 1, text[-3000:]
    assert f"cannot listen on {addr} (SMSGW_HTTP_ADDR)" in text, text[-3000:]
    assert "server process" not in text  # none was started


async def test_the_processes_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    async with serve_two(tmp_path) as served:
        pids = list((await served.processes()).values())
        served.proc.kill()  # SIGKILL: the parent cannot pass anything on
        await served.proc.wait()
        await eventually(
            lambda: not any(running(pid) for pid in pids),
            within=GRACE + MARGIN + 5,
            interval=0.2,
            what=lambda: served.text()[-3000:],
        )
        assert "the parent smsgw serve is gone: stopping" in served.text()
