"""Collects delivery receipts and records them in groups (one transaction per group).

Receipts that carry our message id (status queries, loopback, SendCloud's tag) become
transitions; one that carries the provider's id too records the send it reports on
first (SENT with that id: nothing when the send is recorded already), so a receipt
that overtakes the recording of its send (a fast provider, a busy database, a lost
answer) never leaves a delivered message without its SENT event. Receipts that carry
only the provider's id (webhooks) are matched by that id, or parked until the send
they report on is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.aio import wait_event
from server.domain.models import MessageStatus
from server.domain.ports import ProviderReceipt, Receipt, ReceiptOutbox, Transition

log = logging.getLogger(__name__)


class ReceiptRecorder:
    def __init__(
        self, outbox: ReceiptOutbox, *, flush_interval: float = 0.05, max_group: int = 500
    ) -> None:
        self._outbox = outbox
        self._flush_interval = flush_interval
        self._max_group = max_group
        self._pending: list[Transition] = []
        self._by_provider_id: list[ProviderReceipt] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, receipt: Receipt) -> None:
        if receipt.message_id:
            if receipt.provider_message_id and receipt.status > MessageStatus.SENT:
                self._pending.append(
                    Transition(
                        message_id=receipt.message_id,
                        status=MessageStatus.SENT,
                        provider=receipt.provider,
                        provider_message_id=receipt.provider_message_id,
                    )
                )
            self._pending.append(
                Transition(
                    message_id=receipt.message_id,
                    status=receipt.status,
                    error_code=receipt.error_code,
                    provider=receipt.provider,
                    provider_message_id=receipt.provider_message_id or None,
                    suppress=receipt.suppress,
                )
            )
        else:
            self._by_provider_id.append(
                ProviderReceipt(
                    receipt.provider,
                    receipt.provider_message_id,
                    receipt.status,
                    receipt.error_code,
                    receipt.suppress,
                )
            )
        if len(self._pending) + len(self._by_provider_id) >= self._max_group:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receipt-recorder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self._flush_interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("recording receipts failed (%s); will retry", type(exc).__name__)
                await asyncio.sleep(self._flush_interval * 10)

    async def flush(self) -> None:
        while self._pending:
            group = self._pending[: self._max_group]
            await self._outbox.apply(group)
            del self._pending[: len(group)]
        while self._by_provider_id:
            batch = self._by_provider_id[: self._max_group]
            await self._outbox.apply_provider_receipts(batch)
            del self._by_provider_id[: len(batch)]
