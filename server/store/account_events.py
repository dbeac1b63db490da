"""account_events: the log of batch status changes, verification outcomes, inbound
messages and their keywords' suppression changes that webhooks deliver (message
status changes have their own log, store/events.py).

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

from server.domain.account_events import (
    BatchStatusChange,
    InboundReceived,
    KeywordSuppression,
    VerificationOutcome,
)
from server.domain.inbound import InboundMessage, Keyword
from server.domain.models import BatchStatus, VerificationState
from server.store.pool import Conn

ACCOUNT_EVENTS_LOCK_KEY = 0x736D_7367_7703
# As sms.v1.EventType numbers them.
EVENT_TYPE_BATCH_STATUS = 2
EVENT_TYPE_VERIFICATION = 3
EVENT_TYPE_INBOUND_MESSAGE = 4
EVENT_TYPE_SUPPRESSION = 5
ACCOUNT_EVENT_TYPES = (
    EVENT_TYPE_BATCH_STATUS,
    EVENT_TYPE_VERIFICATION,
    EVENT_TYPE_INBOUND_MESSAGE,
    EVENT_TYPE_SUPPRESSION,
)

AccountEvent = BatchStatusChange | VerificationOutcome | InboundReceived | KeywordSuppression


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
       v.mobile, v.message_id, v.scene,
       i.id AS inbound_id, i.from_number, i.to_number, i.body, i.provider, i.keyword,
       i.received_at, i.reply_to_message_id
FROM account_events a
LEFT JOIN batches b ON a.event_type = {EVENT_TYPE_BATCH_STATUS} AND b.id = a.subject_id
LEFT JOIN verifications v ON a.event_type = {EVENT_TYPE_VERIFICATION} AND v.id = a.subject_id
LEFT JOIN messages m ON m.id = v.message_id
LEFT JOIN inbound_messages i
    ON a.event_type IN ({EVENT_TYPE_INBOUND_MESSAGE}, {EVENT_TYPE_SUPPRESSION})
    AND i.id = a.subject_id
WHERE a.event_id = ANY($1::bigint[])
"""


def _event(row: asyncpg.Record) -> AccountEvent | None:
    if row["event_type"] == EVENT_TYPE_INBOUND_MESSAGE:
        if row["inbound_id"] is None:
            return None
        return InboundReceived(
            event_id=row["event_id"],
            account_id=row["account_id"],
            message=InboundMessage(
                id=row["inbound_id"],
                event_id=row["event_id"],
                account_id=row["account_id"],
                from_number=row["from_number"],
                to_number=row["to_number"],
                text=row["body"],
                provider=row["provider"],
                keyword=Keyword(row["keyword"]),
                received_at=row["received_at"],
                reply_to_message_id=row["reply_to_message_id"],
            ),
            occurred_at=row["occurred_at"],
        )
    if row["event_type"] == EVENT_TYPE_SUPPRESSION:
        return KeywordSuppression(
            event_id=row["event_id"],
            account_id=row["account_id"],
            mobile=row["from_number"] or "",
            suppressed=bool(row["status"]),
            inbound_message_id=row["subject_id"],
            occurred_at=row["occurred_at"],
        )
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
    found = {r["event_id"]: _event(r) for r in rows}
    return {k: v for k, v in found.items() if v is not None}
