"""The error capture pipeline: exceptions in, ``error_logs`` rows out.

Where exceptions come from:

* ``log.exception(...)`` / ``log.error(..., exc_info=...)``: the runtime calls
  :meth:`ErrorCapture.observe` on the caller's thread for every log event carrying an exception
  (events below ``error`` level are not errors and are left alone);
* :func:`capture_exception` (``tradelog.capture_exception``);
* the chained process hooks of :mod:`tradelog.errors.hooks` (uncaught exceptions in the main
  thread, in threads, in asyncio tasks, unraisable exceptions);
* :func:`guard`, for multiprocessing children, which never reach those hooks;
* failed tasks of :func:`tradelog.track_task`.

How they are written: logged and explicitly captured exceptions go through a bounded,
non-blocking queue to one background writer thread (a full queue drops and counts, it never
blocks the caller); ``tradelog.flush()`` waits for it. Uncaught crashes are written
**synchronously** on the crashing thread, after the queue has been flushed, because the process
may be about to die. A batch that cannot be written is retried twice, then appended to
``{log_dir}/_runtime/errors-unwritten-<pid>.jsonl``; this writer stores those rows once the
database answers again (after its next successful write, or every 30 seconds while idle), and a
writer starting later picks up files left by processes that have exited.

The same exception object is recorded once: the first capture marks it, so an exception that
is logged, re-raised and then reaches ``sys.excepthook`` gives one row.

Global state: which capture is active (set by :func:`install`, cleared at shutdown) and a
standalone capture built from the environment when ``tradelog.configure()`` was never called.
Everything else takes explicit objects: ``ErrorCapture(settings, engine)``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, cast, overload

import structlog
from sqlalchemy import Engine

from tradelog.config import Settings
from tradelog.db.base import utcnow
from tradelog.db.engine import create_tradelog_engine
from tradelog.errors.alerts import ErrorAlerts
from tradelog.errors.hooks import InstalledHooks, install_hooks
from tradelog.errors.hooks import install_loop_handler as _install_loop_handler
from tradelog.errors.record import ErrorRecord, build_record, capture_frame_locals
from tradelog.errors.store import ErrorStore, Notifier
from tradelog.logs.redact import Redactor

__all__ = [
    "ErrorCapture",
    "Installation",
    "active",
    "capture_exception",
    "guard",
    "install",
    "install_capture",
    "install_loop_handler",
]

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
_SYNC_FLUSH_SECONDS: Final = 5.0
_SPILL_PREFIX: Final = "errors-unwritten-"
_DEFAULT: Final = object()
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(slots=True)
class _Item:
    exc: BaseException
    user_id: int | None
    context: dict[str, Any]
    frame_locals: list[dict[str, Any]] | None
    occurred_at: datetime
    uncaught: bool


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


def _exception_from(exc_info: object) -> BaseException | None:
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


def _record_json(record: ErrorRecord) -> str:
    return json.dumps(
        {
            "user_id": record.user_id,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "traceback": record.traceback,
            "context": record.context,
            "occurred_at": record.occurred_at.isoformat(),
            "fingerprint": record.fingerprint,
            "uncaught": record.uncaught,
        },
        ensure_ascii=False,
    )


def _record_from_json(line: str) -> ErrorRecord:
    data = json.loads(line)
    data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return ErrorRecord(**data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


_captures: weakref.WeakSet[ErrorCapture] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    _state.lock = threading.Lock()
    for capture in list(_captures):
        capture._forked()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ErrorCapture:
    """Turns exceptions into ``error_logs`` rows (see the module docstring).

    ``engine`` defaults to a new engine for ``settings.database_url``, disposed by
    :meth:`close`. ``notifier`` receives the stored rows after each commit; the default sends
    the throttled ``error`` notification, ``None`` sends nothing. ``redactor`` scrubs messages,
    tracebacks and context (default: the standard log redactor). ``retry_delays`` are the
    pauses between attempts to write a queued batch before it is spilled to a file;
    ``replay_interval`` how often an idle writer retries storing spilled rows.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        *,
        notifier: Notifier | object | None = _DEFAULT,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = utcnow,
        retry_delays: Sequence[float] = _RETRY_DELAYS,
        replay_interval: float = _REPLAY_INTERVAL,
    ) -> None:
        self.settings = settings
        self._own_engine = engine is None
        self.engine = (
            engine if engine is not None else create_tradelog_engine(settings.database_url)
        )
        if notifier is _DEFAULT:
            notifier = ErrorAlerts(settings.error_notify_window)
        self.store = ErrorStore(self.engine, notifier=cast(Notifier | None, notifier))
        self.redactor = redactor or Redactor()
        self.clock = clock
        self.retry_delays = tuple(retry_delays)
        self.replay_interval = replay_interval
        self.capture_locals = bool(getattr(settings, "capture_locals", False))
        self._limit = max(int(settings.queue_size), 1)
        self._batch = max(int(settings.batch_size), 1)
        self._spill_dir = Path(settings.log_dir) / "_runtime"
        self._counter_lock = threading.Lock()
        self._counters = dict.fromkeys(
            ("captured", "written", "duplicates", "dropped", "failed", "spilled", "replayed"), 0
        )
        self._init_state()
        self._closed = False
        self._atexit_registered = False
        _captures.add(self)

    def _init_state(self) -> None:
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._pending = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._replayed = False
        self._warned_full = False

    def _forked(self) -> None:
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
            exc = _exception_from(exc_info)
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
        """Record ``exc``; returns whether it was queued (or, with ``sync``, written).

        ``user_id`` defaults to the ``user_id`` in ``context`` or bound with
        ``structlog.contextvars``; ``bound`` merges the structlog context variables into the
        context. ``sync`` writes on this thread after flushing the queue. Never raises.
        """
        try:
            if not isinstance(exc, BaseException):
                return False
            if not _claim(exc):
                self._count("duplicates")
                if sync:
                    self.flush(_SYNC_FLUSH_SECONDS)
                return False
            merged: dict[str, Any] = {}
            if bound:
                merged.update(structlog.contextvars.get_contextvars())
            if context:
                merged.update(context)
            owner = user_id if user_id is not None else _user_id(merged.get("user_id"))
            if owner is None and merged.get("user_id") is not None:
                merged["unresolved_user_id"] = str(merged["user_id"])[:64]
            merged.pop("user_id", None)
            item = _Item(
                exc=exc,
                user_id=owner,
                context=merged,
                frame_locals=capture_frame_locals(exc) if self.capture_locals else None,
                occurred_at=self.clock(),
                uncaught=uncaught,
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
            if len(self._items) >= self._limit:
                self._count("dropped")
                if not self._warned_full:
                    self._warned_full = True
                    _log.warning("tradelog error queue is full (%d); dropping errors", self._limit)
                return False
            self._items.append(item)
            self._pending += 1
            started = self._start_writer()
            self._cond.notify_all()
        if not started:
            self._drain_inline()
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
        if not self._atexit_registered:
            atexit.register(self._at_exit)
            self._atexit_registered = True
        return True

    def _take(self) -> list[_Item]:
        count = min(len(self._items), self._batch)
        return [self._items.popleft() for _ in range(count)]

    def _run(self) -> None:
        if not self._replayed:
            self._replayed = True
            self._replay()
        while True:
            with self._cond:
                while not self._items:
                    if self._closing:
                        return
                    idle = self.replay_interval if self._has_own_spill() else None
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
        )

    def _write_batch(self, records: list[ErrorRecord], *, retry: bool) -> bool:
        delays = self.retry_delays if retry else ()
        for attempt in range(len(delays) + 1):
            try:
                self.store.write(records)
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
                    self._spill_dir,
                )
                self._spill(records)
                return False
            self._count("written", len(records))
            if self._has_own_spill():
                self._replay()
            return True
        return False  # pragma: no cover - the loop always returns

    def _write_now(self, item: _Item) -> bool:
        if threading.current_thread() is not self._thread:
            self.flush(_SYNC_FLUSH_SECONDS)
        return self._write_batch([self._build(item)], retry=False)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued error is written (or spilled); False on timeout."""
        deadline = time.monotonic() + max(timeout, 0.0)
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

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the writer and dispose an engine this capture created."""
        if self._closed:
            return
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
            leftover = list(self._items)
            self._items.clear()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if leftover:
            self._spill([self._build(item) for item in leftover])
        self._closed = True
        if self._atexit_registered:
            atexit.unregister(self._at_exit)
        if self._own_engine:
            self.engine.dispose()

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.flush(_SYNC_FLUSH_SECONDS)

    # ----------------------------------------------------------------- spill files

    def _spill_path(self) -> Path:
        return self._spill_dir / f"{_SPILL_PREFIX}{os.getpid()}.jsonl"

    def _has_own_spill(self) -> bool:
        return self._counters["spilled"] > 0 and self._spill_path().exists()

    def _spill(self, records: list[ErrorRecord]) -> None:
        try:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            with self._spill_path().open("a", encoding="utf-8") as handle:
                handle.writelines(_record_json(record) + "\n" for record in records)
            self._count("spilled", len(records))
        except Exception as exc:
            self._count("failed", len(records))
            _log.warning("tradelog lost %d error row(s): %s", len(records), exc)

    def _replay(self) -> None:
        """Write rows spilled by this process or by processes that have exited."""
        try:
            paths = sorted(self._spill_dir.glob(f"{_SPILL_PREFIX}*.jsonl"))
        except OSError:
            return
        for path in paths:
            pid_text = path.stem.removeprefix(_SPILL_PREFIX)
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid != os.getpid() and _pid_alive(pid):
                continue
            claimed = path.with_name(f"{path.stem}.replay-{os.getpid()}")
            try:
                path.rename(claimed)
                lines = claimed.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            records: list[ErrorRecord] = []
            for line in lines:
                with contextlib.suppress(Exception):
                    records.append(_record_from_json(line))
            try:
                for start in range(0, len(records), self._batch):
                    self.store.write(records[start : start + self._batch])
                    self._count("replayed", len(records[start : start + self._batch]))
            except Exception:
                with contextlib.suppress(OSError):
                    claimed.rename(path)
                return
            with contextlib.suppress(OSError):
                claimed.unlink()


