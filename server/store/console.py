"""The operator console's reads (domain/console.py's ConsoleRepository).

``scope`` is an account id, or None for every account (an admin's view): each query
filters on it. Searching by number or reference reads messages without an index on
those columns: it is meant for an operator's occasional look, not for callers'
traffic, so each such query stops after SCAN_TIMEOUT_MS and the domain lets only a
few run at once (docs/console.md).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from server.domain.console import AccountBatch, ConsoleMessage
from server.domain.errors import FailedPrecondition
from server.domain.models import MessageState, MessageStatus, StatusEvent, UseType
from server.store.batches import BATCH_COLUMNS, batch_record
from server.store.events import EVENT_COLUMNS, EVENTS_FROM, status_event
from server.store.messages import REFERENCE_COLUMNS, WITH_BATCH
from server.store.pool import unavailable_on_connection_errors

# A search by number or reference reads the whole messages table at worst.
SCAN_TIMEOUT_MS = 5000

_MESSAGE_SELECT = (
    "SELECT m.id, m.account_id, m.batch_id, m.to_number, m.status, m.error_code, m.provider, "
    "m.updated_at, m.created_at, m.sent_at, m.segments, m.attempts, m.use_type, "
    f"{REFERENCE_COLUMNS} FROM {WITH_BATCH} "
)


def _message(r: asyncpg.Record) -> ConsoleMessage:
    return ConsoleMessage(
        account_id=r["account_id"],
        state=MessageState(
            id=r["id"],
            to_number=r["to_number"],
            status=MessageStatus(r["status"]),
            error_code=r["error_code"],
            provider=r["provider"],
            updated_at=r["updated_at"],
            segments=r["segments"],
            reference=r["reference"],
            metadata=r["metadata"] or {},
        ),
        batch_id=r["batch_id"],
        created_at=r["created_at"],
        sent_at=r["sent_at"],
        attempts=r["attempts"],
        use_type=UseType(r["use_type"]),
    )


class PgConsoleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def batches_before(
        self, scope: int | None, before: tuple[datetime, str] | None, limit: int
    ) -> list[AccountBatch]:
        at, last_id = before if before is not None else (None, "")
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT account_id, {BATCH_COLUMNS} FROM batches "
                "WHERE ($1::bigint IS NULL OR account_id = $1) "
                "AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) "
                "ORDER BY created_at DESC, id DESC LIMIT $4",
                scope,
                at,
                last_id,
                limit,
            )
        return [AccountBatch(r["account_id"], batch_record(r)) for r in rows]

    async def message(self, scope: int | None, message_id: str) -> ConsoleMessage | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                _MESSAGE_SELECT + "WHERE m.id = $1 AND ($2::bigint IS NULL OR m.account_id = $2)",
                message_id,
                scope,
            )
        return None if row is None else _message(row)

    async def batch_messages(
        self, scope: int | None, batch_id: str, limit: int
    ) -> list[ConsoleMessage]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                _MESSAGE_SELECT + "WHERE m.batch_id = $1 "
                "AND ($2::bigint IS NULL OR m.account_id = $2) ORDER BY m.id LIMIT $3",
                batch_id,
                scope,
                limit,
            )
        return [_message(r) for r in rows]

    async def messages_matching(
        self, scope: int | None, number: str, reference: str, limit: int
    ) -> list[ConsoleMessage]:
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {SCAN_TIMEOUT_MS}")
                try:
                    rows = await conn.fetch(
                        _MESSAGE_SELECT + "WHERE ($1::bigint IS NULL OR m.account_id = $1) "
                        "AND (m.to_number = $2 OR coalesce(b.reference, m.reference) = $3) "
                        "ORDER BY m.created_at DESC, m.id DESC LIMIT $4",
                        scope,
                        number,
                        reference,
                        limit,
                    )
                except asyncpg.QueryCanceledError:
                    raise FailedPrecondition(
                        f"a search by number or reference stops after {SCAN_TIMEOUT_MS // 1000} s"
                        " and this one did not finish; search by message or batch id",
                        reason="SEARCH_TOO_SLOW",
                    ) from None
        return [_message(r) for r in rows]

    async def events(self, message_id: str) -> list[StatusEvent]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM} "
                "WHERE e.message_id = $1 ORDER BY e.event_id",
                message_id,
            )
        return [status_event(r) for r in rows]
