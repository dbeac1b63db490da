"""Group commit: calls that arrive while earlier ones are being written wait and are
written together, one statement and one commit per group, so the locks a write takes
(its accounts' event-log lanes) and the WAL flush are paid once per group, not once per
call. At most ``concurrent`` groups are in flight, of at most ``max_group`` items; with
``key``, a group holds at most one item per key (a second waits for the next group).

Each caller is answered after its group's statement has returned: with its own
result, or the exception ``write`` gave for it, or the statement's error (then
nothing of the group was written).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        # Writes a group; gives each item, in order, its result or its exception.
        write: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        *,
        name: str,
        max_group: int = 500,
        concurrent: int = 2,
        key: Callable[[T], Hashable] | None = None,
    ) -> None:
        self._write = write
        self._name = name
        self._max_group = max_group
        self._concurrent = concurrent
        self._key = key
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """Writes ``item`` with the group it joins; its result, or raises."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start()
        return await future

    def _start(self) -> None:
        while self._waiting and self._in_flight < self._concurrent:
            group, later = self._next_group()
            self._waiting = later
            self._in_flight += 1
            task = asyncio.create_task(self._write_group(group), name=self._name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _next_group(
        self,
    ) -> tuple[list[tuple[T, asyncio.Future[R]]], list[tuple[T, asyncio.Future[R]]]]:
        if self._key is None:
            return self._waiting[: self._max_group], self._waiting[self._max_group :]
        group: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        for entry in self._waiting:
            key = self._key(entry[0])
            if key in keys or len(group) >= self._max_group:
                later.append(entry)
            else:
                keys.add(key)
                group.append(entry)
        return group, later

    async def _write_group(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException] = ()
        error: BaseException | None = None
        try:
            outcomes = await self._write([item for item, _ in group])
        except Exception as exc:
            error = exc
        finally:
            self._in_flight -= 1
            for i, (_, future) in enumerate(group):
                if future.done():  # its caller went away
                    continue
                if error is not None:
                    future.set_exception(error)
                elif i >= len(outcomes):  # the write was cancelled (shutdown)
                    future.cancel()
                elif isinstance(outcome := outcomes[i], BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            self._start()
