"""Batch tasks: creation in one transaction (COPY), counts, paging and cancel.

Creation writes the batch row and COPYs every accepted message in one transaction,
then takes out the numbers the account suppressed (one join: rejected with
RECIPIENT_SUPPRESSED) and those at their daily cap (one upsert), counts the batch
against the account's daily cap, charges a prepaid balance and records the batch's
first status event (store/account_events.py): a crash or error stores nothing. The
messages are committed unannounced (``claimed_until`` = infinity: no worker takes
them) and then announced ``ANNOUNCE_CHUNK`` at a time, each chunk in a statement of
its own that writes their PENDING events under the account's event-log lane
(store/events.py) and makes them claimable. So no batch holds its lane (which every
send and status change of the accounts in that lane waits for) longer than one
chunk, where writing 100,000 first events in the batch's transaction held it for a
second or more. A message's PENDING event still comes before any other of its events
(it cannot be sent unannounced), and an account's event ids still follow commit order.
A batch whose announcement was cut off (its server died) is finished by
``announce_unfinished`` on any replica.

Counts change in the statement that records each message's status
(store/outbox.py), so they are exact at any moment.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg

from server.domain.batch_tasks import (
    BatchMessageRow,
    BatchOptions,
    BatchRecord,
    EncodedSlice,
    StoredSlice,
)
from server.domain.guardrails import MOBILE_CAP_BATCH_REASON, DailyCaps
from server.domain.models import MessageStatus, NewMessage
from server.domain.ports import IdempotencyKey, Transition
from server.domain.suppression import BATCH_REASON
from server.store.account_events import record_batch_status
from server.store.balance import charge_balance
from server.store.daily_caps import take_batch_mobiles, take_daily
from server.store.events import lanes_cte, lock_account_lanes
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
    "claimed_until",
)

log = logging.getLogger(__name__)

# Messages announced per statement: the event-log lane is held for one chunk's
# events and commit (a few milliseconds).
ANNOUNCE_CHUNK = 500
# A batch still announcing this long after it was created lost its server.
STALE_ANNOUNCING_SECONDS = 60

# asyncpg writes this as 'infinity': no lease runs out, so no worker claims it.
UNANNOUNCED = datetime.max.replace(tzinfo=UTC)

# One chunk of a batch's unannounced messages, after ``$3`` in id order: made
# claimable, then (the account's lane locked only once the rows are updated) given their
# PENDING events. Rows another announcer holds are skipped (it announces them).
_ANNOUNCE = f"""
WITH picked AS (
    SELECT m.id FROM messages m
    WHERE m.batch_id = $1 AND m.id > $3 AND m.claimed_until = 'infinity'
    ORDER BY m.id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
announced AS (
    UPDATE messages m SET claimed_until = NULL
    FROM picked WHERE m.id = picked.id AND m.claimed_until = 'infinity'
    RETURNING m.id, m.account_id, m.batch_id, m.to_number, m.created_at
),
{lanes_cte("SELECT account_id FROM announced")},
events AS (
    INSERT INTO message_events (event_id, message_id, account_id, batch_id, to_number,
                                status, occurred_at)
    SELECT nextval('message_event_ids'), a.id, a.account_id, a.batch_id, a.to_number, 1,
           a.created_at
    FROM (SELECT * FROM announced ORDER BY id) AS a CROSS JOIN event_log_lock
    RETURNING 1
)
SELECT (SELECT count(*) FROM picked) AS picked, (SELECT max(id) FROM picked) AS last,
       (SELECT count(*) FROM events) AS announced
"""

# The batch is announced once none of its messages is left unannounced.
_ANNOUNCED = """
UPDATE batches SET announcing = false
WHERE id = $1 AND announcing AND NOT EXISTS (
    SELECT 1 FROM messages WHERE batch_id = $1 AND claimed_until = 'infinity'
)
RETURNING id
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
BATCH_COLUMNS = _COLUMNS  # for other readers of batches (store/console.py)


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
        UNANNOUNCED,
    )


# COPY's text format: these characters are written as backslash escapes (a NUL is
# never stored: every text was checked for one).
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_JSON = json.JSONEncoder(separators=(",", ":"))  # as the pool's jsonb codec writes


def _text(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, datetime):
        return "infinity" if value == UNANNOUNCED else value.isoformat()
    if isinstance(value, dict):
        return _JSON.encode(value).translate(_COPY_ESCAPES)
    return str(int(value))  # type: ignore[call-overload]


def copy_row(m: NewMessage) -> bytes:
    """One message as a line of COPY's text format, in MESSAGE_COLUMNS order (what a
    batch preparation process sends, so the server does not encode it)."""
    return ("\t".join(map(_text, _row(m))) + "\n").encode()


