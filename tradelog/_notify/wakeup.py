"""Where producers and delivery workers of one process meet: :class:`Wakeups`.

``notify()`` commits outbox rows; a worker polling every second would find them a second later.
Instead the notification service rings the runtime's :class:`Wakeups` after each commit, and every
worker subscribed to it looks at the outbox at once. Neither side imports the other: the
composition root hands both the same registry.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

__all__ = ["Wakeups"]


class Wakeups:
    """A thread-safe set of callbacks rung together (callbacks must be quick and never block)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on every :meth:`ring`; returns the function that unsubscribes it."""
        with self._lock:
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def ring(self) -> None:
        """Call every subscriber (what one raises is ignored; the worker polls anyway)."""
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with contextlib.suppress(Exception):
                callback()

    def after_fork(self) -> None:
        """In a forked child: the parent's workers do not run here."""
        self._lock = threading.Lock()
        self._callbacks = []
