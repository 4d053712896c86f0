"""The global state department: the one module that holds and changes process-wide state.

:func:`configure` builds a :class:`Runtime` from :class:`~tradelog.config.Settings` and makes it
current: it configures structlog (tradelog's processor chain and bound logger class), puts a
handler on the stdlib root logger, starts the background writer and wires the other subsystems
in (:func:`_install_integrations`). Calling it again shuts the previous runtime down (flushing
it) and configures afresh; loggers that structlog cached on first use follow along, because
tradelog keeps one processor list and one bound logger class and changes them in place.

Process lifecycle:

* **exit**: the current runtime is shut down (flushed) from ``atexit`` and from
  ``multiprocessing``'s exit hook, which also runs in ``fork``-started pool workers and
  processes, where ``atexit`` does not.
* **terminated multiprocessing children**: ``Pool.terminate()`` - which leaving a
  ``with Pool(...)`` block calls - and ``Process.terminate()`` end a child with ``SIGTERM``,
  which runs no exit hook. In a ``multiprocessing`` child whose ``SIGTERM`` disposition is the
  default, tradelog installs a handler that shuts the runtime down (bounded by
  ``DEFAULT_TIMEOUT`` plus one database lock wait, ``db_write_timeout``) and then lets the
  signal terminate the process as before (same exit status; a second ``SIGTERM`` ends it at
  once). What the database could not take in that time is in the child's spool, which the
  next :func:`flush` (or writer start) of a process on the same ``log_dir`` adopts and
  replays - the parent's, typically. The main process's signals are left alone.
* **fork**: the child drops everything it inherited from the parent's writer (queue, threads,
  open files, database connection - without closing them under the parent's feet) and starts
  a writer of its own with the same settings. Events the parent had queued are the parent's.
* **spawn** / **forkserver**: a new interpreter starts unconfigured; call ``configure`` in the
  child, e.g. ``Pool(initializer=tradelog.configure, initargs=(runtime.settings,))``.
* A process that leaves with ``os._exit`` skips every exit hook: call ``tradelog.shutdown()``
  first, or what it queued stays unwritten.

Nothing here runs at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from sqlalchemy import Engine
from structlog.contextvars import merge_contextvars

from tradelog._db.engine import create_tradelog_engine
from tradelog._logs.levels import level_number
from tradelog._logs.loggers import (
    TradelogBoundLogger,
    internal_error,
    internal_errors,
    output_factory,
)
from tradelog._logs.processors import EventSink, ExceptionObserver
from tradelog._logs.redact import RedactProcessor
from tradelog._logs.stdlib import TradelogHandler
from tradelog._logs.writer import LogWriter
from tradelog.config import Settings

__all__ = ["Runtime", "configure", "current", "flush", "get_logger", "shutdown"]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds :func:`flush` and :func:`shutdown` wait by default (also at interpreter exit)."""

_PROCESSORS: Final[list[Any]] = []
"""The processor list every tradelog-configured structlog logger holds (changed in place)."""


