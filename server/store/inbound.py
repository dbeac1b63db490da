"""inbound_messages: what recipients sent, with what their keywords change.

``record`` stores one inbound message in one transaction with everything it causes:
the HELP reply (a PENDING message and its first event, as SendMessage stores one),
the STOP suppression or the START release, and the account events webhooks deliver
(EVENT_TYPE_INBOUND_MESSAGE, and EVENT_TYPE_SUPPRESSION when a keyword changed the
number's suppression). Locks in the order store/account_events.py requires: the
message log's (the reply) before the account events' (taken last, until commit).
The message's event id is its account event's, so streams resume from it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from server.domain.inbound import InboundConfig, InboundMessage, InboundSms, Keyword
from server.domain.models import NewMessage, Priority, UseType
from server.domain.segments import count_segments
from server.domain.suppression import DEFAULT_USE_TYPES, SuppressionReason
from server.store.account_events import (
    ACCOUNT_EVENTS_LOCK_KEY,
    EVENT_TYPE_INBOUND_MESSAGE,
    EVENT_TYPE_SUPPRESSION,
)
from server.store.events import EVENTS_CHANNEL
from server.store.messages import insert_messages
from server.store.pool import Conn, unavailable_on_connection_errors
from server.store.suppressions import suppressed

INBOUND_CHANNEL = "smsgw_inbound"

_COLUMNS = (
    "id, event_id, account_id, from_number, to_number, body, provider, keyword, "
    "received_at, reply_to_message_id"
)

# The account that last sent to this number (messages_to_number).
_LAST_SENDER = """
SELECT account_id FROM messages WHERE to_number = $1 ORDER BY created_at DESC LIMIT 1
"""

# STOP: suppressed for notification and marketing; a number suppressed already keeps
# its reason (a MANUAL one stays MANUAL, so START cannot lift it) and gains the types.
_OPT_OUT = """
INSERT INTO suppressions AS s (account_id, mobile, reason, use_types)
VALUES ($1, $2, $3, $4::smallint[])
ON CONFLICT (account_id, mobile) DO UPDATE SET
    use_types = ARRAY(SELECT DISTINCT t FROM unnest(s.use_types || EXCLUDED.use_types) AS t
                      ORDER BY t)
RETURNING reason
"""

_INSERT = f"""
INSERT INTO inbound_messages (id, event_id, account_id, from_number, to_number, body,
                              provider, provider_message_id, keyword, reply_to_message_id)
