"""Telemetry writes that never stall the caller: heartbeats, running state, task rows.

:class:`Telemetry` owns one daemon thread (``tradelog-health``) that writes the records the
caller hands it, in order. The caller waits for its record at most ``wait`` seconds
(``TRADELOG_TELEMETRY_WAIT``) and gets True only when it is in the database by then; while the
database is known to be down it does not wait at all. Nothing is dropped:

* a **status** record (heartbeat, running / stopped) of a user that is still queued is merged
  with the newer one - the latest state wins, so an outage never builds a backlog of
  heartbeats;
* when a write fails (the database is unreachable, refuses, or is not migrated) the record -
  status or task row - is appended to an owner-only, ``fsync``'d spool file,
  ``{log_dir}/_runtime/health-unwritten-<pid>.jsonl`` (:class:`~tradelog._spool_files.JsonlSpool`),
  the writer counts the database as down and from then on spools every record at once;
* every ``retry`` seconds (doubling up to 30 s) the thread replays the spool in order; when it
  has all gone in, the database counts as up again and records are written directly;
* :meth:`Telemetry.close` spools what is still queued; a later process on the same ``log_dir``
  replays the spool of one that is gone.

Callbacks handed over with :meth:`Telemetry.later` (the owner's started / stopped / task
notices) run on the same thread in order, after the record before them was written. They are
not spooled: a notice whose record was spooled is not sent (the owner learns of the outage
through the stale-service alert instead).

At-least-once window: a record whose write was under way when :meth:`close` gave up waiting is
also spooled; if that write did commit after all, the replay writes the task row twice (a
status record written twice changes nothing).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from tradelog._signals import block_in_this_thread
from tradelog._spool_files import JsonlSpool

__all__ = ["SPOOL_PREFIX", "Telemetry"]

SPOOL_PREFIX: Final = "health-unwritten-"
_RETRY_MAX: Final = 30.0
_log = logging.getLogger("tradelog.service")


@dataclass
class _Job:
    record: dict[str, Any] | None
    """A status or task record (None: only ``after`` to run)."""
    after: list[Callable[[], object]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    written: bool = False


class Telemetry:
    """The background writer of telemetry records (see the module docstring).

    ``write`` stores a batch of records in one transaction and returns, per record, whether it
    was stored (False: refused, e.g. an unknown user); it raises when the database fails.
    """

    def __init__(
        self,
        write: Callable[[list[dict[str, Any]]], list[bool]],
        spool: JsonlSpool,
        *,
        wait: float,
        retry: float = 1.0,
    ) -> None:
        self._write = write
        self.spool = spool
        self.wait = wait
        self.retry = retry
        self._setup()

    def _setup(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._status: dict[Any, _Job] = {}
        """Queued status jobs by user id: a newer record for the same user merges in."""
        self._busy: _Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.down = False
        self.last_error: str | None = None
        self._next_probe = 0.0
        self._backoff = self.retry
        self.spooled = 0
        self.written = 0
        self.replayed = 0

    # -- callers -----------------------------------------------------------------------------

    def submit(self, record: dict[str, Any], after: Callable[[], object] | None = None) -> bool:
        """Queue ``record`` (``after`` runs once it is written); True when it is in the
        database within ``wait`` seconds."""
        with self._cond:
            closed = self._closed
            if not closed:
                job = self._queue_record(record, after)
                self._start()
                self._cond.notify_all()
            wait = 0.0 if self.down else self.wait
        if closed:  # after close(): straight to the spool, for the next process
            self._spool([record])
            return False
        if wait > 0 and job.done.wait(wait):
            return job.written
        return False

    def later(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the telemetry thread after what was queued before it."""
        with self._cond:
            self._queue.append(_Job(None, [callback]))
            self._start()
            self._cond.notify_all()

    def _queue_record(self, record: dict[str, Any], after: Callable[[], object] | None) -> _Job:
        key = record.get("user_id") if record.get("kind") == "status" else None
        queued = self._status.get(key) if record.get("kind") == "status" else None
        if queued is not None and queued.record is not None:
            merged = {k: v for k, v in record.items() if v is not None}
            queued.record.update(merged)
            if after is not None:
                queued.after.append(after)
            return queued
        job = _Job(dict(record), [after] if after is not None else [])
        if record.get("kind") == "status":
            self._status[key] = job
        self._queue.append(job)
        return job

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until everything queued was handled; True when it is all in
        the database (nothing queued, nothing spooled)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._queue or self._busy is not None:
                self._start()
                self._cond.notify_all()
            while self._queue or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            if self.down:
                self._next_probe = 0.0  # try the database now
                self._cond.notify_all()
        if self.down or self.spool.has_own():
            while time.monotonic() < deadline and (self.down or self.spool.has_own()):
                time.sleep(0.05)
            return not self.down and not self.spool.has_own()
        return True

    def close(self, timeout: float) -> bool:
        """Write what is queued within ``timeout``, spool the rest, stop the thread."""
        ok = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = list(self._queue)
            busy = self._busy
            self._queue.clear()
            self._status.clear()
            self._cond.notify_all()
        records = [j.record for j in ([busy] if busy else []) + left if j.record is not None]
        if records:
            self._spool(records)
            ok = False
        return ok

    def after_fork(self) -> None:
        """In a forked child: the parent's queue and thread are the parent's."""
        self._setup()

    def snapshot(self) -> dict[str, Any]:
        """Counters and state for status displays (read without touching the database)."""
        with self._cond:
            queued = len(self._queue) + (self._busy is not None)
        return {
            "database": "down" if self.down else "ok",
            "last_error": self.last_error if self.down else None,
            "queued": queued,
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
        }

    # -- the thread --------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="tradelog-health", daemon=True)
            self._thread.start()

    def _take(self) -> _Job | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                if not self.down:
                    self._cond.wait()
                    continue
                left = self._next_probe - time.monotonic()
                if left <= 0:
                    self._busy = _Job(None)  # time to replay the spool
                    return self._busy
                self._cond.wait(left)
            job = self._queue.popleft()
            if job.record is not None and job.record.get("kind") == "status":
                self._status.pop(job.record.get("user_id"), None)
            self._busy = job
            return job

    def _run(self) -> None:
        block_in_this_thread()  # termination signals go to the main thread
        if self.spool.pending():  # left by this process earlier, or by one that is gone
            with self._cond:
                self.down, self._next_probe = True, 0.0
        while True:
            job = self._take()
            if job is None:
                return
            try:
                self._handle(job)
            except Exception as exc:  # pragma: no cover - a callback's own failure
                _log.warning("tradelog telemetry: %s", exc)
            finally:
                job.done.set()
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def _handle(self, job: _Job) -> None:
        if self.down and time.monotonic() >= self._next_probe:
            self._probe()
        if job.record is None:
            for callback in job.after:
                callback()
            return
        if self.down:
            self._spool([job.record])
            return
        try:
            (job.written,) = self._write([job.record])
        except Exception as exc:
            self._went_down(exc)
            self._spool([job.record])
            return
        self.written += int(job.written)
        if job.written:
            for callback in job.after:
                callback()

    def _probe(self) -> None:
        """Replay the spool; the database is up again when all of it went in."""
        failed: list[BaseException] = []

        def write(records: list[dict[str, Any]]) -> None:
            try:
                self._write(records)
            except Exception as exc:
                failed.append(exc)
                raise

        self.replayed += self.spool.replay(write)
        if failed:
            self._went_down(failed[0])
            return
        if self.down:
            _log.warning("tradelog: the database takes heartbeats and task rows again")
        self.down = False
        self.last_error = None
        self._backoff = self.retry
        self._next_probe = 0.0

    def _went_down(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()
        message = f"{type(exc).__name__}: {reason[0] if reason else ''}"
        if not self.down:
            _log.warning("tradelog: heartbeats and task rows go to the spool: %s", message)
            self._backoff = self.retry
        else:
            self._backoff = min(self._backoff * 2, _RETRY_MAX)
        self.down = True
        self.last_error = message
        self._next_probe = time.monotonic() + self._backoff

    def _spool(self, records: list[dict[str, Any]]) -> None:
        try:
            self.spool.append(records)
        except OSError as exc:
            _log.error("tradelog could not spool %d telemetry records: %s", len(records), exc)
            return
        self.spooled += len(records)
