"""Webhook endpoints and their deliveries.

Deliveries are materialised from two logs: message_events (message status changes)
and account_events (batch status changes, verification outcomes). Each endpoint keeps
a cursor per log (the last event id it has seen there); ``materialise`` turns the
events after them, of the types it subscribed to, into PENDING deliveries, under
``FOR UPDATE SKIP LOCKED`` on the endpoint row so that replicas never work on one
endpoint's cursors at once. ``claim_due`` leases due deliveries the same way; a
delivery whose lease ran out (its replica died) is due again, so delivery is at least
once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from server.domain.models import StatusEvent
from server.store.account_events import ACCOUNT_EVENT_TYPES, AccountEvent, account_events
from server.store.events import status_event
from server.store.pool import Conn, unavailable_on_connection_errors

# Delivery states, as sms.v1.DeliveryState numbers them (named in the SQL below).
PENDING, SUCCEEDED, FAILED = 1, 2, 3
EVENT_TYPE_MESSAGE_STATUS = 1

_COLUMNS = "id, account_id, url, event_types, description, disabled, created_at"


@dataclass(frozen=True)
class WebhookRow:
    id: int
    account_id: int
    url: str
    event_types: tuple[int, ...]
    description: str
    disabled: bool
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    webhook_id: int
    event_id: int
    event_type: int
    attempts: int
    last_http_status: int
    state: int
    next_attempt_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class DueDelivery:
    delivery: DeliveryRow
    url: str
    secret_sealed: bytes
    event: StatusEvent | AccountEvent


def _webhook(row: asyncpg.Record) -> WebhookRow:
    return WebhookRow(
        id=row["id"],
        account_id=row["account_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        description=row["description"],
        disabled=row["disabled"],
        created_at=row["created_at"],
    )


def _delivery(row: asyncpg.Record) -> DeliveryRow:
    return DeliveryRow(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        attempts=row["attempts"],
        last_http_status=row["last_http_status"],
        state=row["state"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
    )


_DELIVERY_COLUMNS = (
    "d.id, d.webhook_id, d.event_id, d.event_type, d.attempts, d.last_http_status, "
    "d.state, d.next_attempt_at, d.created_at"
)


class PgWebhookStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        account_id: int,
        url: str,
        event_types: Sequence[int],
        description: str,
        secret_sealed: bytes,
    ) -> WebhookRow:
        """The endpoint receives the events that happen after its creation."""
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"""
                INSERT INTO webhooks
                    (account_id, url, event_types, description, secret_sealed, event_cursor,
                     account_event_cursor)
                VALUES ($1, $2, $3, $4, $5,
                        (SELECT coalesce(max(event_id), 0) FROM message_events
                         WHERE account_id = $1),
                        (SELECT coalesce(max(event_id), 0) FROM account_events))
                RETURNING {_COLUMNS}
                """,
                account_id,
                url,
                list(event_types),
                description,
                secret_sealed,
            )
        assert row is not None
        return _webhook(row)

    async def any_enabled(self) -> bool:
        """Whether any account has an endpoint that is not disabled."""
        with unavailable_on_connection_errors():
            found = await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM webhooks WHERE NOT disabled)"
            )
        return bool(found)

    async def get(self, account_id: int, webhook_id: int) -> WebhookRow | None:
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1 AND account_id = $2",
                webhook_id,
                account_id,
            )
        return None if row is None else _webhook(row)

    async def list_page(self, account_id: int, after_id: int, limit: int) -> list[WebhookRow]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM webhooks WHERE account_id = $1 AND id > $2 "
                "ORDER BY id LIMIT $3",
                account_id,
                after_id,
                limit,
            )
        return [_webhook(r) for r in rows]

    async def delete(self, account_id: int, webhook_id: int) -> bool:
        with unavailable_on_connection_errors():
            status = await self._pool.execute(
                "DELETE FROM webhooks WHERE id = $1 AND account_id = $2", webhook_id, account_id
            )
        return bool(status != "DELETE 0")

    async def deliveries_page(
        self, webhook_id: int, before_id: int, limit: int
    ) -> list[DeliveryRow]:
        """Newest first: deliveries with id < before_id."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d "
                "WHERE d.webhook_id = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3",
                webhook_id,
                before_id,
                limit,
            )
        return [_delivery(r) for r in rows]

    async def materialise(self, limit: int) -> int:
        """Turns new events into deliveries, for every endpoint not locked by another
        replica (at most ``limit`` events of each log per endpoint). Returns how many
        deliveries were created. Message events: one statement, one round trip, atomic,
        which also says whether an endpoint is behind on batch and verification events
        (account_events); only then are those materialised, in a transaction of their
        own (most rounds have none: three round trips saved)."""
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                """
                WITH hooks AS (
                    SELECT w.id, w.account_id, w.event_cursor FROM webhooks w
                    WHERE NOT w.disabled AND $1 = ANY(w.event_types)
                      AND w.event_cursor < (SELECT coalesce(max(event_id), 0)
                                            FROM message_events
                                            WHERE account_id = w.account_id)
                    ORDER BY w.id FOR UPDATE OF w SKIP LOCKED
                ), events AS (
                    -- The endpoint's account's events: their ids follow commit order
                    -- (store/events.py), so the cursor never passes an uncommitted one.
                    SELECT h.id AS webhook_id, e.*
                    FROM hooks h CROSS JOIN LATERAL (
                        SELECT event_id, message_id FROM message_events
                        WHERE account_id = h.account_id AND event_id > h.event_cursor
                        ORDER BY event_id LIMIT $2
                    ) e
                ), mine AS (
                    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, order_key)
                    SELECT webhook_id, event_id, $1, message_id FROM events
                    ON CONFLICT (webhook_id, event_id) DO NOTHING
                    RETURNING 1
                ), moved AS (
                    UPDATE webhooks w SET event_cursor = seen.last
                    FROM (SELECT webhook_id, max(event_id) AS last FROM events
                          GROUP BY webhook_id) seen
                    WHERE w.id = seen.webhook_id
                    RETURNING 1
                )
                -- (every data-modifying CTE runs in full)
                SELECT (SELECT count(*) FROM mine) AS created,
                       EXISTS (
                           SELECT 1 FROM webhooks
                           WHERE NOT disabled AND event_types && $3::smallint[]
                             AND account_event_cursor
                                 < (SELECT coalesce(max(event_id), 0) FROM account_events)
                       ) AS accounts_behind
                """,
                EVENT_TYPE_MESSAGE_STATUS,
                limit,
                list(ACCOUNT_EVENT_TYPES),
            )
            assert row is not None
            created = int(row["created"])
            if row["accounts_behind"]:
                async with self._pool.acquire() as conn, conn.transaction():
                    created += await self._materialise_account_events(conn, limit)
        return created

    async def _materialise_account_events(self, conn: Conn, limit: int) -> int:
        """Turns new batch and verification events into deliveries, of the types each
        endpoint subscribed to; each batch's or verification's in its order."""
        created = 0
        hooks = await conn.fetch(
            "SELECT id, account_id, account_event_cursor, event_types FROM webhooks "
            "WHERE NOT disabled AND event_types && $1::smallint[] "
            "AND account_event_cursor < (SELECT coalesce(max(event_id), 0) FROM account_events) "
            "ORDER BY id FOR UPDATE SKIP LOCKED",
            list(ACCOUNT_EVENT_TYPES),
        )
        for hook in hooks:
            row = await conn.fetchrow(
                """
                WITH events AS (
                    SELECT event_id FROM account_events
                    WHERE event_id > $2 ORDER BY event_id LIMIT $4
                ), mine AS (
                    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, order_key)
                    SELECT $1, a.event_id, a.event_type, a.event_type || ':' || a.subject_id
                    FROM events e JOIN account_events a USING (event_id)
                    WHERE a.account_id = $3 AND a.event_type = ANY($5::smallint[])
                    ON CONFLICT (webhook_id, event_id) DO NOTHING
                    RETURNING 1
                )
                SELECT (SELECT max(event_id) FROM events) AS last,
                       (SELECT count(*) FROM mine) AS n
                """,
                hook["id"],
                hook["account_event_cursor"],
                hook["account_id"],
                limit,
                list(hook["event_types"]),
            )
            assert row is not None
            if row["last"] is not None:
                await conn.execute(
                    "UPDATE webhooks SET account_event_cursor = $2 WHERE id = $1",
                    hook["id"],
                    row["last"],
                )
            created += int(row["n"])
        return created

    async def claim_due(
        self, limit: int, lease_seconds: float, room: Mapping[int, int], per_endpoint: int
    ) -> list[DueDelivery]:
        """Leases due deliveries: each the earliest pending one of its message for its
        endpoint (so one message's events go in order), at most one per endpoint and
        message at a time, and at most ``per_endpoint`` per endpoint less what
        ``room`` says is open there already (so none is leased only to wait)."""
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"""
                WITH hooks AS (
                    SELECT w.id, $4 - coalesce(o.open, 0) AS room FROM webhooks w
                    LEFT JOIN unnest($3::bigint[], $5::int[]) AS o (webhook_id, open)
                        ON o.webhook_id = w.id
                    WHERE NOT w.disabled AND $4 - coalesce(o.open, 0) > 0
                ), candidates AS MATERIALIZED (
                    -- MATERIALIZED: computed once. Inlined, the planner could (with
                    -- the statistics of a table that was empty when analysed) walk
                    -- every pending delivery and run this per row: 0.6 s a round
                    -- at a 5,000-event backlog instead of 2 ms.
                    SELECT c.id, c.next_attempt_at FROM hooks h CROSS JOIN LATERAL (
                        SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
                        WHERE d.webhook_id = h.id
                          AND d.state = {PENDING:d} AND d.next_attempt_at <= now()
                          AND (d.lease_until IS NULL OR d.lease_until < now())
                          -- the message's earliest pending event (a scalar subquery:
                          -- one probe of webhook_deliveries_order, never a scan)
                          AND d.event_id = (
                              SELECT min(p.event_id) FROM webhook_deliveries p
                              WHERE p.webhook_id = d.webhook_id AND p.order_key = d.order_key
                                AND p.state = {PENDING:d})
                        ORDER BY d.next_attempt_at, d.id
                        LIMIT h.room
                    ) c
                ), due AS (
                    SELECT d.id FROM webhook_deliveries d JOIN candidates c ON c.id = d.id
                    WHERE d.state = {PENDING:d}
                      AND (d.lease_until IS NULL OR d.lease_until < now())
                    ORDER BY c.next_attempt_at, c.id
                    LIMIT $1 FOR UPDATE OF d SKIP LOCKED
                ), leased AS (
                    UPDATE webhook_deliveries d
                    SET lease_until = now() + make_interval(secs => $2)
                    FROM due WHERE d.id = due.id
                    RETURNING d.*
                )
                SELECT {_DELIVERY_COLUMNS}, w.url, w.secret_sealed, m.event_id AS logged,
                       m.account_id, m.message_id, m.batch_id, m.to_number,
                       m.status, m.error_code, m.occurred_at,
                       -- the caller's reference and metadata, as status streams
                       -- carry them (the batch's for a batch's messages)
                       coalesce(b.reference, msg.reference) AS reference,
                       CASE WHEN b.id IS NULL THEN msg.metadata ELSE b.metadata END
                           AS metadata
                FROM leased d
                JOIN webhooks w ON w.id = d.webhook_id
                LEFT JOIN message_events m ON m.event_id = d.event_id
                LEFT JOIN messages msg ON msg.id = m.message_id
                LEFT JOIN batches b ON b.id = m.batch_id
                WHERE NOT w.disabled
                ORDER BY d.id
                """,
                limit,
                lease_seconds,
                list(room),
                per_endpoint,
                list(room.values()),
            )
            others = [r["event_id"] for r in rows if r["logged"] is None]
            if others:
                async with self._pool.acquire() as conn:
                    found = await account_events(conn, others)
            else:
                found = {}
        due = []
        for r in rows:
            event = status_event(r) if r["logged"] is not None else found.get(r["event_id"])
            if event is not None:
                due.append(DueDelivery(_delivery(r), r["url"], bytes(r["secret_sealed"]), event))
        return due

    async def release(self, delivery_id: int) -> None:
        """Gives a leased delivery back untried (its endpoint was busy)."""
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1", delivery_id
            )

    async def record_attempt(
        self, delivery_id: int, http_status: int, state: int, next_attempt_at: datetime | None
    ) -> None:
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_http_status = $2, "
                "state = $3, next_attempt_at = coalesce($4, next_attempt_at), "
                "lease_until = NULL WHERE id = $1",
                delivery_id,
                http_status,
                state,
                next_attempt_at,
            )

    async def record_successes(self, answers: Sequence[tuple[int, int]]) -> None:
        """Deliveries answered 2xx: (delivery id, HTTP status) each, in one statement."""
        with unavailable_on_connection_errors():
            await self._pool.execute(
                "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, "
                f"last_http_status = a.status, state = {SUCCEEDED:d}, lease_until = NULL "
                "FROM unnest($1::bigint[], $2::int[]) AS a (id, status) WHERE d.id = a.id",
                [i for i, _ in answers],
                [s for _, s in answers],
            )

    async def disable(self, webhook_id: int) -> None:
        """After a 410: the endpoint gets nothing more; its pending deliveries fail."""
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("UPDATE webhooks SET disabled = true WHERE id = $1", webhook_id)
                await conn.execute(
                    f"UPDATE webhook_deliveries SET state = {FAILED:d}, lease_until = NULL "
                    f"WHERE webhook_id = $1 AND state = {PENDING:d}",
                    webhook_id,
                )

    async def analyze(self) -> None:
        """Refreshes the planner's statistics of the delivery queue. A queue created
        empty is planned as empty until autovacuum's next look (a minute by default):
        claim_due then walked a whole backlog per probe (30-600 ms a round)."""
        with unavailable_on_connection_errors():
            await self._pool.execute("ANALYZE webhook_deliveries")

    async def backlog(self) -> tuple[int, float]:
        """Pending deliveries (all replicas) and the age in seconds of the oldest."""
        with unavailable_on_connection_errors():
            row = await self._pool.fetchrow(
                "SELECT count(*) AS n, "
                "coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age "
                f"FROM webhook_deliveries WHERE state = {PENDING:d}"
            )
        assert row is not None
        return int(row["n"]), float(row["age"])

    async def redeliver(
        self, webhook_id: int, account_id: int, start: datetime, end: datetime
    ) -> int:
        """Schedules again the events of [start, end) this endpoint has seen (of the
        types it subscribed to); returns how many."""
        with unavailable_on_connection_errors():
            count = await self._pool.fetchval(
                f"""
                WITH hook AS (
                    SELECT event_cursor, account_event_cursor, event_types
                    FROM webhooks WHERE id = $1
                ), events AS (
                    SELECT e.event_id, $5::smallint AS event_type, e.message_id AS order_key
                    FROM message_events e, hook
                    WHERE e.account_id = $2 AND e.occurred_at >= $3 AND e.occurred_at < $4
                      AND e.event_id <= hook.event_cursor AND $5 = ANY(hook.event_types)
                    UNION ALL
                    SELECT a.event_id, a.event_type, a.event_type || ':' || a.subject_id
                    FROM account_events a, hook
                    WHERE a.account_id = $2 AND a.occurred_at >= $3 AND a.occurred_at < $4
                      AND a.event_id <= hook.account_event_cursor
                      AND a.event_type = ANY(hook.event_types)
                ), scheduled AS (
                    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, order_key)
                    SELECT $1, event_id, event_type, order_key FROM events
                    ON CONFLICT (webhook_id, event_id) DO UPDATE
                    SET state = {PENDING:d}, next_attempt_at = now(), lease_until = NULL,
                        created_at = now()
                    WHERE webhook_deliveries.state <> {PENDING:d}
                    RETURNING 1
                )
                SELECT count(*) FROM events
                """,
                webhook_id,
                account_id,
                start,
                end,
                EVENT_TYPE_MESSAGE_STATUS,
            )
        return int(count)
