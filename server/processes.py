"""``SMSGW_PROCESSES=N``: one ``smsgw serve`` as N server processes on one port.

A grpc.aio server runs its calls on one Python thread, so one process uses about one
core; grpc's advice for Python is a process per core sharing the port (SO_REUSEPORT:
the kernel hands each new connection to one of the listening processes). The parent
(this module) serves nothing itself; it

- reserves the gRPC and HTTP ports: a socket bound with SO_REUSEPORT (not listening,
  so it takes no connection) holds each, so port 0 becomes a concrete port every
  process is given, and no other program can take it between two processes' starts
  (a port in use: exit 1, before anything starts);
- starts the database (the embedded PostgreSQL once, or checks DATABASE_URL's) and
  applies the migrations, once, before any process starts;
- starts N processes (``python -m server.cli serve``) with DATABASE_URL set to that
  database and SMSGW_PROCESS_INDEX set: each is a full replica of the gateway (its
  own dispatch workers, maintenance, status hub; the outbox hands each message to one
  of them, as with replicas on separate machines), and tells the parent on a pipe
  when it serves; a pipe the other way ends when the parent does, and the process
  then stops (a parent killed with SIGKILL leaves no server behind);
- supervises: a process that exits while serving is logged and started again (after
  RESTART_DELAY); a process that does not come up (it exits or is not serving within
  STARTUP_TIMEOUT, at the start or in a restart) stops the whole serve, which exits 1;
- forwards SIGTERM and SIGINT (stop: each process stops within SMSGW_SHUTDOWN_GRACE),
  and SIGHUP (reload); it exits once every process has stopped: 0 when they all
  exited 0. A process still running STOP_MARGIN after the grace is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from server.config import Settings

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 120.0  # seconds for a process to serve after it was started
RESTART_DELAY = 1.0  # seconds before a process that exited is started again
STOP_MARGIN = 5.0  # seconds past the grace before a process still running is killed
READY = b"ready\n"  # what a process writes on its ready pipe once it serves
# The variables that hand a process its pipes (file descriptor numbers).
READY_FD = "SMSGW_READY_FD"
PARENT_FD = "SMSGW_PARENT_FD"


class StartFailed(Exception):
    """A server process did not come up."""


def reserve_port(addr: str) -> socket.socket:
    """A socket bound to ``addr`` (host:port; port 0 picks one) with SO_REUSEPORT and
    not listening: it holds the port for the processes, which bind it the same way.
    Raises OSError when the port is taken (another smsgw serve?)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, int(port), type=socket.SOCK_STREAM
    )[0]
    if int(port) != 0:
        # A port someone listens on, without SO_REUSEPORT, must be refused, not shared.
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def concrete(addr: str, sock: socket.socket) -> str:
    """``addr`` with the port ``sock`` holds (port 0 resolved)."""
    host = addr.rpartition(":")[0]
    return f"{host}:{sock.getsockname()[1]}"


@dataclass
class Child:
    """One server process, started (and started again) by the parent."""

    index: int
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    parent_end: int = -1  # our end of the pipe whose closing tells the process to stop
    exits: list[int] = field(default_factory=list)

    async def start(self) -> None:
        """Starts the process and waits until it serves; StartFailed if it does not."""
        ready_read, ready_write = os.pipe()
        parent_read, self.parent_end = os.pipe()
        env = {
            **self.env,
            "SMSGW_PROCESS_INDEX": str(self.index),
            READY_FD: str(ready_write),
            PARENT_FD: str(parent_read),
        }
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.cli",
                "serve",
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(ready_write, parent_read),
            )
        finally:
            os.close(ready_write)
            os.close(parent_read)
        self.started = time.monotonic()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(ready_read, "rb", 0)
        )
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                line = await reader.readline()  # b"" when the process exits first
        except TimeoutError:
            line = b""
        finally:
            transport.close()
        if line != READY:
            self.kill()
            code = await self.proc.wait()
            raise StartFailed(f"server process {self.index} did not start (exit code {code})")
        log.info("server process %d serving (pid %d)", self.index, self.proc.pid)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.close_pipe()

    def close_pipe(self) -> None:
        if self.parent_end >= 0:
            os.close(self.parent_end)
            self.parent_end = -1


