"""The caller side: the structlog processor that hands events to the background writer.

:class:`EventSink` is the last processor of tradelog's chain (after
``structlog.contextvars.merge_contextvars``). On the caller's thread it only:

1. maps the method name to a level;
2. for events carrying ``exc_info``/``stack_info``: formats the traceback and calls the
   exception observers (rare, so it may cost more);
3. snapshots values that are not plain ``str``/``int``/``float``/``bool``/``None`` into
   JSON-safe copies (so later mutation by the caller cannot change what is written);
4. appends ``(time, level, logger name, event)`` to the writer's queue - or, when the queue is
   full, writes the event on this thread (file line + spool), never dropping it.

Redaction, sanitising, JSON encoding and all I/O happen on the writer's threads. With the
console enabled it also renders the event (scrubbed) for ``sys.stderr``.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from zoneinfo import ZoneInfo

from tradelog._logs.levels import METHOD_LEVELS, level_name
from tradelog._logs.redact import RedactProcessor
from tradelog._logs.rows import LONG_STR_MAX
from tradelog._logs.sanitize import to_jsonable
from tradelog._logs.writer import LogWriter

__all__ = ["EventSink", "ExcInfo", "ExceptionObserver", "exc_info_of"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
ExceptionObserver = Callable[[ExcInfo, Mapping[str, Any]], None]

_PRIMITIVE: Final = frozenset({str, int, float, bool, type(None)})
_SNAPSHOT_MAX_STR: Final = LONG_STR_MAX * 4
_INTERNAL_FRAMES: Final = ("/structlog/", "/tradelog/_logs/", "/logging/__init__.py")


def exc_info_of(value: object) -> ExcInfo | None:
    """Resolve an ``exc_info`` argument (True, an exception or a 3-tuple) to a 3-tuple."""
    if value is None or value is False:
        return None
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3:
        if isinstance(value[1], BaseException):
            return (type(value[1]), value[1], value[2])
        return None
    current = sys.exc_info()
    if current[1] is None:
        return None
    return (type(current[1]), current[1], current[2])


def _format_exception(info: ExcInfo) -> str:
    try:
        return "".join(traceback.format_exception(info[0], info[1], info[2]))
    except Exception:
        try:
            return f"{info[0].__name__}: {info[1]}"
        except Exception:
            return "<unformattable exception>"


def _format_stack() -> str:
    frames = [
        frame
        for frame in traceback.extract_stack()
        if not any(part in frame.filename for part in _INTERNAL_FRAMES)
    ]
    return "Stack (most recent call last):\n" + "".join(traceback.format_list(frames))


def _snapshot(event: Mapping[Any, Any]) -> dict[Any, Any]:
    return {
        key: value if type(value) in _PRIMITIVE else to_jsonable(value, max_str=_SNAPSHOT_MAX_STR)
        for key, value in event.items()
    }


class EventSink:
    """The last structlog processor (and the stdlib handler's target): queue the event."""

    def __init__(
        self,
        writer: LogWriter,
        *,
        redactor: RedactProcessor,
        observers: Sequence[ExceptionObserver],
        console: Callable[[Any, str, dict[str, Any]], str] | None,
        zone: ZoneInfo,
    ) -> None:
        self._writer = writer
        self._submit = writer.submit
        self._redactor = redactor
        self._observers = observers
        self._console = console
        self._zone = zone

    def attach(self, writer: LogWriter) -> None:
        """Hand events to ``writer`` from now on (a forked child's new writer)."""
        self._writer = writer
        self._submit = writer.submit

    def is_internal_thread(self) -> bool:
        """Whether the calling thread is one of the writer's own."""
        return threading.get_ident() in self._writer.thread_idents

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        """structlog processor: queue the event; return the console line (or "")."""
        level = METHOD_LEVELS.get(method_name) or level_name(method_name)
        name = getattr(logger, "name", None)
        event = self.emit(level, name, event_dict)
        if self._console is None:
            return ""
        return self.render(level, name, event)

    def emit(
        self, level: str, name: str | None, event: dict[Any, Any], *, at: float | None = None
    ) -> dict[Any, Any]:
        """Queue one event (``event`` holds ``event``, ``user_id`` and context keys) logged
        ``at`` (a Unix time; default: now)."""
        if "exc_info" in event or "stack_info" in event:
            event = self._special(level, name, event)
        if not _PRIMITIVE.issuperset(map(type, event.values())):
            event = _snapshot(event)
        self._submit((time.time() if at is None else at, level, name, event))
        return event

    def render(self, level: str, name: str | None, event: Mapping[Any, Any]) -> str:
        """The scrubbed console line for an event."""
        if self._console is None:
            return ""
        try:
            view: dict[str, Any] = {
                "timestamp": datetime.now(self._zone).isoformat(timespec="milliseconds"),
                "level": level.lower(),
                "logger": name,
            }
            view.update(event)
            view.setdefault("event", "")
            return self._console(None, level.lower(), self._redactor.process(view))
        except Exception:  # pragma: no cover - a renderer that fails: say so, scrubbed
            return f"{level} {name}: <event could not be rendered>"

    def _special(self, level: str, name: str | None, event: dict[Any, Any]) -> dict[Any, Any]:
        event = dict(event)
        info = exc_info_of(event.pop("exc_info", None))
        if event.pop("stack_info", None):
            event["stack"] = _format_stack()
        if info is not None:
            event["exception"] = _format_exception(info)
            if self._observers:
                self._observe(info, level, name, event)
        return event

    def _observe(self, info: ExcInfo, level: str, name: str | None, event: dict[Any, Any]) -> None:
        try:
            view = dict(_snapshot(event))
            view["level"] = level
            view["logger"] = name
            view["timestamp"] = datetime.now(self._zone)
            scrubbed = self._redactor.process(view)
        except Exception:  # pragma: no cover - to_jsonable and the redactor never raise
            scrubbed = {"event": "<unavailable>", "level": level, "logger": name}
        for observer in list(self._observers):
            try:
                observer(info, scrubbed)
            except Exception:
                self._writer.note_observer_error()
