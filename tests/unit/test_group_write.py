"""GroupWrite: deliveries settled at once share one write; a failed write fails
every caller that was waiting on it."""

from __future__ import annotations

import asyncio

from server.webhooks.group_write import GroupWrite, WriteFailed


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
    # The caller that wrote gets the error itself; the others a WriteFailed.
    assert [type(r) for r in results] == [ConnectionError] + [WriteFailed] * 4
    assert [type(r.__cause__) for r in results[1:] if r is not None] == [ConnectionError] * 4
    failing = False
    async with asyncio.timeout(1):
        await group.add(5)  # nothing left stuck behind the failure


async def test_the_writer_is_not_failed_by_a_later_batch_it_wrote_for_others() -> None:
    calls = 0

    async def write(items: list[int]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise ConnectionError("database gone")

    group = GroupWrite(write)
    results = await asyncio.gather(*(group.add(i) for i in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [type(None), WriteFailed, WriteFailed]
