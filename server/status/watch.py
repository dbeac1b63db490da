"""WatchMessageStatus: snapshot or replay from message_events, then live events.

``after_event_id`` 0 means no replay (the proto's contract): with ids the stream
sends each message's current state, without ids it starts at the newest event. A
resume (``after_event_id`` > 0) replays at most ``max_replay`` events; past that it
is refused with FAILED_PRECONDITION (REPLAY_TOO_LONG) before anything is sent.

The subscription is opened before the first read, so an event committed while the
snapshot or replay is read is either in that read or in the live queue; ids below
the stream's cursor are skipped, so nothing is sent twice or missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from server.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from server.domain.fields import check_ids
from server.domain.models import StatusEvent
from server.domain.ports import EventLog
from server.status.hub import StatusHub, Subscription

MAX_WATCH_IDS = 100
REPLAY_PAGE = 500
MAX_REPLAY_EVENTS = 10_000


class StatusWatcher:
    def __init__(
        self, events: EventLog, hub: StatusHub, *, max_replay: int = MAX_REPLAY_EVENTS
    ) -> None:
        self._events = events
        self._hub = hub
        self._max_replay = max_replay

    async def watch(
        self, account_id: int, ids: Sequence[str], after_event_id: int
    ) -> AsyncIterator[StatusEvent]:
        if len(ids) > MAX_WATCH_IDS:
            raise InvalidArgument.field("ids", f"at most {MAX_WATCH_IDS} ids per stream")
        violations: list[FieldViolation] = []
        check_ids(ids, "ids", violations)
        if after_event_id < 0:
            violations.append(FieldViolation("after_event_id", "must not be negative"))
        if violations:
            raise InvalidArgument(violations)
        watched = list(dict.fromkeys(ids))
        subscription = await self._hub.subscribe(account_id)
        try:
            async for event in self._stream(subscription, account_id, watched, after_event_id):
                yield event
        finally:
            self._hub.unsubscribe(subscription)

    async def _stream(
        self, sub: Subscription, account_id: int, watched: list[str], after_event_id: int
    ) -> AsyncIterator[StatusEvent]:
        cursor = after_event_id
        open_ids: set[str] = set()
        if watched:
            latest = await self._events.latest_per_message(account_id, watched)
            found = {e.message_id: e for e in latest}
            missing = [i for i in watched if i not in found]
            if missing:
                raise NotFound(f"messages not found: {', '.join(missing[:5])}")
            if after_event_id == 0:
                for event in sorted(latest, key=lambda e: e.event_id):
                    yield event
                cursor = max(e.event_id for e in latest)
            # Open: not final yet, or final by an event the caller has not been sent.
            open_ids = {i for i, e in found.items() if not e.status.is_final or e.event_id > cursor}
            if not open_ids:
                return
        elif after_event_id == 0:
            # No replay: start at the newest event (the subscription is already open,
            # so what is committed from here on is sent).
            cursor = await self._events.last_event_id(account_id)
        if after_event_id > 0:
            await self._check_replay(account_id, watched, cursor)
        wanted = set(watched)
        # First what the table holds after the cursor, then live events; after an
        # overflow of the live buffer, the table again from the cursor.
        source = self._replay(account_id, watched, cursor)
        while True:
            async for event in source:
                if event.event_id <= cursor or (wanted and event.message_id not in wanted):
                    continue
                cursor = event.event_id
                if event.status.is_final:
                    open_ids.discard(event.message_id)
                yield event
                if watched and not open_ids:
                    return
            if watched and not open_ids:
                return
            live = await sub.next_event()
            source = (
                _single(live) if live is not None else self._replay(account_id, watched, cursor)
            )

    async def _check_replay(self, account_id: int, watched: list[str], cursor: int) -> None:
        count = await self._events.count_after(
            account_id, cursor, watched or None, self._max_replay + 1
        )
        if count > self._max_replay:
            raise FailedPrecondition(
                f"more than {self._max_replay} events to replay after event {cursor}: "
                "resume from a later event_id, or with after_event_id 0 (no replay) "
                "after reading the current state",
                reason="REPLAY_TOO_LONG",
            )

    async def _replay(
        self, account_id: int, watched: list[str], cursor: int
    ) -> AsyncIterator[StatusEvent]:
        while True:
            page = await self._events.events_after(account_id, cursor, watched or None, REPLAY_PAGE)
            for event in page:
                cursor = event.event_id
                yield event
            if len(page) < REPLAY_PAGE:
                return


async def _single(event: StatusEvent) -> AsyncIterator[StatusEvent]:
    yield event
