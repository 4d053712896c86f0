"""Wiring tradelog into the host's own logging configuration: ``tradelog.processor`` and
``tradelog.Handler``.

With ``tradelog.configure(take_over=False)`` tradelog changes neither structlog's configuration
nor the root logger; the host adds these where it wants them::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        tradelog.processor,                       # before exceptions are formatted
        structlog.processors.format_exc_info,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.JSONRenderer(),
    ])

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"tradelog": {"class": "tradelog.Handler", "level": "INFO"}, ...},
        "root": {"level": "INFO", "handlers": ["console", "tradelog"]},
    })

Both feed the configured runtime's pipeline - the same rows, files, redaction, error capture and
per-logger levels as the take-over - and never raise. Before ``configure()`` runs in a process
(a spawned child importing the host's modules) they hold up to
:data:`~tradelog._runtime.EARLY_EVENTS` events and hand them over when it does. This module sits
above the composition root, like :mod:`tradelog._facade`.
"""

from __future__ import annotations

import logging
from typing import Any

from tradelog._runtime import feed_event, feed_record

__all__ = ["Handler", "processor"]


def processor(logger: Any, method_name: str, event_dict: Any) -> Any:
    """A structlog processor: hands a copy of the event to tradelog and returns the event
    unchanged, for the processors after it and the host's renderer."""
    feed_event(logger, method_name, event_dict)
    return event_dict


processor.__tradelog_feed__ = True  # type: ignore[attr-defined]


class Handler(logging.Handler):
    """A ``logging.Handler`` feeding tradelog; ``{"class": "tradelog.Handler"}`` in
    ``dictConfig``. Its ``level`` and filters apply as for any handler; formatters do not
    (tradelog stores the message and the ``extra`` fields, not a formatted line)."""

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)

    def handle(self, record: logging.LogRecord) -> bool:
        """Emit without the handler lock: tradelog's intake is thread-safe."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Hand ``record`` to tradelog (never raises)."""
        try:
            feed_record(record)
        except Exception:  # pragma: no cover - feed_record does not raise
            self.handleError(record)
