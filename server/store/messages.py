"""Accepting messages into the outbox, with group commit and request_id idempotency.

``insert`` is called by many concurrent RPCs. Rows that arrive while a write is in
flight are collected and written together in one transaction (group commit), so
durability costs one round trip per group rather than per call. Each caller's
await returns only after its row has committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from server.domain.errors import ResourceExhausted
from server.domain.guardrails import DailyCaps
from server.domain.models import MessageState, MessageStatus, NewMessage
from server.domain.ports import IdempotencyKey
from server.domain.suppression import recipient_suppressed
from server.store.balance import charge_balance
from server.store.daily_caps import take_daily
from server.store.events import lanes_cte
from server.store.group_commit import GroupCommit
from server.store.idempotency import claim_key
from server.store.pool import Conn, unavailable_on_connection_errors
from server.store.suppressions import matches, suppressed

MAX_GROUP = 500

# A message's caller reference and metadata: a batch's messages answer with their
# batch's (kept once, on the batch row), a single send with its own.
WITH_BATCH = "messages m LEFT JOIN batches b ON b.id = m.batch_id"
REFERENCE_COLUMNS = (
    "coalesce(b.reference, m.reference) AS reference, "
    "CASE WHEN b.id IS NULL THEN m.metadata ELSE b.metadata END AS metadata"
)
MAX_CONCURRENT_GROUPS = 2


# The messages' insert and their first events, as the tail of a WITH: another
# statement can put its own CTE first and store its rows in the same round trip.
def _messages_and_events(where: str = "") -> str:
    return f"""
{lanes_cte("SELECT unnest($2::bigint[])")},
m AS (
    INSERT INTO messages (id, account_id, batch_id, to_number, use_type, body, template_id,
                          segments, priority, status, not_before, template_code, template_data,
                          channel, sealed_code, reference, metadata, expires_at, charged)
    SELECT u.id, u.account_id, u.batch_id, u.to_number, u.use_type, u.body, u.template_id,
           u.segments, u.priority, {MessageStatus.PENDING:d}, u.not_before, u.template_code,
           u.template_data, u.channel, u.sealed_code, u.reference, u.metadata, u.expires_at,
           u.charged
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::smallint[], $6::text[],
                $7::bigint[], $8::integer[], $9::smallint[], $10::timestamptz[], $11::text[],
                $12::jsonb[], $13::smallint[], $14::bytea[], $15::text[], $16::jsonb[],
                $17::timestamptz[], $18::bigint[])
         AS u(id, account_id, batch_id, to_number, use_type, body, template_id,
              segments, priority, not_before, template_code, template_data, channel,
              sealed_code, reference, metadata, expires_at, charged)
    {where}
    RETURNING id, account_id, batch_id, to_number, created_at
)
INSERT INTO message_events (event_id, message_id, account_id, batch_id, to_number, status,
                            occurred_at)
SELECT nextval('message_event_ids'), m.id, m.account_id, m.batch_id, m.to_number,
       {MessageStatus.PENDING:d}, m.created_at
