"""Outbox workers: claim due messages under a lease, send them, record the outcome.

Each worker claims a group of due rows (``FOR UPDATE SKIP LOCKED``, so workers in
every replica share the work without overlap), sends them concurrently through the
routed providers and records all outcomes in one transaction. A worker that dies
leaves its lease to run out; another worker then takes the rows.

Besides them, ``urgent_workers`` claim only verification codes and single sends, and
are woken the moment one is accepted (``wake_urgent``): while every other worker is
busy with a campaign's group, a code is not left waiting for one of them to finish
it. A code also waits for a provider's rate token behind one batch request at most.

Per message: the route gives the providers in failover order (those that cannot
carry it are skipped); each provider gets ``retries_per_provider`` attempts in turn,
a provider whose breaker is open is passed over (when all are, the breakers' trickle
still goes, and a failed trickle send costs no attempt), and a message past the
caller's validity (else older than ``message_ttl``) becomes FAILED with EXPIRED, and
one whose number the account suppressed after accepting it REJECTED with SUPPRESSED.

Batch messages routed to a provider with a bulk API share requests (``bulk``,
dispatch/bulk.py plans them): a request takes one rate token and gives its breaker
one outcome, and each number's answer becomes its own message's transition, so a
number refused or failed alone is refused or retried alone. Codes and single sends
always go alone. A claim costs at most ``claim_size`` requests: after a claim whose
messages shared requests, a worker claims more (``next_claim_size``), up to the
largest request its providers take. The first worker keeps claims of ``claim_size``
(when there are others), so a code that comes during a campaign waits for a short
claim at most, never behind two of thousands of messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from aiolimiter import AsyncLimiter

from server.aio import wait_event
from server.dispatch.breaker import CircuitBreaker
from server.dispatch.bulk import (
    Request,
    Routed,
    bulk_api,
    bulk_claim_cap,
    next_claim_size,
    plan_requests,
)
from server.dispatch.provider_set import ProviderSet
from server.dispatch.retry import RetryPolicy
from server.dispatch.route_choice import failover_order
from server.dispatch.transitions import transition, within_validity
from server.domain.errors import Unavailable
from server.domain.models import Channel, MessageStatus, OutboundMessage, Priority
from server.domain.ports import (
    ClaimedMessage,
    Outbox,
    SendOutcome,
    Transition,
    Transport,
    VoiceTransport,
)
from server.domain.suppression import SUPPRESSED
from server.metrics import GatewayMetrics
from server.tracing import Tracing, dispatch_span

log = logging.getLogger(__name__)

RELEASE_SECONDS = 5.0  # a cancelled worker's wait to give its group back

# A due code or single send is left to the urgent workers for this long before the
# other workers take it too (with URGENT_GROUPS groups out, an urgent worker is full).
URGENT_GRACE = 1.0
URGENT_GROUPS = 4
YIELD_EVERY = 25  # batch messages routed between two turns of the event loop

# Seconds of a lease kept free after the last send, to record the outcomes (at most a
# quarter of the lease).
LEASE_MARGIN = 2.0
# The most messages a claim grows to when they share bulk requests (as many as
# SMSGW_DISPATCH_CLAIM_SIZE may be).
MAX_CLAIM = 5000


async def send_with(transport: Transport, message: OutboundMessage) -> SendOutcome:
    if message.channel == Channel.VOICE and isinstance(transport, VoiceTransport):
        assert message.code is not None
        return await transport.send_voice(message, message.code)
    return await transport.send(message)


async def send_bulk(transport: Transport, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
    api = bulk_api(transport)
    assert api is not None, "planned a bulk request for a transport without a bulk API"
    return await api.send_bulk(messages)


class Dispatcher:
    def __init__(
        self,
        outbox: Outbox,
        providers: ProviderSet,
        *,
        workers: int = 2,
        claim_size: int = 100,
        lease_seconds: float = 30.0,
        send_timeout: float = 30.0,
        idle_poll: float = 0.5,
        retry: RetryPolicy | None = None,
        retries_per_provider: int = 2,
        message_ttl: float = 86_400.0,
        metrics: GatewayMetrics | None = None,
        tracing: Tracing | None = None,
        bulk: bool = True,
        urgent_workers: int = 1,
    ) -> None:
        self._outbox = outbox
        self._metrics = metrics or GatewayMetrics()
        self._tracing = tracing
        self.providers = providers
        self._workers = workers
        self._claim_size = claim_size
        self._lease_seconds = lease_seconds
        self._lease_margin = min(LEASE_MARGIN, lease_seconds / 4)
        self._send_timeout = send_timeout
        self._idle_poll = idle_poll
        self._retry = retry or RetryPolicy()
        self._per_provider = retries_per_provider
        # Batch messages share requests to providers with a bulk API (dispatch/bulk.py).
        self._bulk = bulk
        self._ttl = timedelta(seconds=message_ttl)
        self._wake = asyncio.Event()
        # Workers that claim codes and single sends only (none when dispatch is off).
        self._urgent_workers = urgent_workers if workers > 0 else 0
        self._urgent_wake = asyncio.Event()
        # Per provider (and its limiter, replaced on reload): the turn of batch requests
        # to wait for a rate token (see _take_turn).
        self._batch_turns: dict[str, tuple[object, asyncio.Lock]] = {}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    def use(self, providers: ProviderSet) -> None:
        """Switches to a new provider set (config reload); sends in flight finish as begun."""
        self.providers = providers

    def wake(self) -> None:
        """Tells idle workers that new work may be due (called after an accept)."""
        self._wake.set()

    def wake_urgent(self) -> None:
        """Tells the urgent workers (and idle others) that a code or single send is due."""
        self._urgent_wake.set()
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"dispatch-worker-{i}")
            for i in range(self._workers)
        ] + [
            asyncio.create_task(self._run_urgent(i), name=f"dispatch-urgent-{i}")
            for i in range(self._urgent_workers)
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Lets workers finish the group in hand (up to ``grace`` s), then cancels them."""
        self._stopping = True
        self._wake.set()
        self._urgent_wake.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        size = self._claim_size
        # With urgent workers, a code just accepted is theirs (a campaign group's claim
        # is slower); one they leave waiting longer is taken here too.
        grace = URGENT_GRACE if self._urgent_workers else 0.0
        while not self._stopping:
            # The lease is counted from before the claim: the database starts it when
            # the claim's transaction begins, and the claim may take a while to return.
            lease_ends = loop.time() + self._lease_seconds
            try:
                claimed = await self._outbox.claim_due(
                    size, self._lease_seconds, urgent_grace=grace
                )
            except Exception as exc:
                log.warning("worker %d cannot claim (%s); backing off", index, type(exc).__name__)
                await self._idle(self._wake, self._idle_poll * 4)
                continue
            if not claimed:
                size = self._claim_size
                await self._idle(self._wake, self._idle_poll)
                continue
            sent = await self._group(index, claimed, lease_ends)
            # Claims grow with bulk requests (dispatch/bulk.py); without urgent workers
            # the first worker keeps claims small, so a code never waits behind a large one.
            if sent is not None and (self._urgent_workers or index > 0 or self._workers == 1):
                size = self._next_size(*sent)

    def _next_size(self, messages: int, requests: int) -> int:
        """How many messages the next claim takes (dispatch/bulk.py, next_claim_size)."""
        if not self._bulk:
            return self._claim_size
        cap = bulk_claim_cap(self.providers.transports, MAX_CLAIM)
        return next_claim_size(self._claim_size, cap, messages, requests)

    async def _run_urgent(self, index: int) -> None:
        """Claims codes and single sends only, and goes on claiming while the groups it
        claimed are out (up to URGENT_GROUPS): a slow provider holds up no other code."""
        loop = asyncio.get_running_loop()
        wake = self._urgent_wake
        slots = asyncio.Semaphore(URGENT_GROUPS)
        groups: set[asyncio.Task[tuple[int, int] | None]] = set()
        try:
            while not self._stopping:
                await slots.acquire()
                lease_ends = loop.time() + self._lease_seconds
                wake.clear()  # before the claim: a code accepted meanwhile wakes it again
                try:
                    claimed = await self._outbox.claim_due(
                        self._claim_size, self._lease_seconds, urgent_only=True
                    )
                except Exception as exc:
                    slots.release()
                    log.warning(
                        "urgent worker %d cannot claim (%s); backing off",
                        index,
                        type(exc).__name__,
                    )
                    await self._idle(wake, self._idle_poll * 4)
                    continue
                if not claimed:
                    slots.release()
                    await self._idle(wake, self._idle_poll)
                    continue
                group = asyncio.create_task(self._group(index, claimed, lease_ends))
                groups.add(group)
                group.add_done_callback(groups.discard)
                group.add_done_callback(lambda _: slots.release())
        except asyncio.CancelledError:
            for group in groups:
                group.cancel()  # each gives its messages back
            raise
        finally:
            if groups:
                await asyncio.gather(*groups, return_exceptions=True)

    async def _group(
        self, index: int, claimed: Sequence[ClaimedMessage], lease_ends: float
    ) -> tuple[int, int] | None:
        """Sends a claimed group and records its outcomes; cancelled, gives it back.
        Returns what _dispatch does (None when the outcomes could not be recorded)."""
        try:
            return await self._dispatch(claimed, lease_ends)
        except asyncio.CancelledError:
            # Given back for another worker now; if the database cannot take it
            # within RELEASE_SECONDS (no connection free), the leases run out.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(self._outbox.release([c.message.id for c in claimed])),
                    RELEASE_SECONDS,
                )
            raise
        except Exception:
            log.exception("worker %d failed to record a group; leases will expire", index)
            return None

    async def _idle(self, wake: asyncio.Event, seconds: float) -> None:
        if self._stopping:
            return
        await wait_event(wake, seconds)
        wake.clear()

    async def _dispatch(
        self, claimed: Sequence[ClaimedMessage], lease_ends: float
    ) -> tuple[int, int]:
        """Sends a claim and records its outcomes. Returns (messages routed to a
        provider, provider requests planned for them)."""
        providers = self.providers
        # Codes and single sends go alone, at once; batch messages are routed first,
        # then grouped into provider requests (bulk APIs) by plan_requests.
        alone = [c for c in claimed if not self._shares(c)]
        now = datetime.now(UTC)
        settled: list[Transition] = []
        routed: list[Routed] = []
        for i, c in enumerate(claimed):
            if not self._shares(c):
                continue
            if i % YIELD_EVERY == 0 and self._urgent_workers:
                # A campaign group's routing in short steps: an urgent worker woken
                # meanwhile runs between them, not after the whole group.
                await asyncio.sleep(0)
            route = self._route(c, providers, now, shareable=True)
            if isinstance(route, Transition):
                settled.append(route)
            else:
                routed.append(route)
        planned = plan_requests(routed, providers.transports)
        singles: Sequence[Transition]
        groups: Sequence[list[Transition]]
        if len(alone) == 1 and not routed:
            # A code alone (the urgent workers' usual group): sent in this task, not
            # one of its own, which would wait a turn of a busy event loop to start.
            singles, groups = [await self._send(alone[0], providers, lease_ends)], []
        else:
            singles, groups = await asyncio.gather(
                asyncio.gather(*(self._send(c, providers, lease_ends) for c in alone)),
                asyncio.gather(*(self._send_request(r, providers, lease_ends) for r in planned)),
            )
        deadlines = {c.message.id: c.expires_at for c in claimed}
        outcomes = [*singles, *settled, *itertools.chain(*groups)]
        await self._record(
            [within_validity(t, deadlines.get(t.message_id)) for t in outcomes], lease_ends
        )
        return len(alone) + len(routed), len(alone) + len(planned)

    def _shares(self, claimed: ClaimedMessage) -> bool:
        """Whether the message may share a provider request with others."""
        return self._bulk and claimed.priority == Priority.BATCH

    async def _record(self, outcomes: Sequence[Transition], lease_ends: float) -> None:
        """Records the outcomes; while the database cannot be reached, tries again until
        the lease is nearly over. The messages went to providers: an outcome given up
        on leaves them to be claimed and sent again once the lease runs out."""
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                await self._outbox.apply(outcomes)
                return
            except Unavailable:
                if loop.time() + delay >= lease_ends - 1.0:
                    raise
                log.warning("cannot record %d outcomes yet (database unavailable)", len(outcomes))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _send(
        self, claimed: ClaimedMessage, providers: ProviderSet, lease_ends: float
    ) -> Transition:
        """Sends one message alone: routed, then one request to the chosen provider."""
        route = self._route(claimed, providers, datetime.now(UTC))
        if isinstance(route, Transition):
            return route
        [transition] = await self._send_request(
            Request(route.provider, (route,)),
            providers,
            lease_ends,
            urgent=claimed.priority < Priority.BATCH,
        )
        return transition

    def _route(
        self,
        claimed: ClaimedMessage,
        providers: ProviderSet,
        now: datetime,
        *,
        shareable: bool = False,
    ) -> Routed | Transition:
        """The provider for this attempt, or the message's outcome when none is asked."""
        message = claimed.message
        if claimed.suppressed:
            return Transition(message.id, MessageStatus.REJECTED, error_code=SUPPRESSED)
        expires_at = claimed.expires_at or claimed.created_at + self._ttl
        if now > expires_at:
            return Transition(message.id, MessageStatus.FAILED, error_code="EXPIRED")
        if claimed.code_unavailable:
            # Sealed with another server key (SMSGW_SECRET_KEY changed): cannot be sent.
            return Transition(message.id, MessageStatus.FAILED, error_code="CODE_UNAVAILABLE")
        candidates = providers.carriers(message)
        if not candidates:
            return Transition(message.id, MessageStatus.FAILED, error_code="NO_ROUTE")
        order = failover_order(candidates, message.attempts, self._per_provider)
        name = next((n for n in order if providers.breakers[n].allow()), None)
        trickle = name is None
        if trickle:
            # Every provider that could carry it is open: a trickle still goes, so
            # the only route is never stopped while messages wait.
            name = next((n for n in order if providers.breakers[n].allow(last_resort=True)), None)
        if name is None:
            # No provider was asked, so this was no attempt. Come back when the
            # first breaker lets a call through.
            wait = min(providers.breakers[n].opens_in(last_resort=True) for n in order)
            return Transition(
                message.id,
                MessageStatus.QUEUED,
                error_code="PROVIDERS_UNAVAILABLE",
                not_before=now + timedelta(seconds=wait + random.uniform(0, 0.1)),
                attempted=False,
            )
        return Routed(message, name, tuple(candidates), shareable, trickle)

    async def _send_request(
        self, request: Request, providers: ProviderSet, lease_ends: float, *, urgent: bool = False
    ) -> list[Transition]:
        """One provider request (a message alone, or a bulk group): one rate token,
        one breaker outcome; each message's own outcome becomes its transition."""
        name = request.provider
        transport = providers.transports[name]
        breaker = providers.breakers[name]
        now = datetime.now(UTC)
        budget = await self._take_turn(name, providers, lease_ends, urgent)
        if budget is None:
            breaker.abandon()
            log.info(
                "lease ran short before sending to %s; %d message(s) given back",
                name,
                len(request.items),
                extra={"message_id": request.items[0].message.id},
            )
            return [
                Transition(
                    r.message.id,
                    MessageStatus.QUEUED,
                    error_code="LEASE_RAN_SHORT",
                    not_before=datetime.now(UTC),
                    attempted=False,
                )
                for r in request.items
            ]
        outcomes = await self._call(transport, request, budget)
        if any(o.accepted or not o.retryable for o in outcomes):
            breaker.record_success()  # the provider answered (refusals included)
        else:
            breaker.record_failure()
        return [
            self._transition(r, outcome, now, breaker)
            for r, outcome in zip(request.items, outcomes, strict=True)
        ]

    async def _take_turn(
        self, name: str, providers: ProviderSet, lease_ends: float, urgent: bool
    ) -> float | None:
        """Waits for the provider's rate token; the seconds left to send in, or None.

        A send must end while the lease holds: after it, another worker may claim
        the messages and send them again. The wait for the provider's rate counts
        too; messages whose lease runs short first are given back untried, to be
        claimed anew.

        The limiter serves its waiters in turn; batch requests wait in it one at a
        time (the others before it), so a code (``urgent``) waits behind one batch
        request at most, not behind a campaign's group."""
        loop = asyncio.get_running_loop()
        budget = lease_ends - self._lease_margin - loop.time()
        limiter = providers.limiters[name]
        try:
            if budget <= 0:
                raise TimeoutError
            async with asyncio.timeout(budget):
                if isinstance(limiter, AsyncLimiter):  # else the provider has no rate
                    if urgent:
                        await limiter.acquire()
                    else:
                        async with self._batch_turn(name, limiter):
                            await limiter.acquire()
        except TimeoutError:
            return None
        budget = lease_ends - self._lease_margin - loop.time()
        return budget if budget > 0 else None

    def _batch_turn(self, name: str, limiter: AsyncLimiter) -> asyncio.Lock:
        held = self._batch_turns.get(name)
        if held is None or held[0] is not limiter:
            held = self._batch_turns[name] = (limiter, asyncio.Lock())
        return held[1]

    async def _call(
        self, transport: Transport, request: Request, budget: float
    ) -> list[SendOutcome]:
        """The provider's answer for each message of the request; a request that
        failed as a whole (timeout, error, a wrong number of answers) answers the
        same retryable outcome for each."""
        name = request.provider
        messages = [r.message for r in request.items]

        def failed(error_code: str) -> list[SendOutcome]:
            return [SendOutcome(accepted=False, retryable=True, error_code=error_code)] * len(
                messages
            )

        try:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(min(self._send_timeout, budget)):
                    with dispatch_span(self._tracing, messages[0].id, name):
                        if request.bulk:
                            outcomes = await send_bulk(transport, messages)
                        else:
                            outcomes = [await send_with(transport, messages[0])]
            finally:
                self._metrics.provider_duration.labels(name).observe(time.perf_counter() - started)
        except TimeoutError:
            return failed("PROVIDER_TIMEOUT")
        except Exception as exc:
            log.warning(
                "transport %s raised %s",
                name,
                type(exc).__name__,
                extra={"message_id": messages[0].id},
            )
            return failed("PROVIDER_ERROR")
        if len(outcomes) != len(messages):
            log.warning(
                "transport %s answered %d outcomes for %d messages",
                name,
                len(outcomes),
                len(messages),
                extra={"message_id": messages[0].id},
            )
            return failed("PROVIDER_ERROR")
        return outcomes

    def _transition(
        self, routed: Routed, outcome: SendOutcome, now: datetime, breaker: CircuitBreaker
    ) -> Transition:
        """A message's transition from its provider's outcome (sent, refused, retried)."""
        if not outcome.accepted:
            self._metrics.provider_errors.labels(
                routed.provider, outcome.error_code or "UNKNOWN"
            ).inc()
        return transition(
            routed,
            outcome,
            now,
            self._retry,
            retries_per_provider=self._per_provider,
            trickle_wait=lambda: breaker.opens_in(last_resort=True),
        )
