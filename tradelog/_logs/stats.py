"""Counters of the background log writer, and the files that publish them.

Each writing process keeps a :class:`WriterStats` and saves it every few seconds, and at
shutdown, to ``{log_dir}/_runtime/writer-<pid>.json``; :func:`read_writer_stats` reads them back
(``tradelog status`` shows them).

The counters:

============== ========================================================================
enqueued       events accepted from callers (queued, or spilled when the queue was full)
written        rows inserted into ``service_logs`` (directly or replayed from the spool)
spooled        rows appended to the local spool (database down or behind, queue full)
replayed       spooled rows later inserted (also counted in ``written``)
duplicates     rows of a batch retried after its commit went unacknowledged, found committed
               (its id was taken) and skipped: not written twice
dead_lettered  rows the database refused, written to the dead-letter file with the reason
rejected_users of those and of other writes (tasks, heartbeats, notifications, errors), the
               ones refused because their user is unknown (``TRADELOG_UNKNOWN_USERS=reject``)
dropped        events lost: always 0 (a full queue spills, it never drops)
file_lines     lines appended to per-user and system files
system_lines   of those, lines of events without a user (system file only)
============== ========================================================================

plus gauges (``queue_depth``, ``spool_pending``, ``database``) and error counters.

``database`` is ``ok``, ``unavailable`` (the last call failed; ``last_error`` says why) or
``stalled``: a database call has not returned for longer than :data:`STALL_AFTER` seconds (a hung
network, a lock) - ``stalled_for`` says how long, computed when the snapshot is taken, so a
publisher thread that never touches the database reports a stall while it lasts. ``last_error``
is shown only while the database is not ``ok``; the error of an outage that is over moves to
``recovered_error``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from tradelog._files import make_dirs, write_private

__all__ = [
    "COUNTERS",
    "RUNTIME_DIR",
    "STALL_AFTER",
    "WriterStats",
    "prune_writer_stats",
    "read_writer_stats",
    "stats_path",
]

RUNTIME_DIR: Final = "_runtime"
STALL_AFTER: Final = 2.0
"""Seconds a database call of the writer may run before the snapshot calls it ``stalled``."""
_PREFIX: Final = "writer-"
_STALE_AFTER_SECONDS: Final = 30.0
_KEEP_STOPPED: Final = timedelta(days=7)
"""Files of writers that are gone are removed after this long."""

COUNTERS: Final = (
    "written",
    "spooled",
    "replayed",
    "dead_lettered",
    "rejected_users",
    "dropped",
    "file_lines",
    "system_lines",
    "overflowed",
    "file_errors",
    "observer_errors",
    "internal_errors",
    "batches",
    "duplicates",
)


class WriterStats:
    """Counters for one writer; each counter is only ever incremented by one thread."""

    def __init__(self, *, stall_after: float = STALL_AFTER) -> None:
        self.stall_after = stall_after
        self.call_started: float | None = None
        """``time.monotonic()`` when the database call under way began (None: none is)."""
        self.started_at = datetime.now(UTC)
        self.pid = os.getpid()
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.rejected_users = 0
        self.dropped = 0
        self.file_lines = 0
        self.system_lines = 0
        self.overflowed = 0
        self.file_errors = 0
        self.observer_errors = 0
        self.internal_errors = 0
        self.batches = 0
        self.duplicates = 0
        self.processed = 0
        """Records taken off the queue by the writer (``enqueued`` is derived from it)."""
        self.database = "unknown"
        self.last_error: str | None = None
        self.lock = threading.RLock()
        """Guards counters incremented from caller threads (spills, observer errors)."""

    def snapshot(self, *, queue_depth: int, spool_pending: int, running: bool) -> dict[str, Any]:
        """All counters and gauges as a JSON-friendly dict."""
        data: dict[str, Any] = {
            "pid": self.pid,
            "host": socket.gethostname(),
            "running": running,
            "started_at": self.started_at.isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "enqueued": self.processed + queue_depth + self.overflowed,
        }
        for name in COUNTERS:
            data[name] = getattr(self, name)
        data["queue_depth"] = queue_depth
        data["spool_pending"] = spool_pending
        started = self.call_started
        stalled_for = time.monotonic() - started if started is not None else 0.0
        data["stalled_for"] = round(stalled_for, 1) if stalled_for > self.stall_after else 0.0
        if data["stalled_for"]:
            data["database"] = "stalled"
            data["last_error"] = f"a database call has not returned for {stalled_for:.0f} s"
        else:
            data["database"] = self.database
            data["last_error"] = self.last_error if self.database != "ok" else None
        data["recovered_error"] = self.last_error if data["last_error"] is None else None
        return data


def stats_path(log_dir: Path, pid: int | None = None) -> Path:
    """Where the writer of process ``pid`` (default: this one) publishes its counters."""
    return Path(log_dir) / RUNTIME_DIR / f"{_PREFIX}{os.getpid() if pid is None else pid}.json"


def save(log_dir: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically to this process's stats file; never raises."""
    path = stats_path(log_dir, data.get("pid"))
    with contextlib.suppress(OSError):
        make_dirs(path.parent)
        write_private(path, json.dumps(data, indent=1, default=str).encode("utf-8"))


def read_writer_stats(log_dir: Path | str) -> list[dict[str, Any]]:
    """The published counters of every writer under ``log_dir``, newest first.

    Each dict is what the writer saved plus ``alive``: whether that process still runs (on
    this host) and has published recently.
    """
    found = [data for _, data in _read_all(Path(log_dir))]
    found.sort(key=lambda item: str(item.get("updated_at", "")), reverse=True)
    return found


def _read_all(log_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    folder = log_dir / RUNTIME_DIR
    try:
        paths = sorted(folder.glob(f"{_PREFIX}*.json"))
    except OSError:
        return []
    now = datetime.now(UTC)
    host = socket.gethostname()
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        data["alive"] = _alive(data, host, now)
        found.append((path, data))
    return found


def _alive(data: dict[str, Any], host: str, now: datetime) -> bool:
    if not data.get("running"):
        return False
    try:
        updated = datetime.fromisoformat(str(data.get("updated_at")))
    except ValueError:
        return False
    if (now - updated).total_seconds() > _STALE_AFTER_SECONDS:
        return False
    if data.get("host") != host:
        return True
    try:
        pid = int(data.get("pid", 0))
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def prune_writer_stats(log_dir: Path | str, *, now: datetime | None = None) -> int:
    """Delete the stats files of writers gone for more than a week; returns how many."""
    moment = now or datetime.now(UTC)
    removed = 0
    for path, data in _read_all(Path(log_dir)):
        if data.get("alive"):
            continue
        try:
            updated = datetime.fromisoformat(str(data.get("updated_at")))
        except ValueError:
            continue
        if updated.tzinfo is not None and moment - updated > _KEEP_STOPPED:
            with contextlib.suppress(OSError):
                path.unlink()
                removed += 1
    return removed
