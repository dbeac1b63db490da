"""wait_event never swallows a cancellation (asyncio.wait_for on 3.11 can)."""

from __future__ import annotations

import asyncio

import pytest

from server.aio import wait_event


async def test_cancel_arriving_with_the_event_still_cancels() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)  # the task is now waiting on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_returns_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 1) is True
