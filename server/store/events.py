"""message_events: the ordered log of status changes that streams read and replay.

Every transaction that changes a message status calls ``lock_event_log`` first and
inserts its events in the same transaction. The advisory lock makes event ids
follow commit order, so a reader that has seen id N has seen every committed id
below N and a resume cursor never skips an event. The NOTIFY tells every replica's
status hub to read the new events.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.domain.models import MessageStatus, StatusEvent
from server.store.pool import Conn, unavailable_on_connection_errors

EVENTS_LOCK_KEY = 0x736D_7367_7702
EVENTS_CHANNEL = "smsgw_events"

# Events with their message's caller reference and metadata (stored once, on the
# message; a message's events are never without it).
# (the batch's for a batch's messages, as in store/messages.py).
_COLUMNS = (
    "e.event_id, e.message_id, e.account_id, e.batch_id, e.to_number, e.status, "
    "e.error_code, e.occurred_at, coalesce(b.reference, m.reference) AS reference, "
    "CASE WHEN b.id IS NULL THEN m.metadata ELSE b.metadata END AS metadata"
)
_FROM = (
    "message_events e LEFT JOIN messages m ON m.id = e.message_id "
    "LEFT JOIN batches b ON b.id = e.batch_id"
)
# For other readers of the log (store/console.py).
EVENT_COLUMNS, EVENTS_FROM = _COLUMNS, _FROM


async def lock_event_log(conn: Conn) -> None:
    """Serialises event writers until commit and announces new events at commit."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1), pg_notify($2, '')", EVENTS_LOCK_KEY, EVENTS_CHANNEL
    )


# The same as lock_event_log, as a CTE for statements that run on their own
# (autocommit): a statement that joins its event rows with this CTE evaluates
# nextval() only after the lock is held.
LOCK_EVENT_LOG_CTE = f"""
event_log_lock AS (
    SELECT pg_advisory_xact_lock({EVENTS_LOCK_KEY}), pg_notify('{EVENTS_CHANNEL}', '')
)"""


def status_event(row: asyncpg.Record) -> StatusEvent:
    """A StatusEvent from a row of ``_COLUMNS`` (also the webhook deliveries' rows)."""
    return StatusEvent(
        event_id=row["event_id"],
        message_id=row["message_id"],
        account_id=row["account_id"],
        to_number=row["to_number"],
        status=MessageStatus(row["status"]),
        error_code=row["error_code"],
        batch_id=row["batch_id"],
        occurred_at=row["occurred_at"],
        reference=row["reference"] or "",
        metadata=row["metadata"] or {},
    )


class PgEventLog:
    """The domain's EventLog port over message_events."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def last_event_id(self) -> int:
        with unavailable_on_connection_errors():
            value = await self._pool.fetchval(
                "SELECT coalesce(max(event_id), 0) FROM message_events"
            )
        return int(value)

    async def all_after(self, after_event_id: int, limit: int) -> list[StatusEvent]:
        """Events of every account after the cursor, in id order (for the status hub)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.event_id > $1 "
                "ORDER BY e.event_id LIMIT $2",
                after_event_id,
                limit,
            )
        return [status_event(r) for r in rows]

    async def events_after(
        self, account_id: int, after_event_id: int, ids: Sequence[str] | None, limit: int
    ) -> list[StatusEvent]:
        """One account's events after the cursor, optionally only for ``ids``."""
        with unavailable_on_connection_errors():
            if ids:
                rows = await self._pool.fetch(
                    f"SELECT {_COLUMNS} FROM {_FROM} "
                    "WHERE e.account_id = $1 AND e.event_id > $2 "
                    "AND e.message_id = ANY($3::text[]) "
                    "ORDER BY e.event_id LIMIT $4",
                    account_id,
                    after_event_id,
                    list(ids),
                    limit,
                )
            else:
                rows = await self._pool.fetch(
                    f"SELECT {_COLUMNS} FROM {_FROM} "
                    "WHERE e.account_id = $1 AND e.event_id > $2 ORDER BY e.event_id LIMIT $3",
                    account_id,
                    after_event_id,
                    limit,
                )
        return [status_event(r) for r in rows]

    async def count_after(
        self, account_id: int, after_event_id: int, ids: Sequence[str] | None, limit: int
    ) -> int:
        """How many events ``events_after`` would return, counting at most ``limit``."""
        where = "account_id = $1 AND event_id > $2"
        args: list[object] = [account_id, after_event_id]
        if ids:
            where += " AND message_id = ANY($3::text[])"
            args.append(list(ids))
        with unavailable_on_connection_errors():
            value = await self._pool.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM message_events WHERE {where} "
                f"LIMIT ${len(args) + 1}) AS counted",
                *args,
                limit,
            )
        return int(value)

    async def latest_per_message(self, account_id: int, ids: Sequence[str]) -> list[StatusEvent]:
        """Each message's newest event: its current state with the event id that set it."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT DISTINCT ON (e.message_id) {_COLUMNS} FROM {_FROM} "
                "WHERE e.account_id = $1 AND e.message_id = ANY($2::text[]) "
                "ORDER BY e.message_id, e.event_id DESC",
                account_id,
                list(ids),
            )
        return [status_event(r) for r in rows]
