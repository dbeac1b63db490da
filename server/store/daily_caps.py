"""The guardrails' day counts (daily_sends), taken in the caller's transaction.

A count is taken with one conditional upsert: it adds only while the sum stays within
the cap, and the row lock makes concurrent sends on every replica wait for each
other, so the cap holds exactly. The account's row is always taken before a mobile's,
so two sends never wait for each other in opposite orders.
"""

from __future__ import annotations

from server.domain.guardrails import DailyCaps, account_cap_reached, mobile_cap_reached
from server.store.pool import Conn

ACCOUNT_ROW = ""  # daily_sends.mobile of the account's total

_TAKE = """
INSERT INTO daily_sends AS d (account_id, day, mobile, sent)
SELECT $1::bigint, (now() AT TIME ZONE 'UTC')::date, $2::text, $3::integer
WHERE $3::integer <= $4::integer
ON CONFLICT (account_id, day, mobile) DO UPDATE SET sent = d.sent + EXCLUDED.sent
    WHERE d.sent + EXCLUDED.sent <= $4::integer
RETURNING sent
"""

# One more for each number of a batch while under the cap; the batch's numbers that
# were at the cap already are taken out of it (returned), in one statement.
_TAKE_MOBILES = """
WITH counted AS (
    INSERT INTO daily_sends AS d (account_id, day, mobile, sent)
    SELECT $1::bigint, (now() AT TIME ZONE 'UTC')::date, m.to_number, 1
    FROM messages m WHERE m.batch_id = $2 AND $3::integer >= 1
    ORDER BY m.to_number
    ON CONFLICT (account_id, day, mobile) DO UPDATE SET sent = d.sent + 1
        WHERE d.sent + 1 <= $3
    RETURNING mobile
)
DELETE FROM messages m
WHERE m.batch_id = $2 AND NOT EXISTS (SELECT FROM counted c WHERE c.mobile = m.to_number)
RETURNING m.to_number
"""


async def take_daily(
    conn: Conn, account_id: int, mobile: str, caps: DailyCaps, count: int = 1
) -> None:
    """Counts ``count`` messages to ``mobile`` (the account's total too); raises
    RESOURCE_EXHAUSTED (the caller's transaction rolls back) past a cap."""
    if caps.account is not None:
        taken = await conn.fetchval(_TAKE, account_id, ACCOUNT_ROW, count, caps.account)
        if taken is None:
            raise account_cap_reached(account_id, caps.account)
    if caps.per_mobile is not None and mobile:
        taken = await conn.fetchval(_TAKE, account_id, mobile, count, caps.per_mobile)
        if taken is None:
            raise mobile_cap_reached(mobile, caps.per_mobile)


async def take_batch_mobiles(conn: Conn, account_id: int, batch_id: str, cap: int) -> list[str]:
    """Counts one message for each number of the batch; the numbers that were at
    ``cap`` today already are taken out of the batch and returned."""
    rows = await conn.fetch(_TAKE_MOBILES, account_id, batch_id, cap)
    return [r["to_number"] for r in rows]
