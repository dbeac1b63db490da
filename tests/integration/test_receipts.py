"""Receipts known only by provider id: matched, or parked and re-matched later."""

from __future__ import annotations

import asyncpg

from server.dispatch.receipts import ReceiptRecorder
from server.domain.models import MessageStatus
from server.domain.ports import Receipt
from server.store.accounts import PgAccountStore
from server.store.messages import PgMessageStore
from server.store.outbox import PgOutbox, ProviderReceipt, Transition
from tests.integration.builders import new_message


async def _statuses(pool: asyncpg.Pool, message_id: str) -> list[int]:
    rows = await pool.fetch(
        "SELECT status FROM message_events WHERE message_id = $1 ORDER BY event_id", message_id
    )
    return [r["status"] for r in rows]


async def test_receipt_before_the_send_is_recorded_is_parked_then_applied(
    pool: asyncpg.Pool,
) -> None:
    account = await PgAccountStore(pool).create_account("early", verified=True)
    message = new_message(account.id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    early = ProviderReceipt("cloud", "sc-77", MessageStatus.DELIVERED)
    assert await outbox.apply_provider_receipts([early]) == 0
    assert await pool.fetchval("SELECT count(*) FROM early_receipts") == 1

    await outbox.apply(
        [Transition(message.id, MessageStatus.SENT, provider="cloud", provider_message_id="sc-77")]
    )
    assert await _statuses(pool, message.id) == [
        MessageStatus.PENDING,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
    ]
    assert await pool.fetchval("SELECT count(*) FROM early_receipts") == 0


async def test_receipt_naming_both_ids_that_overtakes_its_send_records_the_send(
    pool: asyncpg.Pool,
) -> None:
    """A fast provider (loopback, a status query) reports our id and its own: when
    the receipt is recorded before the send, the message gets its SENT event (with
    the provider's id) before DELIVERED, and the send's own recording adds nothing."""
    account = await PgAccountStore(pool).create_account("overtaken", verified=True)
    message = new_message(account.id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    recorder = ReceiptRecorder(outbox)
    await recorder(Receipt("lb", message.id, MessageStatus.DELIVERED, provider_message_id="lb-1"))
    await recorder.flush()
    delivered = [MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.DELIVERED]
    assert await _statuses(pool, message.id) == delivered
    assert (
        await pool.fetchval("SELECT provider_message_id FROM messages WHERE id = $1", message.id)
        == "lb-1"
    )

    await outbox.apply(
        [Transition(message.id, MessageStatus.SENT, provider="lb", provider_message_id="lb-1")]
    )
    assert await _statuses(pool, message.id) == delivered


async def test_receipt_for_a_known_send_applies_at_once_and_never_goes_back(
    pool: asyncpg.Pool,
) -> None:
    account = await PgAccountStore(pool).create_account("known", verified=True)
    message = new_message(account.id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    await outbox.apply(
        [Transition(message.id, MessageStatus.SENT, provider="cloud", provider_message_id="sc-1")]
    )
    failed = ProviderReceipt("cloud", "sc-1", MessageStatus.UNDELIVERED, "510")
    assert await outbox.apply_provider_receipts([failed]) == 1
    # A late duplicate "sent" report does not move the status back.
    assert (
        await outbox.apply_provider_receipts([ProviderReceipt("cloud", "sc-1", MessageStatus.SENT)])
        == 1
    )
    row = await pool.fetchrow("SELECT status, error_code FROM messages WHERE id = $1", message.id)
    assert row is not None
    assert (row["status"], row["error_code"]) == (MessageStatus.UNDELIVERED, "510")
    # Another provider's id with the same value is a different message.
    assert (
        await outbox.apply_provider_receipts(
            [ProviderReceipt("other", "sc-1", MessageStatus.DELIVERED)]
        )
        == 0
    )


async def test_sweep_applies_receipts_parked_while_the_send_was_being_recorded(
    pool: asyncpg.Pool,
) -> None:
    account = await PgAccountStore(pool).create_account("sweep", verified=True)
    message = new_message(account.id)
    await PgMessageStore(pool).insert(message)
    outbox = PgOutbox(pool)
    await outbox.apply(
        [Transition(message.id, MessageStatus.SENT, provider="cloud", provider_message_id="sc-9")]
    )
    # As if the webhook had parked its receipt just before the SENT commit became visible.
    await pool.execute(
        "INSERT INTO early_receipts (provider, provider_message_id, status) "
        "VALUES ('cloud', 'sc-9', 4)"
    )
    assert await outbox.unpark_matched() == 1
    assert (await _statuses(pool, message.id))[-1] == MessageStatus.DELIVERED
