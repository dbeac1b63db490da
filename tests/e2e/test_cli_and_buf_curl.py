"""The README's user journey against a real `smsgw serve` process: create an account
with the CLI into a private file outside the repository, list, send and watch with
`buf curl` through reflection, send and follow with the CLI, then SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DatabaseFactory

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
SMSGW = [sys.executable, "-m", "server.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def databases_url(databases: DatabaseFactory) -> str:
    """A migrated database for one more subprocess."""
    return await databases.new()


@pytest.fixture(scope="module")
async def server_env(
    databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    dsn = await databases.new(migrate=False)
    env = dict(os.environ)
    env.update(
        DATABASE_URL=dsn,
        SMSGW_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        SMSGW_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_LOOPBACK_DELAY_MS="300",
        SMSGW_SHUTDOWN_GRACE="5",
    )
    return env


@pytest.fixture(scope="module")
def serve(server_env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*SMSGW, "serve"], env=server_env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(server_env["SMSGW_GRPC_ADDR"], proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _cli(env: dict[str, str], *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs an smsgw command (not serve) to completion."""
    return subprocess.run(
        [*SMSGW, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def _buf(
    env: dict[str, str], *args: str, data: str | None = None, auth: str = ""
) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "buf is installed by the test command (npm ci); run it first"
    command = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    if auth:
        command += ["-H", f"Authorization: {auth}"]
    if data is not None:
        command += ["-d", data]
    command += list(args)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def test_user_journey_with_cli_and_buf_curl(
    server_env: dict[str, str], serve: subprocess.Popen[str], tmp_path: Path
) -> None:
    # README: (umask 077; smsgw account create acme > ~/smsgw-account.json)
    home = tmp_path / "home"
    home.mkdir()
    smsgw = shlex.join(SMSGW)
    subprocess.run(
        ["bash", "-c", f"(umask 077; {smsgw} account create acme > ~/smsgw-account.json)"],
        env={**server_env, "HOME": str(home)},
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    account_file = home / "smsgw-account.json"
    assert account_file.stat().st_mode & 0o777 == 0o600  # the secret: readable by its owner only
    assert not (ROOT / "smsgw-account.json").exists() and not (ROOT / "account.json").exists()
    account = json.loads(account_file.read_text())
    assert account["api_key"].startswith("app_") and account["api_secret"].startswith("sec_")
    auth = (
        "Basic "
        + base64.b64encode(f"{account['api_key']}:{account['api_secret']}".encode()).decode()
    )
    url = f"http://{server_env['SMSGW_GRPC_ADDR']}"

    health = _cli(server_env, "healthcheck")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")

    listed = _buf(server_env, "--list-methods", url)
    assert listed.returncode == 0, listed.stderr
    assert "sms.v1.MessageService/SendMessage" in listed.stdout.split()

    sent = _buf(
        server_env,
        f"{url}/sms.v1.MessageService/SendMessage",
        auth=auth,
        data='{"mobile":"+8613800138000","use_type":"USE_TYPE_NOTIFICATION","text":"Hello"}',
    )
    assert sent.returncode == 0, sent.stderr
    message = json.loads(sent.stdout)
    assert message["status"] == "MESSAGE_STATUS_PENDING"

    watched = _buf(
        server_env,
        f"{url}/sms.v1.MessageService/WatchMessageStatus",
        auth=auth,
        data=json.dumps({"ids": [message["id"]]}),
    )
    assert watched.returncode == 0, watched.stderr
    assert '"MESSAGE_STATUS_DELIVERED"' in watched.stdout

    # README: a watch typed after the message is final shows its current status only
    # (DELIVERED) and ends; it does not replay PENDING and SENT.
    again = _buf(
        server_env,
        f"{url}/sms.v1.MessageService/WatchMessageStatus",
        auth=auth,
        data=json.dumps({"ids": [message["id"]]}),
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('"status"') == 1
    assert '"MESSAGE_STATUS_DELIVERED"' in again.stdout

    # README: the CLI takes the credential from the environment; `send --watch` follows
    # the message from the status it has when the watch opens to DELIVERED.
    cli_env = {
        **server_env,
        "SMSGW_API_KEY": account["api_key"],
        "SMSGW_API_SECRET": account["api_secret"],
    }
    followed = _cli(cli_env, "send", "+8613800138000", "Your parcel is on its way.", "--watch")
    assert followed.returncode == 0, followed.stderr
    reply, *events = followed.stdout.split("\n{")  # the answer, then one event a line
    assert json.loads(reply)["status"] == "MESSAGE_STATUS_PENDING"
    statuses = [json.loads("{" + event)["status"] for event in events]
    assert statuses[-1] == "MESSAGE_STATUS_DELIVERED"
    assert "MESSAGE_STATUS_SENT" in statuses

    refused = _buf(
        server_env,
        f"{url}/sms.v1.MessageService/SendMessage",
        auth=auth,
        data='{"mobile":"12345","use_type":"USE_TYPE_NOTIFICATION","text":"Hello"}',
    )
    assert refused.returncode != 0
    assert "invalid_argument" in refused.stdout + refused.stderr
    assert "google.rpc.BadRequest" in refused.stdout + refused.stderr

    listed_creds = _cli(
        server_env, "credential", "list", "--account", str(account["account_id"]), check=True
    )
    assert account["api_key"] in listed_creds.stdout
    assert account["api_secret"] not in listed_creds.stdout
    revoked = _cli(server_env, "credential", "revoke", account["api_key"])
    assert revoked.returncode == 0
    time.sleep(1.2)
    after = _buf(
        server_env,
        f"{url}/sms.v1.MessageService/GetMessageStatus",
        auth=auth,
        data=json.dumps({"ids": [message["id"]]}),
    )
    assert "unauthenticated" in after.stdout + after.stderr


def test_a_second_serve_on_taken_ports_names_the_address_and_variable(
    server_env: dict[str, str], serve: subprocess.Popen[str]
) -> None:
    """The emulator walkthrough's mistake: a second `smsgw serve` on the first's ports
    says which address is taken and which variable moves it, instead of a traceback
    (and never shares the gRPC port with the first)."""
    grpc_taken = _cli(server_env, "serve")
    assert grpc_taken.returncode == 1
    assert (
        f"cannot listen on {server_env['SMSGW_GRPC_ADDR']} (SMSGW_GRPC_ADDR): "
        "the address is already in use" in grpc_taken.stderr
    )
    assert "set SMSGW_GRPC_ADDR to another host:port" in grpc_taken.stderr
    assert "Traceback" not in grpc_taken.stderr

    moved = {**server_env, "SMSGW_GRPC_ADDR": f"127.0.0.1:{_free_port()}"}
    http_taken = _cli(moved, "serve")
    assert http_taken.returncode == 1
    assert f"cannot listen on {server_env['SMSGW_HTTP_ADDR']} (SMSGW_HTTP_ADDR)" in (
        http_taken.stderr
    )
    assert "Traceback" not in http_taken.stderr
    health = _cli(server_env, "healthcheck")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    assert serve.poll() is None


def test_sigterm_drains_and_exits_cleanly(serve: subprocess.Popen[str]) -> None:
    started = time.monotonic()
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    logs = serve.stderr.read() if serve.stderr else ""
    assert "smsgw stopped" in logs
    assert "Traceback" not in logs
    env = {"SMSGW_GRPC_ADDR": f"127.0.0.1:{_free_port()}", "PATH": os.environ["PATH"]}
    down = _cli(env, "healthcheck")
    assert down.returncode == 1


def test_migrate_without_database_url_uses_embedded_postgres(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["SMSGW_DATA_DIR"] = str(tmp_path / "smsgw")
    first = _cli(env, "migrate")
    assert first.returncode == 0, first.stderr
    applied = json.loads(first.stdout)["applied"]
    assert applied[0] == "0001_create_schema" and applied == sorted(applied)
    assert (tmp_path / "smsgw" / "pgdata" / "PG_VERSION").exists()
    again = _cli(env, "migrate")
    assert json.loads(again.stdout)["applied"] == []


def test_embedded_postgres_is_stopped_after_a_killed_server(tmp_path: Path) -> None:
    """A SIGKILLed serve must not keep the embedded PostgreSQL alive forever."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        SMSGW_DATA_DIR=str(tmp_path / "smsgw"),
        SMSGW_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
    )
    proc = subprocess.Popen([*SMSGW, "serve"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    pidfile = tmp_path / "smsgw" / "pgdata" / "postmaster.pid"
    try:
        _wait_for_port(env["SMSGW_GRPC_ADDR"], proc)
        postmaster = int(pidfile.read_text().split()[0])
    finally:
        proc.kill()
        proc.wait()
    migrated = _cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    deadline = time.monotonic() + 15
    while True:
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "embedded PostgreSQL still running"
        time.sleep(0.2)


def test_sighup_reloads_providers_and_refuses_a_bad_config(
    databases_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "smsgw.toml"
    config.write_text('[providers.lb_a]\nkind = "loopback"\n')
    env = dict(os.environ)
    env.update(
        DATABASE_URL=databases_url,
        SMSGW_CONFIG=str(config),
        SMSGW_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
    )
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*SMSGW, "serve"], env=env, cwd=ROOT, stderr=out)
    try:
        _wait_for_port(env["SMSGW_GRPC_ADDR"], proc)
        config.write_text('[providers.lb_b]\nkind = "loopback"\n')
        proc.send_signal(signal.SIGHUP)
        _wait_for_log(log, "providers reloaded: lb_b")
        config.write_text('[providers.lb_c]\nkind = "carrier-pigeon"\n')
        proc.send_signal(signal.SIGHUP)
        _wait_for_log(log, "reload refused, keeping the old config")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_emulate_serves_a_provider_api_by_hand() -> None:
    proc = subprocess.Popen(
        [*SMSGW, "emulate", "skynoo", "--port", "0", "--credential-id", "app_demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started["kind"] == "skynoo"
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            started["base_url"] + "/api/sms/v1/send",
            data=b'{"mobile": "+8613800138000", "useType": 2, "text": "hi"}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401  # no Basic credentials
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _wait_for_port(addr: str, proc: subprocess.Popen[Any]) -> None:
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)


def _wait_for_log(log: Path, text: str) -> None:
    deadline = time.monotonic() + 20
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not logged"
        time.sleep(0.1)


def test_account_update_changes_only_the_given_settings(databases_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": databases_url}
    created = json.loads(_cli(env, "account", "create", "otp", check=True).stdout)
    account = str(created["account_id"])
    for args in (
        ["--otp-max-attempts", "5"],
        ["--allow-country", "us", "--allow-country", "CN"],
        ["--quiet-hours", "21:00-08:00", "--quiet-hours", "us=22:00-07:30"],
        ["--send-rate", "50", "--query-rate", "200"],
        ["--query-rate", "default"],
    ):
        _cli(env, "account", "update", account, *args, check=True)
    import asyncio

    import asyncpg

    async def read() -> asyncpg.Record:
        conn = await asyncpg.connect(databases_url)
        try:
            row = await conn.fetchrow(
                "SELECT otp_max_attempts, otp_allowed_regions, quiet_hours, send_per_second,"
                " query_per_second FROM accounts WHERE id = $1",
                int(account),
            )
            assert row is not None
            return row
        finally:
            await conn.close()

    row = asyncio.run(read())
    assert (row["otp_max_attempts"], row["otp_allowed_regions"]) == (5, ["US", "CN"])
    assert json.loads(row["quiet_hours"]) == {"*": ["21:00", "08:00"], "US": ["22:00", "07:30"]}
    assert (row["send_per_second"], row["query_per_second"]) == (50, None)
    bad_rate = _cli(env, "account", "update", account, "--send-rate", "-1")
    assert bad_rate.returncode == 2 and "--send-rate" in bad_rate.stderr
    bad = _cli(env, "account", "update", account, "--quiet-hours", "9pm-8am")
    assert bad.returncode == 2 and "--quiet-hours" in bad.stderr
    _cli(env, "account", "update", account, "--no-quiet-hours", check=True)
    assert asyncio.run(read())["quiet_hours"] is None
    missing = _cli(env, "account", "update", "999999", "--all-countries")
    assert missing.returncode == 1


def test_account_list_shows_every_account_and_its_settings(databases_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": databases_url}
    first = json.loads(_cli(env, "account", "create", "list-a", check=True).stdout)
    second = json.loads(_cli(env, "account", "create", "list-b", "--unverified", check=True).stdout)
    _cli(env, "credential", "revoke", second["api_key"], check=True)
    _cli(env, "account", "update", str(first["account_id"]), "--send-rate", "5", check=True)

    listed = _cli(env, "account", "list", check=True)
    accounts = {a["account_id"]: a for a in map(json.loads, listed.stdout.splitlines())}
    assert accounts[first["account_id"]]["name"] == "list-a"
    assert accounts[first["account_id"]]["active_credentials"] == 1
    assert accounts[first["account_id"]]["send_per_second"] == 5
    assert accounts[second["account_id"]]["verified"] is False
    assert accounts[second["account_id"]]["active_credentials"] == 0
    assert first["api_secret"] not in listed.stdout

    table = _cli(env, "account", "list", "-o", "table", check=True).stdout.splitlines()
    assert table[0].split()[:4] == ["ACCOUNT_ID", "NAME", "VERIFIED", "ACTIVE_CREDENTIALS"]
    row = next(r for r in table if r.split()[1] == "list-b")
    assert row.split()[:4] == [str(second["account_id"]), "list-b", "false", "0"]
