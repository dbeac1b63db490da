"""Migrations build the expected schema, once, even when many replicas start together."""

from __future__ import annotations

import asyncio

import asyncpg

from server.store.migrate import apply_migrations, load_migrations
from tests.conftest import DatabaseFactory


async def test_concurrent_migrations_apply_each_file_once(databases: DatabaseFactory) -> None:
    dsn = await databases.new(migrate=False)
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in load_migrations())

    conn = await asyncpg.connect(dsn)
    try:
        assert await apply_migrations(conn) == []
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        rows = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    assert {
        "accounts",
        "credentials",
        "templates",
        "messages",
        "message_events",
        "idempotency_keys",
        "schema_migrations",
    } <= tables
    assert rows == len(load_migrations())