class _State:
    """The mutable process-wide state, in one place."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: Runtime | None = None
        self.hooks_installed = False
        self.after_forker_registered = False
        self.inherited: list[object] = []
        """Objects inherited through ``fork`` that the child keeps but never uses."""
        self.stopping: Runtime | None = None
        """The runtime whose shutdown is in progress, if any."""


_state = _State()


class Runtime:
    """One configured tradelog: settings, the log writer and the hooks of other subsystems."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redactor = RedactProcessor()
        self._observers: list[ExceptionObserver] = []
        self._flushers: list[Callable[[float], bool]] = []
        self._closers: list[Callable[[], None]] = []
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._closed = False
        self._stopping_thread: int | None = None
        self._stopped = threading.Event()
        self._deferred_signal: int | None = None
        self._handler: TradelogHandler | None = None
        self._saved_root_level: int | None = None
        self._console = _console_renderer() if settings.console else None
        self._writer = self._new_writer()
        self._sink = self._new_sink()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        settings = self.settings
        return f"<Runtime {state} database={settings.redacted_url()} log_dir={settings.log_dir}>"

    # -- for other subsystems --------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """A shared engine on the configured database for tradelog's subsystems (error rows,
        notifications); created on first use, disposed at shutdown. Never the host's."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = create_tradelog_engine(self.settings.database_url)
            return self._engine

    def add_exception_observer(self, fn: ExceptionObserver) -> None:
        """Call ``fn(exc_info, event)`` on the logging thread for every event with an exception.

        ``event`` is the scrubbed event dict (``event``, ``level``, ``logger``, ``timestamp``,
        ``user_id`` when known, bound context). Observers must only enqueue; what they raise is
        swallowed and counted (``observer_errors``).
        """
        self._observers.append(fn)

    def add_flusher(self, fn: Callable[[float], bool]) -> None:
        """Call ``fn(remaining_timeout) -> bool`` from :meth:`flush`."""
        self._flushers.append(fn)

    def add_closer(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` at shutdown (closers run in reverse order of registration)."""
        self._closers.append(fn)

    # -- public ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """The writer's counters (see :mod:`tradelog._logs.stats`); ``dropped`` is always 0."""
        data = self._writer.snapshot()
        data["internal_errors"] = data.get("internal_errors", 0) + internal_errors()
        return data

    def get_logger(self, name: str | None = None, **bind: Any) -> Any:
        """Same as :func:`tradelog.get_logger`."""
        return structlog.get_logger(name or "root", **bind)

    def flush(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until everything logged so far is in the database and the files (and the other
        subsystems' flushers are done); returns False if that did not happen in time."""
        deadline = time.monotonic() + max(0.0, timeout)
        ok = True
        for flusher in list(self._flushers):
            try:
                ok = bool(flusher(_remaining(deadline))) and ok
            except Exception as exc:
                internal_error(exc)
                ok = False
        return self._writer.flush(_remaining(deadline)) and ok

    def shutdown(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Flush, run the closers, stop the writer; idempotent. Returns whether everything
        reached the database (what did not stays in the spool for the next writer)."""
        with _state.lock:
            if self._closed:
                return True
            self._stopping_thread = threading.get_ident()
            _state.stopping = self
            self._closed = True
        try:
            return self._shutdown(timeout)
        finally:
            self._stopped.set()
            if _state.stopping is self:
                _state.stopping = None
            if self._deferred_signal is not None:
                signal.raise_signal(self._deferred_signal)  # see _terminate_after_shutdown

    # -- internals -------------------------------------------------------------------------

    def _shutdown(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        self.flush(_remaining(deadline))
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:
                internal_error(exc)
        with _state.lock:
            self._sink.close()
            self._detach_stdlib()
            if _state.current is self:
                _state.current = None
                structlog.reset_defaults()
        ok = self._writer.stop(_remaining(deadline))
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.dispose()
            self._engine = None
        return ok

    def _spool_what_is_left(self) -> None:
        """The process dies now (see :func:`_terminate_after_shutdown`) while the shutdown is
        still under way: spool what is still queued so the next writer replays it."""
        try:
            self._writer.spool_what_is_left()
        except Exception as exc:  # pragma: no cover - dying anyway; spill never raises
            internal_error(exc)

    def _new_writer(self) -> LogWriter:
        return LogWriter(self.settings, self.redactor, lock_timeout=self.settings.db_write_timeout)

    def _new_sink(self) -> EventSink:
        return EventSink(
            self._writer,
            redactor=self.redactor,
            observers=self._observers,
            console=self._console,
            zone=self.settings.zone,
        )

    def _install(self, *, start: bool = True) -> None:
        """Point structlog and the stdlib root logger at this runtime and start writing
        (``start=False`` leaves the writer stopped: events queue up, for measurements)."""
        minimum = level_number(self.settings.level)
        TradelogBoundLogger.set_min_level(minimum)
        _PROCESSORS[:] = [merge_contextvars, self._sink]
        structlog.configure(
            processors=_PROCESSORS,
            wrapper_class=TradelogBoundLogger,
            logger_factory=output_factory,
            context_class=dict,
            cache_logger_on_first_use=True,
        )
        writer = self._writer
        handler = TradelogHandler(
            self._sink,
            level=minimum,
            console=self._console is not None,
            internal_threads=lambda: writer.thread_idents,
        )
        root = logging.getLogger()
        self._saved_root_level = root.level
        root.addHandler(handler)
        root.setLevel(minimum)
        self._handler = handler
        if start:
            writer.start()

    def _detach_stdlib(self) -> None:
        handler = self._handler
        if handler is None:
            return
        root = logging.getLogger()
        root.removeHandler(handler)
        if self._saved_root_level is not None and root.level == handler.level:
            root.setLevel(self._saved_root_level)
        self._handler = None

    def _after_fork_in_child(self) -> None:
        """Replace what the parent's writer owns with this process's own."""
        self._writer.abandon()
        _state.inherited.append(self._writer)
        if self._engine is not None:
            _state.inherited.append(self._engine)
            self._engine = None
        self._engine_lock = threading.Lock()
        self._writer = self._new_writer()
        self._sink = self._new_sink()
        if self._closed:
            self._sink.close()
            return
        if _PROCESSORS and _state.current is self:
            _PROCESSORS[-1] = self._sink
        if self._handler is not None:
            self._handler.sink = self._sink
            writer = self._writer
            self._handler._internal_threads = lambda: writer.thread_idents
        self._writer.start()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _console_renderer() -> Callable[[Any, str, dict[str, Any]], str]:
    try:
        colors = sys.stderr.isatty()
    except Exception:
        colors = False
    renderer: Callable[[Any, str, dict[str, Any]], str] = structlog.dev.ConsoleRenderer(
        colors=colors
    )
    return renderer


def _install_integrations(runtime: Runtime) -> None:
    """Wire the other subsystems into a freshly configured runtime (one line each)."""
    importlib.import_module("tradelog._errors.capture").install(runtime)
    importlib.import_module("tradelog.retention").install_daily(runtime)  # when worker is on
    importlib.import_module("tradelog._notify.worker").install(runtime)  # when worker is on


def configure(settings: Settings | None = None, /, **options: Any) -> Runtime:
    """Configure tradelog for this process and return the :class:`Runtime`.

    ``options`` are :class:`~tradelog.config.Settings` fields; anything not given comes from
    ``TRADELOG_*`` variables (or from ``settings`` when passed). A previous runtime is shut
    down first. Raises :class:`~tradelog.exceptions.ConfigurationError` for invalid options.
    """
    if settings is None:
        resolved = Settings.from_env(**options)
    else:
        resolved = settings.replace(**options) if options else settings
    with _state.lock:
        previous = _state.current
    if previous is not None:
        previous.shutdown()
    runtime = Runtime(resolved)
    with _state.lock:
        _state.current = runtime
        runtime._install()
        _install_process_hooks()
    _install_integrations(runtime)
    _register_exit_finalizer()
    _install_terminate_handler()
    return runtime


def current() -> Runtime | None:
    """The configured runtime, or None before :func:`configure` / after :func:`shutdown`."""
    return _state.current


def get_logger(name: str | None = None, **bind: Any) -> Any:
    """A structlog logger named ``name`` (default: the calling module) with ``bind`` bound.

    Bind ``user_id`` to attribute events to a user. Works before ``configure`` too: the
    logger picks up the configuration on first use.
    """
    if name is None:
        try:
            name = str(sys._getframe(1).f_globals.get("__name__", "root"))
        except Exception:  # pragma: no cover - no frames (exotic interpreters)
            name = "root"
    return structlog.get_logger(name, **bind)


def flush(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Wait until everything logged so far is written; True when it was (or nothing is
    configured)."""
    runtime = _state.current
    return True if runtime is None else runtime.flush(timeout)


def shutdown(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Flush and stop the current runtime (also done at interpreter exit)."""
    runtime = _state.current
    return True if runtime is None else runtime.shutdown(timeout)


def _shutdown_at_exit() -> None:
    runtime = _state.current
    if runtime is not None and not runtime.closed:
        try:
            runtime.shutdown(DEFAULT_TIMEOUT)
        except Exception as exc:  # pragma: no cover - exit must go on
            internal_error(exc)


def _install_process_hooks() -> None:
    if _state.hooks_installed:
        return
    _state.hooks_installed = True
    atexit.register(_shutdown_at_exit)
    if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _register_exit_finalizer() -> None:
    """multiprocessing runs these at the end of its worker processes (``atexit`` does not
    run in fork-started ones); the finalizer is bound to this process id."""
    import multiprocessing.util  # noqa: PLC0415 - only needed once configured

    multiprocessing.util.Finalize(None, _shutdown_at_exit, exitpriority=10)
    if not _state.after_forker_registered:
        # A multiprocessing child clears the finalizers it inherited (ours included) right
        # after the fork hooks ran; its after-fork callbacks run later and register again.
        _state.after_forker_registered = True
        multiprocessing.util.register_after_fork(_state, _reregister_in_child)


def _reregister_in_child(_: object) -> None:
    if _state.current is not None:
        _register_exit_finalizer()
        _install_terminate_handler()


def _install_terminate_handler() -> None:
    """In a ``multiprocessing`` child (main thread, default ``SIGTERM`` disposition), shut
    tradelog down before ``SIGTERM`` ends the process."""
    import multiprocessing  # noqa: PLC0415 - only needed once configured

    try:
        if multiprocessing.parent_process() is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return  # the host handles SIGTERM (or already has our handler)
        signal.signal(signal.SIGTERM, _terminate_after_shutdown)
    except Exception as exc:  # pragma: no cover - an exotic host: keep the default
        internal_error(exc)


def _terminate_after_shutdown(signum: int, frame: object) -> None:
    """``SIGTERM`` in a multiprocessing child: write what is queued, then terminate as the
    default action would. The shutdown runs on a helper thread so a lock the interrupted code
    holds can delay it at most ``DEFAULT_TIMEOUT``, never hang the process."""
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    stopping = _state.stopping
    if stopping is not None and stopping._stopping_thread == threading.get_ident():
        # The signal interrupted this thread's own shutdown (a pool worker that was already
        # leaving): let it finish; it raises the signal again when done.
        stopping._deferred_signal = signum
        return
    runtime = _state.current
    if runtime is not None and not runtime.closed:
        helper = threading.Thread(target=_shutdown_at_exit, name="tradelog-terminate", daemon=True)
        helper.start()
        helper.join(_terminate_wait(runtime))
        if helper.is_alive():
            runtime._spool_what_is_left()
    elif stopping is not None and not stopping._stopped.wait(_terminate_wait(stopping)):
        stopping._spool_what_is_left()
    signal.raise_signal(signum)


def _terminate_wait(runtime: Runtime) -> float:
    """How long a terminated child waits for its shutdown: the flush (``DEFAULT_TIMEOUT``),
    plus one database call that is waiting for a lock when the time is up (it gives up after
    ``db_write_timeout`` and spools its rows), plus the writer threads' ends."""
    return DEFAULT_TIMEOUT + runtime.settings.db_write_timeout + 2.0


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()
    runtime = _state.current
    if runtime is None:
        return
    try:
        runtime._after_fork_in_child()
        _register_exit_finalizer()
    except Exception as exc:  # pragma: no cover - a child must start even if logging cannot
        internal_error(exc)