VALUES ($1, nextval('message_event_ids'), $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING {_COLUMNS}
"""

# The message's account event (status unused: 0), with the same id as the message.
_EVENT = f"""
INSERT INTO account_events (event_id, account_id, event_type, subject_id, status, occurred_at)
VALUES ($1, $2, {EVENT_TYPE_INBOUND_MESSAGE}, $3, 0, $4)
"""

# A keyword's suppression change: status 1 suppressed, 0 released.
_SUPPRESSION_EVENT = f"""
INSERT INTO account_events (event_id, account_id, event_type, subject_id, status)
VALUES (nextval('message_event_ids'), $1, {EVENT_TYPE_SUPPRESSION}, $2, $3)
"""


def inbound_message(row: asyncpg.Record) -> InboundMessage:
    return InboundMessage(
        id=row["id"],
        event_id=row["event_id"],
        account_id=row["account_id"],
        from_number=row["from_number"],
        to_number=row["to_number"],
        text=row["body"],
        provider=row["provider"],
        keyword=Keyword(row["keyword"]),
        received_at=row["received_at"],
        reply_to_message_id=row["reply_to_message_id"],
    )


async def owner_of(conn: Conn, config: InboundConfig, sms: InboundSms) -> int | None:
    """The account the message belongs to (domain/inbound.py says how it is chosen)."""
    owner = config.owners.get(sms.to_number)
    if owner is not None:
        return owner
    found = await conn.fetchval(_LAST_SENDER, sms.from_number)
    return None if found is None else int(found)


def help_reply(account_id: int, to_number: str, text: str) -> NewMessage:
    return NewMessage(
        id=uuid.uuid4().hex,
        account_id=account_id,
        to_number=to_number,
        use_type=UseType.NOTIFICATION,
        body=text,
        segments=count_segments(text),
        priority=Priority.SINGLE,
        not_before=datetime.now(UTC),
    )


async def _posted_before(conn: Conn, sms: InboundSms) -> InboundMessage | None:
    """The message as stored when its provider posted it before (same message id)."""
    if not sms.provider_message_id:
        return None
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM inbound_messages WHERE provider = $1 AND provider_message_id = $2",
        sms.provider,
        sms.provider_message_id,
    )
    return None if row is None else inbound_message(row)


class PgInboundStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self, sms: InboundSms, config: InboundConfig
    ) -> tuple[InboundMessage | None, bool]:
        """Stores the message and its effects, durable on return: (the message or None
        when no account owns it, whether a HELP reply was queued). A message its
        provider posted before (same provider message id) is returned as stored, with
        no effect repeated."""
        try:
            return await self._record(sms, config)
        except asyncpg.UniqueViolationError:
            # The provider posted it twice at once: the other post stored it.
            with unavailable_on_connection_errors():
                async with self._pool.acquire() as conn:
                    earlier = await _posted_before(conn, sms)
            if earlier is None:
                raise
            return earlier, False

    async def _record(
        self, sms: InboundSms, config: InboundConfig
    ) -> tuple[InboundMessage | None, bool]:
        keyword, reply = config.keyword(sms.text)
        with unavailable_on_connection_errors():
            async with self._pool.acquire() as conn, conn.transaction():
                account_id = await owner_of(conn, config, sms)
                if account_id is None:
                    return None, False
                earlier = await _posted_before(conn, sms)
                if earlier is not None:
                    return earlier, False
                # The HELP reply; not to a number suppressed for notifications (it
                # would only be rejected at dispatch).
                replied = (
                    keyword == Keyword.HELP
                    and bool(reply)
                    and not await suppressed(
                        conn, account_id, sms.from_number, UseType.NOTIFICATION
                    )
                )
                if replied:
                    await insert_messages(conn, [help_reply(account_id, sms.from_number, reply)])
                changed: bool | None = None  # True suppressed, False released
                if keyword == Keyword.STOP:
                    await conn.fetchval(
                        _OPT_OUT,
                        account_id,
                        sms.from_number,
                        int(SuppressionReason.OPT_OUT),
                        [int(t) for t in DEFAULT_USE_TYPES],
                    )
                    changed = True
                elif keyword == Keyword.START:
                    status = await conn.execute(
                        "DELETE FROM suppressions WHERE account_id = $1 AND mobile = $2 "
                        "AND reason = $3",
                        account_id,
                        sms.from_number,
                        int(SuppressionReason.OPT_OUT),
                    )
                    changed = False if status != "DELETE 0" else None
                # The lock until commit; at commit, open inbound streams (INBOUND_CHANNEL)
                # and the webhook delivery (the event log's channel) are told.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1), pg_notify($2, ''), pg_notify($3, '')",
                    ACCOUNT_EVENTS_LOCK_KEY,
                    EVENTS_CHANNEL,
                    INBOUND_CHANNEL,
                )
                row = await conn.fetchrow(
                    _INSERT,
                    uuid.uuid4().hex,
                    account_id,
                    sms.from_number,
                    sms.to_number,
                    sms.text,
                    sms.provider,
                    sms.provider_message_id,
                    str(keyword),
                    sms.reply_to_message_id,
                )
                assert row is not None
                await conn.execute(
                    _EVENT, row["event_id"], account_id, row["id"], row["received_at"]
                )
                if changed is not None:
                    await conn.execute(_SUPPRESSION_EVENT, account_id, row["id"], int(changed))
        return inbound_message(row), replied

    async def page(self, account_id: int, before_event_id: int, limit: int) -> list[InboundMessage]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM inbound_messages WHERE account_id = $1 "
                "AND event_id < $2 ORDER BY event_id DESC LIMIT $3",
                account_id,
                before_event_id,
                limit,
            )
        return [inbound_message(r) for r in rows]

    async def after(self, account_id: int, event_id: int, limit: int) -> list[InboundMessage]:
        with unavailable_on_connection_errors():
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM inbound_messages WHERE account_id = $1 "
                "AND event_id > $2 ORDER BY event_id LIMIT $3",
                account_id,
                event_id,
                limit,
            )
        return [inbound_message(r) for r in rows]

    async def count_after(self, account_id: int, event_id: int, limit: int) -> int:
        with unavailable_on_connection_errors():
            count = await self._pool.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM inbound_messages WHERE account_id = $1 "
                "AND event_id > $2 LIMIT $3) AS upto",
                account_id,
                event_id,
                limit,
            )
        return int(count)

    async def last_event_id(self) -> int:
        with unavailable_on_connection_errors():
            value = await self._pool.fetchval(
                "SELECT coalesce(max(event_id), 0) FROM inbound_messages"
            )
        return int(value)
