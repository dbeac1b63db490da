"""Prepaid balances: charged in the transaction that stores the messages, never below
zero (one conditional UPDATE; the row lock orders concurrent charges on every
replica). Refunds are made where messages end (store/outbox.py).

Lock order: the caller charges after its messages and their events are written
(the event-log lock first, then the account row), as status changes do when they
refund, so the two never wait for each other in opposite orders.
"""

from __future__ import annotations

from server.domain.guardrails import insufficient_balance
from server.store.pool import Conn

_CHARGE = "UPDATE accounts SET balance = balance - $2 WHERE id = $1 AND balance >= $2 RETURNING 1"


async def charge_balance(conn: Conn, account_id: int, amount: int) -> None:
    """Takes ``amount`` from a prepaid balance, or raises FAILED_PRECONDITION
    (INSUFFICIENT_BALANCE; the caller's transaction rolls back). An account with no
    balance (unlimited) is not charged."""
    if amount <= 0:
        return
    if await conn.fetchval(_CHARGE, account_id, amount) is None:
        balance = await conn.fetchval("SELECT balance FROM accounts WHERE id = $1", account_id)
        if balance is not None:
            raise insufficient_balance(balance, amount)


async def top_up(conn: Conn, account_id: int, amount: int) -> bool:
    """Adds to the balance (an unlimited account becomes prepaid with ``amount``)."""
    status: str = await conn.execute(
        "UPDATE accounts SET balance = coalesce(balance, 0) + $2 WHERE id = $1",
        account_id,
        amount,
    )
    return status.endswith(" 1")