# --------------------------------------------------------------------------- global wiring


class Installation:
    """An active capture with its hooks; :meth:`close` undoes :func:`install_capture`."""

    def __init__(self, capture: ErrorCapture, hooks: InstalledHooks | None) -> None:
        self.capture = capture
        self.hooks = hooks

    def close(self) -> None:
        """Restore the previous hooks, deactivate the capture and close it."""
        if self.hooks is not None:
            self.hooks.uninstall()
        with _state.lock:
            if _state.active is self:
                _state.active = None
        self.capture.close()


class _State:
    """The module's global state: the active installation and the standalone fallback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Installation | None = None
        self.fallback: ErrorCapture | None = None


_state = _State()


def install_capture(capture: ErrorCapture, *, hooks: bool = True) -> Installation:
    """Make ``capture`` the active one and (by default) install the chained process hooks."""
    installation = Installation(capture, install_hooks(capture) if hooks else None)
    with _state.lock:
        _state.active = installation
    return installation


def install(runtime: Any) -> ErrorCapture:
    """Wire error capture into a configured runtime (called by ``tradelog.configure``).

    Registers the exception observer, a flusher and a closer, and installs the hooks.
    """
    engine = getattr(runtime, "engine", None)
    capture = ErrorCapture(runtime.settings, engine if isinstance(engine, Engine) else None)
    installation = install_capture(capture)
    runtime.add_exception_observer(capture.observe)
    runtime.add_flusher(capture.flush)
    runtime.add_closer(installation.close)
    return capture


def _runtime_settings() -> Settings | None:
    try:
        runtime = importlib.import_module("tradelog.runtime")
    except ImportError:  # pragma: no cover - runtime absent
        return None
    current = getattr(runtime, "current", None)
    found = current() if current is not None else None
    return getattr(found, "settings", None)


def active() -> ErrorCapture:
    """The installed capture, else a standalone one for the runtime's (or the environment's)
    settings, created on first use and reused (queued rows are flushed at exit)."""
    retired = None
    with _state.lock:
        if _state.active is not None:
            return _state.active.capture
        settings = _runtime_settings() or Settings.from_env()
        fallback = _state.fallback
        if fallback is None or fallback._closed or fallback.settings != settings:
            retired = fallback
            fallback = _state.fallback = ErrorCapture(settings)
    if retired is not None:
        retired.close()
    return fallback


def capture_exception(
    exc: BaseException | tuple[Any, Any, Any] | None = None,
    *,
    user_id: int | None = None,
    **context: Any,
) -> bool:
    """Record ``exc`` (default: the exception being handled) with ``context``.

    Returns whether it was queued; False when there is no exception, it was already
    recorded, or the queue is full. Never raises. ``tradelog.flush()`` waits for the write.
    """
    try:
        value = _exception_from(exc if exc is not None else sys.exc_info())
        if value is None:
            return False
        return active().capture(
            value, user_id=user_id, context={"source": "capture_exception", **context}
        )
    except Exception:
        return False


def install_loop_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the chained asyncio exception handler on ``loop`` (default: the running loop).

    For loops the policy does not create (a custom ``loop_factory``, uvloop installed after
    ``configure()``); call it first thing in the main coroutine.
    """
    target = loop if loop is not None else asyncio.get_running_loop()
    capture = active()
    handler = _install_loop_handler(capture, target)
    with _state.lock:
        installation = _state.active
    if installation is not None and installation.hooks is not None:
        installation.hooks.loop_handlers.append((target, handler))


