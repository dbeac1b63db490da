"""Batch tasks: creation in one transaction (COPY), counts, paging and cancel.

Creation writes the batch row and COPYs every accepted message, staged (status 0:
no worker claims it, no count includes it), in one transaction: a crash or error
stores nothing. The staged messages are then published, PENDING with their first
events, PUBLISH_ROWS at a time, each slice in a short transaction of its own: the
event-log lock that every send takes is held for one slice, never for the whole
batch (100k first events took 0.6 s under it). Staged rows a crash leaves behind
(the batch stored whole, its publishing cut off) are published at start-up and by
the maintenance loop (``publish_staged``); the call is answered only once all are.
Counts change in the statement that records each message's status
(store/outbox.py), so they are exact at any moment.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Sequence

import asyncpg

from server.domain.batching import BatchMessageRow, BatchRecord
from server.domain.models import MessageStatus, NewMessage
from server.domain.ports import IdempotencyKey
from server.store.events import LOCK_EVENT_LOG_CTE, lock_event_log
from server.store.idempotency import claim_key
from server.store.outbox import ChangeSink, Transition, apply_transitions
from server.store.pool import Conn, unavailable_on_connection_errors

log = logging.getLogger(__name__)

MESSAGE_COLUMNS = (
    "id",
    "account_id",
    "batch_id",
    "to_number",
    "use_type",
    "body",
    "template_id",
    "segments",
    "priority",
    "status",
    "not_before",
    "template_code",
    "template_data",
)

STAGED = 0  # a batch message stored but not yet published (not a MessageStatus)
PUBLISH_ROWS = 2_000  # staged messages published (and event-log lock held) at a time

# One slice of a batch's staged messages made PENDING, with their first events, in
# id order after a cursor (dead index entries of the slices before are never read
# again). The rows are taken (and updated) before the event-log lock, so the lock
# is held only for the events' insert and the commit.
_PUBLISH_SLICE = f"""
WITH slice AS (
    SELECT id FROM messages WHERE batch_id = $1 AND id > $2 AND status = 0
    ORDER BY id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
),
m AS (
    UPDATE messages SET status = 1 FROM slice WHERE messages.id = slice.id
    RETURNING messages.id, messages.account_id, messages.batch_id, messages.to_number,
              messages.created_at
),
{LOCK_EVENT_LOG_CTE},
events AS (
    INSERT INTO message_events (event_id, message_id, account_id, batch_id, to_number,
                                status, occurred_at)
    SELECT nextval('message_event_ids'), m.id, m.account_id, m.batch_id, m.to_number, 1,
           m.created_at
    FROM m CROSS JOIN event_log_lock
)
SELECT (SELECT count(*) FROM slice) AS n, (SELECT max(id) FROM slice) AS last
"""

_COLUMNS = (
    "id, status, total, sent, delivered, failed, cancelled, finished, created_at, updated_at,"
    " rejected"
)


async def _publish(conn: Conn, batch_id: str) -> int:
    """Makes a batch's staged messages PENDING with their first events, a slice per
    transaction; the number published."""
    published = 0
    after = ""
    while True:
        row = await conn.fetchrow(_PUBLISH_SLICE, batch_id, after, PUBLISH_ROWS)
        assert row is not None
        count = int(row["n"])
        published += count
        if count < PUBLISH_ROWS:
            return published
        after = str(row["last"])


def _row(m: NewMessage) -> tuple[object, ...]:
    return (
        m.id,
        m.account_id,
        m.batch_id,
        m.to_number,
        int(m.use_type),
        m.body,
        m.template_id,
        m.segments,
        int(m.priority),
        STAGED,
        m.not_before,
        m.template_code,
        m.template_data,
    )


def _batch(row: asyncpg.Record) -> BatchRecord:
    return BatchRecord(
        id=row["id"],
        status=row["status"],
        total=row["total"],
        sent=row["sent"],
        delivered=row["delivered"],
        failed=row["failed"],
        cancelled=row["cancelled"],
        finished=row["finished"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        rejected=[(n, r) for n, r in row["rejected"]],
    )


class PgBatchStore:
    def __init__(self, pool: asyncpg.Pool, *, on_changes: ChangeSink | None = None) -> None:
        self._pool = pool
        self._on_changes = on_changes  # told of the cancellations once committed

    async def create(
        self,
        batch_id: str,
        account_id: int,
        use_type: int,
        messages: AsyncIterable[Sequence[NewMessage]],
        rejected: Sequence[tuple[str, str]],
        key: IdempotencyKey | None = None,
    ) -> BatchRecord:
        """Stores the batch with all its messages, or nothing, then publishes them.
        With ``key``, a repeat of an earlier request returns the earlier batch.

        The messages come in slices, each COPYed before the next is read, so only
        one slice is in memory; the batch row gets its total and the rejected
        numbers once the last has been read."""
        earlier_id: str | None = None
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                async with conn.transaction():
                    if key is not None:
                        earlier_id = await claim_key(conn, key, batch_id)
                    if earlier_id is None:
                        await self._stage(conn, batch_id, account_id, use_type, messages, rejected)
                # A repeat answers once the earlier batch is published too.
                batch_id = earlier_id or batch_id
                await _publish(conn, batch_id)
                row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1", batch_id)
        assert row is not None
        return _batch(row)

    @staticmethod
    async def _stage(
        conn: Conn,
        batch_id: str,
        account_id: int,
        use_type: int,
        messages: AsyncIterable[Sequence[NewMessage]],
        rejected: Sequence[tuple[str, str]],
    ) -> None:
        await conn.execute(
            "INSERT INTO batches (id, account_id, status, use_type, total) "
            "VALUES ($1, $2, 1, $3, 0)",
            batch_id,
            account_id,
            use_type,
        )
        total = 0
        async for part in messages:
            await conn.copy_records_to_table(
                "messages", columns=MESSAGE_COLUMNS, records=map(_row, part)
            )
            total += len(part)
        await conn.execute(
            "UPDATE batches SET total = $2, status = $3, rejected = $4 WHERE id = $1",
            batch_id,
            total,
            1 if total else 4,  # nothing accepted: nothing can be sent (failed)
            [list(r) for r in rejected],
        )

    async def publish_staged(self) -> int:
        """Publishes the staged messages of every batch (left by a crash or a lost
        connection while publishing); the number published."""
        published = 0
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn:
                ids = await conn.fetch("SELECT DISTINCT batch_id FROM messages WHERE status = 0")
                for r in ids:
                    published += await _publish(conn, r["batch_id"])
        if published:
            log.info("published %d staged batch messages", published)
        return published

    async def get(self, account_id: int, batch_id: str) -> BatchRecord | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM batches WHERE id = $1 AND account_id = $2",
                batch_id,
                account_id,
            )
        return None if row is None else _batch(row)

    async def messages_page(
        self, batch_id: str, after_id: str, limit: int
    ) -> list[BatchMessageRow]:
        """A batch's messages in id order after ``after_id`` (stable while it runs)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                "SELECT id, to_number, status, error_code, sent_at FROM messages "
                "WHERE batch_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                batch_id,
                after_id,
                limit,
            )
        return [
            BatchMessageRow(
                r["id"], r["to_number"], MessageStatus(r["status"]), r["error_code"], r["sent_at"]
            )
            for r in rows
        ]

    async def cancel(self, account_id: int, batch_id: str) -> BatchRecord | None:
        """Cancels the messages no worker holds; the ones handed out go on."""
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                owner = await conn.fetchval(
                    "SELECT account_id FROM batches WHERE id = $1 FOR UPDATE", batch_id
                )
                if owner != account_id:
                    return None
                ids = await conn.fetch(
                    "SELECT id FROM messages WHERE batch_id = $1 AND status IN (1, 2) "
                    "AND (claimed_until IS NULL OR claimed_until < now()) "
                    "FOR UPDATE SKIP LOCKED",
                    batch_id,
                )
                await conn.execute(
                    "UPDATE batches SET status = 5, updated_at = now() "
                    "WHERE id = $1 AND status IN (1, 2)",
                    batch_id,
                )
                changes = []
                if ids:
                    await lock_event_log(conn)
                    changes = await apply_transitions(
                        conn, [Transition(r["id"], MessageStatus.CANCELLED) for r in ids]
                    )
                row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1", batch_id)
        if changes and self._on_changes is not None:
            self._on_changes(changes)
        return None if row is None else _batch(row)
