"""The console's search by number or reference reads the messages table without an
index, so it is bounded: each query stops after SCAN_TIMEOUT_MS (SEARCH_TOO_SLOW), and
only a few run at once per server (the next is refused SEARCH_BUSY with a retry
delay). A lock held on the table makes the scan as slow as a huge table would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from server.domain.console import ConsoleMessage, ConsoleViews
from server.domain.errors import FailedPrecondition, ResourceExhausted
from server.domain.messaging import Caller
from server.store import console as console_store
from server.store.console import PgConsoleStore
from tests.eventually import eventually

CALLER = Caller(account_id=1, verified=True)


@asynccontextmanager
async def messages_locked(pool: asyncpg.Pool) -> AsyncIterator[None]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        yield


async def test_a_scan_that_runs_too_long_is_stopped(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_store, "SCAN_TIMEOUT_MS", 200)
    store = PgConsoleStore(pool)
    async with messages_locked(pool):
        with pytest.raises(FailedPrecondition) as err:
            await asyncio.wait_for(store.messages_matching(None, "+8613800138000", "", 10), 5)
    assert err.value.reason == "SEARCH_TOO_SLOW"
    # Without the lock the same search answers (nothing matches here).
    assert await store.messages_matching(None, "+8613800138000", "", 10) == []


class HeldScans(PgConsoleStore):
    """The real store, whose scans start only when the test lets them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def messages_matching(
        self, scope: int | None, number: str, reference: str, limit: int
    ) -> list[ConsoleMessage]:
        self.waiting += 1
        await self.gate.wait()
        return await super().messages_matching(scope, number, reference, limit)


async def test_scans_beyond_the_limit_are_refused_with_a_retry_delay(
    pool: asyncpg.Pool,
) -> None:
    store = HeldScans(pool)
    views = ConsoleViews(store, max_scans=2)
    running = [asyncio.create_task(views.search(CALLER, f"order-{i}", 10)) for i in range(2)]
    await eventually(lambda: store.waiting == 2)
    with pytest.raises(ResourceExhausted) as err:
        await views.search(CALLER, "order-3", 10)
    assert err.value.reason == "SEARCH_BUSY"
    assert err.value.retry_after > 0
    store.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*running), 5) == [[], []]
    assert await views.search(CALLER, "order-3", 10) == []  # free again
