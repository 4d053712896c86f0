"""The composition root and the global state department.

**Composition.** :class:`Runtime` builds every part of a configured tradelog and hands each what
it needs - its engine, its settings, its clock, the redactor - explicitly:

::

    Runtime(settings)
    ├── Engines              app (host-facing calls) · background (worker, retention) · log_writer
    ├── LogWriter            queue → files + service_logs (own connection), spool, dead letters
    │                        (log_writer=process: ProcessLogWriter ships batches to a helper
    │                        process that does the same)
    ├── EventSink            the last structlog processor and the stdlib handler's target
    ├── ErrorCapture         error_logs rows; alerts → ErrorAlerts → NotificationService.notify
    ├── ServiceHealth        heartbeats, running state, task rows; failed tasks → ErrorCapture;
    │                        started/stopped/failed → ServiceNotices → NotificationService
    ├── NotificationService  notify()/anotify(); rings Wakeups after each commit
    ├── DeliveryWorker       (worker auto + a channel configured, or on) claims the outbox;
    │                        subscribed to the same Wakeups; at exit, due deliveries get
    │                        worker_exit_timeout seconds
    ├── StaleMonitor         (worker on) heartbeats: stale episodes → operators and owners
    └── DailyRetention       (worker on) retention once a day

Nothing below this module looks it up: parts never import the runtime, and the module-level
conveniences (``tradelog.notify``, ``tradelog.heartbeat`` ...) live in :mod:`tradelog._facade`,
above it. The runtime owns its parts' lifecycle: :meth:`Runtime.start`, :meth:`Runtime.flush`,
:meth:`Runtime.shutdown` and :meth:`Runtime.after_fork`.

**State.** This is the one module that holds and changes process-wide state: which runtime is
current (:func:`configure`, :func:`current`, :func:`require`), structlog's configuration, the
stdlib root handler, the exception hooks, and the process hooks (``atexit``, ``fork``, the
``SIGTERM`` handler of multiprocessing children), all registered by :func:`configure`, never at
import. :func:`reset` puts all of it back (for tests).

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
  open files, database connections - without closing them under the parent's feet) and starts
  a writer of its own with the same settings. Events the parent had queued are the parent's.
  Background jobs (delivery worker, retention) stay with the parent.
* **spawn** / **forkserver**: a new interpreter starts unconfigured; call ``configure`` in the
  child, e.g. ``Pool(initializer=tradelog.configure, initargs=(runtime.settings,))``.
* A process that leaves with ``os._exit`` skips every exit hook: call ``tradelog.shutdown()``
  first, or what it queued stays unwritten.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final, cast

import structlog
from sqlalchemy.orm import Session
from structlog.contextvars import merge_contextvars
from structlog.typing import FilteringBoundLogger

from tradelog._db.base import utcnow
from tradelog._db.engine import DbBounds, Engines, session_factory
from tradelog._db.migrate import schema_status
from tradelog._errors.alerts import ErrorAlerts
from tradelog._errors.hooks import InstalledHooks, install_hooks
from tradelog._errors.hooks import install_loop_handler as _install_loop_handler
from tradelog._errors.pipeline import ErrorCapture
from tradelog._health.lifecycle import ServiceNotices
from tradelog._health.stale import StaleMonitor
from tradelog._health.telemetry import SPOOL_PREFIX as HEALTH_SPOOL_PREFIX
from tradelog._health.telemetry import Telemetry
from tradelog._health.writer import ServiceHealth, describe_failure
from tradelog._logs.host_chain import StructlogFeed, insert_feed, remove_feed
from tradelog._logs.inserters import make_inserter
from tradelog._logs.levels import LoggerLevels, level_number
from tradelog._logs.loggers import (
    InternalErrors,
    TradelogBoundLogger,
    caller_module,
    output_factory,
)
from tradelog._logs.process_writer import ProcessLogWriter
from tradelog._logs.processors import EventSink, ExceptionObserver
from tradelog._logs.redact import RedactProcessor, redact_text
from tradelog._logs.stats import RUNTIME_DIR
from tradelog._logs.stats import save as save_stats
from tradelog._logs.stdlib import RecordBridge, StdlibTakeOver, expect_record, expected_record
from tradelog._logs.writer import LogWriter
from tradelog._notify.channels.base import Channel
from tradelog._notify.service import SPOOL_PREFIX as NOTIFY_SPOOL_PREFIX
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups
from tradelog._notify.worker import DeliveryWorker
from tradelog._signals import HandlerWatch, block_in_this_thread
from tradelog._spool_files import JsonlSpool, Replayer
from tradelog._status import StatusPublisher, local_backlog
from tradelog._users.registry import UserRegistry
from tradelog.config import Settings
from tradelog.exceptions import ConfigurationError, MissingExtraError, StorageError
from tradelog.retention import DailyRetention, RetentionJob

__all__ = [
    "DEFAULT_TIMEOUT",
    "EARLY_EVENTS",
    "Runtime",
    "configure",
    "current",
    "feed_event",
    "feed_record",
    "flush",
    "require",
    "reset",
    "shutdown",
]

DEFAULT_TIMEOUT: Final = 5.0
"""Seconds :func:`flush` and :func:`shutdown` wait by default (also at interpreter exit)."""
STATUS_INTERVAL: Final = 1.0
"""Seconds between two publications of :meth:`Runtime.stats` to ``_runtime/writer-<pid>.json``."""
NOTIFY_REPLAY_INTERVAL: Final = 2.0
"""Seconds between attempts to write spooled notifications (while any are spooled)."""
EARLY_EVENTS: Final = 1000
"""Events ``tradelog.processor`` / ``tradelog.Handler`` hold until :func:`configure`."""

_PROCESSORS: Final[list[Any]] = []
"""The processor list every tradelog-configured structlog logger holds (changed in place)."""

_worker_log = logging.getLogger("tradelog.notify.worker")


class Runtime:
    """One configured tradelog: every part, built from ``settings`` (see the module docstring).

    ``clock`` gives the current UTC time to error capture, service health and the delivery
    worker; ``channels`` replaces the channels the delivery worker would build from the
    settings (your own :class:`~tradelog.notifications.Channel`, or the recording channels of
    :mod:`tradelog.testing`). Building a runtime starts nothing; :meth:`start` does.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        channels: Mapping[str, Channel] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.channels = dict(channels) if channels is not None else None
        self.internal_errors = InternalErrors()
        self.engines = Engines(
            settings.database_url,
            writer_timeout=settings.db_write_timeout,
            schema=settings.db_schema,
            bounds=DbBounds(settings.db_connect_timeout, settings.db_statement_timeout),
        )
        self.redactor = RedactProcessor(values=settings.secret_values())
        self.wakeups = Wakeups()
        self.users = UserRegistry(
            self.engines.app, mode=settings.unknown_users, on_reject=self._count_rejected
        )
        runtime_dir = settings.log_dir / RUNTIME_DIR
        self.notifications = NotificationService(
            self.engines.app,
            self.wakeups,
            users=self.users,
            spool=JsonlSpool(runtime_dir, NOTIFY_SPOOL_PREFIX),
            on_spooled=self._poke_replayer,
        )
        self.replayer = self._new_replayer()
        self.errors = ErrorCapture(
            settings,
            self.engines.app(),
            notifier=ErrorAlerts(
                settings.error_notify_window,
                send=self.notifications.notify,
                operators=settings.ops_user_ids,
            ),
            clock=clock,
            users=self.users,
            redactor=self.redactor,
        )
        self.health = ServiceHealth(
            self.engines.app(),
            capture=self.errors,
            clock=clock,
            users=self.users,
            notices=ServiceNotices(
                self.engines.app,
                send=self.notifications.notify,
                window=settings.error_notify_window,
                operators=settings.ops_user_ids,
            ),
            telemetry=lambda health: Telemetry(
                health.write_records,
                JsonlSpool(runtime_dir, HEALTH_SPOOL_PREFIX),
                wait=settings.telemetry_wait,
            ),
        )
        self.writer = self._new_writer()
        self.publisher = self._new_publisher()
        self._observers: list[ExceptionObserver] = [self.errors.observe]
        self.sink = EventSink(
            self.writer,
            redactor=self.redactor,
            observers=self._observers,
            console=settings.console,
            zone=settings.zone,
            max_keys=settings.max_event_keys,
        )
        self.levels = LoggerLevels(level_number(settings.level), settings.logger_levels)
        self.feed = StructlogFeed(self.sink, self.levels, on_error=self.internal_errors)
        """The structlog processor handing events to this runtime (``tradelog.processor``)."""
        self.bridge = RecordBridge(self.sink, self.levels, on_error=self.internal_errors)
        """What turns stdlib records into events (``tradelog.Handler``, the take-over)."""
        self.worker: DeliveryWorker | None = None
        self.stale: StaleMonitor | None = None
        self.retention: DailyRetention | None = None
        self._hooks: InstalledHooks | None = None
        self._stdlib: StdlibTakeOver | None = None
        self._host_processors: list[Any] | None = None
        self._own_structlog = False
        self._closed = False
        self._stopping_thread: int | None = None
        self._stopped = threading.Event()
        self._deferred_signal: int | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        settings = self.settings
        return f"<Runtime {state} database={settings.redacted_url()} log_dir={settings.log_dir}>"

    # -- lifecycle -------------------------------------------------------------------------

    def start(
        self,
        *,
        logging_: bool = True,
        hooks: bool = True,
        background: bool | None = None,
        writer: bool = True,
    ) -> Runtime:
        """Start the parts: point structlog and the stdlib root logger here (``logging_``),
        install the exception hooks (``hooks``), start the background jobs (``background``,
        default: the ``worker`` setting; see :meth:`_start_background`) and the log writer
        (``writer=False`` leaves it stopped - events queue up - for measurements)."""
        if logging_:
            self._install_logging()
        if hooks:
            self._hooks = install_hooks(self.errors)
        if writer:
            self.writer.start()
        self.replayer.start()
        self.publisher.start()
        if logging_:
            _replay_early(self)
        self._start_background(self.settings.worker if background is None else background)
        return self

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has run."""
        return self._closed

    def flush(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Wait until everything logged and captured so far is in the database and the files;
        returns False if that did not happen in time."""
        deadline = time.monotonic() + max(0.0, timeout)
        ok = True
        try:
            ok = self.errors.flush(_remaining(deadline))
        except Exception as exc:
            self.internal_errors(exc)
            ok = False
        ok = self.writer.flush(_remaining(deadline)) and ok
        return self.health.flush(_remaining(deadline)) and ok

    def shutdown(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Flush, stop every part, dispose the engines; idempotent. Returns whether everything
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

    def after_fork(self) -> None:
        """In a forked child: replace what the parent's parts own with this process's own."""
        _state.inherited.append(self.writer.abandon())
        _state.inherited.append(self.writer)
        self.engines.after_fork()
        self.errors.after_fork()
        if self.health.telemetry is not None:
            self.health.telemetry.after_fork()
        self.replayer = self._new_replayer()
        self.wakeups.after_fork()
        self.worker = None  # the parent's background jobs stay the parent's
        self.stale = None
        self.retention = None
        self.writer = self._new_writer()
        self.sink.attach(self.writer)
        if self._closed:
            self.writer.close_intake()
            return
        self.writer.start()
        self.replayer.start()
        self.publisher.start()

    # -- for callers -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Live figures, taken without touching the database: the log writer's counters (see
        :mod:`tradelog._logs.stats`; ``dropped`` is always 0), what waits in local files
        (``dead_letters``, ``unwritten_errors``, ``spooled_notifications``,
        ``spooled_telemetry``: see :mod:`tradelog._status`), the telemetry writer's state
        (``telemetry``) and the notification spool's counters (``notifications``)."""
        data = self.writer.snapshot()
        data["internal_errors"] = data.get("internal_errors", 0) + self.internal_errors.count
        data.update(local_backlog(self.settings.log_dir))
        if self.health.telemetry is not None:
            data["telemetry"] = self.health.telemetry.snapshot()
        notifications = self.notifications
        data["notifications"] = {
            "spooled": notifications.spooled,
            "replayed": notifications.replayed,
            "refused": notifications.refused,
        }
        return data

    def add_exception_observer(self, observer: ExceptionObserver) -> None:
        """Call ``observer(exc_info, event)`` on the logging thread for every event with an
        exception, next to error capture. ``event`` is the scrubbed event dict; an observer
        must only enqueue, and what it raises is counted (``observer_errors``), never raised."""
        self._observers.append(observer)

    def get_logger(self, name: str | None = None, **bind: Any) -> FilteringBoundLogger:
        """Same as :func:`tradelog.get_logger` (unnamed: the calling module)."""
        return cast(FilteringBoundLogger, structlog.get_logger(*([name] if name else []), **bind))

    def session(self) -> Session:
        """A new session on tradelog's own database (objects stay usable after commit)."""
        return session_factory(self.engines.app())()

    def install_loop_handler(self, loop: asyncio.AbstractEventLoop) -> None:
        """Install the chained asyncio exception handler on ``loop``."""
        handler = _install_loop_handler(self.errors, loop)
        if self._hooks is not None:
            self._hooks.loop_handlers.append((loop, handler))

    # -- internals -------------------------------------------------------------------------

    def _new_writer(self) -> LogWriter:
        timeout = self.settings.db_write_timeout
        inserter = make_inserter(self.engines.log_writer(), lock_timeout=timeout)
        kind = ProcessLogWriter if self.settings.log_writer == "process" else LogWriter
        writer = kind(self.settings, self.redactor, inserter, users=self.users)
        writer.publish_stats = False  # the status publisher does, off the database thread
        return writer

    def _new_publisher(self) -> StatusPublisher:
        log_dir = self.settings.log_dir
        return StatusPublisher(
            self.stats,
            lambda data: save_stats(log_dir, data),
            interval=STATUS_INTERVAL,
            on_error=self.internal_errors,
        )

    def _new_replayer(self) -> Replayer:
        return Replayer(
            self.notifications.replay_spool,
            interval=NOTIFY_REPLAY_INTERVAL,
            name="tradelog-notify-replay",
            on_error=self.internal_errors,
        )

    def _poke_replayer(self) -> None:
        self.replayer.poke()

    def _count_rejected(self, count: int) -> None:
        self.writer.count_rejected_users(count)

    def _install_logging(self) -> None:
        """``take_over``: point structlog and stdlib logging at this runtime, leaving what the
        host configured in place (see :mod:`tradelog._logs.host_chain` and
        :mod:`tradelog._logs.stdlib`). Without it nothing is touched: the host adds
        ``tradelog.processor`` / ``tradelog.Handler`` itself."""
        if not self.settings.take_over:
            return
        lowest = self.levels.lowest
        TradelogBoundLogger.configure(lowest, self.internal_errors, self.levels)
        processors = structlog.get_config()["processors"]
        if structlog.is_configured() and processors is not _PROCESSORS:
            if insert_feed(processors, self.feed):
                self._host_processors = processors
        else:
            _PROCESSORS[:] = [merge_contextvars, self.sink]
            structlog.configure(
                processors=_PROCESSORS,
                wrapper_class=TradelogBoundLogger,
                logger_factory=output_factory,
                context_class=dict,
                cache_logger_on_first_use=True,
            )
            self._own_structlog = True
        self._stdlib = StdlibTakeOver(
            self.bridge, console=self.settings.console, lowest=lowest
        ).install()

    def _detach_logging(self) -> None:
        if self._stdlib is not None:
            self._stdlib.uninstall()
            self._stdlib = None
        if self._host_processors is not None:
            remove_feed(self._host_processors, self.feed)
            self._host_processors = None

    def pause_stdlib(self, paused: bool) -> bool:
        """Stop (or resume) taking stdlib records; returns the previous state (for
        :func:`tradelog.testing.capture_logs`)."""
        take_over = self._stdlib
        if take_over is None:
            return False
        previous, take_over.paused = take_over.paused, paused
        return previous

    def _start_background(self, mode: bool | str) -> None:
        """The background jobs ``mode`` asks for: ``True`` runs the delivery worker, the
        stale-service monitor and daily retention; ``"auto"`` runs the delivery worker when a
        channel is configured (a bot token, an SMTP host, or ``channels`` given), so
        ``notify()`` reaches Telegram and email without a separate ``tradelog worker``;
        ``False`` runs none of them."""
        settings = self.settings
        configured = settings.telegram_bot_token or settings.smtp_host or self.channels
        if mode is False or (mode == "auto" and not configured):
            return
        engine = self.engines.background()
        try:
            worker = DeliveryWorker(
                engine,
                self.settings,
                channels=self.channels,
                clock=self.clock,
                wakeups=self.wakeups,
            )
            worker.channels  # noqa: B018 - build the channels now so bad settings show at startup
        except (ConfigurationError, MissingExtraError) as exc:
            _worker_log.error("the delivery worker cannot start: %s", exc)
        else:
            worker.start()
            self.worker = worker
        if mode is not True:
            return
        self.stale = StaleMonitor(
            engine,
            send=self.notifications.notify,
            threshold=settings.stale_heartbeat_seconds,
            interval=settings.stale_check_interval,
            clock=self.clock,
            operators=settings.ops_user_ids,
        ).start()
        self.retention = DailyRetention(RetentionJob.from_settings(settings, engine)).start()

    def _shutdown(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        self.flush(_remaining(deadline))

        telemetry_ok = False
        try:
            telemetry_ok = self.health.close(_remaining(deadline))
        except Exception as exc:
            self.internal_errors(exc)
        for stop in (
            self._stop_background,
            self._uninstall_hooks,
            lambda: self.errors.close(_remaining(deadline)),
            lambda: self.replayer.stop(_remaining(deadline)),
        ):
            try:
                stop()
            except Exception as exc:
                self.internal_errors(exc)
        with _state.lock:
            self.writer.close_intake()
            self._detach_logging()
            if _state.current is self:
                _state.current = None
                if self._own_structlog:
                    structlog.reset_defaults()
        ok = self.writer.stop(_remaining(deadline))
        self.publisher.stop()
        self.engines.dispose()  # only idle connections: a call still stuck keeps its own
        return ok and telemetry_ok

    def _stop_background(self) -> None:
        """Stop the worker, giving due deliveries up to ``worker_exit_timeout`` seconds of
        their own (on top of the flush), then the retention thread."""
        if self.worker is not None:
            self.worker.stop(drain=self.settings.worker_exit_timeout)
            self.worker = None
        if self.stale is not None:
            self.stale.stop()
            self.stale = None
        if self.retention is not None:
            self.retention.stop()
            self.retention = None

    def _uninstall_hooks(self) -> None:
        if self._hooks is not None:
            self._hooks.uninstall()
            self._hooks = None

    def _spool_what_is_left(self) -> None:
        """The process dies now (see :func:`_terminate_after_shutdown`) while the shutdown is
        still under way: spool what is still queued so the next writer replays it."""
        try:
            self.writer.spool_what_is_left()
        except Exception as exc:  # pragma: no cover - dying anyway; spill never raises
            self.internal_errors(exc)


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# --------------------------------------------------------------------------- process state


class _State:
    """The mutable process-wide state, in one place."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: Runtime | None = None
        """The runtime :func:`configure` made current."""
        self.standalone: Runtime | None = None
        """A runtime built from the environment for calls made before :func:`configure`."""
        self.process_hooks = False
        self.after_forker_registered = False
        self.inherited: list[object] = []
        """Objects inherited through ``fork`` that the child keeps but never uses."""
        self.stopping: Runtime | None = None
        """The runtime whose shutdown is in progress, if any."""
        self.saved_sigterm: Any = None
        self.sigterm_watch: HandlerWatch | None = None
        self.early: deque[_Early] = deque(maxlen=EARLY_EVENTS)
        """Events ``tradelog.processor`` / ``tradelog.Handler`` got before :func:`configure`."""
        self.early_dropped = 0
        self.early_exit_hook = False


@dataclass(frozen=True, slots=True)
class _Named:
    name: str | None


@dataclass(frozen=True, slots=True)
class _Early:
    """One event held until :func:`configure`: a stdlib record, or a structlog event."""

    record: logging.LogRecord | None = None
    logger: _Named | None = None
    method_name: str = ""
    event: dict[str, Any] | None = None
    at: float = 0.0


_state = _State()


def feed_event(logger: Any, method_name: str, event_dict: Any) -> None:
    """``tradelog.processor``: hand a structlog event to the configured runtime, or hold it
    until :func:`configure` (at most :data:`EARLY_EVENTS`)."""
    runtime = _state.current
    if runtime is not None and not runtime.closed:
        runtime.feed.take(logger, method_name, event_dict)
        return
    try:
        if not isinstance(event_dict, dict):
            return
        name = getattr(logger, "name", None) or event_dict.get("logger") or caller_module()
        if isinstance(logger, logging.Logger):
            expect_record(logger.name, event_dict.get("event"))
        _hold(_Early(logger=_Named(str(name)), method_name=method_name, event=dict(event_dict)))
    except Exception:  # pragma: no cover - holding a copy does not fail
        return


def feed_record(record: logging.LogRecord) -> None:
    """``tradelog.Handler``: hand a stdlib record to the configured runtime, or hold it."""
    runtime = _state.current
    if runtime is not None and not runtime.closed:
        runtime.bridge.feed(record)
        return
    if not expected_record(record):
        _hold(_Early(record=record))


def _hold(item: _Early) -> None:
    with _state.lock:
        early = _state.early
        if len(early) == early.maxlen:
            _state.early_dropped += 1
        early.append(replace(item, at=time.time()) if item.record is None else item)
        if not _state.early_exit_hook:
            _state.early_exit_hook = True
            atexit.register(_early_left_unwritten)


def _replay_early(runtime: Runtime) -> None:
    """Hand what was held before :func:`configure` to ``runtime``, in order."""
    with _state.lock:
        held, dropped = list(_state.early), _state.early_dropped
        _state.early.clear()
        _state.early_dropped = 0
    for item in held:
        if item.record is not None:
            runtime.bridge.feed(item.record)
        else:
            runtime.feed.take(item.logger, item.method_name, item.event, at=item.at)
    if dropped:
        runtime.sink.emit(
            "WARNING",
            "tradelog",
            {
                "event": f"{dropped} events logged before configure() were not kept "
                f"(the last {EARLY_EVENTS} were)"
            },
        )


def _early_left_unwritten() -> None:
    count = len(_state.early) + _state.early_dropped
    if count:
        _console_line(
            f"tradelog: {count} events reached tradelog.processor / tradelog.Handler in this "
            "process but tradelog.configure() was never called here: they were not written"
        )


def configure(
    settings: Settings | None = None,
    /,
    *,
    clock: Callable[[], datetime] = utcnow,
    channels: Mapping[str, Channel] | None = None,
    **options: Any,
) -> Runtime:
    """Configure tradelog for this process and return the :class:`Runtime`.

    ``options`` are :class:`~tradelog.config.Settings` fields; anything not given comes from
    ``TRADELOG_*`` variables (or from ``settings`` when passed). ``clock`` and ``channels`` are
    handed to the :class:`Runtime` (see there). A previous runtime is shut down first. Raises
    :class:`~tradelog.exceptions.ConfigurationError` for invalid options.
    """
    if settings is None:
        resolved = Settings.from_env(**options)
    else:
        resolved = settings.replace(**options) if options else settings
    _check_schema(resolved)
    with _state.lock:
        previous, _state.current = _state.current, None
        standalone, _state.standalone = _state.standalone, None
    for old in (previous, standalone):
        if old is not None:
            old.shutdown()
    runtime = Runtime(resolved, clock=clock, channels=channels)
    with _state.lock:
        _state.current = runtime
        _install_process_hooks()
        runtime.start()
    _register_exit_finalizer()
    _install_terminate_handler()
    return runtime


def _check_schema(settings: Settings) -> None:
    """Compare the database with the migrations (``schema_check``): one line on stderr when it
    is missing or behind (``warn``), or raise (``raise``)."""
    mode = settings.schema_check
    if mode == "off":
        return
    where = settings.redacted_url()
    try:
        status = schema_status(
            settings.database_url, schema=settings.db_schema, timeout=settings.db_write_timeout
        )
    except Exception as exc:
        reason = redact_text(describe_failure(exc))
        if mode == "raise":
            raise StorageError(
                f"cannot compare database {where} with tradelog's migrations: {reason}"
            ) from exc
        _console_line(
            f"tradelog: warning: cannot compare database {where} with the migrations: {reason}"
        )
        return
    if status.ok:
        return
    if mode == "raise":
        raise ConfigurationError(status.describe(where), variable="TRADELOG_SCHEMA_CHECK")
    _console_line(
        f"tradelog: error: {status.describe(where)}; until then log rows wait in the spool "
        "(TRADELOG_SCHEMA_CHECK=raise makes this an exception)"
    )


def _console_line(text: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def current() -> Runtime | None:
    """The configured runtime, or None before :func:`configure` / after :func:`shutdown`."""
    return _state.current


def require() -> Runtime:
    """The configured runtime; before :func:`configure`, a standalone one built from the
    ``TRADELOG_*`` environment that writes rows but leaves logging, hooks and background jobs
    alone (rebuilt when the environment changes; shut down at exit).

    Raises :class:`~tradelog.exceptions.ConfigurationError` when the environment is invalid.
    """
    runtime = _state.current
    if runtime is not None and not runtime.closed:
        return runtime
    settings = Settings.from_env()
    retired = None
    with _state.lock:
        runtime = _state.current
        if runtime is not None and not runtime.closed:
            return runtime
        standalone = _state.standalone
        if standalone is None or standalone.closed or standalone.settings != settings:
            retired = standalone
            standalone = Runtime(settings).start(logging_=False, hooks=False, background=False)
            _state.standalone = standalone
            _install_process_hooks()
    if retired is not None:
        retired.shutdown()
    return standalone


def flush(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Wait until everything logged so far is written; True when it was (or nothing is
    configured)."""
    runtime = _state.current or _state.standalone
    return True if runtime is None else runtime.flush(timeout)


def shutdown(timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Flush and stop the current runtime (also done at interpreter exit)."""
    ok = True
    for runtime in (_state.current, _state.standalone):
        if runtime is not None:
            ok = runtime.shutdown(timeout) and ok
    return ok


def live_processors() -> list[Any]:
    """The processor list every tradelog-configured structlog logger holds (changed in place)."""
    return _PROCESSORS


def replace_processors(processors: list[Any]) -> list[Any]:
    """Swap the processors of every tradelog-configured structlog logger (cached ones
    included) in place; returns the previous list (for :func:`tradelog.testing.capture_logs`)."""
    previous = list(_PROCESSORS)
    _PROCESSORS[:] = processors
    return previous


def reset() -> None:
    """Shut tradelog down and put back everything it changed in this process: structlog's
    defaults, the root logger, the exception hooks and the ``SIGTERM`` disposition (for tests)."""
    shutdown()
    with _state.lock:
        _state.current = None
        _state.standalone = None
        _state.stopping = None
        structlog.reset_defaults()
        TradelogBoundLogger.configure(logging.NOTSET)
        if _state.saved_sigterm is not None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _state.saved_sigterm)
            _state.saved_sigterm = None
        watch, _state.sigterm_watch = _state.sigterm_watch, None
        if watch is not None:
            watch.stop()


def _shutdown_at_exit() -> None:
    for runtime in (_state.current, _state.standalone):
        if runtime is not None and not runtime.closed:
            try:
                runtime.shutdown(DEFAULT_TIMEOUT)
            except Exception as exc:  # pragma: no cover - exit must go on
                runtime.internal_errors(exc)


def _install_process_hooks() -> None:
    """``atexit`` and the ``fork`` hook, once per process (by :func:`configure`/:func:`require`)."""
    if _state.process_hooks:
        return
    _state.process_hooks = True
    atexit.register(_shutdown_at_exit)
    if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _register_exit_finalizer() -> None:
    """multiprocessing runs these at the end of its worker processes (``atexit`` does not
    run in fork-started ones); the finalizer is bound to this process id."""
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
    tradelog down before ``SIGTERM`` ends the process; and watch that the handler runs."""
    try:
        if multiprocessing.parent_process() is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            _state.saved_sigterm = signal.SIG_DFL
            signal.signal(signal.SIGTERM, _terminate_after_shutdown)
        elif current is not _terminate_after_shutdown:
            return  # the host handles SIGTERM
        if _state.sigterm_watch is None:
            watch = HandlerWatch(signal.SIGTERM, _shut_down_for_signal, HANDLER_GRACE)
            if watch.start():
                _state.sigterm_watch = watch
    except Exception as exc:  # pragma: no cover - an exotic host: keep the default
        if _state.current is not None:
            _state.current.internal_errors(exc)


HANDLER_GRACE: Final = 5.0
"""Seconds a terminated child's main thread has to start the ``SIGTERM`` handler before the
watch shuts tradelog down from its own thread and ends the process (see HandlerWatch)."""


def _terminate_after_shutdown(signum: int, frame: object) -> None:
    """``SIGTERM`` in a multiprocessing child: write what is queued, then terminate as the
    default action would. The shutdown runs on a helper thread so a lock the interrupted code
    holds can delay it at most ``DEFAULT_TIMEOUT``, never hang the process."""
    watch = _state.sigterm_watch
    if watch is not None:
        watch.handler_started()
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    stopping = _state.stopping
    if stopping is not None and stopping._stopping_thread == threading.get_ident():
        # The signal interrupted this thread's own shutdown (a pool worker that was already
        # leaving): let it finish; it raises the signal again when done.
        stopping._deferred_signal = signum
        return
    _shut_down_for_signal()
    signal.raise_signal(signum)


def _shut_down_for_signal() -> None:
    """Write what is queued, bounded (by the handler, or by the watch when the main thread is
    stuck in C code and never runs the handler)."""
    runtime = _state.current
    stopping = _state.stopping
    if runtime is not None and not runtime.closed:
        helper = threading.Thread(target=_terminate_helper, name="tradelog-terminate", daemon=True)
        helper.start()
        helper.join(_terminate_wait(runtime))
        # Also after a shutdown that finished: the call this handler interrupted may hold
        # records it took off the queue (LogWriter.held); it never resumes.
        runtime._spool_what_is_left()
    elif stopping is not None:
        stopping._stopped.wait(_terminate_wait(stopping))
        stopping._spool_what_is_left()


def _terminate_helper() -> None:
    block_in_this_thread()
    _shutdown_at_exit()


def _terminate_wait(runtime: Runtime) -> float:
    """How long a terminated child waits for its shutdown: the flush (``DEFAULT_TIMEOUT``),
    plus one database call that is waiting for a lock when the time is up (it gives up after
    ``db_write_timeout`` and spools its rows), plus the writer threads' ends."""
    return DEFAULT_TIMEOUT + runtime.settings.db_write_timeout + 2.0


def _after_fork_in_child() -> None:
    _state.lock = threading.RLock()
    watch, _state.sigterm_watch = _state.sigterm_watch, None
    if watch is not None:
        watch.forget_in_child()
    _state.early.clear()  # the parent's to write
    _state.early_dropped = 0
    for runtime in (_state.current, _state.standalone):
        if runtime is None:
            continue
        try:
            runtime.after_fork()
        except Exception as exc:  # pragma: no cover - a child must start even if logging cannot
            runtime.internal_errors(exc)
    if _state.current is not None:
        _register_exit_finalizer()
