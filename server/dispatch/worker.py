"""Outbox workers: claim due messages under a lease, send them, record the outcome.

Each worker claims a group of due rows (``FOR UPDATE SKIP LOCKED``, so workers in
every replica share the work without overlap), sends them concurrently through the
routed transport and records all outcomes in one transaction. A worker that dies
leaves its lease to run out; another worker then takes the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from server.aio import wait_event
from server.dispatch.retry import RetryPolicy
from server.domain.models import MessageStatus, OutboundMessage
from server.domain.ports import SendOutcome, Transport
from server.store.outbox import ClaimedMessage, PgOutbox, Transition

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self,
        outbox: PgOutbox,
        transports: Sequence[Transport],
        *,
        workers: int = 2,
        claim_size: int = 100,
        lease_seconds: float = 30.0,
        send_timeout: float = 10.0,
        idle_poll: float = 0.5,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not transports:
            raise ValueError("at least one transport is required")
        self._outbox = outbox
        self._transports = list(transports)
        self._workers = workers
        self._claim_size = claim_size
        self._lease_seconds = lease_seconds
        self._send_timeout = send_timeout
        self._idle_poll = idle_poll
        self._retry = retry or RetryPolicy()
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        """Tells idle workers that new work may be due (called after an accept)."""
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"dispatch-worker-{i}")
            for i in range(self._workers)
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Lets workers finish the group in hand (up to ``grace`` s), then cancels them."""
        self._stopping = True
        self._wake.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, index: int) -> None:
        while not self._stopping:
            try:
                claimed = await self._outbox.claim_due(self._claim_size, self._lease_seconds)
            except Exception as exc:
                log.warning("worker %d cannot claim (%s); backing off", index, type(exc).__name__)
                await self._idle(self._idle_poll * 4)
                continue
            if not claimed:
                await self._idle(self._idle_poll)
                continue
            try:
                await self._dispatch(claimed)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._outbox.release([c.message.id for c in claimed]))
                raise
            except Exception:
                log.exception("worker %d failed to record a group; leases will expire", index)

    async def _idle(self, seconds: float) -> None:
        if self._stopping:
            return
        await wait_event(self._wake, seconds)
        self._wake.clear()

    async def _dispatch(self, claimed: Sequence[ClaimedMessage]) -> None:
        outcomes = await asyncio.gather(*(self._send(c.message) for c in claimed))
        await self._outbox.apply(outcomes)

    async def _send(self, message: OutboundMessage) -> Transition:
        transport = self._transports[0]
        try:
            async with asyncio.timeout(self._send_timeout):
                outcome = await transport.send(message)
        except TimeoutError:
            outcome = SendOutcome(accepted=False, retryable=True, error_code="PROVIDER_TIMEOUT")
        except Exception as exc:
            log.warning("transport %s raised %s", transport.name, type(exc).__name__)
            outcome = SendOutcome(accepted=False, retryable=True, error_code="PROVIDER_ERROR")
        return self._transition(message, transport.name, outcome)

    def _transition(
        self, message: OutboundMessage, provider: str, outcome: SendOutcome
    ) -> Transition:
        if outcome.accepted:
            return Transition(
                message.id,
                MessageStatus.SENT,
                provider=provider,
                provider_message_id=outcome.provider_message_id or message.id,
            )
        if outcome.retryable and self._retry.should_retry(message.attempts):
            retry_at = datetime.now(UTC) + timedelta(seconds=self._retry.delay(message.attempts))
            return Transition(
                message.id,
                MessageStatus.QUEUED,
                error_code=outcome.error_code,
                provider=provider,
                not_before=retry_at,
            )
        status = outcome.final_status if not outcome.retryable else MessageStatus.FAILED
        return Transition(message.id, status, error_code=outcome.error_code, provider=provider)
