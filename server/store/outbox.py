"""The dispatcher's side of the outbox: claiming due messages under a lease and
recording what happened to them (each status change with its event). PgOutbox
implements the domain's Outbox, ReceiptOutbox and PolledOutbox ports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import asyncpg

from server.domain.errors import Unavailable
from server.domain.models import (
    BatchStatus,
    Channel,
    MessageStatus,
    OutboundMessage,
    Priority,
    UseType,
)
from server.domain.ports import ClaimedMessage, ProviderReceipt, Transition
from server.domain.suppression import SuppressionReason
from server.store.account_events import EVENT_TYPE_BATCH_STATUS, lock_when_any
from server.store.events import lanes_cte, lock_lanes, lock_message_lanes
from server.store.pool import Conn, retry_on_conflict, unavailable_on_connection_errors
from server.store.states import NOT_DELIVERED, REACHED, WAITING
from server.store.suppressions import matches, suppress_from_receipts
from server.store.templates import BatchContents, TemplateLayout, TemplateLayouts

log = logging.getLogger(__name__)


def _urgent(due_by: str) -> str:
    """The codes and single sends due by then (by priority, then due time), locked."""
    return f"""
urgent AS (
    SELECT ctid, id FROM messages
    WHERE status IN ({WAITING}) AND priority < {Priority.BATCH:d} AND not_before <= {due_by}
      AND (claimed_until IS NULL OR claimed_until < now())
    ORDER BY priority, not_before
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)"""


# Leases the rows of ``due`` (the claim's last CTE) and returns them.
_LEASE = f"""UPDATE messages m
SET claimed_until = now() + make_interval(secs => $2), attempts = m.attempts + 1,
    -- A message whose worker dies comes back when its lease runs out; a microsecond
    -- earlier than the rows it was due with, it is taken over before them (rows that
    -- tie on not_before come in storage order, and this update moves it to the end).
    not_before = m.not_before - interval '1 microsecond'
-- By row address (a TID scan; the rows are locked, so it cannot move): a join on id
-- would be planned from the CTEs' unknowable sizes and stale statistics.
WHERE m.ctid = ANY(ARRAY(SELECT ctid FROM due))
RETURNING m.id, m.account_id, m.to_number, m.body, m.use_type, m.attempts, m.template_id,
          m.priority, m.template_code, m.template_data, m.created_at, m.channel,
          m.sealed_code, m.batch_id, m.expires_at,
          -- Suppressed since it was accepted: the worker ends it REJECTED (SUPPRESSED).
          EXISTS (SELECT FROM suppressions s
                  WHERE {matches("m.account_id", "m.to_number", "m.use_type")}) AS suppressed
