"""Nothing secret reaches the logs: a real `smsgw serve` at DEBUG level, with real
providers (emulators over HTTP) and a full run of credentials, codes and failures;
then every line it wrote is searched for every secret it saw."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sms.v1 import (
    common_pb2,
    message_pb2,
    message_pb2_grpc,
    verification_pb2,
    verification_pb2_grpc,
)

from server.emulators import sendcloud as sendcloud_emulator
from server.emulators import skynoo as skynoo_emulator
from server.emulators.common import EmulatorControls, EmulatorSettings, RunningEmulator
from tests.conftest import DatabaseFactory, basic_auth
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
SMSGW = [sys.executable, "-m", "server.cli"]
CN = "+8613800138000"
S = common_pb2

# Codes unlikely to appear in a log by chance (no zeros: request ids count in zeros).
SMS_CODE = "73915582"
WRONG_CODE = "46829517"
VOICE_CODE = "846273"  # SendCloud voice codes are 4 to 6 digits
SKY_SECRET = "sky-secret-" + secrets.token_hex(8)
BAD_SKY_SECRET = "sky-wrong-" + secrets.token_hex(8)
CLOUD_KEY = "cloud-key-" + secrets.token_hex(8)
SERVER_KEY = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def emulators() -> AsyncIterator[tuple[RunningEmulator, RunningEmulator]]:
    # Skynoo fails a third of the calls (HTTP 500): the retry paths log too.
    sky = await RunningEmulator(
        skynoo_emulator.build_app(
            EmulatorSettings(
                credential_id="app_logtest",
                credential_secret=SKY_SECRET,
                controls=EmulatorControls(fail_rate=0.3, delivery_delay=0.1),
            )
        )
    ).start()
    cloud = await RunningEmulator(
        sendcloud_emulator.build_app(
            EmulatorSettings(
                credential_id="sc-logtest",
                credential_secret=CLOUD_KEY,
                controls=EmulatorControls(delivery_delay=0.1),
            )
        )
    ).start()
    yield sky, cloud
    await sky.stop()
    await cloud.stop()


async def _smsgw(env: dict[str, str], *args: str) -> tuple[str, str]:
    """Runs an smsgw command (not serve); returns its stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *SMSGW,
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def _wait_for_port(addr: str, proc: asyncio.subprocess.Process) -> None:
    host, _, port = addr.rpartition(":")
    async with asyncio.timeout(60):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                return
            except OSError:
                assert proc.returncode is None, "serve exited"
                await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_no_secret_or_code_is_ever_logged(
    databases: DatabaseFactory,
    emulators: tuple[RunningEmulator, RunningEmulator],
    tmp_path: Path,
) -> None:
    sky, cloud = emulators
    config = tmp_path / "smsgw.toml"
    config.write_text(
        f"""
[providers.sky]
kind = "skynoo"
base_url = "{sky.base_url}"
credentials = {{ api_key = "LOGTEST_SKY_KEY", api_secret = "LOGTEST_SKY_SECRET" }}

[providers.badsky]   # a wrong secret: Skynoo refuses it
kind = "skynoo"
base_url = "{sky.base_url}"
credentials = {{ api_key = "LOGTEST_SKY_KEY", api_secret = "LOGTEST_BAD_SKY_SECRET" }}

[providers.cloud]
kind = "sendcloud"
base_url = "{cloud.base_url}"
credentials = {{ sms_user = "LOGTEST_CLOUD_USER", sms_key = "LOGTEST_CLOUD_KEY" }}

[[routes]]
prefixes = ["+44"]
providers = ["badsky"]

[[routes]]
providers = ["sky", "cloud"]
"""
    )
    grpc_addr = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "DATABASE_URL": await databases.new(migrate=False),
        "SMSGW_DATA_DIR": str(tmp_path / "data"),
        "SMSGW_GRPC_ADDR": grpc_addr,
        "SMSGW_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
        "SMSGW_CONFIG": str(config),
        "SMSGW_LOG_LEVEL": "DEBUG",
        "SMSGW_SECRET_KEY": SERVER_KEY,
        "SMSGW_RETRY_BASE_SECONDS": "0.05",
        "SMSGW_POLL_INTERVAL_SECONDS": "0.2",
        "SMSGW_SHUTDOWN_GRACE": "2",
        "LOGTEST_SKY_KEY": "app_logtest",
        "LOGTEST_SKY_SECRET": SKY_SECRET,
        "LOGTEST_BAD_SKY_SECRET": BAD_SKY_SECRET,
        "LOGTEST_CLOUD_USER": "sc-logtest",
        "LOGTEST_CLOUD_KEY": CLOUD_KEY,
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        serve = await asyncio.create_subprocess_exec(
            *SMSGW, "serve", env=env, cwd=ROOT, stdout=log_file, stderr=log_file
        )
    try:
        await _wait_for_port(grpc_addr, serve)
        created, cli_log = await _smsgw(env, "account", "create", "logtest")
        account = json.loads(created)
        api_key, api_secret = account["api_key"], account["api_secret"]
        (_, header), *_ = basic_auth(api_key, api_secret)
        token = header.removeprefix("Basic ")
        wrong_secret = "sec_" + secrets.token_hex(16)
        (_, wrong_header), *_ = basic_auth(api_key, wrong_secret)
        generated = await _run_traffic(grpc_addr, api_key, api_secret, wrong_secret, sky)
        serve.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await serve.wait() == 0
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()

    logs = log_path.read_text(errors="replace") + cli_log
    lines = logs.splitlines()
    # The run did log, at DEBUG level, from the calls and the dispatcher.
    assert '"level": "DEBUG"' in logs or len(lines) > 5
    assert "smsgw stopped" in logs
    secrets_seen = {
        "API secret": api_secret,
        "Basic credentials": token,
        "wrong API secret": wrong_secret,
        "wrong Basic credentials": wrong_header.removeprefix("Basic "),
        "SMS code": SMS_CODE,
        "wrong code": WRONG_CODE,
        "voice code": VOICE_CODE,
        "generated code": generated,
        "Skynoo secret": SKY_SECRET,
        "wrong Skynoo secret": BAD_SKY_SECRET,
        "SendCloud key": CLOUD_KEY,
        "server key": SERVER_KEY,
    }
    leaks = {
        what: [line for line in lines if value in line][:3]
        for what, value in secrets_seen.items()
        if value in logs
    }
    assert leaks == {}


