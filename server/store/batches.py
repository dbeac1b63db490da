"""Batch tasks: creation in one transaction (COPY), counts, paging and cancel.

Creation writes the batch row, COPYs every accepted message, takes out the numbers
the account suppressed (one join: rejected with RECIPIENT_SUPPRESSED) and those at
their daily cap (one upsert), counts the batch against the account's daily cap,
inserts the first events with one statement under the event-log lock, charges a
prepaid balance and records the batch's first status event (store/account_events.py),
all in one transaction: a crash or error stores nothing. Counts change in the
statement that records each
message's status (store/outbox.py), so they are exact at any moment.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from dataclasses import replace

import asyncpg

from server.domain.batch_tasks import BatchMessageRow, BatchOptions, BatchRecord
from server.domain.guardrails import MOBILE_CAP_BATCH_REASON, DailyCaps
from server.domain.models import MessageStatus, NewMessage
from server.domain.ports import IdempotencyKey, Transition
from server.domain.suppression import BATCH_REASON
from server.store.account_events import record_batch_status
from server.store.balance import charge_balance
from server.store.daily_caps import take_batch_mobiles, take_daily
from server.store.events import LOCK_EVENT_LOG_CTE, lock_event_log
from server.store.idempotency import claim_key
from server.store.outbox import ChangeSink, StatusChanges, apply_transitions
from server.store.pool import retry_on_conflict, unavailable_on_connection_errors
from server.store.suppressions import matches

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
    "expires_at",
    "charged",
)

_FIRST_EVENTS = f"""
WITH {LOCK_EVENT_LOG_CTE}
INSERT INTO message_events (event_id, message_id, account_id, batch_id, to_number, status,
                            occurred_at)
SELECT nextval('message_event_ids'), m.id, m.account_id, m.batch_id, m.to_number, 1,
       m.created_at
FROM messages m CROSS JOIN event_log_lock
WHERE m.batch_id = $1
"""

# The batch's suppressed numbers, taken out of it after the COPY: one join of the
# batch's rows with the account's suppressions (both by index), not a look-up per number.
_TAKE_SUPPRESSED = f"""
DELETE FROM messages m USING suppressions s
WHERE m.batch_id = $1 AND {matches("$2", "m.to_number", "$3")}
RETURNING m.to_number
"""

_COLUMNS = (
    "id, status, total, sent, delivered, failed, cancelled, finished, created_at, updated_at,"
    " rejected, reference, metadata"
)


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
        int(MessageStatus.PENDING),
        m.not_before,
        m.template_code,
        m.template_data,
        m.expires_at,
        m.charge,
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
        reference=row["reference"],
        metadata=row["metadata"] or {},
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
        content: str | None = None,
        options: BatchOptions | None = None,
        caps: DailyCaps | None = None,
    ) -> BatchRecord:
        """Stores the batch with all its messages, or nothing. With ``key``, a repeat
        of an earlier request returns the earlier batch. ``content``: the text of a
        campaign with per-number variables and no template (``BatchContents``).

        The messages come in slices, each COPYed before the next is read, so only
        one slice is in memory; the batch row gets its total and the rejected
        numbers once the last has been read."""
        options = options or BatchOptions()
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                if key is not None:
                    earlier_id = await claim_key(conn, key, batch_id)
                    if earlier_id is not None:
                        earlier = await conn.fetchrow(
                            f"SELECT {_COLUMNS} FROM batches WHERE id = $1", earlier_id
                        )
                        assert earlier is not None
                        return _batch(earlier)
                await conn.execute(
                    "INSERT INTO batches (id, account_id, status, use_type, total, content, "
                    "reference, metadata, validity_seconds, smart_encoding) "
                    "VALUES ($1, $2, 1, $3, 0, $4, $5, $6, $7, $8)",
                    batch_id,
                    account_id,
                    use_type,
                    content,
                    options.reference,
                    dict(options.metadata) if options.metadata else None,
                    int(options.validity.total_seconds()) if options.validity else None,
                    options.smart_encoding,
                )
                total = 0
                charged = False  # a prepaid account's batch: charged once stored
                async for part in messages:
                    charged = charged or any(m.charge for m in part)
                    await conn.copy_records_to_table(
                        "messages", columns=MESSAGE_COLUMNS, records=map(_row, part)
                    )
                    total += len(part)
                if total:
                    suppressed = await conn.fetch(_TAKE_SUPPRESSED, batch_id, account_id, use_type)
                    total -= len(suppressed)
                    rejected = [
                        *rejected,
                        *((r["to_number"], BATCH_REASON) for r in suppressed),
                    ]
                if total and caps is not None and caps.per_mobile is not None:
                    full = await take_batch_mobiles(conn, account_id, batch_id, caps.per_mobile)
                    total -= len(full)
                    rejected = [*rejected, *((n, MOBILE_CAP_BATCH_REASON) for n in full)]
                if total and caps is not None and caps.account is not None:
                    await take_daily(conn, account_id, "", replace(caps, per_mobile=None), total)
                # Nothing accepted: nothing can be sent (failed).
                row = await conn.fetchrow(
                    f"UPDATE batches SET total = $2, status = $3, rejected = $4 "
                    f"WHERE id = $1 RETURNING {_COLUMNS}",
                    batch_id,
                    total,
                    1 if total else 4,
                    [list(r) for r in rejected],
                )
                if total:
                    await conn.execute(_FIRST_EVENTS, batch_id)
                    if charged:  # after the events (the event-log lock, then the account)
                        cost = await conn.fetchval(
                            "SELECT sum(charged) FROM messages WHERE batch_id = $1", batch_id
                        )
                        await charge_balance(conn, account_id, int(cost or 0))
                # Its first status (PENDING, or FAILED with nothing accepted), after
                # the message events: the account log's lock is taken last.
                await record_batch_status(conn, batch_id)
        assert row is not None
        return _batch(row)

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
        """Cancels the messages no worker holds; the ones handed out go on.

        Locks in the one order every status change uses: the event log first, then
        rows. (Taking the batch and message rows first and the event log last
        deadlocked with a worker recording a sent group of the batch: it holds the
        event log and waits for the batch row to count its messages.)"""

        async def cancel() -> tuple[asyncpg.Record | None, StatusChanges] | None:
            async with self._pool.acquire() as conn, conn.transaction():
                owner = await conn.fetchval(
                    "SELECT account_id FROM batches WHERE id = $1", batch_id
                )
                if owner != account_id:
                    return None
                await lock_event_log(conn)
                await conn.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", batch_id)
                ids = await conn.fetch(
                    "SELECT id FROM messages WHERE batch_id = $1 AND status IN (1, 2) "
                    "AND (claimed_until IS NULL OR claimed_until < now()) "
                    "FOR UPDATE SKIP LOCKED",
                    batch_id,
                )
                cancelled = await conn.execute(
                    "UPDATE batches SET status = 5, updated_at = now() "
                    "WHERE id = $1 AND status IN (1, 2)",
                    batch_id,
                )
                changes: StatusChanges = []
                if ids:
                    changes = await apply_transitions(
                        conn, [Transition(r["id"], MessageStatus.CANCELLED) for r in ids]
                    )
                if cancelled != "UPDATE 0":
                    # With the counts its cancelled messages left.
                    await record_batch_status(conn, batch_id)
                row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM batches WHERE id = $1", batch_id)
            return row, changes

        with unavailable_on_connection_errors():
            done = await retry_on_conflict(cancel, what="cancelling a batch")
        if done is None:
            return None
        row, changes = done
        if changes and self._on_changes is not None:
            self._on_changes(changes)
        return None if row is None else _batch(row)
