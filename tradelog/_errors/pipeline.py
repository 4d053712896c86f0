"""The error capture pipeline: exceptions in, ``error_logs`` rows out (:class:`ErrorCapture`).

How exceptions are written: logged and explicitly captured exceptions go through a bounded,
non-blocking queue to one background writer thread; ``flush()`` waits for it. A full queue
never drops and never blocks: the caller turns the error into its row and appends it to the
spill file (below), like a full log queue spills to the log spool, and the writer stores it.
Uncaught crashes (``sync=True``) are written on the crashing thread, after the queue has been
flushed, because the process may be about to die.
A batch that cannot be written is retried twice, then kept in a spill file
(:mod:`tradelog._errors.spill`); this writer stores those rows once the database answers again
(after its next successful write, or every 30 seconds while idle, or when ``flush()`` asks),
and a writer starting later picks up files left by processes that have exited.

Each batch has an id (:mod:`tradelog._logs.batch`) from its first try to its last, spill file
included, claimed in the batch's transaction (:class:`~tradelog._errors.store.ErrorStore`): a
batch whose commit went unacknowledged, or that a killed replay had stored, is not stored
twice. ``flush()`` is True only once nothing waits in the queue or in a spill file.

The same exception object is recorded once: the first capture marks it, so an exception that
is logged, re-raised and then reaches ``sys.excepthook`` gives one row.

After ``fork`` the owner calls :meth:`ErrorCapture.after_fork` in the child: it drops the
queue, thread and pooled connections it inherited and starts its own on first use.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import structlog
from sqlalchemy import Engine

from tradelog._db.base import utcnow
from tradelog._errors.record import ErrorRecord, build_record, capture_frame_locals
from tradelog._errors.spill import SpillFiles
from tradelog._errors.store import ErrorStore, Notifier
from tradelog._logs.batch import new_batch_id
from tradelog._logs.redact import Redactor
from tradelog._signals import block_in_this_thread
from tradelog._users.context import user_of
from tradelog._users.registry import KnownUsers
from tradelog.config import Settings

__all__ = ["ErrorCapture", "exception_from"]

_log: Final = logging.getLogger("tradelog.errors")
_MARK: Final = "__tradelog_captured__"
_CAPTURE_LEVELS: Final = frozenset({"error", "exception", "critical", "fatal"})
_EVENT_SKIP: Final = frozenset(
    {
        "exc_info",
        "exception",
        "stack",
        "stack_info",
        "timestamp",
        "user_id",
        "_record",
        "_from_structlog",
    }
)
_RETRY_DELAYS: Final = (0.1, 0.5)
_REPLAY_INTERVAL: Final = 30.0
"""Seconds between attempts to write spilled rows while the writer is idle."""
SYNC_FLUSH_SECONDS: Final = 5.0


@dataclass(slots=True)
class _Item:
    exc: BaseException
    user_id: int | None
    context: dict[str, Any]
    frame_locals: list[dict[str, Any]] | None
    occurred_at: datetime
    uncaught: bool
    traceback: TracebackType | None = None
    """``exc.__traceback__`` when captured (it grows as the exception propagates on)."""


def _claim(exc: BaseException) -> bool:
    """Mark ``exc`` as captured; False when it already was."""
    try:
        if getattr(exc, _MARK, False):
            return False
        setattr(exc, _MARK, True)
    except Exception:  # an exception type refusing attributes: capture it every time
        return True
    return True


def _user_id(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def exception_from(exc_info: object) -> BaseException | None:
    """The exception an ``exc_info`` value names: an exception, a ``sys.exc_info()`` tuple or
    ``True`` (the one being handled); None when there is none."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        value = exc_info[1]
        if isinstance(value, BaseException):
            if value.__traceback__ is None and isinstance(exc_info[2], TracebackType):
                with contextlib.suppress(Exception):
                    value = value.with_traceback(exc_info[2])
            return value
    if exc_info is True:
        return sys.exc_info()[1]
    return None