async def _run_traffic(
    grpc_addr: str, api_key: str, api_secret: str, wrong_secret: str, sky: RunningEmulator
) -> str:
    """Sends, codes, checks and refused credentials; returns the code the server made."""
    metadata = basic_auth(api_key, api_secret)
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        messages = message_pb2_grpc.MessageServiceStub(channel)
        codes = verification_pb2_grpc.VerificationServiceStub(channel)
        ids = []
        for mobile in (CN, "+447911123456"):  # the second goes to the refused credential
            sent = await messages.SendMessage(
                message_pb2.SendMessageRequest(
                    mobile=mobile, use_type=S.USE_TYPE_NOTIFICATION, text="Hello"
                ),
                metadata=metadata,
            )
            ids.append(sent.id)
        sms = await codes.SendVerification(
            verification_pb2.SendVerificationRequest(mobile=CN, code=SMS_CODE), metadata=metadata
        )
        voice = await codes.SendVerification(
            verification_pb2.SendVerificationRequest(
                mobile="+8613900139000", code=VOICE_CODE, channel=S.CHANNEL_VOICE
            ),
            metadata=metadata,
        )
        made = await codes.SendVerification(
            verification_pb2.SendVerificationRequest(mobile="+8613700137000", code_length=8),
            metadata=metadata,
        )
        ids += [sms.message_id, voice.message_id, made.message_id]
        wrong = await codes.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=sms.verify_id, mobile=CN, code=WRONG_CODE
            ),
            metadata=metadata,
        )
        right = await codes.CheckVerification(
            verification_pb2.CheckVerificationRequest(
                verify_id=sms.verify_id, mobile=CN, code=SMS_CODE
            ),
            metadata=metadata,
        )
        assert (wrong.valid, right.valid) == (False, True)
        request = message_pb2.GetMessageStatusRequest(ids=ids)
        for bad in (
            basic_auth(api_key, wrong_secret),
            basic_auth("app_unknown", api_secret),
            (("authorization", "Basic " + api_secret),),  # not base64 of key:secret
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await messages.GetMessageStatus(request, metadata=bad)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Every message reaches a final status (through retries and the refusal).
        reply = await eventually(
            lambda: messages.GetMessageStatus(request, metadata=metadata),
            until=lambda r: all(s.status >= S.MESSAGE_STATUS_DELIVERED for s in r.messages),
            within=30,
            interval=0.2,
            what="every message final",
        )
        refused = reply.messages[1]  # the wrong Skynoo secret
        assert refused.status != S.MESSAGE_STATUS_DELIVERED and refused.error_code
    texts = [r.content for r in sky.state.received if r.phone.endswith("13700137000")]
    match = re.search(r"\b(\d{8})\b", " ".join(texts))
    assert match, texts
    return match.group(1)