def child_env(dsn: str, grpc_addr: str, http_addr: str) -> dict[str, str]:
    """The environment of every server process: this one's, with the database, the
    concrete ports and a single process each."""
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "SMSGW_GRPC_ADDR": grpc_addr,
        "SMSGW_HTTP_ADDR": http_addr,
        "SMSGW_PROCESSES": "1",
    }


async def supervise(settings: Settings) -> int:
    """Runs SMSGW_PROCESSES server processes until SIGTERM or SIGINT; the exit code."""
    from server.cli.serve import cannot_listen
    from server.store.database import Database, migrate

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    children: list[Child] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        for child in children:
            child.signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, reload)
    database = Database(settings.database_url, settings.data_dir)
    reserved: list[socket.socket] = []
    try:
        try:
            reserved = [reserve_port(settings.grpc_addr)]
            reserved.append(reserve_port(settings.http_addr))
        except OSError as exc:
            print(f"smsgw: {cannot_listen(settings, exc)}", file=sys.stderr)
            return 1
        dsn = await database.start()
        await migrate(dsn)
        grpc_addr = concrete(settings.grpc_addr, reserved[0])
        http_addr = concrete(settings.http_addr, reserved[1])
        env = child_env(dsn, grpc_addr, http_addr)
        children = [Child(i, env) for i in range(settings.processes)]
        try:
            await asyncio.gather(*(child.start() for child in children))
        except StartFailed as exc:
            log.error("%s: stopping", exc)
            await stop_all(children, settings.shutdown_grace)
            return 1
        print(
            f"smsgw serving gRPC on {grpc_addr}, HTTP on {http_addr} "
            f"({settings.processes} processes)",
            file=sys.stderr,
            flush=True,
        )
        failed = await watch(children, stop)
        codes = await stop_all(children, settings.shutdown_grace)
        return 1 if failed or any(code != 0 for code in codes) else 0
    finally:
        for sock in reserved:
            sock.close()
        await database.stop()


async def watch(children: list[Child], stop: asyncio.Event) -> bool:
    """Starts again each process that exits, until ``stop``; True if one could not be."""
    stopping = asyncio.create_task(stop.wait())
    waits: dict[asyncio.Task[int], Child] = {}

    def wait_for(child: Child) -> None:
        assert child.proc is not None
        waits[asyncio.create_task(child.proc.wait())] = child

    for child in children:
        wait_for(child)
    try:
        while True:
            done, _ = await asyncio.wait({stopping, *waits}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return False
            for task in done:
                child = waits.pop(task)
                code = task.result()
                child.exits.append(code)
                child.close_pipe()
                log.warning(
                    "server process %d (pid %d) exited (code %d) after %.0f s: starting it again",
                    child.index,
                    child.proc.pid if child.proc else 0,
                    code,
                    time.monotonic() - child.started,
                )
                await asyncio.sleep(RESTART_DELAY)
                restart = asyncio.create_task(child.start())
                await asyncio.wait({restart, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not restart.done():  # SIGTERM meanwhile: stop_all stops it too
                    restart.cancel()
                    await asyncio.gather(restart, return_exceptions=True)
                    return False
                try:
                    restart.result()
                except StartFailed as exc:
                    log.error("%s: stopping", exc)
                    return True
                wait_for(child)
    finally:
        stopping.cancel()
        for task in waits:
            task.cancel()


async def stop_all(children: list[Child], grace: float) -> list[int]:
    """SIGTERM to every process, SIGKILL to those still running after the grace and
    STOP_MARGIN; their exit codes."""
    running = [c for c in children if c.proc is not None and c.proc.returncode is None]
    for child in running:
        child.signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace + STOP_MARGIN):
            for child in running:
                assert child.proc is not None
                await child.proc.wait()
    except TimeoutError:
        for child in running:
            if child.proc is not None and child.proc.returncode is None:
                log.error("server process %d still running after the grace: killed", child.index)
                child.kill()
                await child.proc.wait()
    for child in children:
        child.close_pipe()
    return [child.proc.returncode or 0 for child in running if child.proc is not None]
