"""The caller side: the structlog processor that hands events to the background writer.

:class:`EventSink` is the last processor of tradelog's chain (after
``structlog.contextvars.merge_contextvars``). On the caller's thread it only:

1. maps the method name to a level;
2. for events carrying ``exc_info``/``stack_info``: formats the traceback and calls the
   exception observers (rare, so it may cost more);
3. snapshots values that are not plain ``str``/``int``/``float``/``bool``/``None`` into
   JSON-safe copies (so later mutation by the caller cannot change what is written);
4. caps the number of keys (``max_event_keys``): past the cap the remaining keys are left
   out and summarised under :data:`KEYS_DROPPED` (how many, and the first few names), so one
   event with 20,000 keys cannot hold the writer - or the host's other threads - for seconds;
5. appends ``(time, level, logger name, event, console)`` to the writer's queue - or, when the
   queue is full, writes the event on this thread (file line + spool), never dropping it.

Redaction, sanitising, JSON encoding, console rendering (``console`` says whether the event is
also shown on ``sys.stderr``; see :mod:`tradelog._logs.console`) and all I/O happen on the
writer's threads, so what a call costs does not depend on the size of what it logs.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from itertools import islice
from types import TracebackType
from typing import Any, Final
from zoneinfo import ZoneInfo

from tradelog._logs.levels import METHOD_LEVELS, level_name
from tradelog._logs.redact import RedactProcessor
from tradelog._logs.rows import LONG_STR_MAX
from tradelog._logs.sanitize import to_jsonable
from tradelog._logs.writer import LogWriter

__all__ = ["KEYS_DROPPED", "EventSink", "ExcInfo", "ExceptionObserver", "cap_keys", "exc_info_of"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
ExceptionObserver = Callable[[ExcInfo, Mapping[str, Any]], None]

_PRIMITIVE: Final = frozenset({str, int, float, bool, type(None)})
_SNAPSHOT_MAX_STR: Final = LONG_STR_MAX * 4
_INTERNAL_FRAMES: Final = ("/structlog/", "/tradelog/_logs/", "/logging/__init__.py")
_KEPT: Final = ("event", "user_id", "module", "exc_info", "stack_info", "exception", "stack")
"""Keys an event keeps whatever the cap (they are the row's columns or its traceback)."""
_DROPPED_NAMES: Final = 10
KEYS_DROPPED: Final = "tradelog_keys_dropped"
"""The key summarising what the key cap left out: ``{"count": n, "first": [names...]}``."""


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


def cap_keys(event: dict[Any, Any], limit: int) -> dict[Any, Any]:
    """``event`` with at most ``limit`` keys (the first ones, plus the row's own keys), the
    rest summarised under :data:`KEYS_DROPPED`. Costs one pass over the kept keys."""
    kept = dict(islice(event.items(), max(1, limit - 1)))
    for key in _KEPT:
        if key in event and key not in kept:
            kept[key] = event[key]
    names = [str(key)[:64] for key in islice((k for k in event if k not in kept), _DROPPED_NAMES)]
    kept[KEYS_DROPPED] = {"count": len(event) - len(kept), "first": names}
    return kept


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
        console: bool,
        zone: ZoneInfo,
        max_keys: int = 1000,
    ) -> None:
        self._writer = writer
        self._submit = writer.submit
        self._redactor = redactor
        self._observers = observers
        self._console = console
        self._zone = zone
        self._max_keys = max_keys

    def attach(self, writer: LogWriter) -> None:
        """Hand events to ``writer`` from now on (a forked child's new writer)."""
        self._writer = writer
        self._submit = writer.submit

    def is_internal_thread(self) -> bool:
        """Whether the calling thread is one of the writer's own."""
        return threading.get_ident() in self._writer.thread_idents

    @property
    def console(self) -> bool:
        """Whether events of tradelog's own structlog chain are shown on the console."""
        return self._console

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> str:
        """structlog processor: queue the event (the console line is written by the writer);
        returns "" so the wrapped logger prints nothing on this thread."""
        level = METHOD_LEVELS.get(method_name) or level_name(method_name)
        self.emit(level, getattr(logger, "name", None), event_dict, console=self._console)
        return ""

    def emit(
        self,
        level: str,
        name: str | None,
        event: dict[Any, Any],
        *,
        at: float | None = None,
        console: bool = False,
    ) -> dict[Any, Any]:
        """Queue one event (``event`` holds ``event``, ``user_id`` and context keys) logged
        ``at`` (a Unix time; default: now); ``console``: also show it on the console."""
        if len(event) > self._max_keys:
            event = cap_keys(event, self._max_keys)
        if "exc_info" in event or "stack_info" in event:
            event = self._special(level, name, event)
        if not _PRIMITIVE.issuperset(map(type, event.values())):
            event = _snapshot(event)
        self._submit((time.time() if at is None else at, level, name, event, console))
        return event

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
