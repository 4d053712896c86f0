"""The ``error`` notification sent to the user who owns a captured error.

At most one notification per user and fingerprint per ``error_notify_window`` seconds: the
window is cut into fixed buckets and the notification carries the dedupe key
``error:<fingerprint>:<bucket>``, which the notification store enforces in the database, so
several processes failing the same way still send one message per window. An in-process memo
of the last key sent skips the database round trip during an error storm. A window of 0 turns
the throttle off (one notification per occurrence).

The level is ``critical`` for an uncaught crash and ``error`` otherwise. Errors owned by the
system user are not notified (nobody reads that inbox); they show in ``tradelog errors``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tradelog._errors.record import summary
from tradelog._errors.store import Written

__all__ = ["ErrorAlerts", "SendFn", "alert_text", "dedupe_key"]

_log: Final = logging.getLogger("tradelog.errors")
_MEMO_SIZE: Final = 10_000
_TITLE_LENGTH: Final = 200
_MESSAGE_LENGTH: Final = 900

SendFn = Callable[..., Any]


def dedupe_key(fingerprint: str, occurred_at: datetime, window: float) -> str | None:
    """The dedupe key of an error notification, or None when throttling is off."""
    if window <= 0:
        return None
    bucket = int(occurred_at.timestamp() // window)
    return f"error:{fingerprint[:32]}:{bucket}"


def alert_text(written: Written) -> tuple[str, str]:
    """Title and message of the notification for one stored error."""
    record = written.record
    short = record.error_type.rsplit(".", 1)[-1]
    title = ("Crash: " if record.uncaught else "Error: ") + short
    body = summary(record.error_type, record.error_message, _MESSAGE_LENGTH)
    message = f"{body}\nError #{written.error_id}; fingerprint {record.fingerprint[:12]}."
    return title[:_TITLE_LENGTH], message


class ErrorAlerts:
    """A store notifier (see :class:`tradelog._errors.store.ErrorStore`) sending ``error``
    notifications through ``send`` (the runtime passes its notification service's ``notify``).

    ``send`` is called as ``send(user_id, "error", level, title, message, dedupe_key=...,
    session=session)`` with a session on the error store's engine, committed afterwards.
    """

    def __init__(self, window: float, *, send: SendFn) -> None:
        self.window = window
        self._send = send
        self._memo: dict[tuple[int, str], str] = {}
        self._lock = threading.Lock()
        self.sent = 0
        self.skipped = 0
        self.failed = 0

    def __call__(self, engine: Engine, written: Sequence[Written]) -> None:
        """Send the error notifications due for the rows just ``written``."""
        send = self._send
        for item in written:
            if item.system:
                continue
            record = item.record
            key = dedupe_key(record.fingerprint, record.occurred_at, self.window)
            memo = (item.user_id, record.fingerprint)
            with self._lock:
                if key is not None and self._memo.get(memo) == key:
                    self.skipped += 1
                    continue
            title, message = alert_text(item)
            try:
                with Session(engine) as session:
                    send(
                        item.user_id,
                        "error",
                        record.level,
                        title,
                        message,
                        dedupe_key=key,
                        session=session,
                    )
                    session.commit()
            except Exception as exc:
                self.failed += 1
                _log.warning(
                    "tradelog could not notify user %s of error %s: %s",
                    item.user_id,
                    item.error_id,
                    type(exc).__name__,
                )
                continue
            self.sent += 1
            if key is not None:
                with self._lock:
                    if len(self._memo) >= _MEMO_SIZE:
                        self._memo.clear()
                    self._memo[memo] = key
