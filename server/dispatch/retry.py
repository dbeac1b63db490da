"""Retry policy: exponential backoff with full jitter (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0

    def should_retry(self, attempts: int) -> bool:
        """``attempts`` counts the attempts made so far, including the failed one."""
        return attempts < self.max_attempts

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt: uniform in [0, min(cap, base*2^(n-1))]."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(attempts - 1, 0)))
        return (rng or random).uniform(0, ceiling)
