"""inbound_messages on a real PostgreSQL: a message and its keyword's effects are one
transaction, and a provider posting one message twice at once stores it once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from server.domain.inbound import InboundConfig, InboundSms
from server.store.accounts import PgAccountStore
from server.store.inbound import PgInboundStore

SENDER, NUMBER = "+8613800139001", "+15005550006"


async def owned(pool: asyncpg.Pool) -> tuple[int, InboundConfig]:
    account = await PgAccountStore(pool).create_account("inbound", verified=True)
    return account.id, InboundConfig(owners={NUMBER: account.id})


async def test_a_message_posted_twice_at_once_is_stored_once_and_stops_once(
    pool: asyncpg.Pool,
) -> None:
    account_id, config = await owned(pool)
    store = PgInboundStore(pool)
    sms = InboundSms("tw", SENDER, NUMBER, "STOP", provider_message_id="SM" + "a" * 32)
    results = await asyncio.gather(*(store.record(sms, config) for _ in range(4)))
    ids = {message.id for message, _ in results if message is not None}
    assert len(ids) == 1
    inbound_events = await pool.fetchval(
        "SELECT count(*) FROM account_events WHERE account_id = $1 AND event_type = 4",
        account_id,
    )
    assert inbound_events == 1
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM account_events WHERE account_id = $1 AND event_type = 5",
            account_id,
        )
        == 1
    )
    assert (
        await pool.fetchval(
            "SELECT reason FROM suppressions WHERE account_id = $1 AND mobile = $2",
            account_id,
            SENDER,
        )
        == 2
    )


async def test_a_failed_store_leaves_no_suppression_and_no_reply(pool: asyncpg.Pool) -> None:
    account = await PgAccountStore(pool).create_account("inbound", verified=True)
    # A number the column cannot hold (a NUL byte) fails the message's insert after
    # the keyword's effects were written in its transaction: none of them may stay.
    unstorable = NUMBER + "\x00"
    config = InboundConfig(owners={unstorable: account.id})
    store = PgInboundStore(pool)
    for text in ("STOP", "HELP"):
        with pytest.raises(asyncpg.PostgresError):
            await store.record(InboundSms("tw", SENDER, unstorable, text), config)
    for table in ("suppressions", "messages", "inbound_messages", "account_events"):
        count = await pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE account_id = $1", account.id
        )
        assert count == 0, table
