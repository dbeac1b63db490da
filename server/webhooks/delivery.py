"""The webhook delivery worker (one per process).

Each round it turns new events into deliveries (store.materialise), leases the
due ones and POSTs each, signed per Standard Webhooks, to its endpoint. 2xx ends a
delivery; 410 disables the endpoint; anything else (no answer, timeout, 429, 5xx, ...)
is retried after ``retry_delay``: base, 2 * base, 4 * base ... capped at one hour, each
times a random factor in [0.5, 1], until ``retry_for`` seconds after the event
(defaults: 5 s doubling, 25 h — about 30 attempts); a 429's Retry-After is waited
instead when it is longer. At most ``per_endpoint`` requests are open per endpoint, so
a slow or dead endpoint holds only its own slots; every request has a timeout and
follows no redirect, and its connection goes only to addresses PublicOnlyResolver
checked (server/http/webhook_url.py). A delivery is leased for three timeouts: a
replica that dies mid-request leaves it to another after that.

Rounds run when events are committed (``wake``, called on the event log's NOTIFY),
when a request ends, and every ``interval`` seconds otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter as Tally
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp.abc import AbstractResolver

from server.domain import webhook_signing
from server.domain.codes import CodeKeys
from server.domain.errors import InvalidArgument
from server.http.webhook_url import PublicOnlyResolver, check_url
from server.store.webhooks import FAILED, PENDING, DueDelivery, PgWebhookStore
from server.webhooks.events import event_body
from server.webhooks.group_write import GroupWrite

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 3600.0


def retry_delay(attempts: int, base: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    delay: float = min(base * 2.0 ** min(attempts - 1, 30), MAX_DELAY_SECONDS)
    jitter: float = (rng or random.Random()).uniform(0.5, 1.0)
    return delay * jitter


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# A round woken by an answered request waits this long first (others' answers free
# their slots meanwhile): one claim_due for several slots instead of one each.
GATHER_SECONDS = 0.005
ANALYZE_AFTER_ROWS = 1000
ANALYZE_EVERY_SECONDS = 10.0


class WebhookDelivery:
    def __init__(
        self,
        store: PgWebhookStore,
        keys: CodeKeys,
        count: Callable[[str], None],
        *,
        allow_insecure: bool,
        retry_base: float,
        retry_for: float,
        interval: float = 0.2,
        timeout: float = 10.0,
        per_endpoint: int = 16,
        capacity: int = 200,
        resolver: AbstractResolver | None = None,
    ) -> None:
        """``count(result)``: one attempt ended (succeeded, retried, failed, gone);
        ``resolver``: the DNS the connections use (None: the system's)."""
        self._store = store
        self._keys = keys
        self._count = count
        self._allow_insecure = allow_insecure
        self._retry_base = retry_base
        self._retry_for = retry_for
        self._interval = interval
        self._timeout = timeout
        self._per_endpoint = per_endpoint
        self._capacity = capacity
        self._open: Tally[int] = Tally()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        # New events were announced (or the poll is due): the next round turns them
        # into deliveries. A round woken by a finished request only claims.
        self._new_events = True
        self._materialised_at = 0.0
        self._resolver = resolver
        self._successes = GroupWrite(store.record_successes)
        self._secrets: dict[bytes, str] = {}  # sealed -> plain: unsealing costs
        self._urls: dict[str, bool] = {}  # URL -> its form passes check_url
        self._created_since_analyze = 0
        self._analyzed_at = -ANALYZE_EVERY_SECONDS

    def start(self) -> None:
        resolver = self._resolver
        if not self._allow_insecure:
            resolver = PublicOnlyResolver(resolver)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            connector=aiohttp.TCPConnector(limit=self._capacity, resolver=resolver),
            # An endpoint's cookies are no business of the next request (and keeping
            # them costs each one).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._loop_task = asyncio.create_task(self._run(), name="webhook-delivery")

    def wake(self) -> None:
        """New events were committed (the event log's NOTIFY)."""
        self._new_events = True
        self._wake.set()

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            busy = False
            try:
                busy = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery round failed")
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                if not self._new_events:
                    # Woken by an answered request: let the others answered meanwhile
                    # free their slots too, so one claim fills them all.
                    await asyncio.sleep(GATHER_SECONDS)
                self._wake.clear()

    async def _round(self) -> bool:
        created = 0
        now = time.monotonic()
        if self._new_events or now - self._materialised_at >= self._interval:
            self._new_events = False
            self._materialised_at = now
            created = await self._store.materialise(500)
            self._new_events = self._new_events or created > 0  # maybe more behind them
            await self._keep_statistics(created, now)
        room = self._capacity - len(self._tasks)
        if room <= 0:
            return False
        due = await self._store.claim_due(
            room, 3 * self._timeout, room=dict(self._open), per_endpoint=self._per_endpoint
        )
        for d in due:
            if self._open[d.delivery.webhook_id] >= self._per_endpoint:
                await self._store.release(d.delivery.id)
                continue
            self._open[d.delivery.webhook_id] += 1
            task = asyncio.create_task(self._deliver(d))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return created > 0 or len(due) == room

    async def _keep_statistics(self, created: int, now: float) -> None:
        """ANALYZE the queue once it has grown by ANALYZE_AFTER_ROWS since the last
        time (at most every ANALYZE_EVERY_SECONDS): the planner's picture of a queue
        that filled faster than autovacuum looks must not be an empty table."""
        self._created_since_analyze += created
        if (
            self._created_since_analyze >= ANALYZE_AFTER_ROWS
            and now - self._analyzed_at >= ANALYZE_EVERY_SECONDS
        ):
            self._created_since_analyze = 0
            self._analyzed_at = now
            await self._store.analyze()

    async def _deliver(self, due: DueDelivery) -> None:
        # The endpoint's slot is its open request: freed once answered, so the next
        # request goes while this outcome is written (the delivery stays leased until
        # then, and the message's next event waits for it in claim_due).
        try:
            try:
                status, retry_after = await self._post(due)
            finally:
                self._close_slot(due.delivery.webhook_id)
            await self._settle(due, status, retry_after)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook delivery %d failed", due.delivery.id)
        finally:
            self._wake.set()

    def _close_slot(self, webhook_id: int) -> None:
        self._open[webhook_id] -= 1
        if self._open[webhook_id] <= 0:
            del self._open[webhook_id]
        self._wake.set()

    async def _post(self, due: DueDelivery) -> tuple[int, float | None]:
        """The HTTP status (0: no answer or refused address) and a 429's Retry-After."""
        assert self._session is not None
        if not await self._url_allowed(due.url):
            return 0, None
        secret = self._secret(due.secret_sealed)
        if secret is None:
            log.error("webhook %d: secret sealed with another key", due.delivery.webhook_id)
            return 0, None
        body = event_body(due.event)
        headers = webhook_signing.headers(secret, str(due.delivery.id), int(time.time()), body)
        try:
            async with self._session.post(
                due.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return response.status, retry_after_seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError):
            return 0, None

    async def _url_allowed(self, url: str) -> bool:
        """check_url's verdict on the URL's form (the address is checked when it is
        connected to), kept per URL: it is the same each time."""
        allowed = self._urls.get(url)
        if allowed is None:
            try:
                await check_url(url, allow_insecure=self._allow_insecure, resolve=False)
                allowed = True
            except InvalidArgument:
                allowed = False
            if len(self._urls) >= 10_000:
                self._urls.clear()
            self._urls[url] = allowed
        return allowed

    def _secret(self, sealed: bytes) -> str | None:
        secret = self._secrets.get(sealed)
        if secret is None:
            secret = self._keys.unseal(sealed)
            if secret is not None:
                if len(self._secrets) >= 10_000:
                    self._secrets.clear()
                self._secrets[sealed] = secret
        return secret

    async def _settle(self, due: DueDelivery, status: int, retry_after: float | None) -> None:
        d = due.delivery
        if 200 <= status < 300:
            await self._successes.add((d.id, status))
            self._count("succeeded")
            return
        if status == 410:
            self._count("gone")
            # Disabled first, so no later event of the endpoint is claimed meanwhile.
            await self._store.disable(d.webhook_id)
            await self._store.record_attempt(d.id, status, FAILED, None)
            return
        delay = retry_delay(d.attempts + 1, self._retry_base)
        if status == 429 and retry_after is not None:
            delay = max(delay, retry_after)
        now = datetime.now(UTC)
        next_at = now + timedelta(seconds=delay)
        if next_at > d.created_at + timedelta(seconds=self._retry_for):
            self._count("failed")
            await self._store.record_attempt(d.id, status, FAILED, None)
        else:
            self._count("retried")
            await self._store.record_attempt(d.id, status, PENDING, next_at)
