"""TLS and mutual TLS on the gRPC port: real gateways with certificates made at test
time, clients that do and do not trust them, and `smsgw healthcheck` over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.tls import ServerTls
from tests.certs import LOCAL_NAMES, Authority, Pem, self_signed
from tests.conftest import TEST_SECRET_KEY, DatabaseFactory
from tests.e2e.conftest import Client, GatewayFactory, Running
from tests.e2e.test_cli_and_buf_curl import BUF, ROOT, SMSGW, _free_port, _wait_for_port

SEND = message_pb2.SendMessageRequest(
    mobile="+8613800138000", use_type=common_pb2.USE_TYPE_NOTIFICATION, text="Over TLS."
)


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Pem  # from ca, SAN 127.0.0.1 and localhost
    client: Pem  # from ca
    stranger: Pem  # a client certificate from another CA
    stranger_ca: Authority


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = Authority.create(tmp_path_factory.mktemp("ca"), "smsgw-test-ca")
    other = Authority.create(tmp_path_factory.mktemp("other-ca"), "other-ca")
    return Pki(
        ca=ca,
        server=ca.issue("server", server_names=LOCAL_NAMES),
        client=ca.issue("client"),
        stranger=other.issue("stranger"),
        stranger_ca=other,
    )


def tls_env(pki: Pki, *, mutual: bool) -> dict[str, str]:
    env = {"SMSGW_TLS_CERT": str(pki.server.cert_path), "SMSGW_TLS_KEY": str(pki.server.key_path)}
    if mutual:
        env["SMSGW_TLS_CLIENT_CA"] = str(pki.ca.pem.cert_path)
    return env


@pytest.fixture(scope="module")
async def tls_gw(start_gateway: GatewayFactory, pki: Pki) -> Running:
    return await start_gateway(tls=ServerTls.from_env(tls_env(pki, mutual=False)))


@pytest.fixture(scope="module")
async def mtls_gw(start_gateway: GatewayFactory, pki: Pki) -> Running:
    return await start_gateway(tls=ServerTls.from_env(tls_env(pki, mutual=True)))


@contextlib.asynccontextmanager
async def secure_messages(
    running: Running, roots: bytes, cert: Pem | None = None
) -> AsyncIterator[message_pb2_grpc.MessageServiceAsyncStub]:
    """MessageService over a TLS channel trusting ``roots``, presenting ``cert`` if given."""
    credentials = grpc.ssl_channel_credentials(
        roots, cert.key if cert else None, cert.cert if cert else None
    )
    target = f"127.0.0.1:{running.gateway.grpc_port}"
    async with grpc.aio.secure_channel(target, credentials) as channel:
        yield message_pb2_grpc.MessageServiceStub(channel)


async def stored(running: Running, client: Client) -> int:
    count: int = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM messages WHERE account_id = $1", client.account_id
    )
    return count


async def test_tls_client_sends_a_message_and_gets_an_id(tls_gw: Running, pki: Pki) -> None:
    client = await tls_gw.client()
    async with secure_messages(tls_gw, pki.ca.pem.cert) as messages:
        reply = await messages.SendMessage(SEND, metadata=client.metadata, timeout=10)
    assert len(reply.id) == 32
    assert reply.status == common_pb2.MESSAGE_STATUS_PENDING
    assert await stored(tls_gw, client) == 1


async def test_plaintext_client_is_unavailable_and_nothing_is_stored(tls_gw: Running) -> None:
    client = await tls_gw.client()  # its stubs use a plaintext channel
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.messages.SendMessage(SEND, metadata=client.metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(tls_gw, client) == 0


async def test_client_not_trusting_the_server_certificate_is_refused(
    tls_gw: Running, pki: Pki
) -> None:
    client = await tls_gw.client()
    async with secure_messages(tls_gw, pki.stranger_ca.pem.cert) as messages:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await messages.SendMessage(SEND, metadata=client.metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(tls_gw, client) == 0


async def test_mtls_client_with_a_certificate_from_the_ca_sends(mtls_gw: Running, pki: Pki) -> None:
    client = await mtls_gw.client()
    async with secure_messages(mtls_gw, pki.ca.pem.cert, pki.client) as messages:
        reply = await messages.SendMessage(SEND, metadata=client.metadata, timeout=10)
    assert len(reply.id) == 32
    assert await stored(mtls_gw, client) == 1


@pytest.mark.parametrize("presented", ["no certificate", "another CA's certificate"])
async def test_mtls_refuses_clients_without_a_certificate_from_the_ca(
    mtls_gw: Running, pki: Pki, presented: str
) -> None:
    client = await mtls_gw.client()
    cert = pki.stranger if presented == "another CA's certificate" else None
    async with secure_messages(mtls_gw, pki.ca.pem.cert, cert) as messages:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await messages.SendMessage(SEND, metadata=client.metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await stored(mtls_gw, client) == 0


async def test_mtls_keeps_the_rpcs_off_the_plain_http_port(
    mtls_gw: Running, tls_gw: Running
) -> None:
    """The HTTP port cannot check client certificates: under mutual TLS it does not serve
    the RPCs over Connect (nothing stored), while plain server TLS leaves them on."""
    client = await mtls_gw.client()
    path = "sms.v1.MessageService/SendMessage"
    body = '{"mobile":"+8613800138000","useType":"USE_TYPE_NOTIFICATION","text":"x"}'
    headers = {"Content-Type": "application/json", "Authorization": client.metadata[0][1]}
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{mtls_gw.gateway.http_port}/{path}"
        async with session.post(url, data=body, headers=headers) as answer:
            assert answer.status == 404
        tls_client = await tls_gw.client()
        headers["Authorization"] = tls_client.metadata[0][1]
        url = f"http://127.0.0.1:{tls_gw.gateway.http_port}/{path}"
        async with session.post(url, data=body, headers=headers) as answer:
            assert answer.status == 200
    assert await stored(mtls_gw, client) == 0
    assert await stored(tls_gw, tls_client) == 1


# --- the command line: `smsgw serve` with TLS variables, `smsgw healthcheck`, `buf curl`


def _clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any SMSGW_* variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(values)
    return env


@pytest.fixture(scope="module")
async def mtls_serve_env(
    databases: DatabaseFactory, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return _clean_env(
        DATABASE_URL=await databases.new(migrate=False),
        SMSGW_SECRET_KEY=TEST_SECRET_KEY,
        SMSGW_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        SMSGW_GRPC_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
        SMSGW_SHUTDOWN_GRACE="2",
        **tls_env(pki, mutual=True),
    )


@pytest.fixture(scope="module")
def mtls_serve(
    mtls_serve_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`smsgw serve` with mutual TLS; yields the file its stderr (the log) goes to."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*SMSGW, "serve"], env=mtls_serve_env, cwd=ROOT, stderr=out)
    try:
        _wait_for_port(mtls_serve_env["SMSGW_GRPC_ADDR"], proc)
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _run(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_healthcheck_and_buf_curl_against_an_mtls_serve(
    mtls_serve: Path, mtls_serve_env: dict[str, str], pki: Pki
) -> None:
    env = mtls_serve_env
    with_cert = {
        **env,
        "SMSGW_TLS_CA": str(pki.ca.pem.cert_path),
        "SMSGW_TLS_CLIENT_CERT": str(pki.client.cert_path),
        "SMSGW_TLS_CLIENT_KEY": str(pki.client.key_path),
    }
    health = _run(with_cert, *SMSGW, "healthcheck")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr
    refused = _run({**env, "SMSGW_TLS_CA": str(pki.ca.pem.cert_path)}, *SMSGW, "healthcheck")
    assert refused.returncode == 1
    assert "UNAVAILABLE" in refused.stderr

    listed = _run(
        env,
        str(BUF),
        "curl",
        "--protocol",
        "grpc",
        "--cacert",
        str(pki.ca.pem.cert_path),
        "--cert",
        str(pki.client.cert_path),
        "--key",
        str(pki.client.key_path),
        "--list-methods",
        f"https://{env['SMSGW_GRPC_ADDR']}",
    )
    assert listed.returncode == 0, listed.stderr
    assert "sms.v1.MessageService/SendMessage" in listed.stdout.split()

    logs = mtls_serve.read_text()
    assert "gRPC port uses mutual TLS" in logs
    assert "PRIVATE KEY" not in logs


async def _healthcheck(env: dict[str, str]) -> tuple[int, str]:
    """`smsgw healthcheck` as a subprocess, without blocking the in-process gateway."""
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        "healthcheck",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_healthcheck_trusts_a_self_signed_server_certificate(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    cert = self_signed(tmp_path, "smsgw-self-signed")
    env = {"SMSGW_TLS_CERT": str(cert.cert_path), "SMSGW_TLS_KEY": str(cert.key_path)}
    running = await start_gateway(tls=ServerTls.from_env(env))
    code, output = await _healthcheck(
        _clean_env(SMSGW_GRPC_ADDR=f"0.0.0.0:{running.gateway.grpc_port}", **env)
    )
    assert (code, output.strip()) == (0, "SERVING")


async def test_healthcheck_verifies_a_named_certificate_with_tls_server_name(
    start_gateway: GatewayFactory, pki: Pki
) -> None:
    """A certificate for a DNS name only (not 127.0.0.1): SMSGW_TLS_SERVER_NAME."""
    named = pki.ca.issue("named", server_names=("smsgw.internal",))
    server = {"SMSGW_TLS_CERT": str(named.cert_path), "SMSGW_TLS_KEY": str(named.key_path)}
    running = await start_gateway(tls=ServerTls.from_env(server))
    env = _clean_env(
        SMSGW_GRPC_ADDR=f"127.0.0.1:{running.gateway.grpc_port}",
        SMSGW_TLS_CA=str(pki.ca.pem.cert_path),
        **server,
    )
    assert (await _healthcheck(env))[0] == 1  # the name does not match 127.0.0.1
    code, output = await _healthcheck({**env, "SMSGW_TLS_SERVER_NAME": "smsgw.internal"})
    assert (code, output.strip()) == (0, "SERVING")
