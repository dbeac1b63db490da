"""A provider failing half its sends (issue 16, item 1), as an operator runs it.

``smsgw serve`` with its default breaker, retry and dispatch settings, and the only
route through loopback answering half of all sends with a retryable failure. Before,
the breaker opened on five failures in a row (they come fast with many sends in
flight) and its single half-open probe failed half the time: most messages sat
QUEUED with PROVIDERS_UNAVAILABLE for minutes. Now every message ends final: it is
DELIVERED, or FAILED by its own attempt count (SMSGW_MAX_ATTEMPTS, default 5) with
the provider's error, and none is left waiting.
"""

from __future__ import annotations

import base64
import collections
import secrets
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from sms.v1 import common_pb2, message_pb2, message_pb2_grpc

from server.domain.models import MessageStatus
from tests.conftest import DatabaseFactory
from tests.eventually import eventually
from tests.faults.outage_support import new_account, serve

pytestmark = [pytest.mark.timeout(120)]

MESSAGES = 150
MAX_ATTEMPTS = 5  # SMSGW_MAX_ATTEMPTS' default
FINAL = (MessageStatus.DELIVERED, MessageStatus.FAILED)


async def test_half_the_sends_failing_still_ends_every_message(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    dsn = await databases.new()
    metadata = await new_account(dsn)
    env = {
        "DATABASE_URL": dsn,
        "SMSGW_SECRET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "SMSGW_LOOPBACK_FAILURE_RATE": "0.5",
        "SMSGW_LOOPBACK_DELAY_MS": "100",
    }
    async with serve(env, tmp_path / "serve.log") as running:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = message_pb2_grpc.MessageServiceStub(channel)
            ids = [
                (
                    await stub.SendMessage(
                        message_pb2.SendMessageRequest(
                            mobile=f"+1415555{i:04d}",
                            use_type=common_pb2.USE_TYPE_NOTIFICATION,
                            text=f"Order {i} has shipped.",
                        ),
                        metadata=metadata,
                    )
                ).id
                for i in range(MESSAGES)
            ]
        started = time.monotonic()
        rows = await _wait_final(dsn, ids, within=60)
        took = time.monotonic() - started
        log = running.log_tail()

    statuses = collections.Counter(MessageStatus(r["status"]).name for r in rows)
    print(f"50% failing loopback: {dict(statuses)} of {MESSAGES} final in {took:.1f} s")
    assert all(MessageStatus(r["status"]) in FINAL for r in rows), (statuses, took, log)
    delivered = [r for r in rows if r["status"] == MessageStatus.DELIVERED]
    failed = [r for r in rows if r["status"] == MessageStatus.FAILED]
    # Failed only by their own attempt count, on the provider's retryable error:
    # never because the breaker kept them from being tried.
    assert all(
        (r["attempts"], r["error_code"]) == (MAX_ATTEMPTS, "LOOPBACK_UNAVAILABLE") for r in failed
    ), [dict(r) for r in failed]
    # Five tries at one half each: about 1 in 32 fails (expected 4.7 of 150).
    assert len(delivered) >= MESSAGES - 20, statuses
    retried = sum(1 for r in rows if r["attempts"] > 1)
    assert retried > MESSAGES // 4, "half the sends failed, so many messages were retried"


async def _wait_final(dsn: str, ids: list[str], within: float) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await eventually(
            lambda: conn.fetch(
                "SELECT id, status, attempts, error_code FROM messages WHERE id = ANY($1::text[])",
                ids,
            ),
            until=lambda rows: all(MessageStatus(r["status"]) in FINAL for r in rows),
            within=within,
            interval=0.25,
            raise_on_timeout=False,
        )
    finally:
        await conn.close()
