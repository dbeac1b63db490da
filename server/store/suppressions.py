"""Suppressed numbers per account, and the SQL that checks them on the send paths.

``MATCHES`` is the one condition every check uses: a suppression of the account and
number whose use types include the message's. CreateBatch (store/batches.py) and the
claim (store/outbox.py) join it against their rows in one statement; so do single
sends (SendMessage, SendVerification) in the statement that stores them
(store/messages.py, store/verifications.py), or ask ``suppressed`` first in their
transaction. Provider receipts that say a recipient unsubscribed or is
blocked add suppressions in the receipt's transaction (``suppress_from_receipts``).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.domain.models import UseType
from server.domain.suppression import (
    DEFAULT_USE_TYPES,
    Suppression,
    SuppressionReason,
)
from server.store.pool import Conn, unavailable_on_connection_errors


def matches(account: str, mobile: str, use_type: str, alias: str = "s") -> str:
    """SQL: ``alias`` (a suppressions row) holds back this account's message."""
    return (
        f"{alias}.account_id = {account} AND {alias}.mobile = {mobile} "
        f"AND {use_type} = ANY({alias}.use_types)"
    )


_COLUMNS = "mobile, reason, use_types, created_at"

# New numbers are inserted; a number already suppressed keeps its first time and
# gains the use types (a suppression only narrows by RemoveSuppression).
_ADD = f"""
INSERT INTO suppressions AS s (account_id, mobile, reason, use_types)
SELECT $1, u.mobile, $3, $4::smallint[] FROM unnest($2::text[]) AS u(mobile)
ON CONFLICT (account_id, mobile) DO UPDATE SET
    reason = EXCLUDED.reason,
    use_types = ARRAY(SELECT DISTINCT t FROM unnest(s.use_types || EXCLUDED.use_types) AS t
                      ORDER BY t)
RETURNING {_COLUMNS}
"""


def _suppression(row: asyncpg.Record) -> Suppression:
    return Suppression(
        mobile=row["mobile"],
        reason=SuppressionReason(row["reason"]),
        use_types=tuple(UseType(t) for t in row["use_types"]),
        created_at=row["created_at"],
    )


async def add_suppressions(
    conn: Conn,
    account_id: int,
    mobiles: Sequence[str],
    reason: SuppressionReason,
    use_types: Sequence[UseType],
) -> list[asyncpg.Record]:
    """Suppresses ``mobiles`` (E.164, distinct) in the caller's transaction."""
    rows: list[asyncpg.Record] = await conn.fetch(
        _ADD, account_id, list(mobiles), int(reason), [int(t) for t in use_types]
    )
    return rows


async def suppress_from_receipts(
    conn: Conn, message_ids: Sequence[str], reasons: Sequence[SuppressionReason]
) -> None:
    """Suppresses the numbers of these messages for their accounts (receipts that
    said the recipient unsubscribed or is blocked), in the caller's transaction."""
    if not message_ids:
        return
    await conn.execute(
        """
        INSERT INTO suppressions AS s (account_id, mobile, reason, use_types)
        SELECT DISTINCT ON (m.account_id, m.to_number) m.account_id, m.to_number, r.reason,
               $3::smallint[]
        FROM unnest($1::text[], $2::smallint[]) AS r(id, reason)
        JOIN messages m ON m.id = r.id
        ON CONFLICT (account_id, mobile) DO NOTHING
        """,
        list(message_ids),
        [int(r) for r in reasons],
        [int(t) for t in DEFAULT_USE_TYPES],
    )


async def suppressed(conn: Conn, account_id: int, mobile: str, use_type: UseType) -> bool:
    """Whether the account suppressed ``mobile`` for ``use_type``."""
    found = await conn.fetchval(
        f"SELECT true FROM suppressions s WHERE {matches('$1', '$2', '$3')}",
        account_id,
        mobile,
        int(use_type),
    )
    return bool(found)


class PgSuppressionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        account_id: int,
        mobiles: Sequence[str],
        reason: SuppressionReason,
        use_types: Sequence[UseType],
    ) -> list[Suppression]:
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                rows = await add_suppressions(conn, account_id, mobiles, reason, use_types)
        by_mobile = {r["mobile"]: _suppression(r) for r in rows}
        return [by_mobile[m] for m in mobiles]

    async def remove(self, account_id: int, mobile: str) -> bool:
        with unavailable_on_connection_errors():
            status = await self._pool.execute(
                "DELETE FROM suppressions WHERE account_id = $1 AND mobile = $2",
                account_id,
                mobile,
            )
        return bool(status != "DELETE 0")

    async def get(self, account_id: int, mobile: str) -> Suppression | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM suppressions WHERE account_id = $1 AND mobile = $2",
                account_id,
                mobile,
            )
        return None if row is None else _suppression(row)

    async def list_page(self, account_id: int, after: str, limit: int) -> list[Suppression]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM suppressions WHERE account_id = $1 AND mobile > $2 "
                "ORDER BY mobile LIMIT $3",
                account_id,
                after,
                limit,
            )
        return [_suppression(r) for r in rows]

    async def is_suppressed(self, account_id: int, mobile: str, use_type: UseType) -> bool:
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                return await suppressed(conn, account_id, mobile, use_type)
