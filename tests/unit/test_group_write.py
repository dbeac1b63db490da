"""GroupWrite: deliveries settled at once share one write; a failed write fails
every caller that was waiting on it."""

from __future__ import annotations

import asyncio

from server.webhooks.group_write import GroupWrite


async def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> None:
        writes.append(items)
        await asyncio.sleep(0.01)

    group = GroupWrite(write)
    await asyncio.gather(*(group.add(i) for i in range(10)))
    assert writes == [[0], list(range(1, 10))]  # the first alone, the rest together
    await group.add(10)
    assert writes[-1] == [10]


async def test_a_failed_write_fails_its_callers_and_the_next_write_goes_on() -> None:
    failing = True

    async def write(items: list[int]) -> None:
        await asyncio.sleep(0.01)
        if failing:
            raise ConnectionError("database gone")

    group = GroupWrite(write)
    results = await asyncio.gather(*(group.add(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    failing = False
    async with asyncio.timeout(1):
        await group.add(5)  # nothing left stuck behind the failure