"""

# Verification codes and single sends first (by priority, then due time; those due for
# less than $3 seconds are left to the urgent workers: dispatch/worker.py); the room
# left goes to batch messages, shared evenly between the accounts that have some due,
# so an early large campaign cannot hold back another account's; room an account
# leaves unused goes to the others. ``bulk_accounts``
# walks the accounts with batch rows one index probe each (a loose index scan).
_CLAIM = f"""
WITH RECURSIVE {_urgent("now() - make_interval(secs => $3)")},
bulk_accounts AS (
    (SELECT account_id FROM messages WHERE status IN ({WAITING}) AND priority = {Priority.BATCH:d}
     ORDER BY account_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.account_id FROM messages m
            WHERE m.status IN ({WAITING}) AND m.priority = {Priority.BATCH:d}
              AND m.account_id > a.account_id
            ORDER BY m.account_id LIMIT 1)
    FROM bulk_accounts a WHERE a.account_id IS NOT NULL
),
senders AS (
    -- A correlated probe (LIMIT 1), never a semi join that would read every due row.
    SELECT a.account_id FROM bulk_accounts a
    WHERE a.account_id IS NOT NULL AND (
        SELECT true FROM messages m
        WHERE m.account_id = a.account_id
          AND m.status IN ({WAITING}) AND m.priority = {Priority.BATCH:d}
          AND m.not_before <= now() AND (m.claimed_until IS NULL OR m.claimed_until < now())
        LIMIT 1)
),
share AS (
    SELECT ceil(($1 - (SELECT count(*) FROM urgent))::numeric
                / greatest((SELECT count(*) FROM senders), 1))::int AS n
),
bulk AS (
    SELECT d.ctid, d.id FROM senders s CROSS JOIN LATERAL (
        SELECT m.ctid, m.id FROM messages m
        WHERE m.account_id = s.account_id
          AND m.status IN ({WAITING}) AND m.priority = {Priority.BATCH:d}
          AND m.not_before <= now() AND (m.claimed_until IS NULL OR m.claimed_until < now())
        ORDER BY m.not_before
        LIMIT (SELECT n FROM share)
        FOR UPDATE SKIP LOCKED
    ) d
),
fill AS (
    -- Room an account could not use (it had fewer due rows than its share).
    SELECT ctid FROM messages
    WHERE status IN ({WAITING}) AND priority = {Priority.BATCH:d} AND not_before <= now()
      AND (claimed_until IS NULL OR claimed_until < now())
      AND id NOT IN (SELECT id FROM bulk)
    ORDER BY not_before
    LIMIT greatest($1 - (SELECT count(*) FROM urgent) - (SELECT count(*) FROM bulk), 0)
    FOR UPDATE SKIP LOCKED
),
due AS (SELECT ctid FROM urgent UNION ALL SELECT ctid FROM bulk UNION ALL SELECT ctid FROM fill)
{_LEASE}"""

# Codes and single sends only (the urgent worker's claim): never a batch row, so a
# code is not held up behind a campaign's group (dispatch/worker.py).
_CLAIM_URGENT = f"""
WITH {_urgent("now()")},
due AS (SELECT ctid FROM urgent)
{_LEASE}"""

# The final statuses of a message no provider took: its charge goes back.
REFUNDED = ", ".join(
    str(int(s)) for s in (MessageStatus.FAILED, MessageStatus.REJECTED, MessageStatus.CANCELLED)
)

# Applies status changes forward only: a final status is never changed, and a
# status never moves back (DELIVERED is never followed by SENT). QUEUED -> QUEUED
# (another retry) updates the row without a new event.
#
# The lanes of the messages' accounts are locked (store/events.py) before any row, in
# the statement itself: a caller in a transaction may have taken them already (the
# locks are re-entrant), so the one lock order holds and no event is written outside
# its lane. Standing alone (autocommit), the commit is in the same round trip, so the
# lanes are held for one statement rather than across a transaction's round trips.
_TRANSITION = f"""
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::smallint[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::bool[])
         AS u(id, status, error_code, provider, provider_message_id, not_before, attempted)
),
{lanes_cte("SELECT m.account_id FROM messages m JOIN u ON u.id = m.id")},
prev AS (
    SELECT m.id, m.status, m.charged FROM messages m JOIN u ON u.id = m.id
    CROSS JOIN event_log_lock
    WHERE m.status < {MessageStatus.DELIVERED:d}  -- DELIVERED and after are final
    FOR UPDATE OF m
),
upd AS (
    UPDATE messages m SET
        status = u.status,
        error_code = u.error_code,
        provider = coalesce(nullif(u.provider, ''), m.provider),
        provider_message_id = coalesce(u.provider_message_id, m.provider_message_id),
        not_before = coalesce(u.not_before, m.not_before),
        attempts = CASE WHEN u.attempted THEN m.attempts ELSE greatest(m.attempts - 1, 0) END,
        -- Once a provider has the message, its sealed verification code is erased.
        sealed_code = CASE WHEN u.status >= {MessageStatus.SENT:d} THEN NULL ELSE m.sealed_code END,
        sent_at = CASE WHEN u.status >= {MessageStatus.SENT:d} AND m.sent_at IS NULL
                            AND u.provider_message_id IS NOT NULL
                       THEN now() ELSE m.sent_at END,
        claimed_until = NULL,
        updated_at = now(),
        -- A prepaid message that ends before a provider took it is refunded (below).
        charged = CASE WHEN u.status IN ({REFUNDED}) AND prev.status < {MessageStatus.SENT:d}
                       THEN 0 ELSE m.charged END
    FROM u JOIN prev ON prev.id = u.id
    WHERE m.id = u.id AND u.status >= prev.status
    RETURNING m.id, m.account_id, m.batch_id, m.to_number, m.status, m.error_code,
              m.updated_at, m.provider, prev.status AS old_status,
              prev.charged - m.charged AS refund
),
refunds AS (
    UPDATE accounts a SET balance = a.balance + r.amount
    FROM (SELECT account_id, sum(refund) AS amount FROM upd WHERE refund > 0
          GROUP BY account_id) r
    WHERE a.id = r.account_id AND a.balance IS NOT NULL
),
batch_counts AS (
    -- Batch counts move with their messages, in the same statement.
    UPDATE batches b SET
        sent = b.sent + c.sent,
        delivered = b.delivered + c.delivered,
        failed = b.failed + c.failed,
        cancelled = b.cancelled + c.cancelled,
        finished = b.finished + c.finished,
        status = CASE
            WHEN b.status = {BatchStatus.CANCELLED:d} THEN {BatchStatus.CANCELLED:d}
            WHEN b.finished + c.finished >= b.total
                THEN CASE WHEN b.sent + c.sent > 0
                          THEN {BatchStatus.SUCCEEDED:d} ELSE {BatchStatus.FAILED:d} END
            ELSE {BatchStatus.EXECUTING:d}
        END,
        updated_at = now()
    FROM batches o, (
        SELECT batch_id,
               count(*) FILTER (WHERE old_status < {MessageStatus.SENT:d}
                                  AND status IN ({REACHED})) AS sent,
               count(*) FILTER (WHERE status = {MessageStatus.DELIVERED:d}) AS delivered,
               count(*) FILTER (WHERE status IN ({NOT_DELIVERED})) AS failed,
               count(*) FILTER (WHERE status = {MessageStatus.CANCELLED:d}) AS cancelled,
               count(*) FILTER (WHERE status >= {MessageStatus.DELIVERED:d}
                                AND old_status < {MessageStatus.DELIVERED:d}) AS finished
        FROM upd WHERE batch_id IS NOT NULL AND status <> old_status
        GROUP BY batch_id
    ) c
    -- o: the row as it was (every writer of batches holds its account's lane, so
    -- nothing changed it meanwhile).
    WHERE b.id = c.batch_id AND o.id = c.batch_id
    RETURNING b.id, b.account_id, b.status, o.status AS old_status, b.total, b.sent,
              b.delivered, b.failed, b.updated_at
),
{lock_when_any("batch_counts", "status <> old_status")},
batch_events AS (
    -- A batch whose status changed gets its event in the same statement.
    INSERT INTO account_events (event_id, account_id, event_type, subject_id, status,
                                total, sent, delivered, failed, occurred_at)
    SELECT nextval('message_event_ids'), c.account_id, {EVENT_TYPE_BATCH_STATUS}, c.id,
           c.status, c.total, c.sent, c.delivered, c.failed, c.updated_at
    FROM batch_counts c CROSS JOIN account_events_lock
    WHERE c.status <> c.old_status
),
events AS (
    INSERT INTO message_events (event_id, message_id, account_id, batch_id, to_number, status,
                                error_code, occurred_at)
    SELECT nextval('message_event_ids'), id, account_id, batch_id, to_number, status,
           error_code, updated_at
    FROM upd WHERE status <> old_status
)
-- The changes recorded (one event each), for the metrics.
SELECT status, coalesce(provider, '') AS provider, count(*) AS n
FROM upd WHERE status <> old_status
GROUP BY status, provider
"""


# Whether receipts are parked for any of these messages (read without the lock).
_PARKED_FOR = """
SELECT EXISTS (
    SELECT 1 FROM early_receipts e JOIN messages m
      ON m.provider = e.provider AND m.provider_message_id = e.provider_message_id
    WHERE m.id = ANY($1::text[])
)
"""


# Receipts that name only the provider's id (webhooks): matched to messages, or
# parked in early_receipts when the send they report on is not recorded yet.
_MATCH_PROVIDER_RECEIPTS = """
WITH r AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[], $5::smallint[])
         AS r(provider, provider_message_id, status, error_code, suppress)
),
parked AS (
    INSERT INTO early_receipts (provider, provider_message_id, status, error_code)
    SELECT r.provider, r.provider_message_id, r.status, r.error_code FROM r
    WHERE NOT EXISTS (
        SELECT 1 FROM messages m
        WHERE m.provider = r.provider AND m.provider_message_id = r.provider_message_id
    )
    ON CONFLICT (provider, provider_message_id) DO UPDATE
        SET status = greatest(early_receipts.status, EXCLUDED.status),
            error_code = EXCLUDED.error_code
)
SELECT m.id, r.status, r.error_code, r.provider, r.suppress
FROM r JOIN messages m
  ON m.provider = r.provider AND m.provider_message_id = r.provider_message_id
