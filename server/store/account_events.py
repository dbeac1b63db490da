"""account_events: the log of batch status changes and verification outcomes that
webhooks deliver (message status changes have their own log, store/events.py).

Each row is inserted by the statement or transaction that makes the change it
records, so an event exists exactly when its change committed. Writers hold
``ACCOUNT_EVENTS_LOCK_KEY`` (a transaction advisory lock) from before they draw the
event's id until commit, so ids follow commit order and the webhook cursor
(webhooks.account_event_cursor) never skips one. The lock is separate from the message
log's so that a verification check never waits for a large batch's message events.
A transaction that holds both takes the message log's first, this one last (a batch's
status changes with its messages'), and nothing takes them the other way round, so
the two never deadlock.

Ids are drawn from message_event_ids: one event id names one event of either log.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from server.domain.account_events import BatchStatusChange, VerificationOutcome
from server.domain.models import BatchStatus, VerificationState
from server.store.pool import Conn

ACCOUNT_EVENTS_LOCK_KEY = 0x736D_7367_7703
# As sms.v1.EventType numbers them.
EVENT_TYPE_BATCH_STATUS = 2
EVENT_TYPE_VERIFICATION = 3
ACCOUNT_EVENT_TYPES = (EVENT_TYPE_BATCH_STATUS, EVENT_TYPE_VERIFICATION)

AccountEvent = BatchStatusChange | VerificationOutcome


def lock_when_any(cte: str, condition: str = "true") -> str:
    """A CTE (``account_events_lock``) that takes the lock only if ``cte`` has a row
    meeting ``condition``. A statement that draws its event ids in rows joined with it
    draws them after the lock is held; a statement with nothing to record takes no
    lock."""
    return f"""
account_events_lock AS (
    SELECT pg_advisory_xact_lock({ACCOUNT_EVENTS_LOCK_KEY})
    FROM (SELECT 1 FROM {cte} WHERE {condition} LIMIT 1) AS any_event
)"""


# The batch's status and counts as they are now, as an event (the caller's
# transaction changed them).
_BATCH_EVENT = f"""
INSERT INTO account_events (event_id, account_id, event_type, subject_id, status,
                            total, sent, delivered, failed, occurred_at)
SELECT nextval('message_event_ids'), account_id, {EVENT_TYPE_BATCH_STATUS}, id, status,
       total, sent, delivered, failed, updated_at
FROM batches WHERE id = $1
"""


async def record_batch_status(conn: Conn, batch_id: str) -> None:
    """Records the batch's current status as an event, in the caller's transaction
    (which changed it)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ACCOUNT_EVENTS_LOCK_KEY)
    await conn.execute(_BATCH_EVENT, batch_id)


# The events with what the payloads carry besides the row: the caller's reference and
# metadata (a batch's own; a verification's are its code message's) and the
# verification's mobile, message and scene (never its code).
_DETAILS = f"""
SELECT a.event_id, a.account_id, a.event_type, a.subject_id, a.status,
       a.total, a.sent, a.delivered, a.failed, a.occurred_at,
       coalesce(b.reference, m.reference, '') AS reference,
       CASE WHEN a.event_type = {EVENT_TYPE_BATCH_STATUS} THEN b.metadata ELSE m.metadata END
           AS metadata,
       v.mobile, v.message_id, v.scene
FROM account_events a
LEFT JOIN batches b ON a.event_type = {EVENT_TYPE_BATCH_STATUS} AND b.id = a.subject_id
LEFT JOIN verifications v ON a.event_type = {EVENT_TYPE_VERIFICATION} AND v.id = a.subject_id
LEFT JOIN messages m ON m.id = v.message_id
WHERE a.event_id = ANY($1::bigint[])
"""


def _event(row: asyncpg.Record) -> AccountEvent:
    if row["event_type"] == EVENT_TYPE_BATCH_STATUS:
        return BatchStatusChange(
            event_id=row["event_id"],
            batch_id=row["subject_id"],
            account_id=row["account_id"],
            status=BatchStatus(row["status"]),
            total=row["total"],
            sent=row["sent"],
            delivered=row["delivered"],
            failed=row["failed"],
            occurred_at=row["occurred_at"],
            reference=row["reference"],
            metadata=row["metadata"] or {},
        )
    return VerificationOutcome(
        event_id=row["event_id"],
        verify_id=row["subject_id"],
        account_id=row["account_id"],
        state=VerificationState(row["status"]),
        mobile=row["mobile"] or "",
        message_id=row["message_id"] or "",
        scene=row["scene"] or "",
        occurred_at=row["occurred_at"],
        reference=row["reference"],
        metadata=row["metadata"] or {},
    )


async def account_events(conn: Conn, event_ids: Sequence[int]) -> dict[int, AccountEvent]:
    """The events with these ids, by id."""
    if not event_ids:
        return {}
    rows = await conn.fetch(_DETAILS, list(event_ids))
    return {r["event_id"]: _event(r) for r in rows}
