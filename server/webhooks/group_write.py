"""Group commit: callers that each need a row written share one statement.

``await writes.add(item)`` returns once ``item`` is written, or raises: the write's
error (in the caller that wrote) or WriteFailed (in the others). The caller arriving
while no write runs writes everything queued, then what queued meanwhile, until
nothing is left; the others wait for the batch that holds their item. One UPDATE for
many deliveries instead of one each (the delivery loop's largest cost per event).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class WriteFailed(Exception):
    """The write that held this caller's item failed (the cause says why)."""


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
                    except Exception as exc:
                        self._fail(batch, exc, done)
                    except BaseException as exc:  # cancelled: nobody writes the rest
                        self._fail(batch + self._queued, exc, done)
                        self._queued = []
                        raise
                    else:
                        for _, waiting in batch:
                            if not waiting.done():
                                waiting.set_result(None)
            finally:
                self._writing = False
        await done

    @staticmethod
    def _fail(
        batch: list[tuple[T, asyncio.Future[None]]],
        exc: BaseException,
        mine: asyncio.Future[None],
    ) -> None:
        """The writer's own item gets the error itself, each other caller a
        WriteFailed of its own (one exception object raised in many tasks at once
        is not something CPython 3.11 handles well)."""
        for _, waiting in batch:
            if waiting.done():
                continue
            if waiting is mine and isinstance(exc, Exception):
                waiting.set_exception(exc)
            elif waiting is not mine:
                failed = WriteFailed(f"{type(exc).__name__}: {exc}")
                failed.__cause__ = exc
                waiting.set_exception(failed)
