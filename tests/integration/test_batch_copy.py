"""Rows a batch preparation process encodes for COPY (``copy_row``, text format) are
stored exactly as the messages themselves would be (asyncpg's binary COPY)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from server.domain.batch_tasks import EncodedSlice, StoredSlice
from server.domain.models import NewMessage, Priority
from server.store.accounts import PgAccountStore
from server.store.batches import MESSAGE_COLUMNS, PgBatchStore, copy_row
from tests.integration.builders import new_message

AWKWARD = [
    "tab\there, newline\nthere, return\r, backslash \\ and \\n as text",
    "quotes \" and ' and 中文 and emoji 🎉",
    "plain",
]


async def one(part: StoredSlice) -> AsyncIterator[StoredSlice]:
    yield part


def messages(account_id: int, batch_id: str) -> list[NewMessage]:
    due = datetime(2026, 12, 3, 12, 30, 15, 123456, tzinfo=UTC)
    out = []
    for i, text in enumerate(AWKWARD):
        m = replace(
            new_message(account_id, Priority.BATCH),
            batch_id=batch_id,
            to_number=f"+8613800000{i:03d}",
            body=text,
            not_before=due + timedelta(seconds=i),
            template_id=None,
            template_code="code\twith tab" if i == 0 else None,
            template_data={"name": text, "n": "1"} if i < 2 else None,
            expires_at=due + timedelta(hours=1) if i == 1 else None,
        )
        out.append(m)
    return out


async def test_encoded_rows_store_what_the_messages_would(pool: asyncpg.Pool) -> None:
    account_id = (await PgAccountStore(pool).create_account("copy", verified=True)).id
    store = PgBatchStore(pool)
    plain = messages(account_id, "b_copy_plain")
    encoded = messages(account_id, "b_copy_encoded")
    await store.create("b_copy_plain", account_id, 2, one(plain), [])
    part = EncodedSlice(encoded[0], [m.to_number for m in encoded], [copy_row(m) for m in encoded])
    await store.create("b_copy_encoded", account_id, 2, one(part), [])
    columns = [c for c in MESSAGE_COLUMNS if c not in ("id", "batch_id")]
    query = f"SELECT {', '.join(columns)} FROM messages WHERE batch_id = $1 ORDER BY to_number"
    want = [dict(r) for r in await pool.fetch(query, "b_copy_plain")]
    got = [dict(r) for r in await pool.fetch(query, "b_copy_encoded")]
    assert got == want
    assert [r["body"] for r in got] == AWKWARD
    ids = await pool.fetch(
        "SELECT id FROM messages WHERE batch_id = $1 ORDER BY to_number", "b_copy_encoded"
    )
    assert [r["id"] for r in ids] == [m.id for m in encoded]
    await pool.execute("UPDATE messages SET status = 8 WHERE account_id = $1", account_id)
