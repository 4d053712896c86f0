"""tradelog inside a structlog chain that is the host's: :class:`StructlogFeed`.

A host that configures structlog itself - its own processors, its own renderer, JSON on stdout
- keeps all of it. tradelog joins as one more processor that hands a copy of the event to its
pipeline and returns the event unchanged, so the processors after it and the host's renderer
see exactly what they would have seen:

* ``configure(take_over=False)``: the host puts ``tradelog.processor`` in its chain itself;
* ``configure(take_over=True)`` with structlog already configured by the host: tradelog inserts
  its feed into the host's processor list, in place (loggers the host already cached see it
  too), before the first processor that renders or formats exceptions (:func:`insert_feed`),
  and takes it out again at shutdown.

What the feed takes: the event's keys as the caller bound them, minus the bookkeeping the
host's processors may have added before it (``timestamp``, and ``level``/``logger`` when they
repeat the method and the logger name). The module is the logger's name, the ``logger`` key,
or the calling module. Events below the logger's minimum level are left out. Placed before the
host's exception formatting it sees ``exc_info`` and error capture works as usual.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableSequence
from typing import Any, Final

from tradelog._logs.levels import LEVEL_NUMBERS, METHOD_LEVELS, level_name
from tradelog._logs.loggers import caller_module
from tradelog._logs.stdlib import Intake, expect_record

__all__ = ["StructlogFeed", "insert_feed", "is_feed", "remove_feed"]

_FORMATTERS: Final = frozenset(
    {
        "format_exc_info",
        "dict_tracebacks",
        "ExceptionRenderer",
        "ExceptionPrettyPrinter",
        "JSONRenderer",
        "ConsoleRenderer",
        "KeyValueRenderer",
        "LogfmtRenderer",
        "EventRenamer",
        "wrap_for_formatter",
        "render_to_log_kwargs",
        "render_to_log_args_and_kwargs",
    }
)
"""structlog processors that render an event or replace ``exc_info`` with text."""


def is_feed(processor: object) -> bool:
    """Whether ``processor`` hands events to tradelog (a feed or ``tradelog.processor``)."""
    return isinstance(processor, StructlogFeed) or bool(
        getattr(processor, "__tradelog_feed__", False)
    )


def _processor_name(processor: object) -> str:
    name = getattr(processor, "__name__", None) or type(processor).__name__
    return str(name)


def insert_feed(processors: MutableSequence[Any], feed: Callable[..., Any]) -> bool:
    """Put ``feed`` into ``processors`` (in place) before the first renderer or exception
    formatter (else before the last processor); False when a feed is there already."""
    if any(is_feed(p) for p in processors):
        return False
    position = max(len(processors) - 1, 0)
    for index, processor in enumerate(processors):
        if _processor_name(processor) in _FORMATTERS:
            position = index
            break
    processors.insert(position, feed)
    return True


def remove_feed(processors: MutableSequence[Any], feed: Callable[..., Any]) -> None:
    """Take ``feed`` out of ``processors`` again (in place; nothing if it is gone)."""
    for index, processor in enumerate(processors):
        if processor is feed:
            del processors[index]
            return


class StructlogFeed(Intake):
    """A structlog processor handing a copy of each event to an
    :class:`~tradelog._logs.processors.EventSink`."""

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """Take the event; return it unchanged. Never raises."""
        self.take(logger, method_name, event_dict)
        return event_dict

    def take(self, logger: Any, method_name: str, event_dict: Any, at: float | None = None) -> None:
        """Hand a copy of ``event_dict`` to the sink (``at``: when it was logged)."""
        try:
            if not isinstance(event_dict, dict):
                return
            level = METHOD_LEVELS.get(method_name) or level_name(method_name)
            event = dict(event_dict)
            name = getattr(logger, "name", None)
            named = event.get("logger")
            if isinstance(named, str) and (name is None or named == name):
                name = name or named
                del event["logger"]
            if not name:
                name = caller_module()
            if str(event.get("level", "")).upper() in (level, method_name.upper()):
                del event["level"]
            event.pop("timestamp", None)
            if LEVEL_NUMBERS[level] < self.levels(name):
                return
            if isinstance(logger, logging.Logger) and logger.isEnabledFor(LEVEL_NUMBERS[level]):
                expect_record(logger.name, event.get("event"))
            self.sink.emit(level, name, event, at=at if at is not None else time.time())
        except Exception as exc:
            self._on_error(exc)
