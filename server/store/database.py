"""Where the data lives (the server DATABASE_URL names, or an embedded one), and
bringing its schema up to date."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from server.store.embedded import EmbeddedPostgres
from server.store.migrate import apply_migrations


class Database:
    """The server named by DATABASE_URL, or the embedded one under SMSGW_DATA_DIR."""

    def __init__(self, database_url: str | None, data_dir: Path) -> None:
        self._url = database_url
        self._data_dir = data_dir
        self._embedded: EmbeddedPostgres | None = None
        self.dsn = ""

    async def start(self) -> str:
        if self._url:
            self.dsn = self._url
        else:
            self._embedded = EmbeddedPostgres(self._data_dir)
            self.dsn = await asyncio.to_thread(self._embedded.start)
        return self.dsn

    async def stop(self) -> None:
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None


async def migrate(dsn: str) -> list[str]:
    """Applies the migrations not applied yet; returns their names."""
    conn = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
