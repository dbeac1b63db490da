"""Slots for large batches: how many may be stored at once, per account and per server.

Storing a batch of tens of thousands of numbers takes seconds of CPU and database
work; a few at once would take the server's memory and the database from everyone.
A batch of more than ``LARGE_BATCH_NUMBERS`` numbers takes a slot before its
numbers are read, and gives it back when stored or refused; past either limit the
call is refused with RESOURCE_EXHAUSTED and the expected wait. Small batches take
no slot.

Pure bookkeeping (no I/O, no clock of its own): the caller holds one instance per
process and passes the time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from server.domain.errors import ResourceExhausted

LARGE_BATCH_NUMBERS: Final = 1_000
# The wait suggested before any large batch has been timed here.
DEFAULT_RETRY_AFTER: Final = 2.0
MIN_RETRY_AFTER: Final = 0.1
# Durations of the last batches kept to estimate the next one.
RECENT: Final = 8


@dataclass(frozen=True)
class SlotLimits:
    per_account: int = 1
    per_server: int = 2


@dataclass(frozen=True, eq=False)
class Slot:
    """A large batch being stored; give it back with ``BatchSlots.release``."""

    account_id: int
    started: float
    request_id: str = ""


@dataclass
class BatchSlots:
    limits: SlotLimits = field(default_factory=SlotLimits)
    clock: Callable[[], float] = field(default=lambda: 0.0)
    _held: list[Slot] = field(default_factory=list)
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))

    @staticmethod
    def is_large(numbers: int) -> bool:
        return numbers > LARGE_BATCH_NUMBERS

    def take(self, account_id: int, numbers: int, request_id: str = "") -> Slot | None:
        """A slot for a batch of ``numbers`` numbers (None: a small batch needs none).

        A repeat of a batch being stored (the same account and ``request_id``) needs
        none either: it only waits for that batch and answers with it. Raises
        ResourceExhausted if the account or the server stores as many large batches
        as it may at once."""
        if not self.is_large(numbers):
            return None
        mine = [s for s in self._held if s.account_id == account_id]
        if request_id and any(s.request_id == request_id for s in mine):
            return None
        now = self.clock()
        if len(mine) >= self.limits.per_account:
            raise self._refusal(
                mine,
                now,
                f"account:{account_id}",
                f"at most {self.limits.per_account} batch(es) of more than "
                f"{LARGE_BATCH_NUMBERS:,} numbers being stored at once per account",
                "LARGE_BATCHES_PER_ACCOUNT",
            )
        if len(self._held) >= self.limits.per_server:
            raise self._refusal(
                self._held,
                now,
                "server",
                f"at most {self.limits.per_server} batch(es) of more than "
                f"{LARGE_BATCH_NUMBERS:,} numbers being stored at once on this server",
                "LARGE_BATCHES_PER_SERVER",
            )
        slot = Slot(account_id, now, request_id)
        self._held.append(slot)
        return slot

    def release(self, slot: Slot | None, *, stored: bool = True) -> None:
        """Gives a slot back; a stored batch's duration informs the next wait."""
        if slot is None or slot not in self._held:
            return
        self._held.remove(slot)
        if stored:
            self._recent.append(max(self.clock() - slot.started, 0.0))

    @property
    def held(self) -> int:
        return len(self._held)

    def expected_wait(self, holders: list[Slot], now: float) -> float:
        """Seconds until the first of ``holders`` is likely done: a recent batch's
        typical duration less the time it has run (never below MIN_RETRY_AFTER)."""
        if not self._recent:
            typical = DEFAULT_RETRY_AFTER
        else:
            typical = sorted(self._recent)[len(self._recent) // 2]
        oldest = min(s.started for s in holders)
        return max(typical - (now - oldest), MIN_RETRY_AFTER)

    def _refusal(
        self, holders: list[Slot], now: float, subject: str, description: str, reason: str
    ) -> ResourceExhausted:
        wait = self.expected_wait(holders, now)
        return ResourceExhausted(
            f"too many large batches being stored: {description}; retry in {wait:.1f} s",
            retry_after=wait,
            reason=reason,
            quota_subject=subject,
            quota_description=description,
        )
