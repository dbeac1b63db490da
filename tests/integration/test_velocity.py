"""Velocity counters on a real PostgreSQL: exact under concurrency, rolled back with
a refused request, fixed windows that roll over, and a purge of old windows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pytest

from server.store.velocity import PgVelocityCounters, VelocityCheck

pytestmark = pytest.mark.timeout(5, func_only=True)


def unique(name: str) -> str:
    """A key no other test in this module's database uses."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Refused(Exception):
    """Raised inside a transaction to roll back a refused request's counts."""


@asynccontextmanager
async def connections(dsn: str, n: int) -> AsyncIterator[list[asyncpg.Connection]]:
    conns = await asyncio.gather(*(asyncpg.connect(dsn) for _ in range(n)))
    try:
        yield list(conns)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def stored_count(pool: asyncpg.Pool, scope: str, key: str) -> int:
    total = await pool.fetchval(
        "SELECT coalesce(sum(count), 0) FROM velocity_counters WHERE scope = $1 AND key = $2",
        scope,
        key,
    )
    return int(total)


async def test_hits_count_up_within_the_window_in_the_order_asked(pool: asyncpg.Pool) -> None:
    counters = PgVelocityCounters(pool)
    a = VelocityCheck("test", unique("a"), 3600, 2)
    b = VelocityCheck("test", unique("b"), 3600, 5)
    async with pool.acquire() as conn:
        first = await counters.hit(conn, [b, a])
        second = await counters.hit(conn, [a, b])
        third = await counters.hit(conn, [a])
    assert [(r.key, r.count) for r in first] == [(b.key, 1), (a.key, 1)]
    assert [(r.key, r.count) for r in second] == [(a.key, 2), (b.key, 2)]
    assert [(r.count, r.limit, r.exceeded) for r in third] == [(3, 2, True)]
    assert not any(r.exceeded for r in second)


async def test_windows_are_aligned_and_retry_after_points_at_their_end(
    pool: asyncpg.Pool,
) -> None:
    check = VelocityCheck("test", unique("aligned"), 3600, 1)
    async with pool.acquire() as conn:
        [r] = await PgVelocityCounters(pool).hit(conn, [check])
    assert r.window_end.timestamp() % 3600 == 0
    assert timedelta(0) < r.window_end - r.counted_at <= timedelta(hours=1)
    assert 1 <= r.retry_after() <= 3600


async def test_fifty_concurrent_hits_count_one_to_fifty(pool: asyncpg.Pool, dsn: str) -> None:
    counters = PgVelocityCounters(pool)
    check = VelocityCheck("test", unique("race"), 3600, 1000)
    async with connections(dsn, 50) as conns:
        start = asyncio.Event()

        async def hit(conn: asyncpg.Connection) -> int:
            await start.wait()
            [r] = await counters.hit(conn, [check])
            return r.count

        tasks = [asyncio.create_task(hit(c)) for c in conns]
        start.set()
        counts = await asyncio.gather(*tasks)
    assert sorted(counts) == list(range(1, 51))
    assert await stored_count(pool, check.scope, check.key) == 50


async def test_a_limit_of_n_lets_exactly_n_of_three_n_racing_requests_through(
    pool: asyncpg.Pool, dsn: str
) -> None:
    """Each request counts in its own transaction and rolls back when it is over."""
    n = 10
    counters = PgVelocityCounters(pool)
    prefix = VelocityCheck("test_prefix", unique("race"), 3600, n)
    country = VelocityCheck("test_country", unique("race"), 3600, 1000)
    async with connections(dsn, 3 * n) as conns:
        start = asyncio.Event()

        async def request(conn: asyncpg.Connection, i: int) -> bool:
            # Half ask in the other order: the counters must still lock in one
            # order, or these transactions would deadlock.
            checks = [prefix, country] if i % 2 else [country, prefix]
            await start.wait()
            try:
                async with conn.transaction():
                    results = await counters.hit(conn, checks)
                    if any(r.exceeded for r in results):
                        raise Refused
                    await asyncio.sleep(0.005)  # the rest of the request's work
            except Refused:
                return False
            return True

        tasks = [asyncio.create_task(request(c, i)) for i, c in enumerate(conns)]
        start.set()
        passed = await asyncio.gather(*tasks)
    assert passed.count(True) == n
    assert await stored_count(pool, prefix.scope, prefix.key) == n
    assert await stored_count(pool, country.scope, country.key) == n


