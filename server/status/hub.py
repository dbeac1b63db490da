"""Fans status events out to the streams open on this replica.

One LISTEN connection per process hears that new events were committed (by any
replica); the hub then reads, for each account with a stream open here, its events
after that account's cursor (the log is ordered per account: store/events.py) and
hands them to the account's subscriptions. A periodic read covers a lost notification
or a dropped LISTEN connection. A subscription whose buffer fills is marked
``overflowed`` and its stream re-reads the table from its own cursor, so a slow
reader costs bounded memory and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from server.aio import wait_event
from server.domain.models import StatusEvent
from server.domain.ports import EventLog
from server.store.events import EVENTS_CHANNEL

log = logging.getLogger(__name__)

READ_LIMIT = 1000


MAX_BUFFERED = 4096


@dataclass(eq=False)
class Subscription:
    """One stream's buffer of live events for one account."""

    account_id: int
    buffer: deque[StatusEvent] = field(default_factory=deque)
    overflowed: bool = False
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: StatusEvent) -> None:
        if self.overflowed:
            return
        if len(self.buffer) >= MAX_BUFFERED:
            self.overflowed = True
            self.buffer.clear()
        else:
            self.buffer.append(event)
        self._ready.set()

    async def next_event(self) -> StatusEvent | None:
        """The next live event; None once the buffer overflowed (re-read the table)."""
        while not self.buffer and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            self.overflowed = False
            return None
        return self.buffer.popleft()


class StatusHub:
    def __init__(self, dsn: str, events: EventLog, *, poll_interval: float = 1.0) -> None:
        self._dsn = dsn
        self._events = events
        self._poll_interval = poll_interval
        self._subscriptions: dict[int, set[Subscription]] = {}
        # Per account with a stream open: the last event handed out. An account's
        # cursor starts at its newest event when its first stream subscribes, and is
        # dropped with its last stream.
        self._cursors: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._also_wake: list[Callable[[], None]] = []
        # Other channels this process LISTENs on (inbound messages): channel -> callbacks.
        self._channels: dict[str, list[Callable[[], None]]] = {}

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    async def start(self) -> None:
        await self._connect_listener()
        self._task = asyncio.create_task(self._run(), name="status-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def subscribe(self, account_id: int) -> Subscription:
        """Registers a stream; events committed from now on reach its buffer."""
        async with self._lock:
            if account_id not in self._cursors:
                self._cursors[account_id] = await self._events.last_event_id(account_id)
            subscription = Subscription(account_id)
            self._subscriptions.setdefault(account_id, set()).add(subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self._subscriptions.get(subscription.account_id)
        if subs is not None:
            subs.discard(subscription)
            if not subs:
                del self._subscriptions[subscription.account_id]
                self._cursors.pop(subscription.account_id, None)

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Calls ``wake`` on each NOTIFY of ``channel`` (on the hub's LISTEN connection,
        again after it reconnects)."""
        first = channel not in self._channels
        self._channels.setdefault(channel, []).append(wake)
        if first and self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._listener.add_listener(channel, self._on_channel)

    def _on_channel(self, _conn: object, _pid: object, channel: str, _payload: object) -> None:
        for wake in self._channels.get(channel, ()):
            wake()

    async def _connect_listener(self) -> None:
        try:
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(EVENTS_CHANNEL, self._on_notify)
            for channel in self._channels:
                await self._listener.add_listener(channel, self._on_channel)
        except (OSError, asyncpg.PostgresError) as exc:
            self._listener = None
            log.warning("status hub cannot LISTEN (%s); reading by polling", type(exc).__name__)

    def on_notify(self, wake: Callable[[], None]) -> None:
        """Calls ``wake`` too whenever new events are announced (webhook delivery)."""
        self._also_wake.append(wake)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()
        for wake in self._also_wake:
            wake()

    async def _run(self) -> None:
        while True:
            await wait_event(self._wake, self._poll_interval)
            self._wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._connect_listener()
                await self._read_new_events()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("status hub read failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self._poll_interval)

    async def _read_new_events(self) -> None:
        async with self._lock:
            await self._read_locked()

    async def _read_locked(self) -> None:
        wanted = dict(self._cursors)
        while wanted:
            found = await self._events.accounts_after(wanted, READ_LIMIT)
            more: dict[int, int] = {}
            for account_id, events in found.items():
                for event in events:
                    for subscription in self._subscriptions.get(account_id, ()):
                        subscription.offer(event)
                if account_id in self._cursors:
                    self._cursors[account_id] = events[-1].event_id
                if len(events) >= READ_LIMIT:
                    more[account_id] = events[-1].event_id
            wanted = more
