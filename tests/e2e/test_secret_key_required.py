"""`smsgw serve` with a DATABASE_URL and no SMSGW_SECRET_KEY refuses to start: the OTP
key would otherwise live in that database, where a dump alone recovers the codes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from server.config import ConfigError, Settings, check_serve
from tests.conftest import TEST_SECRET_KEY, DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
SMSGW = [sys.executable, "-m", "server.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SMSGW_SECRET_KEY", "DATABASE_URL")}
    env.update(
        SMSGW_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
        **values,
    )
    return env


async def test_serve_with_a_database_url_and_no_key_exits_with_a_clear_error(
    databases: DatabaseFactory,
) -> None:
    dsn = await databases.new(migrate=False)
    proc = await asyncio.create_subprocess_exec(
        *SMSGW, "serve", env=_env(DATABASE_URL=dsn), cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode()
    assert proc.returncode == 2
    assert "SMSGW_SECRET_KEY must be set when DATABASE_URL is" in stderr
    assert "Traceback" not in stderr
    # Nothing was started: the database was not even migrated.
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    assert tables == 0


def test_check_serve_allows_the_key_or_the_embedded_database() -> None:
    with pytest.raises(ConfigError, match="SMSGW_SECRET_KEY"):
        check_serve(Settings.from_env({"DATABASE_URL": "postgresql://db/smsgw"}))
    check_serve(
        Settings.from_env(
            {"DATABASE_URL": "postgresql://db/smsgw", "SMSGW_SECRET_KEY": TEST_SECRET_KEY}
        )
    )
    check_serve(Settings.from_env({}))  # development: the embedded database


def test_other_commands_do_not_need_the_key() -> None:
    """Account management runs where the key is not kept (an operator's shell)."""
    done = subprocess.run(
        [*SMSGW, "healthcheck"],
        env=_env(DATABASE_URL="postgresql://127.0.0.1:1/none"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1  # not serving there, but the check ran
    assert "SMSGW_SECRET_KEY" not in done.stderr
