"""message_events: the ordered log of status changes that streams read and replay.

The log is ordered per account. Every transaction that changes a message status
locks the *lanes* of the accounts it writes events for (an account's lane is its id
modulo ``EVENT_LANES``; a transaction advisory lock each, taken in ascending order,
before any message row) and inserts its events in the same transaction. So one
account's event ids follow commit order: a reader of an account that has seen id N
has seen every committed event of that account below N, and a resume cursor never
skips one. Accounts in different lanes never wait for each other (a campaign's
dispatch does not hold up another account's sends); readers therefore never follow
the log across accounts by one cursor (the status hub keeps one per account). The
NOTIFY tells every replica's status hub to read the new events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from server.domain.models import MessageStatus, StatusEvent
from server.store.pool import Conn, unavailable_on_connection_errors

# Lane locks: pg_advisory_xact_lock(EVENT_LANE_CLASS, lane), lane in [0, EVENT_LANES).
EVENT_LANES = 64
EVENT_LANE_CLASS = 0x736D_7367  # "smsg"
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


def lanes_cte(accounts_sql: str, name: str = "event_log_lock") -> str:
    """A CTE (``name``, one row) that locks the lanes of the accounts ``accounts_sql``
    selects (a query of one column of account ids), in ascending order, and announces
    new events at commit. A statement that joins its event rows with it evaluates
    nextval() only after the locks are held (and its row locks after them, if it
    joins the rows it locks with it)."""
    return f"""
{name} AS (
    SELECT count(pg_advisory_xact_lock({EVENT_LANE_CLASS}, lane)) AS lanes,
           pg_notify('{EVENTS_CHANNEL}', '') AS notified
    FROM (SELECT DISTINCT (a.account_id % {EVENT_LANES})::int AS lane
          FROM ({accounts_sql}) AS a(account_id) ORDER BY 1) AS lanes
)"""


async def lock_lanes(conn: Conn, accounts_sql: str, *args: object) -> None:
    """Takes the lanes of the accounts ``accounts_sql`` selects (ascending) for the
    rest of the transaction, and announces new events at commit."""
    await conn.execute(f"WITH {lanes_cte(accounts_sql)} SELECT lanes FROM event_log_lock", *args)


async def lock_account_lanes(conn: Conn, account_ids: Sequence[int]) -> None:
    """Takes the lanes of these accounts, before any row."""
    await lock_lanes(conn, "SELECT unnest($1::bigint[])", list(account_ids))


async def lock_message_lanes(conn: Conn, message_ids: Sequence[str]) -> None:
    """Takes the lanes of these messages' accounts, before their rows."""
    await lock_lanes(
        conn, "SELECT account_id FROM messages WHERE id = ANY($1::text[])", list(message_ids)
    )


async def lock_event_log(conn: Conn) -> None:
    """Takes every lane: the whole log (no status change of any account can commit
    until this transaction ends; the tests use it to hold every writer)."""
    await conn.execute(
        f"SELECT count(pg_advisory_xact_lock({EVENT_LANE_CLASS}, lane)), "
        f"pg_notify('{EVENTS_CHANNEL}', '') "
        f"FROM generate_series(0, {EVENT_LANES - 1}) AS lane"
    )


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

    async def last_event_id(self, account_id: int) -> int:
        """The newest committed event of the account (0: none yet)."""
        with unavailable_on_connection_errors():
            value = await self._pool.fetchval(
                "SELECT coalesce(max(event_id), 0) FROM message_events WHERE account_id = $1",
                account_id,
            )
        return int(value)

    async def accounts_after(
        self, cursors: Mapping[int, int], limit: int
    ) -> dict[int, list[StatusEvent]]:
        """For each account, its events after its own cursor (at most ``limit``), in
        id order (for the status hub)."""
        accounts = list(cursors)
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM unnest($1::bigint[], $2::bigint[]) AS c(account, after) "
                f"CROSS JOIN LATERAL (SELECT * FROM message_events "
                "  WHERE account_id = c.account AND event_id > c.after "
                "  ORDER BY event_id LIMIT $3) AS e "
                "LEFT JOIN messages m ON m.id = e.message_id "
                "LEFT JOIN batches b ON b.id = e.batch_id "
                "ORDER BY e.account_id, e.event_id",
                accounts,
                [cursors[a] for a in accounts],
                limit,
            )
        found: dict[int, list[StatusEvent]] = {}
        for row in rows:
            event = status_event(row)
            found.setdefault(event.account_id, []).append(event)
        return found

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
