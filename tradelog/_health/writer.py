"""Writing service health: heartbeats, running state and task rows (:class:`ServiceHealth`).

Every write is **synchronous** on the caller's thread and uses the engine it is given (the
runtime's, never the host's session). They are rare (a heartbeat every few seconds, a task every
minute or so) and cost a few milliseconds; on PostgreSQL each transaction runs under a short
``statement_timeout``. A database failure never reaches the host: it is logged on the
``tradelog.service`` stdlib logger and the call returns ``False``.

``service_status`` has one row per user, created on first use by an upsert
(:func:`tradelog._db.upsert.upsert_status`), so concurrent writers never collide and
``error_count`` increments are never lost.

With ``notices`` (the runtime passes :class:`tradelog._health.lifecycle.ServiceNotices`),
``mark_running`` and ``mark_stopped`` also tell the owner, after their write committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._db.engine import STATEMENT_TIMEOUT_MS
from tradelog._db.models import ServiceTaskExecution
from tradelog._db.upsert import upsert_status
from tradelog._logs.redact import Redactor, redact_jsonable, redact_text

__all__ = [
    "TASK_STATUSES",
    "ExceptionRecorder",
    "LifecycleNotices",
    "ServiceHealth",
    "describe_failure",
]

TASK_STATUSES: Final = ("success", "failed", "skipped")
TASK_NAME_LENGTH: Final = 64
_log = logging.getLogger("tradelog.service")
_redactor = Redactor()


class ExceptionRecorder(Protocol):
    """Where the exceptions of failed tasks go (the runtime's error capture)."""

    def capture(
        self, exc: BaseException, *, user_id: int | None = ..., context: Mapping[str, Any] | None
    ) -> bool: ...


class LifecycleNotices(Protocol):
    """Who tells the owner about their service (see :mod:`tradelog._health.lifecycle`)."""

    def started(self, user_id: int, at: datetime) -> bool: ...

    def stopped(self, user_id: int, at: datetime) -> bool: ...

    def task_failed(self, user_id: int, task: str, at: datetime, exc: BaseException) -> bool: ...

    def task_succeeded(self, user_id: int, task: str, at: datetime, duration: float) -> bool: ...


def describe_failure(exc: BaseException) -> str:
    """One scrubbed line naming a database failure."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {reason[0] if reason else ''}")


class ServiceHealth:
    """Heartbeats, running state and task rows written with an explicit engine.

    ``capture`` receives the exceptions of failed tasks (so they land in ``error_logs``);
    ``notices`` tells owners that their service started, stopped or a task failed.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        capture: ExceptionRecorder | None = None,
        clock: Callable[[], datetime] = utcnow,
        notices: LifecycleNotices | None = None,
    ) -> None:
        self.engine = engine
        self.capture = capture
        self.clock = clock
        self.notices = notices

    def _write(self, action: str, work: Callable[[Session], None]) -> bool:
        try:
            with Session(self.engine) as session, session.begin():
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                work(session)
        except Exception as exc:
            _log.warning("tradelog could not %s: %s", action, describe_failure(exc))
            return False
        return True

    def heartbeat(self, user_id: int, *, now: datetime | None = None) -> bool:
        """Record that ``user_id``'s service is alive (``last_heartbeat``)."""
        at = now or self.clock()
        return self._write(
            f"record a heartbeat for user {user_id}",
            lambda s: upsert_status(s, user_id, now=at, heartbeat=at),
        )

    def mark_running(
        self, user_id: int, *, now: datetime | None = None, notify: bool = True
    ) -> bool:
        """Mark ``user_id``'s service as running; counts as a heartbeat too. With ``notify``
        (and notices wired) the owner is told it started."""
        at = now or self.clock()
        written = self._write(
            f"mark the service of user {user_id} running",
            lambda s: upsert_status(s, user_id, now=at, running=True, heartbeat=at),
        )
        if written and notify and self.notices is not None:
            self.notices.started(user_id, at)
        return written

    def mark_stopped(
        self, user_id: int, *, now: datetime | None = None, notify: bool = True
    ) -> bool:
        """Mark ``user_id``'s service as stopped (a stopped service is never stale). With
        ``notify`` (and notices wired) the owner is told it stopped."""
        at = now or self.clock()
        written = self._write(
            f"mark the service of user {user_id} stopped",
            lambda s: upsert_status(s, user_id, now=at, running=False),
        )
        if written and notify and self.notices is not None:
            self.notices.stopped(user_id, at)
        return written

    def record_task(
        self,
        user_id: int,
        task_name: str,
        *,
        status: str,
        executed_at: datetime,
        duration_seconds: float,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write one ``service_task_execution`` row and move ``last_task_execution``."""
        if status not in TASK_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TASK_STATUSES)}, got {status!r}")
        document = _details(details)

        def work(session: Session) -> None:
            session.add(
                ServiceTaskExecution(
                    user_id=user_id,
                    task_name=task_name[:TASK_NAME_LENGTH],
                    executed_at=executed_at,
                    status=status,
                    duration_seconds=duration_seconds,
                    details=document,
                )
            )
            upsert_status(session, user_id, now=self.clock(), task_at=executed_at)

        return self._write(f"record task {task_name!r} of user {user_id}", work)


def _details(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    document = redact_jsonable(dict(details), max_str=2048, redactor=_redactor)
    return document if isinstance(document, dict) else {"details": document}
