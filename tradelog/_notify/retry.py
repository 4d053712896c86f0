"""When a delivery that failed transiently is tried again (:class:`RetryPolicy`; pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again.

    Attempt ``n`` (1-based) that failed transiently is retried after
    ``min(max_delay, base_delay * 2 ** (n - 1))`` seconds with "equal jitter" (half fixed, half
    random), or after the service's ``retry_after`` (plus up to 10 %) when it gave one.
    After ``max_attempts`` attempts the delivery fails for good.
    """

    max_attempts: int = 8
    base_delay: float = 5.0
    max_delay: float = 900.0

    def delay(self, attempts: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before the next attempt."""
        if retry_after is not None and retry_after > 0:
            return float(retry_after * (1.0 + rng.uniform(0.0, 0.1)))
        backoff = min(self.max_delay, self.base_delay * 2.0 ** max(0, attempts - 1))
        return float(backoff / 2 + rng.uniform(0.0, backoff / 2))
