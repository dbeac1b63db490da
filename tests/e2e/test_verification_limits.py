"""OTP limits, held in PostgreSQL: per mobile, per account, across server processes,
and the SMS-pumping guard (prefix and country velocity, allowlist, monitor-only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sms.v1 import verification_pb2, verification_pb2_grpc

from server.domain.otp_guard import GuardSettings
from server.domain.verification import OtpSettings
from server.store.accounts import PgAccountStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore
from tests.conftest import DatabaseFactory, basic_auth
from tests.e2e.conftest import Client, GatewayFactory
from tests.e2e.errors import reason
from tests.e2e.test_verification import retry_seconds, send
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
NO_GUARD = GuardSettings(prefix_limit=0, country_limit=0)


async def refused(client: Client, mobile: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(client, mobile, code="4711")
    return caught.value


async def test_one_code_per_mobile_per_interval(start_gateway: GatewayFactory) -> None:
    running = await start_gateway(otp=OtpSettings(guard=NO_GUARD))
    client = await running.client()
    await send(client, "+8613800138000", code="4711")
    err = await refused(client, "+8613800138000")
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(err) == "MOBILE_INTERVAL"
    assert 55 <= retry_seconds(err) <= 60
    await send(client, "+8613900139000", code="4711")  # another mobile is fine
    stored = await running.gateway.pool.fetchval(
        "SELECT count(*) FROM verifications WHERE account_id = $1", client.account_id
    )
    assert stored == 2  # the refused send left nothing behind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_subprocess(dsn: str, **env_overrides: str) -> AsyncIterator[str]:
    """`smsgw serve` as a separate process on ``dsn``; yields its gRPC address.

    Waits without blocking the event loop: an in-process gateway shares it."""
    addr = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=dsn,
        SMSGW_GRPC_ADDR=addr,
        SMSGW_HTTP_ADDR=f"127.0.0.1:{_free_port()}",
        **env_overrides,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", env=env, cwd=ROOT
    )
    try:

        async def listening() -> bool:
            assert proc.returncode is None, "smsgw serve exited"
            _, writer = await asyncio.open_connection("127.0.0.1", int(addr.rsplit(":", 1)[1]))
            writer.close()
            return True

        await eventually(
            listening, within=60, interval=0.1, what="serve listening", ignoring=(OSError,)
        )
        yield addr
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_limits_hold_across_two_server_processes(
    start_gateway: GatewayFactory, databases: DatabaseFactory
) -> None:
    dsn = await databases.new()
    local = await start_gateway(
        database_url=dsn, otp=OtpSettings(account_per_hour=3, guard=NO_GUARD)
    )
    client = await local.client()
    async with (
        serve_subprocess(
            dsn,
            SMSGW_OTP_ACCOUNT_PER_HOUR="3",
            SMSGW_OTP_PREFIX_LIMIT="0",
            SMSGW_OTP_COUNTRY_LIMIT="0",
        ) as addr,
        grpc.aio.insecure_channel(addr) as channel,
    ):
        remote = verification_pb2_grpc.VerificationServiceStub(channel)

        async def remote_send(mobile: str) -> None:
            await remote.SendVerification(
                verification_pb2.SendVerificationRequest(mobile=mobile, code="4711"),
                metadata=basic_auth(client.api_key, client.api_secret),
            )

        await send(client, "+8613800138000", code="4711")  # local server
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await remote_send("+8613800138000")  # same mobile through the other process
        assert reason(caught.value) == "MOBILE_INTERVAL"
        await remote_send("+8613800138001")
        await send(client, "+8613800138002", code="4711")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await remote_send("+8613800138003")  # the account's 4th code this hour
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(caught.value) == "ACCOUNT_HOURLY_LIMIT"
        assert 0 < retry_seconds(caught.value) <= 3600


async def test_guard_limits_a_number_prefix_and_can_only_monitor(
    start_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    guard = GuardSettings(prefix_limit=2, country_limit=0)
    running = await start_gateway(otp=OtpSettings(mobile_interval_seconds=0, guard=guard))
    client = await running.client()
    for last in "12":
        await send(client, f"+861380013800{last}", code="4711")
    err = await refused(client, "+8613800138003")  # same prefix +861380013
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(err) == "PREFIX_VELOCITY"
    assert "+861380013" not in (err.details() or "")
    await send(client, "+8613900139000", code="4711")  # another prefix

    monitoring = await start_gateway(
        otp=OtpSettings(
            mobile_interval_seconds=0,
            guard=GuardSettings(prefix_limit=1, country_limit=0, monitor_only=True),
        )
    )
    watched = await monitoring.client()
    for last in "123":
        await send(watched, f"+861380013800{last}", code="4711")
    assert any("monitor only" in r.getMessage() for r in caplog.records)


async def test_country_velocity_and_allowlist(start_gateway: GatewayFactory) -> None:
    guard = GuardSettings(prefix_limit=0, country_limit=2)
    running = await start_gateway(otp=OtpSettings(mobile_interval_seconds=0, guard=guard))
    client = await running.client()
    await send(client, "+8613800138000", code="4711")
    await send(client, "+8613900139000", code="4711")
    assert reason(await refused(client, "+8615000150000")) == "COUNTRY_VELOCITY"
    await send(client, "+14155550123", code="4711")  # another country

    other = await running.client()
    store = PgAccountStore(running.gateway.pool)
    await store.update_otp_settings(other.account_id, allowed_regions=["US"], set_regions=True)
    await asyncio.sleep(1.1)  # the credential cache re-reads the account within a second
    err = await refused(other, "+8613800138000")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(err) == "COUNTRY_NOT_ALLOWED"
    await send(other, "+14155550123", code="4711")


async def test_expired_pending_verifications_are_swept_and_kept(
    start_gateway: GatewayFactory,
) -> None:
    running = await start_gateway(otp=OtpSettings(mobile_interval_seconds=0, guard=NO_GUARD))
    client = await running.client()
    old = await send(client, "+8613800138000", code="4711")
    fresh = await send(client, "+8613900139000", code="4711")
    pool = running.gateway.pool
    await pool.execute(
        "UPDATE verifications SET expires_at = now() - interval '1 minute' WHERE id = $1",
        old.verify_id,
    )
    swept = await PgVerificationStore(pool, PgVelocityCounters(pool)).expire_pending()
    assert swept == 1
    rows = {
        verify_id: state
        for verify_id, state in await pool.fetch(
            "SELECT id, state FROM verifications WHERE account_id = $1", client.account_id
        )
    }
    assert rows == {old.verify_id: 3, fresh.verify_id: 1}
