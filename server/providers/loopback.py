"""The built-in loopback provider: no network; accepts, then reports an outcome later.

It behaves like a real provider for everything downstream: the dispatcher hands it
messages, it answers accepted (or a retryable failure at ``failure_rate``), and
after ``delivery_delay`` seconds it reports ``outcome`` as a delivery receipt.

It has a bulk API too (``send_bulk``, up to ``max_bulk`` numbers a request, any
content: like Skynoo's ``batch/create`` with per-number data). Every request takes
``latency`` seconds to answer; numbers starting with an entry of ``refused`` are
refused one by one (final, ``LOOPBACK_REFUSED``), and ``failure_rate`` is the share
of messages that fail retryably, whether they came alone or in a group. It counts
the requests it answered and how often it accepted each message, so tests and
benchmarks can see what reached the provider.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from server.domain.inbound import InboundSms
from server.domain.models import Channel, MessageStatus, OutboundMessage
from server.domain.ports import (
    Capabilities,
    ProviderError,
    ProviderRef,
    Receipt,
    ReceiptSink,
    SendOutcome,
)
from server.providers.webhooks import HookRequest

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
    # Most numbers in one bulk request (1: no bulk API).
    max_bulk: int = 1000
    # Seconds each request (single or bulk) takes to answer.
    latency: float = 0.0
    # Numbers, or prefixes of numbers, the provider refuses (final, one by one).
    refused: tuple[str, ...] = ()
    # Take inbound messages posted to /inbound/loopback (From, To, Body): for trying
    # InboundService offline. Anyone who reaches the HTTP port can then post one, so
    # it is off unless SMSGW_LOOPBACK_INBOUND is set.
    inbound: bool = False


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
        self.max_bulk = config.max_bulk
        # What reached this provider: requests answered (bulk ones among them), and
        # how many times each message id was accepted (more than once: a duplicate).
        self.requests = 0
        self.bulk_requests = 0
        self.accepted: Counter[str] = Counter()

    def can_carry(self, message: OutboundMessage) -> bool:
        return True

    async def send(self, message: OutboundMessage) -> SendOutcome:
        await self._answer_after_latency()
        return self._take(message)

    def bulk_key(self, message: OutboundMessage) -> Hashable | None:
        """Any texts of one use type share a request (each number has its own body);
        calls go alone."""
        if message.channel != Channel.SMS:
            return None
        return message.use_type

    async def send_bulk(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        if len(messages) > self.max_bulk or len({m.to_number for m in messages}) < len(messages):
            # What a provider answers to a request it cannot take: the sender's bug.
            return [SendOutcome(accepted=False, error_code="LOOPBACK_BAD_REQUEST")] * len(messages)
        await self._answer_after_latency()
        self.bulk_requests += 1
        return [self._take(m) for m in messages]

    async def _answer_after_latency(self) -> None:
        if self._config.latency > 0:
            await asyncio.sleep(self._config.latency)
        self.requests += 1

    def _take(self, message: OutboundMessage) -> SendOutcome:
        if message.to_number.startswith(self._config.refused):
            return SendOutcome(
                accepted=False, error_code="LOOPBACK_REFUSED", final_status=MessageStatus.REJECTED
            )
        if self._rng.random() < self._config.failure_rate:
            return SendOutcome(accepted=False, retryable=True, error_code="LOOPBACK_UNAVAILABLE")
        loop = asyncio.get_running_loop()
        self._timers[message.id] = loop.call_later(
            self._config.delivery_delay, self._report, message.id
        )
        self.accepted[message.id] += 1
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

    def parse_inbound(
        self, form: Mapping[str, str], *, request: HookRequest | None = None
    ) -> InboundSms:
        """A pretend message from a recipient (when SMSGW_LOOPBACK_INBOUND allows):
        From, To, Body, and optionally MessageId (a repeat of one is stored once)."""
        if not self._config.inbound:
            raise ProviderError(
                f"loopback {self.name}: inbound injection is off (SMSGW_LOOPBACK_INBOUND)"
            )
        sender, to = form.get("From", "").strip(), form.get("To", "").strip()
        if not sender or not to:
            raise ProviderError("loopback inbound without From and To")
        return InboundSms(
            provider=self.name,
            from_number=sender,
            to_number=to,
            text=form.get("Body", ""),
            provider_message_id=form.get("MessageId", "")[:64],
        )

    async def close(self) -> None:
        """Reports every outstanding receipt now, so none is lost at shutdown."""
        for message_id, timer in list(self._timers.items()):
            timer.cancel()
            self._report(message_id)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