def batch_record(row: asyncpg.Record) -> BatchRecord:
    """A BatchRecord from a row of ``BATCH_COLUMNS``."""
    return _batch(row)


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


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class PgBatchStore:
    def __init__(self, pool: asyncpg.Pool, *, on_changes: ChangeSink | None = None) -> None:
        self._pool = pool
        self._on_changes = on_changes  # told of the cancellations once committed
        self._announcing: set[asyncio.Task[None]] = set()

    async def create(
        self,
        batch_id: str,
        account_id: int,
        use_type: int,
        messages: AsyncIterable[StoredSlice],
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
                earlier: asyncpg.Record | None = None
                if key is not None:
                    earlier_id = await claim_key(conn, key, batch_id)
                    if earlier_id is not None:
                        earlier = await conn.fetchrow(
                            f"SELECT {_COLUMNS}, announcing FROM batches WHERE id = $1",
                            earlier_id,
                        )
                        assert earlier is not None
                if earlier is None:
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
                        if isinstance(part, EncodedSlice):
                            charged = charged or bool(part.sample.charge)
                            await conn.copy_to_table(
                                "messages",
                                source=_one(b"".join(part.rows)),
                                columns=MESSAGE_COLUMNS,
                                format="text",
                            )
                        else:
                            charged = charged or any(m.charge for m in part)
                            await conn.copy_records_to_table(
                                "messages", columns=MESSAGE_COLUMNS, records=map(_row, part)
                            )
                        total += len(part)
                    if total:
                        suppressed = await conn.fetch(
                            _TAKE_SUPPRESSED, batch_id, account_id, use_type
                        )
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
                        await take_daily(
                            conn, account_id, "", replace(caps, per_mobile=None), total
                        )
                    # Nothing accepted: nothing can be sent (failed).
                    row = await conn.fetchrow(
                        f"UPDATE batches SET total = $2, status = $3, rejected = $4, "
                        f"announcing = $2 > 0 WHERE id = $1 RETURNING {_COLUMNS}",
                        batch_id,
                        total,
                        1 if total else 4,
                        [list(r) for r in rejected],
                    )
                    if total and charged:
                        cost = await conn.fetchval(
                            "SELECT sum(charged) FROM messages WHERE batch_id = $1", batch_id
                        )
                        await charge_balance(conn, account_id, int(cost or 0))
                    # Its first status (PENDING, or FAILED with nothing accepted). The
                    # messages' PENDING events come after the commit (announced).
                    await record_batch_status(conn, batch_id)
        if earlier is not None:
            if earlier["announcing"]:
                # A repeat of a call cut off while announcing (its server died): its
                # answer waits for the announcement, finished here.
                await self.announce(earlier["id"])
            return _batch(earlier)
        assert row is not None
        if total:
            # Committed: the announcement goes on even if the call is given up (its
            # messages are stored and will be sent).
            task = asyncio.create_task(self._announce(batch_id), name="batch-announce")
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)
            await asyncio.shield(task)
        return _batch(row)

    async def _announce(self, batch_id: str) -> None:
        try:
            await self.announce(batch_id)
        except Exception as exc:
            # Stored; announce_unfinished (any replica's maintenance) finishes it.
            log.warning(
                "announcing a batch's messages failed (%s); maintenance will finish it",
                type(exc).__name__,
                extra={"batch_id": batch_id},
            )

    async def announce(self, batch_id: str) -> None:
        """Announces every unannounced message of a stored batch, a chunk at a time."""
        with unavailable_on_connection_errors():
            while True:
                after = ""
                while True:
                    row = await self._pool.fetchrow(_ANNOUNCE, batch_id, ANNOUNCE_CHUNK, after)
                    assert row is not None
                    if row["last"] is not None:
                        after = row["last"]
                    if row["picked"] < ANNOUNCE_CHUNK:
                        break
                if await self._pool.fetchval(_ANNOUNCED, batch_id) is not None:
                    return
                if not await self._pool.fetchval(
                    "SELECT announcing FROM batches WHERE id = $1", batch_id
                ):
                    return
                # Rows another announcer held when skipped: once more from the start.
                await asyncio.sleep(0.1)

    async def announce_unfinished(self) -> int:
        """Finishes the announcement of batches whose server died announcing them."""
        with unavailable_on_connection_errors():
            ids = await self._pool.fetch(
                "SELECT id FROM batches WHERE announcing "
                "AND created_at < now() - make_interval(secs => $1) ORDER BY created_at",
                STALE_ANNOUNCING_SECONDS,
            )
        for r in ids:
            log.info("finishing a batch's announcement", extra={"batch_id": r["id"]})
            await self.announce(r["id"])
        return len(ids)

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

        Locks in the one order every status change uses: the account's event-log lane
        first, then rows. (Taking the batch and message rows first and the event log last
        deadlocked with a worker recording a sent group of the batch: it holds the
        lane and waits for the batch row to count its messages.)"""

        async def cancel() -> tuple[asyncpg.Record | None, StatusChanges] | None:
            async with self._pool.acquire() as conn, conn.transaction():
                owner = await conn.fetchval(
                    "SELECT account_id FROM batches WHERE id = $1", batch_id
                )
                if owner != account_id:
                    return None
                await lock_account_lanes(conn, [account_id])
                await conn.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", batch_id)
                ids = await conn.fetch(
                    "SELECT id FROM messages WHERE batch_id = $1 AND status IN (1, 2) "
                    "AND (claimed_until IS NULL OR claimed_until < now() "
                    "     OR claimed_until = 'infinity') "
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