"""

# Parked receipts whose send is now recorded (taken out of the table as they match).
_UNPARK = """
DELETE FROM early_receipts e USING messages m
WHERE m.provider = e.provider AND m.provider_message_id = e.provider_message_id
  AND ($1::text[] IS NULL OR m.id = ANY($1::text[]))
RETURNING m.id, e.status, e.error_code, e.provider
"""

_DUE_FOR_POLL = f"""
WITH due AS (
    SELECT id FROM messages
    WHERE status = {MessageStatus.SENT:d} AND provider = $1 AND provider_message_id IS NOT NULL
      AND sent_at < now() - make_interval(secs => $2)
      AND (polled_at IS NULL OR polled_at < now() - make_interval(secs => $3))
    ORDER BY polled_at NULLS FIRST
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE messages m SET polled_at = now() FROM due WHERE m.id = due.id
RETURNING m.id, m.provider_message_id
"""


# SENT messages whose provider has not reported on them for too long (read through
# the partial index of SENT rows, messages_sent_by_provider).
_UNRECEIPTED = f"""
SELECT id, provider FROM messages
WHERE status = {MessageStatus.SENT:d}
  AND coalesce(sent_at, updated_at) < now() - make_interval(secs => $1)
ORDER BY coalesce(sent_at, updated_at)
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# The accounts of the messages these statements will change, read without locking
# rows, so that their lanes are taken first (store/events.py).
_RECEIPTS_ACCOUNTS = """
SELECT m.account_id FROM unnest($1::text[], $2::text[]) AS r(provider, provider_message_id)
JOIN messages m ON m.provider = r.provider AND m.provider_message_id = r.provider_message_id
"""
_PARKED_ACCOUNTS = """
SELECT m.account_id FROM early_receipts e JOIN messages m
  ON m.provider = e.provider AND m.provider_message_id = e.provider_message_id
"""
_UNRECEIPTED_ACCOUNTS = _UNRECEIPTED.replace(
    "SELECT id, provider FROM", "SELECT account_id FROM", 1
).replace("FOR UPDATE SKIP LOCKED", "", 1)

NO_RECEIPT = "NO_RECEIPT"


__all__ = [
    "ChangeSink",
    "ClaimedMessage",
    "PgOutbox",
    "ProviderReceipt",
    "StatusChanges",
    "Transition",
    "apply_transitions",
]

# Status changes recorded, as (new status, provider, how many).
StatusChanges = list[tuple[MessageStatus, str, int]]
ChangeSink = Callable[[StatusChanges], None]


def _ignore(changes: StatusChanges) -> None:
    pass


# Read through the partial index of due rows (messages_due).
_BACKLOG = f"SELECT status, count(*) AS n FROM messages WHERE status IN ({WAITING}) GROUP BY status"


class PgOutbox:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        on_changes: ChangeSink | None = None,
    ) -> None:
        self._pool = pool
        # Template texts and variable order, for the messages sent by template.
        self._layouts = TemplateLayouts(pool)
        self._contents = BatchContents(pool)
        # Told of the status changes each transaction recorded, once it has committed.
        self._on_changes = on_changes or _ignore

    async def claim_due(
        self,
        limit: int,
        lease_seconds: float,
        *,
        urgent_only: bool = False,
        urgent_grace: float = 0.0,
    ) -> list[ClaimedMessage]:
        """Leases due messages (see _CLAIM); ``urgent_only``: codes and single sends;
        ``urgent_grace``: codes and single sends due for less are left out."""
        with unavailable_on_connection_errors():
            if urgent_only:
                # One statement (its own transaction): a single round trip.
                rows = await self._pool.fetch(_CLAIM_URGENT, limit, lease_seconds)
            else:
                async with self._pool.acquire() as conn, conn.transaction():
                    # Planned for the outbox as it is now: a plan cached while the table
                    # was small (before a large batch landed) would read all of it.
                    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                    rows = await conn.fetch(_CLAIM, limit, lease_seconds, urgent_grace)
        layouts = await self._layouts.get_many(
            {r["template_id"] for r in rows if r["template_id"] is not None}
        )
        contents = await self._contents.get_many(
            {r["batch_id"] for r in rows if r["batch_id"] is not None and r["template_data"]}
        )
        return sorted((self._claimed(r, layouts, contents) for r in rows), key=lambda c: c.priority)

    def _claimed(
        self,
        r: asyncpg.Record,
        layouts: dict[int, TemplateLayout],
        contents: dict[str, str],
    ) -> ClaimedMessage:
        sealed = r["sealed_code"]
        layout = layouts.get(r["template_id"]) if r["template_id"] is not None else None
        content = layout.content if layout is not None else contents.get(r["batch_id"] or "")
        return ClaimedMessage(
            message=OutboundMessage(
                id=r["id"],
                account_id=r["account_id"],
                to_number=r["to_number"],
                body=r["body"],
                use_type=UseType(r["use_type"]),
                attempts=r["attempts"],
                template_id=r["template_id"],
                template_code=r["template_code"],
                data=dict(r["template_data"] or {}),
                channel=Channel(r["channel"]),
                variables=layout.variables if layout is not None else (),
                # The text the values fill (a template's, or a campaign's own).
                template_content=content,
            ),
            priority=r["priority"],
            created_at=r["created_at"],
            # Opened by the domain (outbox_codes), which holds the key; until then
            # the message cannot be sent.
            code_unavailable=sealed is not None,
            sealed_code=bytes(sealed) if sealed is not None else None,
            expires_at=r["expires_at"],
            suppressed=r["suppressed"],
        )

    async def apply(self, transitions: Sequence[Transition]) -> None:
        """Records status changes in one transaction, each with its event, in order."""
        if not transitions:
            return
        sent_ids = [t.message_id for t in transitions if t.provider_message_id]

        rounds = _rounds(transitions)
        if len(rounds) > 1 or any(t.suppress for t in transitions):
            # Several rounds, or receipts that suppress their numbers: one transaction.
            await self._apply_in_transaction(transitions, sent_ids)
            return

        async def record() -> StatusChanges:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(_TRANSITION, *_transition_columns(rounds[0]))
            return _changes(rows)

        with unavailable_on_connection_errors():
            changes = await retry_on_conflict(record, what="recording status changes")
        self._on_changes(changes)
        if not sent_ids:
            return
        # Receipts that came before the send was recorded (rare): applied now, in a
        # transaction of their own. The changes above are recorded whatever happens
        # here: receipts left parked are applied by the poller's sweep (unpark_matched).
        try:
            if await self._pool.fetchval(_PARKED_FOR, sent_ids):
                await self._apply_in_transaction([], sent_ids)
        except (Unavailable, asyncpg.PostgresError, OSError) as exc:
            log.warning("applying parked receipts failed (%s); the sweep will", type(exc).__name__)

    async def _apply_in_transaction(
        self, transitions: Sequence[Transition], sent_ids: list[str]
    ) -> None:
        async def record() -> StatusChanges:
            async with self._pool.acquire() as conn, conn.transaction():
                await lock_message_lanes(conn, [t.message_id for t in transitions] + sent_ids)
                changes = await apply_transitions(conn, transitions)
                await _suppress(conn, transitions)
                if sent_ids:
                    rows = await conn.fetch(_UNPARK, sent_ids)
                    changes += await apply_transitions(conn, [_from_row(r) for r in rows])
            return changes

        with unavailable_on_connection_errors():
            changes = await retry_on_conflict(record, what="recording status changes")
        self._on_changes(changes)

    async def apply_provider_receipts(self, receipts: Sequence[ProviderReceipt]) -> int:
        """Records receipts known only by provider id; parks those not matched yet.

        Returns how many matched a message."""
        if not receipts:
            return 0
        providers = [r.provider for r in receipts]
        provider_ids = [r.provider_message_id for r in receipts]

        async def record() -> tuple[StatusChanges, int]:
            async with self._pool.acquire() as conn, conn.transaction():
                await lock_lanes(conn, _RECEIPTS_ACCOUNTS, providers, provider_ids)
                rows = await conn.fetch(
                    _MATCH_PROVIDER_RECEIPTS,
                    providers,
                    provider_ids,
                    [int(r.status) for r in receipts],
                    [r.error_code for r in receipts],
                    [r.suppress for r in receipts],
                )
                matched = [_from_row(r) for r in rows]
                changes = await apply_transitions(conn, matched)
                await _suppress(conn, matched)
            return changes, len(rows)

        with unavailable_on_connection_errors():
            changes, matched = await retry_on_conflict(record, what="recording receipts")
        self._on_changes(changes)
        return matched

    async def unpark_matched(self) -> int:
        """Applies parked receipts whose send has been recorded meanwhile (a sweep)."""

        async def record() -> tuple[StatusChanges, int]:
            async with self._pool.acquire() as conn, conn.transaction():
                await lock_lanes(conn, _PARKED_ACCOUNTS)
                rows = await conn.fetch(_UNPARK, None)
                changes = await apply_transitions(conn, [_from_row(r) for r in rows])
                await conn.execute(
                    "DELETE FROM early_receipts WHERE received_at < now() - interval '1 day'"
                )
            return changes, len(rows)

        with unavailable_on_connection_errors():
            changes, matched = await retry_on_conflict(record, what="applying parked receipts")
        self._on_changes(changes)
        return matched

    async def expire_unreceipted(self, deadline_seconds: float, limit: int) -> int:
        """Ends SENT messages with no receipt for ``deadline_seconds`` as UNDELIVERED
        with NO_RECEIPT (a final state: a receipt arriving later changes nothing).
        Returns how many."""

        async def expire() -> tuple[StatusChanges, int]:
            async with self._pool.acquire() as conn, conn.transaction():
                # The lanes of the messages it will most likely take, before their rows.
                await lock_lanes(conn, _UNRECEIPTED_ACCOUNTS, deadline_seconds, limit)
                rows = await conn.fetch(_UNRECEIPTED, deadline_seconds, limit)
                changes = await apply_transitions(
                    conn,
                    [
                        Transition(
                            r["id"],
                            MessageStatus.UNDELIVERED,
                            error_code=NO_RECEIPT,
                            provider=r["provider"] or "",
                        )
                        for r in rows
                    ],
                )
            return changes, len(rows)

        with unavailable_on_connection_errors():
            changes, expired = await retry_on_conflict(expire, what="ending unreceipted sends")
        self._on_changes(changes)
        return expired

    async def due_for_poll(
        self, provider: str, min_age: float, repoll_after: float, limit: int
    ) -> list[tuple[str, str]]:
        """SENT messages of a provider to ask about, as (message id, provider id)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(_DUE_FOR_POLL, provider, min_age, repoll_after, limit)
        return [(r["id"], r["provider_message_id"]) for r in rows]

    async def backlog(self) -> dict[MessageStatus, int]:
        """Messages waiting to be sent (PENDING, QUEUED), by status, over all replicas."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(_BACKLOG)
        return {MessageStatus(r["status"]): r["n"] for r in rows}

    async def release(self, message_ids: Sequence[str]) -> None:
        """Gives claimed messages back (on shutdown) so another worker can take them now."""
        if not message_ids:
            return
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "UPDATE messages SET claimed_until = NULL, attempts = greatest(attempts - 1, 0) "
                f"WHERE id = ANY($1::text[]) AND status < {MessageStatus.SENT:d}",
                list(message_ids),
            )


