"""Service lifecycle notices to the account owner: started, stopped, a task failed or finished.

:class:`ServiceNotices` sends ``service`` notifications through the notification service the
runtime hands it, so the owner's ``notify_service_events``, channels and quiet hours decide as
for any notification. Times are in the owner's timezone:

=====================  ========  ==================================================================
event                  level     message
=====================  ========  ==================================================================
``mark_running``       info      Your trading service started at 09:00 IST.
``mark_stopped``       info      Your trading service stopped at 16:10 IST.
failed ``track_task``  error     Your sell_monitor run failed at 13:40 IST; the operators have
                                 been told.
finished task          info      Your sell_monitor run finished at 15:30 IST (6.2 s) - only when
                                 the call asks for it (``track_task(..., notify_success=True)``).
=====================  ========  ==================================================================

A failed task's notice carries the owner's error dedupe key
(:func:`tradelog._errors.alerts.dedupe_key`: fingerprint and time window), and is sent before
the exception is handed to error capture: when both ``service`` and ``error`` notifications
are on, the owner hears of the failure once, from this notice, and the error alert finds the
key taken. Sending never raises into the caller; a failure is a warning on the
``tradelog.service`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tradelog._errors.alerts import dedupe_key, task_failed_sentence
from tradelog._errors.fingerprint import fingerprint
from tradelog._health.writer import describe_failure
from tradelog._recipients import local_time, operator_ids, user_zone

__all__ = ["ServiceNotices"]

_log: Final = logging.getLogger("tradelog.service")

SendFn = Callable[..., Any]


class ServiceNotices:
    """Sends the lifecycle notices of ``user_id``'s service with ``engine`` through ``send``
    (``send(user_id, "service", level, title, message, dedupe_key=..., session=...)``).

    ``window`` is the error notification window (the failed-task dedupe key depends on it);
    ``operators`` the configured extra operator ids (to tell whether anyone was told).
    """

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        *,
        send: SendFn,
        window: float,
        operators: Iterable[int] = (),
    ) -> None:
        self._engine = engine
        self._send = send
        self.window = window
        self.operators = tuple(operators)

    @property
    def engine(self) -> Engine:
        """The engine notices are written with."""
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def started(self, user_id: int, at: datetime) -> bool:
        """``mark_running``: the service started."""
        return self._notify(
            user_id,
            "info",
            "Service started",
            lambda when, _: f"Your trading service started at {when}.",
            at,
        )

    def stopped(self, user_id: int, at: datetime) -> bool:
        """``mark_stopped``: the service stopped."""
        return self._notify(
            user_id,
            "info",
            "Service stopped",
            lambda when, _: f"Your trading service stopped at {when}.",
            at,
        )

    def task_failed(self, user_id: int, task: str, at: datetime, exc: BaseException) -> bool:
        """A tracked task raised ``exc`` at ``at``."""
        try:
            key = dedupe_key(fingerprint(exc), at, self.window)
        except Exception:  # pragma: no cover - fingerprint walks plain attributes
            key = None
        return self._notify(
            user_id,
            "error",
            f"{task} failed",
            lambda when, told: task_failed_sentence(task, when, operators=told),
            at,
            key=key,
        )

    def task_succeeded(self, user_id: int, task: str, at: datetime, duration: float) -> bool:
        """A tracked task that asked for it finished."""
        return self._notify(
            user_id,
            "info",
            f"{task} finished",
            lambda when, _: f"Your {task} run finished at {when} ({duration:.1f} s).",
            at,
        )

    def _notify(
        self,
        user_id: int,
        level: str,
        title: str,
        text: Callable[[str, bool], str],
        at: datetime,
        *,
        key: str | None = None,
    ) -> bool:
        try:
            with Session(self.engine) as session:
                when = local_time(at, user_zone(session, user_id))
                told = bool(operator_ids(session, self.operators)) if level == "error" else False
                self._send(
                    user_id,
                    "service",
                    level,
                    title,
                    text(when, told),
                    dedupe_key=key,
                    session=session,
                )
                session.commit()
        except Exception as exc:
            _log.warning(
                "tradelog could not send the %r notice to user %s: %s",
                title,
                user_id,
                describe_failure(exc),
            )
            return False
        return True
