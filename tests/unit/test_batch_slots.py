"""Slots for large batches (server/domain/batch_slots.py) and the streamed fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.domain.batch_slots import (
    DEFAULT_RETRY_AFTER,
    MIN_RETRY_AFTER,
    BatchSlots,
    SlotLimits,
)
from server.domain.batch_tasks import SLICE_NUMBERS, CreateBatchCommand, batch_fingerprint
from server.domain.errors import ResourceExhausted
from server.domain.messaging import request_fingerprint
from server.domain.models import UseType


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_small_batches_take_no_slot() -> None:
    slots = BatchSlots(SlotLimits(1, 1))
    assert [slots.take(1, 1_000) for _ in range(5)] == [None] * 5
    assert slots.held == 0


def test_per_account_then_per_server_with_the_expected_wait() -> None:
    clock = Clock()
    slots = BatchSlots(SlotLimits(per_account=1, per_server=2), clock=clock)
    first = slots.take(1, 1_001)
    with pytest.raises(ResourceExhausted) as info:
        slots.take(1, 50_000)
    assert info.value.reason == "LARGE_BATCHES_PER_ACCOUNT"
    assert info.value.retry_after == DEFAULT_RETRY_AFTER  # nothing timed yet
    second = slots.take(2, 100_000)
    clock.now += 0.5
    with pytest.raises(ResourceExhausted) as info:
        slots.take(3, 2_000)
    assert info.value.reason == "LARGE_BATCHES_PER_SERVER"
    assert info.value.quota_subject == "server"
    assert info.value.retry_after == pytest.approx(DEFAULT_RETRY_AFTER - 0.5)
    # A batch stored in 4 s: the next wait is counted from that.
    clock.now += 3.5
    slots.release(first)
    third = slots.take(3, 2_000)
    assert third is not None
    clock.now += 1.0
    with pytest.raises(ResourceExhausted) as info:
        slots.take(4, 2_000)
    # The oldest holder has run 5 s, longer than the 4 s typical: the floor.
    assert info.value.retry_after == pytest.approx(MIN_RETRY_AFTER)
    slots.release(second, stored=False)
    slots.release(third)
    slots.release(third)  # twice is harmless
    assert slots.held == 0


def test_a_repeat_of_a_batch_being_stored_needs_no_slot() -> None:
    slots = BatchSlots(SlotLimits(1, 1))
    assert slots.take(1, 5_000, "campaign-1") is not None
    assert slots.take(1, 5_000, "campaign-1") is None
    with pytest.raises(ResourceExhausted):
        slots.take(1, 5_000, "campaign-2")
    with pytest.raises(ResourceExhausted):
        slots.take(2, 5_000, "campaign-1")  # another account's key is another batch


@pytest.mark.parametrize("n", [0, 1, SLICE_NUMBERS, 2 * SLICE_NUMBERS + 3])
def test_the_streamed_fingerprint_is_the_request_fingerprint(n: int) -> None:
    numbers = [f"+86138{i:08d}" for i in range(n)]
    data = {num: {"name": f'u"{i}', "a": "é"} for i, num in enumerate(reversed(numbers))}
    for send_at in (None, datetime(2026, 1, 2, 3, 4, tzinfo=UTC)):
        cmd = CreateBatchCommand(
            use_type=UseType.MARKETING,
            numbers=numbers,
            content="Hi #name#",
            template_data=data,
            request_id="r",
            send_at=send_at,
        )
        assert batch_fingerprint(cmd) == request_fingerprint(
            int(cmd.use_type),
            cmd.content,
            cmd.template_id,
            list(cmd.numbers),
            sorted((k, sorted(v.items())) for k, v in cmd.template_data.items()),
            cmd.send_at.isoformat() if cmd.send_at else None,
        )
