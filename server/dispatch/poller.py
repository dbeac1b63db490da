"""Asks providers about messages they accepted (status queries), in batches.

Every ``interval`` seconds, for each provider with a status query: take SENT
messages older than ``min_age`` that were not asked about for ``repoll_after``
seconds (claimed with SKIP LOCKED, so replicas split the work), query them in
chunks of the provider's maximum, and hand the answers to the receipt recorder.
Also applies parked early receipts whose send has been recorded meanwhile, and ends
messages that stayed SENT past the receipt deadline (every provider: one that never
reports, a receipt lost on the way) as UNDELIVERED with NO_RECEIPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from server.dispatch.provider_set import ProviderSet
from server.dispatch.receipts import ReceiptRecorder
from server.domain.ports import PolledOutbox, ProviderError, ProviderRef

log = logging.getLogger(__name__)


class ReceiptPoller:
    def __init__(
        self,
        outbox: PolledOutbox,
        providers: Callable[[], ProviderSet],
        recorder: ReceiptRecorder,
        *,
        interval: float = 2.0,
        min_age: float = 1.0,
        repoll_after: float = 5.0,
        batch: int = 500,
        receipt_deadline: float | None = None,
    ) -> None:
        self._outbox = outbox
        self._providers = providers
        self._recorder = recorder
        self._interval = interval
        self._min_age = min_age
        self._repoll_after = repoll_after
        self._batch = batch
        self._deadline = receipt_deadline  # None: a message may stay SENT for ever
        # The deadline sweep reads every SENT row: often enough to keep the deadline
        # to a tenth of itself, at most once a minute.
        self._sweep_every = 0.0 if receipt_deadline is None else min(receipt_deadline / 10, 60.0)
        self._swept_at = -float("inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="receipt-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("receipt polling failed (%s)", type(exc).__name__)

    async def poll_once(self) -> int:
        """One round over every provider; returns how many receipts came back."""
        found = 0
        providers = self._providers()
        for name, transport in providers.transports.items():
            size = transport.capabilities.max_status_ids
            if size <= 0:
                continue
            due = await self._outbox.due_for_poll(
                name, self._min_age, self._repoll_after, self._batch
            )
            for start in range(0, len(due), size):
                refs = [ProviderRef(m, p) for m, p in due[start : start + size]]
                try:
                    receipts = await transport.query_status(refs)
                except ProviderError as exc:
                    log.warning("status query to %s failed: %s", name, exc)
                    break
                for receipt in receipts:
                    await self._recorder(receipt)
                found += len(receipts)
        await self._recorder.flush()
        await self._outbox.unpark_matched()
        await self._end_unreceipted()
        return found

    async def _end_unreceipted(self) -> None:
        if self._deadline is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._swept_at < self._sweep_every:
            return
        self._swept_at = now
        total = 0
        for _ in range(10):  # at most ten groups a sweep; the next sweep goes on
            expired = await self._outbox.expire_unreceipted(self._deadline, self._batch)
            total += expired
            if expired < self._batch:
                break
        if total:
            log.info(
                "%d messages had no delivery receipt within %.0f s: UNDELIVERED (NO_RECEIPT)",
                total,
                self._deadline,
            )
