"""Helpers shared by the benchmark scripts: run ``smsgw serve`` in a subprocess, bounded.

Everything binds to 127.0.0.1. Processes are started in their own session (a Ctrl-C
reaches only the benchmark, which then stops them: SIGTERM, then SIGKILL after a
timeout). Not a test fixture: the benchmarks import it from ``scripts/``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
Metadata = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def percentile_ms(sorted_seconds: Sequence[float], q: float, digits: int = 1) -> float:
    """The q-quantile of ascending durations in seconds, in milliseconds (0 if none)."""
    if not sorted_seconds:
        return 0.0
    i = min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))
    return round(1000 * sorted_seconds[i], digits)


def postgres_cpu_seconds() -> float | None:
    """User + system CPU seconds so far of every process named postgres on this machine
    (the embedded server and its backends, or a local DATABASE_URL server); None if
    /proc is not there. Backends that exit between two readings take theirs with them,
    so the bench's own connections are opened before the first reading."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    total = 0.0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                total += process_cpu_seconds(int(entry.name)) or 0.0
    return total


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent not idle so far (Linux /proc/stat); None elsewhere."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def database_label() -> str:
    """Where smsgw keeps its data, without credentials."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return "embedded (temp dir)"
    parts = urlsplit(url)
    return f"DATABASE_URL host {parts.hostname}:{parts.port or 5432}{parts.path}"


@dataclass
class Smsgw:
    proc: subprocess.Popen[bytes]
    target: str
    metadata: Metadata
    log: Path


def smsgw_command() -> list[str]:
    script = Path(sys.executable).parent / "smsgw"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


def start_smsgw(
    tmp: Path, procs: list[subprocess.Popen[bytes]], extra_env: dict[str, str], timeout: float
) -> Smsgw:
    """Starts ``smsgw serve`` (appended to procs), waits for SERVING, creates an account."""
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "SMSGW_GRPC_ADDR": f"{HOST}:{grpc_port}",
        "SMSGW_HTTP_ADDR": f"{HOST}:{http_port}",
        "SMSGW_DATA_DIR": str(tmp / "smsgw"),
        # serve refuses a DATABASE_URL without a key: a throwaway one for the run.
        "SMSGW_SECRET_KEY": os.environ.get("SMSGW_SECRET_KEY")
        or base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        **extra_env,
    }
    log = tmp / "smsgw.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*smsgw_command(), "serve"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    procs.append(proc)
    target = f"{HOST}:{grpc_port}"
    wait_serving(proc, target, timeout, log)
    created = subprocess.run(
        [*smsgw_command(), "account", "create", "bench"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if created.returncode != 0:
        raise RuntimeError(f"smsgw account create failed:\n{created.stderr}")
    account = json.loads(created.stdout.strip().splitlines()[-1])
    token = base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode()).decode()
    return Smsgw(proc, target, (("authorization", f"Basic {token}"),), log)


def wait_serving(proc: subprocess.Popen[bytes], target: str, timeout: float, log: Path) -> None:
    """Polls grpc.health.v1 Health/Check until SERVING, the process exits, or timeout."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"smsgw serve exited ({proc.returncode}):\n{tail(log)}")
            with contextlib.suppress(grpc.RpcError):
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise TimeoutError(f"smsgw not SERVING after {timeout:.0f} s:\n{tail(log)}")


@contextlib.contextmanager
def workspace(prefix: str = "smsgw-bench-") -> Iterator[tuple[list[subprocess.Popen[bytes]], Path]]:
    """A temporary folder and a list for the processes a benchmark starts; afterwards
    the processes are stopped (see ``cleanup``) and the folder removed."""
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield procs, tmp
    finally:
        cleanup(procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def cleanup(procs: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    """Stops our processes, then a postmaster a killed smsgw left in tmp (fast shutdown)."""
    for proc in procs:
        stop_process(proc)
    pgdata = tmp / "smsgw" / "pgdata"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        if str(pgdata).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # a stale pid file: that process is not ours
        os.kill(pid, signal.SIGINT)
        for _ in range(100):
            os.kill(pid, 0)  # raises once it is gone
            time.sleep(0.1)


def smsgw_dsn(log: Path) -> str | None:
    """The database a started ``smsgw serve`` uses: DATABASE_URL, or its embedded one."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    for line in log.read_text().splitlines():
        if "embedded PostgreSQL running in " in line:
            pgdata = line.split("embedded PostgreSQL running in ")[1].split('"')[0]
            return f"postgresql://postgres@/postgres?host={pgdata}"
    return None
