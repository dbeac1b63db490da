"""The built-in loopback provider: no network; accepts, then reports an outcome later.

It behaves like a real provider for everything downstream: the dispatcher hands it
messages, it answers accepted (or a retryable failure at ``failure_rate``), and
after ``delivery_delay`` seconds it reports ``outcome`` as a delivery receipt.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.models import MessageStatus, OutboundMessage
from server.domain.ports import Capabilities, ProviderRef, Receipt, ReceiptSink, SendOutcome

OUTCOMES = {
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "rejected": MessageStatus.REJECTED,
    "failed": MessageStatus.FAILED,
}


@dataclass(frozen=True)
class LoopbackConfig:
    delivery_delay: float = 1.0
    failure_rate: float = 0.0
    outcome: MessageStatus = MessageStatus.DELIVERED


class LoopbackTransport:
    capabilities = Capabilities(free_text=True, templates=True, voice=True)

    def __init__(
        self,
        config: LoopbackConfig,
        receipts: ReceiptSink,
        rng: random.Random | None = None,
        name: str = "loopback",
    ) -> None:
        self.name = name
        self._config = config
        self._receipts = receipts
        self._rng = rng or random.Random()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def can_carry(self, message: OutboundMessage) -> bool:
        return True

    async def send(self, message: OutboundMessage) -> SendOutcome:
        if self._rng.random() < self._config.failure_rate:
            return SendOutcome(accepted=False, retryable=True, error_code="LOOPBACK_UNAVAILABLE")
        loop = asyncio.get_running_loop()
        self._timers[message.id] = loop.call_later(
            self._config.delivery_delay, self._report, message.id
        )
        return SendOutcome(accepted=True, provider_message_id=f"lb-{message.id}")

    async def send_voice(self, message: OutboundMessage, code: str) -> SendOutcome:
        """A pretend phone call: behaves like a text."""
        return await self.send(message)

    def _receipt(self, message_id: str) -> Receipt:
        outcome = self._config.outcome
        error = "" if outcome == MessageStatus.DELIVERED else f"LOOPBACK_{outcome.name}"
        return Receipt(
            self.name, message_id, outcome, error, provider_message_id=f"lb-{message_id}"
        )

    async def query_status(self, refs: Sequence[ProviderRef]) -> list[Receipt]:
        """Messages still waiting for their timer are reported later, by the timer."""
        return [self._receipt(r.message_id) for r in refs if r.message_id not in self._timers]

    def _report(self, message_id: str) -> None:
        self._timers.pop(message_id, None)
        task = asyncio.create_task(
            self._receipts(self._receipt(message_id)),
            name="loopback-receipt",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Reports every outstanding receipt now, so none is lost at shutdown."""
        for message_id, timer in list(self._timers.items()):
            timer.cancel()
            self._report(message_id)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
