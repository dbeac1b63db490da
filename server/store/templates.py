"""Message templates of each account (soft-deleted, so sent messages keep their history)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import asyncpg

from server.domain.errors import AlreadyExists
from server.domain.models import Template, UseType
from server.store.pool import unavailable_on_connection_errors

_COLUMNS = "id, account_id, code, content, use_type, variables, created_at"


def _template(row: asyncpg.Record) -> Template:
    return Template(
        id=row["id"],
        account_id=row["account_id"],
        code=row["code"],
        content=row["content"],
        use_type=UseType(row["use_type"]),
        variables=tuple(row["variables"]),
        created_at=row["created_at"],
    )


class PgTemplateStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, account_id: int, code: str, content: str, use_type: UseType, variables: Sequence[str]
    ) -> Template:
        try:
            with unavailable_on_connection_errors():
                row = await self._pool.fetchrow(
                    f"""
                    INSERT INTO templates (account_id, code, content, use_type, variables)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}
                    """,
                    account_id,
                    code,
                    content,
                    int(use_type),
                    list(variables),
                )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(
                f"a template with code {code!r} already exists", reason="TEMPLATE_CODE_TAKEN"
            ) from exc
        assert row is not None
        return _template(row)

    async def get(self, account_id: int, template_id: int) -> Template | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM templates "
                "WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
                template_id,
                account_id,
            )
        return None if row is None else _template(row)

    async def list_page(
        self, account_id: int, after_id: int, limit: int
    ) -> tuple[list[Template], int]:
        """Returns up to ``limit`` templates with id > after_id, and the account's total."""
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM templates "
                    "WHERE account_id = $1 AND id > $2 AND deleted_at IS NULL "
                    "ORDER BY id LIMIT $3",
                    account_id,
                    after_id,
                    limit,
                )
                total = await conn.fetchval(
                    "SELECT count(*) FROM templates WHERE account_id = $1 AND deleted_at IS NULL",
                    account_id,
                )
        return [_template(r) for r in rows], int(total)

    async def delete(self, account_id: int, template_id: int) -> bool:
        with unavailable_on_connection_errors():
            result: str = await self._pool.execute(
                "UPDATE templates SET deleted_at = now() "
                "WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
                template_id,
                account_id,
            )
        return result.endswith(" 1")


@dataclass(frozen=True)
class TemplateLayout:
    """What the dispatcher needs of a template: its text and its variables in order
    of appearance (the order positional providers fill p1..pn in)."""

    content: str
    variables: tuple[str, ...]


class TemplateLayouts:
    """Template layouts by id, read once: a template's content never changes after it
    is created (there is no update, and a delete only hides it), so a layout read is
    kept, up to ``capacity`` templates (then the cache starts over)."""

    def __init__(self, pool: asyncpg.Pool, capacity: int = 10_000) -> None:
        self._pool = pool
        self._capacity = capacity
        self._known: dict[int, TemplateLayout] = {}

    async def get_many(self, template_ids: Collection[int]) -> dict[int, TemplateLayout]:
        """The layouts of those ids that exist (deleted templates included)."""
        missing = sorted({i for i in template_ids if i not in self._known})
        if missing:
            with unavailable_on_connection_errors():
                rows = await self._pool.fetch(
                    "SELECT id, content, variables FROM templates WHERE id = ANY($1::bigint[])",
                    missing,
                )
            if len(self._known) + len(rows) > self._capacity:
                self._known.clear()
            for row in rows:
                self._known[row["id"]] = TemplateLayout(row["content"], tuple(row["variables"]))
        return {i: self._known[i] for i in template_ids if i in self._known}


class BatchContents:
    """The content of campaigns sent as text with per-number variables, by batch id,
    read once: a batch's content never changes. Kept up to ``capacity`` batches (then
    the cache starts over); batches without one are remembered as None."""

    def __init__(self, pool: asyncpg.Pool, capacity: int = 10_000) -> None:
        self._pool = pool
        self._capacity = capacity
        self._known: dict[str, str | None] = {}

    async def get_many(self, batch_ids: Collection[str]) -> dict[str, str]:
        """The contents of those batches that have one."""
        missing = sorted({i for i in batch_ids if i not in self._known})
        if missing:
            with unavailable_on_connection_errors():
                rows = await self._pool.fetch(
                    "SELECT id, content FROM batches WHERE id = ANY($1::text[])", missing
                )
            if len(self._known) + len(missing) > self._capacity:
                self._known.clear()
            found = {row["id"]: row["content"] for row in rows}
            for batch_id in missing:
                self._known[batch_id] = found.get(batch_id)
        return {i: c for i in batch_ids if (c := self._known.get(i)) is not None}
