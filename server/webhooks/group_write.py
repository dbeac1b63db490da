"""Group commit: callers that each need a row written share one statement.

``await writes.add(item)`` returns once ``item`` is written, or raises what the write
raised. The caller that arrives while no write runs writes everything queued, then
what queued meanwhile, until nothing is left; the others wait for the batch that
holds their item. One UPDATE for many deliveries instead of one each (the delivery
loop's largest cost per event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupWrite(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._queued: list[tuple[T, asyncio.Future[None]]] = []
        self._writing = False

    async def add(self, item: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((item, done))
        if not self._writing:
            self._writing = True
            try:
                while self._queued:
                    batch, self._queued = self._queued, []
                    try:
                        await self._write([i for i, _ in batch])
                    except BaseException as exc:
                        # This batch and everything queued behind it fail alike.
                        failed = RuntimeError("write cancelled")
                        error = exc if isinstance(exc, Exception) else failed
                        for _, waiting in batch + self._queued:
                            if not waiting.done():
                                waiting.set_exception(error)
                        self._queued = []
                        raise
                    for _, waiting in batch:
                        if not waiting.done():
                            waiting.set_result(None)
            finally:
                self._writing = False
        await done
