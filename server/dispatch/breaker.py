"""A circuit breaker per provider (pure; the clock is injected).

It judges a failure *rate* over a sliding time window, not a run of failures: with
many sends in flight, a run of five comes fast from a provider failing only half
the time, and one unlucky probe would keep it open (issue 16, item 1).

closed: calls pass. The breaker opens when, within the last ``window_seconds``, at
least ``min_failures`` retryable failures were seen and they are at least
``failure_rate`` of the answered calls.
open: calls are refused for ``reset_seconds``; then it is half-open.
half-open: up to ``probes`` calls pass at a time; the first success closes it, and
it opens again once ``probes`` of them have failed (one unlucky probe of a provider
failing half the time no longer keeps it open for another ``reset_seconds``).

An open breaker still lets a trickle through when it is the message's last resort
(``allow(last_resort=True)``: every provider that could carry the message is open):
``probes`` calls per ``trickle_seconds``. The only route is never stopped while
messages wait, and a trickle call's success closes it at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    """SMSGW_BREAKER_* settings (docs/providers.md)."""

    window_seconds: float = 30.0
    min_failures: int = 10
    failure_rate: float = 0.5
    reset_seconds: float = 30.0
    probes: int = 3
    # Last-resort calls: ``probes`` of them per this many seconds while open.
    trickle_seconds: float = 1.0


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = settings or BreakerSettings()
        self._window = s.window_seconds
        self._min_failures = max(1, s.min_failures)
        self._rate = min(max(s.failure_rate, 0.0), 1.0)
        self._reset = s.reset_seconds
        self._probes = max(1, s.probes)
        self._trickle = s.trickle_seconds
        self._clock = clock
        self.state = CLOSED
        # Answers in the window, oldest first: (when, failed).
        self._calls: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._opened_at = 0.0
        # Half-open: probes let through and not answered yet, and those that failed.
        self._probes_out = 0
        self._probe_failures = 0
        # Open: last-resort calls let through in the current trickle period.
        self._trickle_started = -math.inf
        self._trickled = 0

    # --- letting calls through

    def allow(self, *, last_resort: bool = False) -> bool:
        """Whether a call may go now (and counts it as made: see ``abandon``)."""
        self._maybe_half_open()
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN:
            if self._probes_out < self._probes:
                self._probes_out += 1
                return True
            return False
        if not last_resort:
            return False
        now = self._clock()
        if now - self._trickle_started >= self._trickle:
            self._trickle_started, self._trickled = now, 0
        if self._trickled < self._probes:
            self._trickled += 1
            return True
        return False

    def opens_in(self, *, last_resort: bool = False) -> float:
        """Seconds until ``allow`` may let a call through again (0: it may now)."""
        self._maybe_half_open()
        if self.state == CLOSED:
            return 0.0
        if self.state == HALF_OPEN:
            if self._probes_out < self._probes:
                return 0.0
            return min(self._reset / 10, self._trickle)  # the probes' answers decide
        until_half_open = max(0.0, self._opened_at + self._reset - self._clock())
        if not last_resort:
            return until_half_open
        if self._trickled < self._probes:
            return 0.0
        until_trickle = max(0.0, self._trickle_started + self._trickle - self._clock())
        return min(until_half_open, until_trickle)

    def abandon(self) -> None:
        """A call ``allow`` let through was not made: its slot is free again."""
        if self.state == HALF_OPEN and self._probes_out > 0:
            self._probes_out -= 1
        elif self.state == OPEN and self._trickled > 0:
            self._trickled -= 1

    # --- answers

    def record_success(self) -> None:
        self._answer(failed=False)

    def record_failure(self) -> None:
        self._answer(failed=True)

    def _answer(self, *, failed: bool) -> None:
        self._maybe_half_open()
        if self.state == OPEN:
            if not failed:
                self._close()  # a trickle call went through: the provider works
            return  # a trickle call failed: still open
        if self.state == HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            if not failed:
                self._close()
                return
            self._probe_failures += 1
            if self._probe_failures >= self._probes:
                self._open()
            return
        now = self._clock()
        self._calls.append((now, failed))
        self._failures += failed
        self._prune(now)
        if (
            failed
            and self._failures >= self._min_failures
            and self._failures >= self._rate * len(self._calls)
        ):
            self._open()

    def failure_rate(self) -> float:
        """The share of failed calls in the window (0 when there were none)."""
        self._prune(self._clock())
        return self._failures / len(self._calls) if self._calls else 0.0

    # --- states

    def _prune(self, now: float) -> None:
        while self._calls and self._calls[0][0] <= now - self._window:
            _, failed = self._calls.popleft()
            self._failures -= failed

    def _maybe_half_open(self) -> None:
        if self.state == OPEN and self._clock() - self._opened_at >= self._reset:
            self._half_open()

    def _half_open(self) -> None:
        self.state = HALF_OPEN
        self._probes_out = self._probe_failures = 0

    def _open(self) -> None:
        self.state = OPEN
        self._opened_at = self._clock()
        self._trickle_started, self._trickled = -math.inf, 0
        self._calls.clear()
        self._failures = 0

    def _close(self) -> None:
        self.state = CLOSED
        self._calls.clear()
        self._failures = 0