async def test_a_rolled_back_hit_leaves_the_count_unchanged(pool: asyncpg.Pool) -> None:
    counters = PgVelocityCounters(pool)
    check = VelocityCheck("test", unique("rollback"), 3600, 1)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await counters.hit(conn, [check])
        with pytest.raises(Refused):
            async with conn.transaction():
                [over] = await counters.hit(conn, [check])
                assert over.exceeded
                raise Refused
        assert await stored_count(pool, check.scope, check.key) == 1
        [again] = await counters.hit(conn, [check])
    assert again.count == 2


async def test_keys_scopes_and_window_lengths_count_apart(pool: asyncpg.Pool) -> None:
    counters = PgVelocityCounters(pool)
    key = unique("shared")
    checks = [
        VelocityCheck("test_prefix", key, 3600, 10),
        VelocityCheck("test_country", key, 3600, 10),
        VelocityCheck("test_prefix", key, 86400, 10),
        VelocityCheck("test_prefix", unique("other"), 3600, 10),
    ]
    async with pool.acquire() as conn:
        for _ in range(3):
            await counters.hit(conn, checks[:1])
        results = await counters.hit(conn, checks)
    assert [r.count for r in results] == [4, 1, 1, 1]
    assert results[2].window_end.timestamp() % 86400 == 0


async def test_a_new_window_starts_from_one(pool: asyncpg.Pool) -> None:
    counters = PgVelocityCounters(pool)
    check = VelocityCheck("test", unique("rollover"), 1, 2)
    async with pool.acquire() as conn:
        [first] = await counters.hit(conn, [check])
        [second] = await counters.hit(conn, [check])
        if second.window_end == first.window_end:
            assert second.count == 2
        else:  # the second hit fell just past a window boundary
            assert second.count == 1
        await asyncio.sleep((second.window_end - second.counted_at).total_seconds() + 0.05)
        [later] = await counters.hit(conn, [check])
    assert later.count == 1
    assert later.window_end >= second.window_end + timedelta(seconds=1)


async def test_purge_deletes_only_windows_that_ended_long_enough_ago(
    pool: asyncpg.Pool,
) -> None:
    counters = PgVelocityCounters(pool)
    key = unique("purge")
    await pool.execute(
        """
        INSERT INTO velocity_counters (scope, key, window_start, window_end, count)
        VALUES ('test', $1, now() - interval '3 hours', now() - interval '2 hours', 5),
               ('test', $1, now() - interval '2 hours', now() - interval '90 minutes', 3),
               ('test', $1, now() - interval '30 minutes', now() - interval '20 minutes', 2)
        """,
        key,
    )
    current = VelocityCheck("test", unique("purge-current"), 3600, 10)
    async with pool.acquire() as conn:
        await counters.hit(conn, [current])

    assert await counters.purge(timedelta(hours=1)) == 2
    assert await stored_count(pool, "test", key) == 2
    assert await stored_count(pool, current.scope, current.key) == 1
    assert await counters.purge(timedelta(hours=1)) == 0


async def test_nothing_to_count_costs_no_query_and_a_counter_twice_is_refused(
    pool: asyncpg.Pool,
) -> None:
    counters = PgVelocityCounters(pool)
    check = VelocityCheck("test", unique("twice"), 60, 1)
    async with pool.acquire() as conn:
        assert await counters.hit(conn, []) == []
        with pytest.raises(ValueError, match="twice"):
            await counters.hit(conn, [check, check])
    assert await stored_count(pool, check.scope, check.key) == 0
