"""Housekeeping of the tables, every MAINTENANCE_SECONDS: pending verifications past
their time end EXPIRED; velocity windows and mobile send times older than a day
(intervals are at most a day) are dropped, and the daily caps' counts of past days;
batches whose server died announcing their messages are announced. Any replica may
run it at any time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from server.store.batches import PgBatchStore
from server.store.messages import PgMessageStore
from server.store.velocity import PgVelocityCounters
from server.store.verifications import PgVerificationStore

log = logging.getLogger(__name__)

MAINTENANCE_SECONDS = 30.0
KEEP = timedelta(days=1)


class Maintenance:
    def __init__(
        self,
        verifications: PgVerificationStore,
        velocity: PgVelocityCounters,
        messages: PgMessageStore,
        batches: PgBatchStore | None = None,
        *,
        interval: float = MAINTENANCE_SECONDS,
    ) -> None:
        self._verifications = verifications
        self._velocity = velocity
        self._messages = messages
        self._batches = batches
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> None:
        await self._verifications.expire_pending()
        await self._velocity.purge(KEEP)
        await self._messages.purge_mobile_intervals(KEEP)
        await self._messages.purge_past_days()
        if self._batches is not None:
            await self._batches.announce_unfinished()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("maintenance failed (%s); will retry", type(exc).__name__)
