"""WatchInboundMessages: replay from inbound_messages after a cursor, then new ones.

``after_event_id`` 0 means no replay: the stream starts at the newest inbound message
(of any account). A resume (> 0) replays at most ``max_replay`` messages; past that
it is refused FAILED_PRECONDITION (REPLAY_TOO_LONG) before anything is sent, as
WatchMessageStatus does. Event ids of inbound messages are drawn under the account
events' lock until commit, so they follow commit order and reading the table after
the cursor never skips one. New messages are read when their NOTIFY arrives
(``wake``, on the status hub's LISTEN connection), and every ``poll_interval``
seconds in case a notification was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.aio import wait_event
from server.domain.errors import FailedPrecondition, InvalidArgument
from server.domain.inbound import (
    MAX_REPLAY_EVENTS,
    REPLAY_PAGE,
    InboundMessage,
    InboundRepository,
)


class InboundWatcher:
    def __init__(
        self,
        repository: InboundRepository,
        *,
        max_replay: int = MAX_REPLAY_EVENTS,
        poll_interval: float = 5.0,
    ) -> None:
        self._repository = repository
        self._max_replay = max_replay
        self._poll_interval = poll_interval
        self._waiting: set[asyncio.Event] = set()

    def wake(self) -> None:
        """New events were committed somewhere: every open stream reads."""
        for event in self._waiting:
            event.set()

    async def watch(self, account_id: int, after_event_id: int) -> AsyncIterator[InboundMessage]:
        if after_event_id < 0:
            raise InvalidArgument.field("after_event_id", "must not be negative")
        ready = asyncio.Event()
        self._waiting.add(ready)
        try:
            if after_event_id == 0:
                cursor = await self._repository.last_event_id()
            else:
                cursor = after_event_id
                count = await self._repository.count_after(account_id, cursor, self._max_replay + 1)
                if count > self._max_replay:
                    raise FailedPrecondition(
                        f"more than {self._max_replay} inbound messages to replay after event "
                        f"{cursor}: resume from a later event_id, or with after_event_id 0 "
                        "(no replay) after listing them",
                        reason="REPLAY_TOO_LONG",
                    )
            while True:
                ready.clear()
                page = await self._repository.after(account_id, cursor, REPLAY_PAGE)
                for message in page:
                    cursor = message.event_id
                    yield message
                if len(page) < REPLAY_PAGE:
                    await wait_event(ready, self._poll_interval)
        finally:
            self._waiting.discard(ready)
