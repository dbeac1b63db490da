"""Small asyncio helpers.

``asyncio.wait_for`` on Python 3.11 can swallow a cancellation when the awaited
thing finishes at the same moment (the task then runs on and a shutdown waits for
it forever). ``asyncio.timeout`` does not, so waits with a deadline use it.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Waits until ``event`` is set or ``seconds`` pass; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
