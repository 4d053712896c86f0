"""Live status without the database: what waits on local disk, and the thread that publishes it.

:func:`local_backlog` counts, from the files alone, what the database has not taken (yet):

======================  ==========================================================================
dead_letters            log rows the database refused for good (``_dead_letter/*.jsonl``)
unwritten_errors        error rows waiting to be stored (``_runtime/errors-unwritten-*.jsonl``)
spooled_notifications   ``notify()`` requests made while the database was down
                        (``_runtime/notify-unwritten-*.jsonl``)
spooled_telemetry       heartbeats / running state / task rows made while it was down
                        (``_runtime/health-unwritten-*.jsonl``)
======================  ==========================================================================

:class:`StatusPublisher` is a daemon thread that every ``interval`` seconds takes a snapshot
(the runtime's :meth:`~tradelog.Runtime.stats`: in-memory counters and the counts above) and
saves it to ``{log_dir}/_runtime/writer-<pid>.json``. It never does database I/O, so the figures
``tradelog status`` reads stay live while a database call hangs (the writer's own database
thread, stuck in that call, cannot publish).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from tradelog._signals import block_in_this_thread
from tradelog._spool_files import waiting_records

__all__ = ["BACKLOG_KEYS", "PROBLEM_KEYS", "StatusPublisher", "local_backlog"]

_SOURCES: Final = (
    ("dead_letters", "_dead_letter", "*.jsonl"),
    ("unwritten_errors", "_runtime", "errors-unwritten-*.jsonl"),
    ("spooled_notifications", "_runtime", "notify-unwritten-*.jsonl"),
    ("spooled_telemetry", "_runtime", "health-unwritten-*.jsonl"),
)
BACKLOG_KEYS: Final = tuple(key for key, _, _ in _SOURCES)
PROBLEM_KEYS: Final = ("dead_letters", "unwritten_errors")
"""Backlog entries that need an operator (``tradelog status`` exits 1 while any is non-zero)."""


def local_backlog(log_dir: Path | str) -> dict[str, int]:
    """How many records wait in each kind of local file under ``log_dir`` (see above); of a
    spool file a replay stopped part-way in, the records after its progress mark."""
    root = Path(log_dir)
    counts: dict[str, int] = {}
    for key, folder, pattern in _SOURCES:
        total = 0
        with contextlib.suppress(OSError):
            for path in (root / folder).glob(pattern):
                with contextlib.suppress(OSError):
                    total += waiting_records(path)  # a dead letter has no mark
        counts[key] = total
    return counts


class StatusPublisher:
    """Saves ``snapshot()`` with ``save`` every ``interval`` seconds on its own thread; what
    either raises goes to ``on_error``."""

    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        save: Callable[[dict[str, Any]], None],
        *,
        interval: float,
        on_error: Callable[[BaseException], object],
    ) -> None:
        self._snapshot = snapshot
        self._save = save
        self.interval = interval
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StatusPublisher:
        """Start publishing (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tradelog-status", daemon=True)
            self._thread.start()
        return self

    def publish(self) -> None:
        """Save one snapshot now (on the calling thread)."""
        try:
            self._save(self._snapshot())
        except Exception as exc:
            self._on_error(exc)

    def stop(self) -> None:
        """Stop the thread and publish a last snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.publish()

    def _run(self) -> None:
        block_in_this_thread()  # termination signals go to the main thread
        while not self._stop.wait(self.interval):
            self.publish()
