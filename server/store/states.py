"""The domain's states as SQL literals, so statements name the states they mean.

Statements are f-strings that write ``status IN ({WAITING})`` or
``status = {MessageStatus.SENT:d}`` rather than ``status IN (1, 2)`` and
``status = 3``; the SQL text that reaches PostgreSQL is the same. They are literals,
not parameters, on purpose: the planner uses a partial index (``messages_due ...
WHERE status IN (1, 2)``) only when it can prove from the statement that the index
covers it, which it cannot for a parameter of a generic plan. Migrations are history
and keep their numbers.
"""

from __future__ import annotations

import enum

from server.domain.models import MessageStatus

__all__ = ["NOT_DELIVERED", "REACHED", "WAITING", "literals"]


def literals(*members: enum.IntEnum) -> str:
    """``members`` as a comma-separated list of SQL integer literals."""
    return ", ".join(f"{m:d}" for m in members)


# Not yet with a provider: what the dispatcher claims (the messages_due index).
WAITING = literals(MessageStatus.PENDING, MessageStatus.QUEUED)
# The provider took it (a batch counts these as sent).
REACHED = literals(MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
# Final without reaching the phone (a batch counts these as failed).
NOT_DELIVERED = literals(MessageStatus.UNDELIVERED, MessageStatus.FAILED, MessageStatus.REJECTED)