@contextlib.contextmanager
def _guarding(user_id: int | None, context: Mapping[str, Any]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        import multiprocessing  # noqa: PLC0415 - only needed on this path

        details = {
            "source": "guard",
            "process": multiprocessing.current_process().name,
            "pid": os.getpid(),
            **context,
        }
        with contextlib.suppress(Exception):
            active().capture(exc, user_id=user_id, context=details, uncaught=True, sync=True)
        raise


@overload
def guard(fn: _F, /) -> _F: ...


@overload
def guard(fn: None = None, /, *, user_id: int | None = None, **context: Any) -> _Guard: ...


def guard(
    fn: Callable[..., Any] | None = None, /, *, user_id: int | None = None, **context: Any
) -> Any:
    """Record an exception escaping a block or function synchronously, then re-raise it.

    For code whose exceptions never reach ``sys.excepthook``, above all the target of a
    :mod:`multiprocessing` child process::

        @tradelog.errors.capture.guard
        def work(order_id): ...

        multiprocessing.Process(target=work, args=(7,)).start()

        with guard(user_id=3, job="rebalance"):
            ...

    In a forked child the parent's configuration is reused (with fresh connections); a spawned
    child uses ``tradelog.configure()`` if it called it, else the ``TRADELOG_*`` environment.
    """
    if fn is not None:
        return _Guard(None, {})(fn)
    return _Guard(user_id, context)


class _Guard:
    def __init__(self, user_id: int | None, context: Mapping[str, Any]) -> None:
        self.user_id = user_id
        self.context = dict(context)
        self._blocks: list[contextlib.AbstractContextManager[None]] = []

    def __enter__(self) -> None:
        block = _guarding(self.user_id, self.context)
        self._blocks.append(block)
        block.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._blocks.pop().__exit__(kind, exc, tb)

    def __call__(self, fn: _F) -> _F:
        user_id, context = self.user_id, self.context
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _guarding(user_id, context):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with _guarding(user_id, context):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)
