"""Message templates of each account (soft-deleted, so sent messages keep their history)."""

from __future__ import annotations

from collections.abc import Sequence

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