def _from_row(row: asyncpg.Record) -> Transition:
    return Transition(
        row["id"],
        MessageStatus(row["status"]),
        error_code=row["error_code"],
        provider=row["provider"],
        suppress=row.get("suppress") or 0,
    )


async def _suppress(conn: Conn, transitions: Sequence[Transition]) -> None:
    """Suppresses the numbers receipts said must not get more (in their transaction)."""
    stops = [t for t in transitions if t.suppress]
    if stops:
        await suppress_from_receipts(
            conn, [t.message_id for t in stops], [SuppressionReason(t.suppress) for t in stops]
        )


async def apply_transitions(conn: Conn, transitions: Sequence[Transition]) -> StatusChanges:
    """Records status changes and their events (each statement takes the lanes of its
    messages' accounts; a caller that changes rows first takes them before:
    store/events.py). Returns the changes made (a transition that
    would move a status back, or repeats it, is none)."""
    changes: StatusChanges = []
    for group in _rounds(transitions):
        changes += _changes(await conn.fetch(_TRANSITION, *_transition_columns(group)))
    return changes


def _transition_columns(group: Sequence[Transition]) -> list[list[object]]:
    return [
        [t.message_id for t in group],
        [int(t.status) for t in group],
        [t.error_code for t in group],
        [t.provider for t in group],
        [t.provider_message_id for t in group],
        [t.not_before for t in group],
        [t.attempted for t in group],
    ]


def _changes(rows: Sequence[asyncpg.Record]) -> StatusChanges:
    return [(MessageStatus(r["status"]), r["provider"], r["n"]) for r in rows]


def _rounds(transitions: Sequence[Transition]) -> list[list[Transition]]:
    """Splits transitions so no message appears twice in one statement, keeping order."""
    rounds: list[list[Transition]] = []
    seen: list[set[str]] = []
    for t in transitions:
        last = max((i for i, ids in enumerate(seen) if t.message_id in ids), default=-1)
        target = last + 1
        if target == len(rounds):
            rounds.append([])
            seen.append(set())
        rounds[target].append(t)
        seen[target].add(t.message_id)
    return rounds
