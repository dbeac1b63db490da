"""``eventually``: the one way tests wait for something to happen.

    receipts = await eventually(lambda: transport.query_status(refs), until=all_settled)
    await eventually(delivered, within=20, what="the message delivered")

The probe (a function, sync or async) is called every ``interval`` seconds until
``until`` holds for its value (by default: the value is truthy); that value is
returned. An exception the probe raises ends the wait at once (so a probe can
``assert`` what must never happen while waiting), except those listed in
``ignoring``, which mean "not yet". When ``within`` seconds pass, an AssertionError
says what was awaited and the last value seen, or, with ``raise_on_timeout=False``,
the last value is returned for the caller to judge.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

_NOTHING = object()


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], object] = ...,
    within: float = ...,
    interval: float = ...,
    what: str | Callable[[], str] = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    raise_on_timeout: bool = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    *,
    until: Callable[[T], object] = ...,
    within: float = ...,
    interval: float = ...,
    what: str | Callable[[], str] = ...,
    ignoring: tuple[type[BaseException], ...] = ...,
    raise_on_timeout: bool = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    until: Callable[[Any], object] = bool,
    within: float = 10.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "the condition",
    ignoring: tuple[type[BaseException], ...] = (),
    raise_on_timeout: bool = True,
) -> Any:
    """The probe's first value that satisfies ``until`` (see the module's note)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: object = _NOTHING
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            last = value
            if until(value):
                return value
            error: BaseException | None = None
        except ignoring as exc:
            error = exc
        if loop.time() >= deadline:
            if not raise_on_timeout and last is not _NOTHING:
                return last
            described = what() if callable(what) else what
            seen = "nothing" if last is _NOTHING else f"{last!r:.500}"
            raise AssertionError(
                f"{described} not reached within {within:g} s (last seen: {seen})"
            ) from error
        await asyncio.sleep(interval)
