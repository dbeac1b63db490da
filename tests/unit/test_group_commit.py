"""GroupCommit (server/store/group_commit.py): calls made while a group is being written
go together in the next; a key keeps two of one key apart; each caller gets its own
answer, or the group's error."""

from __future__ import annotations

import asyncio

import pytest

from server.store.group_commit import GroupCommit


class Writer:
    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def write(self, group: list[str]) -> list[str | BaseException]:
        self.groups.append(group)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [ValueError(item) if item.startswith("bad") else item.upper() for item in group]


async def test_calls_made_while_a_group_is_written_go_together_in_the_next() -> None:
    writer = Writer()
    commit: GroupCommit[str, str] = GroupCommit(writer.write, name="t", concurrent=1)
    first = asyncio.create_task(commit.submit("a"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(commit.submit(x)) for x in "bcd"]
    await asyncio.sleep(0)
    assert writer.groups == [["a"]]
    writer.release.set()
    assert await first == "A"
    assert [await r for r in rest] == ["B", "C", "D"]
    assert writer.groups == [["a"], ["b", "c", "d"]]


async def test_a_group_holds_one_item_per_key_and_at_most_max_group() -> None:
    writer = Writer()
    writer.release.set()
    blocker = asyncio.Event()

    async def slow(group: list[str]) -> list[str | BaseException]:
        await blocker.wait()
        return await writer.write(group)

    commit: GroupCommit[str, str] = GroupCommit(
        slow, name="t", concurrent=1, max_group=2, key=lambda item: item[0]
    )
    calls = [asyncio.create_task(commit.submit(x)) for x in ("x0", "x1", "y0", "z0")]
    await asyncio.sleep(0)
    blocker.set()
    assert [await c for c in calls] == ["X0", "X1", "Y0", "Z0"]
    # x0 alone (it was first, alone in flight); then x1 and y0; z0 past max_group.
    assert writer.groups == [["x0"], ["x1", "y0"], ["z0"]]


async def test_each_caller_gets_its_own_answer_or_the_groups_error() -> None:
    writer = Writer()
    writer.release.set()
    commit: GroupCommit[str, str] = GroupCommit(writer.write, name="t")
    good, bad = commit.submit("good"), commit.submit("bad one")
    assert await good == "GOOD"
    with pytest.raises(ValueError, match="bad one"):
        await bad
    writer.fail = ConnectionError("database gone")
    calls = [asyncio.create_task(commit.submit(x)) for x in ("p", "q")]
    for call in calls:
        with pytest.raises(ConnectionError):
            await call