class ErrorCapture:
    """Turns exceptions into ``error_logs`` rows (see the module docstring).

    ``engine`` is the engine the rows are written with (its owner disposes it). ``notifier``
    receives the stored rows after each commit (the runtime passes the throttled ``error``
    notification of :mod:`tradelog._errors.alerts`); ``None`` sends nothing. ``redactor``
    scrubs messages, tracebacks and context (default: the standard log redactor).
    ``retry_delays`` are the pauses between attempts to write a queued batch before it is
    spilled to a file; ``replay_interval`` how often an idle writer retries storing spilled
    rows. ``users`` decides what an unknown user id becomes (:mod:`tradelog._users.registry`).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        notifier: Notifier | None = None,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = utcnow,
        retry_delays: Sequence[float] = _RETRY_DELAYS,
        replay_interval: float = _REPLAY_INTERVAL,
        users: KnownUsers | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.redactor = redactor or Redactor()
        self.store = ErrorStore(
            self.engine,
            notifier=notifier,
            snapshots=settings.error_snapshot,
            redactor=self.redactor,
            clock=clock,
            users=users,
        )
        self.clock = clock
        self.retry_delays = tuple(retry_delays)
        self.replay_interval = replay_interval
        self.capture_locals = bool(getattr(settings, "capture_locals", False))
        self._limit = max(int(settings.queue_size), 1)
        self._batch = max(int(settings.batch_size), 1)
        self._spills = SpillFiles(Path(settings.log_dir) / "_runtime")
        self._counter_lock = threading.Lock()
        self._counters = dict.fromkeys(
            ("captured", "written", "duplicates", "dropped", "failed", "spilled", "replayed"), 0
        )
        self._init_state()
        self._closed = False

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._pending = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._replayed = False
        self._warned_full = False

    def after_fork(self) -> None:
        """In a forked child: the parent's queue, thread, locks and connections are not ours."""
        self._counter_lock = threading.Lock()
        self._init_state()
        with contextlib.suppress(Exception):
            self.engine.dispose(close=False)
        self.store.reset()

    # ----------------------------------------------------------------- entry points

    def observe(self, exc_info: object, event: Mapping[str, Any]) -> None:
        """Runtime exception observer: queue the exception of an error-level log event."""
        try:
            level = str(event.get("level", "error")).lower()
            if level not in _CAPTURE_LEVELS:
                return
            exc = exception_from(exc_info)
            if exc is None:
                return
            context = {k: v for k, v in event.items() if k not in _EVENT_SKIP}
            context.setdefault("source", "log")
            self.capture(exc, user_id=_user_id(event.get("user_id")), context=context, bound=False)
        except Exception:
            self._count("failed")

    def capture(
        self,
        exc: BaseException,
        *,
        user_id: int | None = None,
        context: Mapping[str, Any] | None = None,
        uncaught: bool = False,
        sync: bool = False,
        bound: bool = True,
    ) -> bool:
        """Record ``exc``; returns whether it was queued or, the queue being full, kept in the
        spill file for the writer (with ``sync``: whether it was written).

        ``user_id`` defaults to the user ``exc`` was raised for (``tradelog.bind_user``), else
        the ``user_id`` in ``context`` or bound with ``structlog.contextvars``; ``bound``
        merges the structlog context variables into the context. ``sync`` writes on this
        thread after flushing the queue. Never raises.
        """
        try:
            if not isinstance(exc, BaseException):
                return False
            if not _claim(exc):
                self._count("duplicates")
                if sync:
                    self._drain_queue(time.monotonic() + SYNC_FLUSH_SECONDS)
                return False
            merged: dict[str, Any] = {}
            if bound:
                merged.update(structlog.contextvars.get_contextvars())
            if context:
                merged.update(context)
            owner = user_id if user_id is not None else user_of(exc)
            if owner is None:
                owner = _user_id(merged.get("user_id"))
            if owner is None and merged.get("user_id") is not None:
                shown = self.redactor.redact_text(str(merged["user_id"]))
                merged["unresolved_user_id"] = shown[:64]
            merged.pop("user_id", None)
            item = _Item(
                exc=exc,
                user_id=owner,
                context=merged,
                frame_locals=capture_frame_locals(exc) if self.capture_locals else None,
                occurred_at=self.clock(),
                uncaught=uncaught,
                traceback=exc.__traceback__,
            )
            self._count("captured")
            if sync or self._closed:
                return self._write_now(item)
            return self._enqueue(item)
        except Exception:
            self._count("failed")
            return False

    # ----------------------------------------------------------------- queue and writer

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            self._counters[name] += amount

    def stats(self) -> dict[str, int]:
        """Counters: captured, written, duplicates, dropped, failed, spilled, replayed, queued."""
        with self._counter_lock:
            return {**self._counters, "queued": self._pending}

    def _enqueue(self, item: _Item) -> bool:
        with self._cond:
            full = len(self._items) >= self._limit
            if not full:
                self._items.append(item)
                self._pending += 1
                started = self._start_writer()
                self._cond.notify_all()
        if full:
            return self._overflow(item)
        if not started:
            self._drain_inline()
        return True

    def _overflow(self, item: _Item) -> bool:
        """The queue is full: write the row to the spill file on this thread (the writer
        stores it after its next write, or ``flush()`` does)."""
        if not self._warned_full:
            self._warned_full = True
            _log.warning(
                "tradelog error queue is full (%d); keeping errors in %s until written",
                self._limit,
                self._spills.directory,
            )
        self._spill([self._build(item)], new_batch_id())
        with self._cond:
            self._start_writer()
            self._cond.notify_all()
        return True

    def _start_writer(self) -> bool:
        """Start the writer thread if needed (caller holds the lock); False if it cannot run."""
        if self._thread is not None and self._thread.is_alive():
            return True
        thread = threading.Thread(target=self._run, name="tradelog-errors", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down
            return False
        self._thread = thread
        return True

    def _take(self) -> list[_Item]:
        taken: list[_Item] = []
        while len(taken) < self._batch:
            try:
                taken.append(self._items.popleft())
            except IndexError:  # empty: another thread may take from the same queue
                break
        return taken

    def _run(self) -> None:
        block_in_this_thread()
        if not self._replayed:
            self._replayed = True
            self._replay()
        while True:
            with self._cond:
                while not self._items:
                    if self._closing:
                        return
                    # Not _has_own_spill(): a flush may be replaying the file right now.
                    idle = self.replay_interval if self._counters["spilled"] else None
                    if not self._cond.wait(idle):
                        break
                batch = self._take()
            if not batch:
                self._replay()
                continue
            try:
                self._write_batch([self._build(item) for item in batch], retry=True)
            finally:
                with self._cond:
                    self._pending -= len(batch)
                    self._cond.notify_all()

    def _drain_inline(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if not batch:
                    return
            try:
                self._write_batch([self._build(item) for item in batch], retry=False)
            finally:
                with self._cond:
                    self._pending -= len(batch)
                    self._cond.notify_all()

    def _build(self, item: _Item) -> ErrorRecord:
        return build_record(
            item.exc,
            occurred_at=item.occurred_at,
            redactor=self.redactor,
            user_id=item.user_id,
            context=item.context,
            frame_locals=item.frame_locals,
            uncaught=item.uncaught,
            traceback=item.traceback,
        )

    def _write_batch(self, records: list[ErrorRecord], *, retry: bool) -> bool:
        delays = self.retry_delays if retry else ()
        batch_id = new_batch_id()  # the same on every try and in the spill file
        for attempt in range(len(delays) + 1):
            try:
                self.store.write(records, batch_id)
            except Exception as exc:
                lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                if attempt < len(delays):
                    time.sleep(delays[attempt])
                    continue
                _log.warning(
                    "tradelog could not write %d error row(s) (%s); keeping them in %s",
                    len(records),
                    self.redactor.redact_text(reason),
                    self._spills.directory,
                )
                self._spill(records, batch_id)
                return False
            self._count("written", len(records))
            if self._has_own_spill():
                self._replay()
            return True
        return False  # pragma: no cover - the loop always returns

    def _write_now(self, item: _Item) -> bool:
        if threading.current_thread() is not self._thread:
            # The queue first, so rows keep their order; spill files are not waited for (with
            # the database away they cannot be stored, and a crash hook must not wait for that).
            self._drain_queue(time.monotonic() + SYNC_FLUSH_SECONDS)
        return self._write_batch([self._build(item)], retry=False)

    def _drain_queue(self, deadline: float) -> bool:
        """Wait until every queued error has been written or spilled (False at ``deadline``)."""
        with self._cond:
            inline = bool(self._pending) and not self._start_writer()
        if inline:
            self._drain_inline()
        with self._cond:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every error captured so far is in the database: the queue written and
        the spill files (this process's, and those of processes that are gone) stored.
        False when that did not happen within ``timeout``."""
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._drain_queue(deadline):
            return False
        while self._spills.waiting():
            self._replay()
            if not self._spills.waiting():
                break
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued and stop the writer (the engine is the owner's to dispose),
        within ``timeout`` in all; what could not be stored by then stays in a spill file."""
        if self._closed:
            return
        deadline = time.monotonic() + max(timeout, 0.0)
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
            leftover = list(self._items)
            self._items.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        if leftover:
            self._spill([self._build(item) for item in leftover], new_batch_id())
        self._closed = True

    # ----------------------------------------------------------------- spill files

    def _has_own_spill(self) -> bool:
        return self._counters["spilled"] > 0 and self._spills.has_own()

    def _spill(self, records: list[ErrorRecord], batch_id: str) -> None:
        try:
            self._spills.append(records, batch_id)
            self._count("spilled", len(records))
        except Exception as exc:
            self._count("failed", len(records))
            _log.warning("tradelog lost %d error row(s): %s", len(records), exc)

    def _replay(self) -> None:
        """Store rows spilled by this process or by processes that have exited."""
        with contextlib.suppress(Exception):
            self._count("replayed", self._spills.replay(self.store.write, self._batch))