FROM m CROSS JOIN event_log_lock
"""


_MESSAGES_AND_EVENTS = _messages_and_events()

_INSERT_WITH_EVENTS = f"WITH {_MESSAGES_AND_EVENTS}"

# Single sends by group commit: a message to a number its account suppressed (for its
# use type) is left out, in the same statement (no round trip of its own); the ids
# stored come back, and the callers of the others are answered RECIPIENT_SUPPRESSED.
_INSERT_UNSUPPRESSED = (
    "WITH "
    + _messages_and_events(
        "WHERE NOT EXISTS (SELECT FROM suppressions s WHERE "
        + matches("u.account_id", "u.to_number", "u.use_type")
        + ")"
    )
    + "RETURNING message_id"
)


# How many parameters ``message_columns`` takes: a CTE given to ``with_messages``
# numbers its own from MESSAGE_PARAMS + 1.
MESSAGE_PARAMS = 18


def with_messages(cte: str, where: str = "") -> str:
    """A statement that runs ``cte`` (its parameters from $19) and inserts the messages
    of ``message_columns`` with their events, atomically, in one round trip; ``where``
    filters the messages (``u``: their columns)."""
    return f"WITH {cte},{_messages_and_events(where) if where else _MESSAGES_AND_EVENTS}"


def message_columns(messages: Sequence[NewMessage]) -> list[list[object]]:
    return [
        [m.id for m in messages],
        [m.account_id for m in messages],
        [m.batch_id for m in messages],
        [m.to_number for m in messages],
        [int(m.use_type) for m in messages],
        [m.body for m in messages],
        [m.template_id for m in messages],
        [m.segments for m in messages],
        [int(m.priority) for m in messages],
        [m.not_before for m in messages],
        [m.template_code for m in messages],
        [m.template_data for m in messages],
        [int(m.channel) for m in messages],
        [m.sealed_code for m in messages],
        [m.reference for m in messages],
        [m.metadata for m in messages],
        [m.expires_at for m in messages],
        [m.charge for m in messages],
    ]


# Takes the mobile's slot for this use type if its last message is old enough; the
# row lock makes racing sends to one mobile wait for each other, so one passes.
_MOBILE_INTERVAL = """
INSERT INTO mobile_send_last AS l (account_id, mobile, use_type, last_sent_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (account_id, mobile, use_type) DO UPDATE SET last_sent_at = now()
    WHERE l.last_sent_at <= now() - make_interval(secs => $4)
RETURNING 0::float8 AS wait
"""

_MOBILE_WAIT = """
SELECT extract(epoch FROM last_sent_at + make_interval(secs => $4) - now())::float8
FROM mobile_send_last WHERE account_id = $1 AND mobile = $2 AND use_type = $3
"""


async def pass_mobile_interval(conn: Conn, message: NewMessage, interval: float) -> None:
    """Raises ResourceExhausted if the mobile had a message of this use type from this
    account less than ``interval`` seconds ago (the caller's transaction rolls back)."""
    args = (message.account_id, message.to_number, int(message.use_type), interval)
    if await conn.fetchval(_MOBILE_INTERVAL, *args) is None:
        wait = await conn.fetchval(_MOBILE_WAIT, *args)
        raise ResourceExhausted(
            "a message of this use type went to this mobile moments ago; wait before another",
            retry_after=min(max(float(wait or interval), 0.001), interval),
            reason="MOBILE_INTERVAL",
            quota_subject=f"mobile:{message.to_number}",
            quota_description=f"one {message.use_type.name.lower()} message every {interval:g} s",
        )


async def insert_messages(conn: Conn, messages: Sequence[NewMessage]) -> None:
    """Inserts PENDING messages and their first events in one statement (one round
    trip; atomic on its own, or part of the caller's transaction)."""
    await conn.execute(_INSERT_WITH_EVENTS, *message_columns(messages))


class PgMessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._groups: GroupCommit[NewMessage, None] = GroupCommit(
            self._write_group,
            name="message-group-commit",
            max_group=MAX_GROUP,
            concurrent=MAX_CONCURRENT_GROUPS,
        )

    async def insert(self, message: NewMessage) -> None:
        await self._groups.submit(message)

    async def _write_group(self, group: list[NewMessage]) -> list[BaseException | None]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(_INSERT_UNSUPPRESSED, *message_columns(group))
        stored = {r["message_id"] for r in rows}
        return [None if m.id in stored else recipient_suppressed(m.to_number) for m in group]

    async def insert_idempotent(
        self,
        message: NewMessage,
        key: IdempotencyKey | None,
        mobile_interval: float = 0.0,
        caps: DailyCaps | None = None,
    ) -> str | None:
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                if key is not None:
                    earlier = await claim_key(conn, key, message.id)
                    if earlier is not None:
                        return earlier
                if mobile_interval > 0:
                    await pass_mobile_interval(conn, message, mobile_interval)
                if await suppressed(conn, message.account_id, message.to_number, message.use_type):
                    raise recipient_suppressed(message.to_number)
                if caps is not None and caps.active:
                    await take_daily(conn, message.account_id, message.to_number, caps)
                await insert_messages(conn, [message])
                # After the insert (the account's event-log lane, then the account row).
                await charge_balance(conn, message.account_id, message.charge)
        return None

    async def purge_mobile_intervals(self, older_than: timedelta) -> None:
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "DELETE FROM mobile_send_last WHERE last_sent_at < now() - $1::interval",
                older_than,
            )

    async def purge_past_days(self) -> None:
        """Drops the daily caps' counts of days before today (UTC)."""
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "DELETE FROM daily_sends WHERE day < (now() AT TIME ZONE 'UTC')::date"
            )

    async def get_states(self, account_id: int, ids: Sequence[str]) -> list[MessageState]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                "SELECT m.id, m.to_number, m.status, m.error_code, m.provider, m.updated_at, "
                f"m.segments, {REFERENCE_COLUMNS} FROM {WITH_BATCH} "
                "WHERE m.account_id = $1 AND m.id = ANY($2::text[])",
                account_id,
                list(ids),
            )
        return [
            MessageState(
                id=r["id"],
                to_number=r["to_number"],
                status=MessageStatus(r["status"]),
                error_code=r["error_code"],
                provider=r["provider"],
                updated_at=r["updated_at"],
                segments=r["segments"],
                reference=r["reference"],
                metadata=r["metadata"] or {},
            )
            for r in rows
        ]
