"""tests/eventually.py: the one wait every test uses."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.eventually import eventually


async def test_returns_the_first_value_that_satisfies_until() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter), until=lambda n: n >= 3, interval=0) == 3


async def test_an_async_probe_is_awaited_and_a_truthy_value_ends_the_wait() -> None:
    values = iter([[], [], ["receipt"]])

    async def probe() -> list[str]:
        await asyncio.sleep(0)
        return next(values)

    assert await eventually(probe, interval=0) == ["receipt"]


async def test_time_up_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the batch final not reached within 0.05 s.*'EXEC'"):
        await eventually(
            lambda: "EXEC", until=lambda s: s == "DONE", within=0.05, what="the batch final"
        )


async def test_with_raise_on_timeout_false_the_last_value_is_returned() -> None:
    got = await eventually(lambda: 7, until=lambda n: n > 7, within=0.05, raise_on_timeout=False)
    assert got == 7


async def test_a_probes_exception_ends_the_wait_at_once_unless_ignored() -> None:
    calls = 0

    def failing() -> bool:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        await eventually(failing, within=5)
    assert calls == 1
    with pytest.raises(AssertionError, match="the port open") as caught:
        await eventually(failing, within=0.05, what=lambda: "the port open", ignoring=(OSError,))
    assert isinstance(caught.value.__cause__, ConnectionRefusedError) and calls > 2
