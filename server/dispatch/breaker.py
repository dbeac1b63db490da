"""A circuit breaker per provider (pure; the clock is injected).

closed: calls pass; ``failure_threshold`` consecutive retryable failures open it.
open: calls are refused until ``reset_seconds`` have passed; then one probe passes
(half-open). The probe's success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        reset_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self.state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock() - self._opened_at >= self._reset:
            self.state = HALF_OPEN
            self._probe_out = False
        if self.state == HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def opens_in(self) -> float:
        """Seconds until ``allow`` may let a call through again (0: it may now)."""
        if self.state == CLOSED or (self.state == HALF_OPEN and not self._probe_out):
            return 0.0
        if self.state == HALF_OPEN:  # the probe is out; its answer decides
            return self._reset / 10
        return max(0.0, self._opened_at + self._reset - self._clock())

    def abandon(self) -> None:
        """A call ``allow`` let through was not made: its probe slot is free again."""
        if self.state == HALF_OPEN:
            self._probe_out = False

    def record_success(self) -> None:
        self.state = CLOSED
        self._failures = 0
        self._probe_out = False

    def record_failure(self) -> None:
        if self.state == HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def _open(self) -> None:
        self.state = OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._probe_out = False
