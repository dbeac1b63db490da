"""The circuit breaker (pure: a fake clock, no I/O): it judges a failure rate over a
window, probes with several calls, and lets a trickle through as a last resort."""

from __future__ import annotations

import random

from server.dispatch.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    base = {"window_seconds": 10.0, "min_failures": 4, "failure_rate": 0.5, "reset_seconds": 5.0}
    return CircuitBreaker(BreakerSettings(**{**base, **settings}), clock=clock)  # type: ignore[arg-type]


def test_it_opens_on_a_failure_rate_not_a_run_of_failures() -> None:
    clock = Clock()
    b = breaker(clock)
    # Three failures in a row are fewer than min_failures: still closed.
    for _ in range(3):
        b.record_failure()
    assert b.state == CLOSED
    # Enough successes keep the rate under half, however many failures there are.
    for _ in range(10):
        b.record_success()
        b.record_success()
        b.record_failure()
    assert b.state == CLOSED and b.failure_rate() < 0.5
    # Once failures are half the calls in the window, it opens.
    for _ in range(10):
        b.record_failure()
    assert b.state == OPEN and not b.allow()


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.now = 10.5  # those three are out of the window now
    b.record_failure()
    assert b.state == CLOSED and b.failure_rate() == 1.0
    for _ in range(2):
        clock.now += 0.1
        b.record_failure()
    assert b.state == CLOSED
    b.record_failure()
    assert b.state == OPEN


def test_half_open_admits_several_probes_and_one_success_closes() -> None:
    clock = Clock()
    b = breaker(clock, probes=3)
    for _ in range(4):
        b.record_failure()
    assert b.state == OPEN and b.opens_in() == 5.0
    clock.now = 5.0
    assert [b.allow() for _ in range(4)] == [True, True, True, False]
    assert b.state == HALF_OPEN and b.opens_in() > 0
    b.record_failure()  # one unlucky probe does not reopen it
    assert b.state == HALF_OPEN and b.allow()  # its slot is free again
    b.record_success()
    assert b.state == CLOSED and b.allow() and b.opens_in() == 0.0


def test_half_open_reopens_when_every_probe_fails() -> None:
    clock = Clock()
    b = breaker(clock, probes=2)
    for _ in range(4):
        b.record_failure()
    clock.now = 5.0
    assert b.allow() and b.allow() and not b.allow()
    b.record_failure()
    b.record_failure()
    assert b.state == OPEN and not b.allow()
    assert b.opens_in() == 5.0


def test_an_abandoned_probe_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock, probes=1)
    for _ in range(4):
        b.record_failure()
    clock.now = 6.0
    assert b.allow() and not b.allow()
    b.abandon()
    assert b.opens_in() == 0.0 and b.allow()


def test_an_open_breaker_still_lets_a_trickle_through_as_the_last_resort() -> None:
    clock = Clock()
    b = breaker(clock, probes=2, trickle_seconds=1.0)
    for _ in range(4):
        b.record_failure()
    assert not b.allow()
    # The only route: two calls a second go through even while it is open.
    assert [b.allow(last_resort=True) for _ in range(3)] == [True, True, False]
    assert b.opens_in(last_resort=True) == 1.0
    b.record_failure()
    b.record_failure()
    assert b.state == OPEN  # failed trickle calls keep it open, and do not extend it
    clock.now = 1.0
    assert b.opens_in(last_resort=True) == 0.0 and b.allow(last_resort=True)
    b.abandon()  # not made after all: the slot is free again
    assert b.allow(last_resort=True)
    b.record_success()  # the provider answers again: closed at once
    assert b.state == CLOSED and b.allow()


def test_a_provider_failing_half_its_sends_keeps_moving() -> None:
    """The defect of issue 16: with 50% failures, one half-open probe failed half the
    time and five failures in a row came fast, so the breaker stayed open. Over a
    minute of simulated sends as the dispatcher makes them (an open breaker is passed
    over unless it is the last resort), most sends go through and none waits long."""
    clock = Clock()
    b = CircuitBreaker(BreakerSettings(), clock=clock)  # the defaults
    rng = random.Random(7)
    made = 0
    longest_gap = 0.0
    last_made = 0.0
    for step in range(6000):  # 100 attempts a second for a minute
        clock.now = step / 100
        if b.allow() or b.allow(last_resort=True):
            made += 1
            longest_gap = max(longest_gap, clock.now - last_made)
            last_made = clock.now
            if rng.random() < 0.5:
                b.record_failure()
            else:
                b.record_success()
    assert made > 3000, made
    assert longest_gap <= 1.0


def test_the_breaker_and_receipt_settings_are_read_from_the_environment() -> None:
    from server.config import ConfigError, Settings

    defaults = Settings.from_env({})
    assert (
        defaults.breaker_window_seconds,
        defaults.breaker_failures,
        defaults.breaker_failure_rate,
        defaults.breaker_probes,
        defaults.receipt_deadline_seconds,
    ) == (30.0, 10, 0.5, 3, 72 * 3600.0)
    s = Settings.from_env(
        {
            "SMSGW_BREAKER_WINDOW_SECONDS": "5",
            "SMSGW_BREAKER_FAILURES": "3",
            "SMSGW_BREAKER_FAILURE_RATE": "0.8",
            "SMSGW_BREAKER_PROBES": "6",
            "SMSGW_RECEIPT_DEADLINE_SECONDS": "600",
        }
    )
    assert (
        s.breaker_window_seconds,
        s.breaker_failures,
        s.breaker_failure_rate,
        s.breaker_probes,
        s.receipt_deadline_seconds,
    ) == (5.0, 3, 0.8, 6, 600.0)
    try:
        Settings.from_env({"SMSGW_BREAKER_FAILURE_RATE": "1.5"})
    except ConfigError as exc:
        assert "SMSGW_BREAKER_FAILURE_RATE" in str(exc)
    else:
        raise AssertionError("a failure rate above 1 was taken")
