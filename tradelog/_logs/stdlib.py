"""The bridge from the standard library's :mod:`logging` into tradelog's pipeline.

:class:`TradelogHandler` sits on the root logger. Each record becomes the same event a
structlog call would make: ``event`` is the formatted message, ``extra=`` fields become context
(``user_id`` and ``module`` included), the ``structlog.contextvars`` context is merged in, and
``exc_info``/``stack_info`` are kept - so ``logging.getLogger("x").info(...)`` lands in the same
rows and files, scrubbed the same way.

Records emitted by tradelog's own writer threads (for instance a database driver warning while
the writer is connecting) are not fed back into the queue they come from; they are printed to
``sys.stderr`` instead when they are warnings or worse.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Final

from structlog.contextvars import get_contextvars

from tradelog._logs.levels import level_name
from tradelog._logs.processors import EventSink
from tradelog._logs.sanitize import to_jsonable

__all__ = ["TradelogHandler"]

_STANDARD: Final = frozenset(
    logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None).__dict__
) | {"message", "asctime", "taskName"}


def _unformattable(record: logging.LogRecord) -> str:
    """A message for a record whose ``msg % args`` (or ``str(msg)``) failed."""
    msg = to_jsonable(record.msg)
    args = to_jsonable(record.args)
    return f"{msg} (arguments could not be formatted: {args})"


class TradelogHandler(logging.Handler):
    """A logging handler that forwards records to an :class:`EventSink`."""

    def __init__(
        self,
        sink: EventSink,
        *,
        level: int = logging.NOTSET,
        console: bool = False,
        on_error: Callable[[BaseException], None],
    ) -> None:
        super().__init__(level)
        self.sink = sink
        self.console = console
        self._on_error = on_error

    def handle(self, record: logging.LogRecord) -> bool:
        """Emit without the handler lock: the sink is thread-safe."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.sink.is_internal_thread():
                if record.levelno >= logging.WARNING:
                    sys.stderr.write(f"tradelog writer: {record.name}: {record.getMessage()}\n")
                return
            try:
                message: Any = record.getMessage()
            except Exception:
                message = _unformattable(record)
            event: dict[str, Any] = {}
            extra = record.__dict__.keys() - _STANDARD
            for key in extra:
                event[key] = record.__dict__[key]
            context = get_contextvars()
            for key, value in context.items():
                event.setdefault(key, value)
            if record.exc_info and record.exc_info[1] is not None:
                event["exc_info"] = record.exc_info
            if record.stack_info:
                event["stack"] = record.stack_info
            event["event"] = message
            level = level_name(record.levelno)
            queued = self.sink.emit(level, record.name, event)
            if self.console:
                line = self.sink.render(level, record.name, queued)
                if line:
                    sys.stderr.write(line + "\n")
        except Exception as exc:
            self._on_error(exc)
