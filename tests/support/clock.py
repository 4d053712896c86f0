"""A clock tests move by hand: retry, lease, backoff and pause times pass without sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class FakeClock:
    """Callable like :func:`tradelog._db.base.utcnow`; starts at the real current time."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock ``seconds`` forward; returns the new time."""
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
