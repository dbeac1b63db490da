"""A server killed in the middle of storing a batch stores nothing of it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import grpc
from sms.v1 import batch_pb2, batch_pb2_grpc, common_pb2

from server.store.accounts import PgAccountStore
from tests.conftest import DatabaseFactory, basic_auth
from tests.e2e.test_verification_limits import _free_port
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]


async def test_sigkill_during_create_batch_leaves_nothing_half_stored(
    databases: DatabaseFactory,
) -> None:
    dsn = await databases.new()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        store = PgAccountStore(pool)
        account = await store.create_account("crash", verified=True)
        credential, secret = await store.create_credential(account.id)
        addr = f"127.0.0.1:{_free_port()}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "SMSGW_GRPC_ADDR": addr,
            "SMSGW_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
            "SMSGW_DISPATCH_WORKERS": "0",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", env=env, cwd=ROOT
        )
        try:

            async def listening() -> bool:
                assert proc.returncode is None, "smsgw serve exited"
                _, writer = await asyncio.open_connection(*addr.rsplit(":", 1))
                writer.close()
                return True

            await eventually(
                listening, within=60, interval=0.1, what="serve listening", ignoring=(OSError,)
            )
            numbers = [f"+86138{i:08d}" for i in range(100_000)]
            channel = grpc.aio.insecure_channel(
                addr, options=[("grpc.max_send_message_length", 64 << 20)]
            )
            call = asyncio.ensure_future(
                batch_pb2_grpc.BatchServiceStub(channel).CreateBatch(
                    batch_pb2.CreateBatchRequest(
                        use_type=common_pb2.USE_TYPE_NOTIFICATION,
                        content="Flash sale today.",
                        numbers=numbers,
                    ),
                    metadata=basic_auth(credential.api_key, secret),
                    timeout=120,
                )
            )
            # Wait until the batch's transaction is open (its row written, the rest not
            # committed), then kill the server without warning.
            database = await pool.fetchval("SELECT current_database()")

            async def batch_in_transaction() -> bool:
                if call.done():
                    raise AssertionError(f"finished before the kill: {call.result()!r:.300}")
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                        "AND xact_start IS NOT NULL "
                        "AND (query ILIKE 'COPY%messages%' OR query ILIKE '%INSERT INTO batches%') "
                        "AND pid <> pg_backend_pid()",
                        database,
                    )
                )

            await eventually(
                batch_in_transaction,
                within=60,
                interval=0.005,
                what="the batch's transaction open",
            )
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            try:
                await call
                raise AssertionError("the call cannot have succeeded")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
            await channel.close()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for _ in range(100):  # the killed server's connections go away
            open_ = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
                database,
            )
            if not open_:
                break
            await asyncio.sleep(0.1)
        assert await pool.fetchval("SELECT count(*) FROM batches") == 0
        assert await pool.fetchval("SELECT count(*) FROM messages") == 0
        assert await pool.fetchval("SELECT count(*) FROM message_events") == 0
        # Nor the batch's first status event (webhooks would push it).
        assert await pool.fetchval("SELECT count(*) FROM account_events") == 0
    finally:
        await pool.close()
