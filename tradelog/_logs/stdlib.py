"""The bridge from the standard library's :mod:`logging` into tradelog's pipeline.

:class:`RecordBridge` turns a ``LogRecord`` into the same event a structlog call would make:
``event`` is the formatted message, ``extra=`` fields become context (``user_id`` and
``module`` included), the ``structlog.contextvars`` context is merged in, ``exc_info`` /
``stack_info`` are kept, and a record that structlog's ``ProcessorFormatter`` wrapped (its
``msg`` is the event dict) is unwrapped - so ``logging.getLogger("x").info(...)`` lands in the
same rows and files, scrubbed the same way. Records below the logger's minimum level
(:class:`~tradelog._logs.levels.LoggerLevels`) are left out, and each record is taken once
however many ways it reaches tradelog (the take-over below, ``tradelog.Handler`` in the host's
configuration, a structlog event that tradelog already took and that structlog then handed to a
stdlib logger).

:class:`StdlibTakeOver` is how ``configure(take_over=True)`` reaches stdlib logging without a
root handler (which a later ``logging.config.dictConfig`` would remove): it wraps
``logging.Logger.callHandlers``, chained like the exception hooks, so every record any logger
hands to its handlers is offered to tradelog first. It leaves the host's view alone:

* the root logger keeps the host's handlers. Its level is lowered to just below tradelog's
  lowest minimum (19 for ``INFO``: a value no host sets, so a level set later is recognised as
  the host's), and records that only exist because of that - below the level the host's
  configuration would have let through - go to tradelog and to no handler of the host's (so
  ``httpx`` does not start logging request URLs to the host's console). Once the host sets the
  root level itself, that level is the host's and nothing is hidden any more; at shutdown the
  root gets the host's level back;
* tradelog prints a console line for a record only when no handler on the record's way writes
  to the console (``sys.stderr``/``sys.stdout``): a line the host prints is never doubled. With
  no handler at all, tradelog's line replaces Python's last-resort output.

Records emitted by tradelog's own writer threads (for instance a database driver warning while
the writer is connecting) are not fed back into the queue they come from; warnings and worse
are printed to ``sys.stderr`` instead.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from structlog.contextvars import get_contextvars

from tradelog._logs.levels import LoggerLevels, level_name
from tradelog._logs.processors import EventSink
from tradelog._logs.sanitize import to_jsonable

__all__ = ["Intake", "RecordBridge", "StdlibTakeOver", "expect_record", "expected_record"]

_SEEN: Final = "_tradelog_seen"
_STANDARD: Final = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None).__dict__
) | {"message", "asctime", "taskName", _SEEN, "_logger", "_name", "_from_structlog", "_record"}
"""Record attributes that are not the caller's ``extra=`` (structlog's own included)."""
_WRAPPED_SKIP: Final = frozenset({"_record", "_from_structlog", "timestamp", "level", "logger"})

_local = threading.local()


def expect_record(name: str, event: object) -> None:
    """A structlog event tradelog just took is about to reach stdlib logger ``name``: do not
    take the record it becomes a second time (same thread, next record of that logger)."""
    _local.expected = (name, str(event))


def expected_record(record: logging.LogRecord) -> bool:
    """Whether ``record`` is the one :func:`expect_record` announced (checked once)."""
    expected = getattr(_local, "expected", None)
    if expected is None:
        return False
    _local.expected = None
    name, event = expected
    if record.name != name:
        return False
    message = record.msg
    if isinstance(message, Mapping):
        return bool(str(message.get("event")) == event)
    return event in str(message)


def _unformattable(record: logging.LogRecord) -> str:
    """A message for a record whose ``msg % args`` (or ``str(msg)``) failed."""
    msg = to_jsonable(record.msg)
    args = to_jsonable(record.args)
    return f"{msg} (arguments could not be formatted: {args})"


def _console_handlers(logger: logging.Logger) -> tuple[int, bool]:
    """How many handlers a record of ``logger`` meets, and whether one writes to the console."""
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    found = 0
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found += 1
            if isinstance(handler, logging.StreamHandler) and handler.stream in consoles:
                return found, True
        if not current.propagate:
            break
        current = current.parent
    return found, False


class Intake:
    """What hands events from a logging library to an :class:`EventSink`: the sink, the
    per-logger minimum levels, and where its own failures are counted."""

    def __init__(
        self,
        sink: EventSink,
        levels: LoggerLevels,
        *,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.sink = sink
        self.levels = levels
        self._on_error = on_error


class RecordBridge(Intake):
    """Feeds stdlib records to an :class:`EventSink` (see the module docstring)."""

    def feed(
        self, record: logging.LogRecord, *, console: bool = False
    ) -> tuple[str, dict[Any, Any]] | None:
        """Take ``record`` (once; ``console``: also show it on the console); returns
        ``(level, queued event)``, or None when it was left out. Never raises."""
        try:
            if record.__dict__.get(_SEEN):
                return None
            record.__dict__[_SEEN] = True
            if record.levelno < self.levels(record.name):
                return None
            if expected_record(record):
                return None
            if self.sink.is_internal_thread():
                if record.levelno >= logging.WARNING:
                    sys.stderr.write(f"tradelog writer: {record.name}: {record.getMessage()}\n")
                return None
            level = level_name(record.levelno)
            event = self._event(record)
            return level, self.sink.emit(
                level, record.name, event, at=record.created, console=console
            )
        except Exception as exc:
            self._on_error(exc)
            return None

    @staticmethod
    def _event(record: logging.LogRecord) -> dict[str, Any]:
        event: dict[str, Any] = {}
        wrapped = record.msg if isinstance(record.msg, Mapping) and not record.args else None
        if wrapped is not None:  # structlog's ProcessorFormatter.wrap_for_formatter
            for key, value in wrapped.items():
                if key not in _WRAPPED_SKIP:
                    event[str(key)] = value
            message: Any = event.pop("event", "")
        else:
            try:
                message = record.getMessage()
            except Exception:
                message = _unformattable(record)
        for key in record.__dict__.keys() - _STANDARD:
            event.setdefault(key, record.__dict__[key])
        for key, value in get_contextvars().items():
            event.setdefault(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            event["exc_info"] = record.exc_info
        if record.stack_info:
            event["stack"] = record.stack_info
        event["event"] = message
        return event


_Previous = Callable[[logging.Logger, logging.LogRecord], None]


class StdlibTakeOver:
    """Offers every record to tradelog by wrapping ``logging.Logger.callHandlers`` (see the
    module docstring). ``console``: print a line for records no host handler prints."""

    def __init__(self, bridge: RecordBridge, *, console: bool, lowest: int) -> None:
        self.bridge = bridge
        self.console = console
        self.lowest = lowest
        self.active = False
        self.paused = False
        self.previous: _Previous = logging.Logger.callHandlers
        self._lowered: int | None = None
        self._host_root_level = logging.WARNING
        self._busy = threading.local()

    def install(self) -> StdlibTakeOver:
        """Wrap ``callHandlers`` and lower the root level if tradelog needs it lower."""
        self.previous = logging.Logger.callHandlers
        take_over = self

        def call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
            take_over.handle(logger, record)

        call_handlers.__tradelog__ = self  # type: ignore[attr-defined]
        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign, assignment]
        self.active = True
        root = logging.getLogger()
        self._host_root_level = root.level
        if root.level >= self.lowest:  # NOTSET (0) already lets everything through
            # One below tradelog's minimum: a value no host sets, so that a level the host
            # sets later - even tradelog's own minimum - is recognised as the host's.
            self._lowered = self.lowest - 1
            root.setLevel(self._lowered)
        return self

    def uninstall(self) -> None:
        """Put ``callHandlers`` back (or only switch this one off when something was chained
        on top since) and give the root logger its level back if nobody changed it since."""
        self.active = False
        current = logging.Logger.callHandlers
        if getattr(current, "__tradelog__", None) is self:
            logging.Logger.callHandlers = self.previous  # type: ignore[method-assign]
        root = logging.getLogger()
        if self._lowered is not None and root.level == self._lowered:
            root.setLevel(self._host_root_level)
        self._lowered = None

    def handle(self, logger: logging.Logger, record: logging.LogRecord) -> None:
        """The wrapped ``callHandlers``: tradelog first, then the host's handlers."""
        if not self.active or self.paused or getattr(self._busy, "on", False):
            self.previous(logger, record)
            return
        self._busy.on = True
        try:
            handlers, printed = _console_handlers(logger) if self.console else (1, True)
            fed = self.bridge.feed(record, console=not printed)
            hidden = self._hidden(logger, record)
            if fed is not None and not printed and handlers == 0:
                return  # tradelog's line stands in for Python's last-resort output
        except Exception as exc:  # pragma: no cover - feed and render never raise
            hidden = False
            self.bridge._on_error(exc)
        finally:
            self._busy.on = False
        if not hidden:
            self.previous(logger, record)

    def _hidden(self, logger: logging.Logger, record: logging.LogRecord) -> bool:
        """Whether the host's own configuration would never have created ``record``."""
        if self._lowered is None:
            return False
        root = logging.getLogger()
        if root.level != self._lowered:  # the host set the root level since: it is theirs
            self._lowered = None
            return False
        current: logging.Logger | None = logger
        while current is not None and current is not root:
            if current.level:
                return record.levelno < current.level
            current = current.parent
        return record.levelno < self._host_root_level
