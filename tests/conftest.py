"""Shared fixtures: a real PostgreSQL (embedded unless DATABASE_URL is set), one fresh
database per test module or gateway, and helpers to call a running gateway."""

from __future__ import annotations

import base64
import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from server.store.embedded import EmbeddedPostgres
from server.store.migrate import apply_migrations
from server.store.pool import create_pool

_counter = itertools.count()

# ``smsgw serve`` refuses a DATABASE_URL without SMSGW_SECRET_KEY; every server a test
# starts as a subprocess (inheriting this environment) gets this test-only key.
TEST_SECRET_KEY = base64.urlsafe_b64encode(b"smsgw-tests-only-secret-key-32-bytes!").decode()
os.environ.setdefault("SMSGW_SECRET_KEY", TEST_SECRET_KEY)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The URL of a PostgreSQL server to create test databases on."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    with tempfile.TemporaryDirectory(prefix="smsgw-test-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp))
        try:
            yield embedded.start()
        finally:
            embedded.stop()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class DatabaseFactory:
    server_url: str
    created: list[str]

    async def new(self, migrate: bool = True) -> str:
        name = f"smsgw_t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        admin = await asyncpg.connect(self.server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.created.append(name)
        dsn = _with_database(self.server_url, name)
        if migrate:
            conn = await asyncpg.connect(dsn)
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()
        return dsn


@pytest.fixture(scope="session")
async def databases(pg_server_url: str) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_server_url, [])
    yield factory
    admin = await asyncpg.connect(pg_server_url)
    try:
        for name in factory.created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def dsn(databases: DatabaseFactory) -> str:
    """A migrated database of this test module's own."""
    return await databases.new()


@pytest.fixture(scope="module")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(dsn, min_size=1, max_size=10)
    yield p
    await p.close()


def basic_auth(api_key: str, secret: str) -> tuple[tuple[str, str], ...]:
    token = base64.b64encode(f"{api_key}:{secret}".encode()).decode()
    return (("authorization", f"Basic {token}"),)
