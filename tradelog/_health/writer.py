"""Writing service health: heartbeats, running state and task rows (:class:`ServiceHealth`).

Each write is a JSON-able **record** (``kind`` ``status`` or ``task``) stored with the engine
the health writer is given (the runtime's, never the host's session); on PostgreSQL each
transaction runs under a short ``statement_timeout``. With a
:class:`~tradelog._health.telemetry.Telemetry` (the runtime wires one) the records are written on
its thread: the caller waits at most ``TRADELOG_TELEMETRY_WAIT`` seconds, never while the
database is down, and what cannot be written is spooled and replayed later (see that module).
Without one, the write is synchronous on the caller's thread. Either way a database failure
never reaches the host: it is logged on the ``tradelog.service`` stdlib logger and the call
returns ``False`` (not in the database yet).

``service_status`` has one row per user, created on first use by an upsert
(:func:`tradelog._db.upsert.upsert_status`), so concurrent writers never collide and
``error_count`` increments are never lost. A user id ``users`` does not hold yet is registered in
the same transaction, or the write is refused (``unknown_users``, see
:mod:`tradelog._users.registry`); a user id of None is the system user.

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
from tradelog._health.telemetry import Telemetry
from tradelog._logs.redact import Redactor, redact_jsonable, redact_text
from tradelog._users.registry import KnownUsers
from tradelog._users.store import system_user_id

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
    ``users`` decides what an unknown user id becomes; ``notices`` tells owners that their
    service started, stopped or a task failed.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        capture: ExceptionRecorder | None = None,
        clock: Callable[[], datetime] = utcnow,
        users: KnownUsers | None = None,
        notices: LifecycleNotices | None = None,
        telemetry: Callable[[ServiceHealth], Telemetry] | None = None,
    ) -> None:
        self.engine = engine
        self.capture = capture
        self.clock = clock
        self.users = users
        self.notices = notices
        self.telemetry = telemetry(self) if telemetry is not None else None
        """The background writer records go through (None: written on the caller's thread)."""

    # -- storing records ---------------------------------------------------------------------

    def write_records(self, records: list[dict[str, Any]]) -> list[bool]:
        """Store ``records`` in one transaction; per record, whether it was stored (False: its
        user is unknown and refused). Raises what the database raises."""
        stored: list[bool] = []
        with Session(self.engine) as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            for record in records:
                stored.append(self._apply(session, record))
        return stored

    def _apply(self, session: Session, record: dict[str, Any]) -> bool:
        user_id = record.get("user_id")
        if user_id is None:
            user_id = system_user_id(session)
        elif self.users is not None and not self.users.ensure(session, [user_id]):
            self.users.reject()  # the registry names the id on the console, once
            return False
        now = _time(record["now"])
        if record["kind"] == "status":
            heartbeat = record.get("heartbeat")
            upsert_status(
                session,
                user_id,
                now=now,
                running=record.get("running"),
                heartbeat=_time(heartbeat) if heartbeat else None,
            )
            return True
        executed_at = _time(record["executed_at"])
        session.add(
            ServiceTaskExecution(
                user_id=user_id,
                task_name=record["task_name"],
                executed_at=executed_at,
                status=record["status"],
                duration_seconds=record["duration_seconds"],
                details=record.get("details"),
            )
        )
        upsert_status(session, user_id, now=now, task_at=executed_at)
        return True

    def _write(
        self, action: str, record: dict[str, Any], after: Callable[[], object] | None = None
    ) -> bool:
        if self.telemetry is not None:
            return self.telemetry.submit(record, after)
        try:
            (written,) = self.write_records([record])
        except Exception as exc:
            _log.warning("tradelog could not %s: %s", action, describe_failure(exc))
            return False
        if written and after is not None:
            after()
        return written

    def later(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` after the records written so far (on the telemetry thread, or now)."""
        if self.telemetry is not None:
            self.telemetry.later(callback)
        else:
            callback()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until every record is in the database (True when it is)."""
        return True if self.telemetry is None else self.telemetry.flush(timeout)

    def close(self, timeout: float) -> bool:
        """Write what is queued within ``timeout``; the rest is spooled for a later process."""
        return True if self.telemetry is None else self.telemetry.close(timeout)

    # -- the calls ---------------------------------------------------------------------------

    def heartbeat(self, user_id: int | None, *, now: datetime | None = None) -> bool:
        """Record that ``user_id``'s service is alive (``last_heartbeat``); None: the system
        user's (the process itself)."""
        at = now or self.clock()
        return self._write(
            f"record a heartbeat for user {_who(user_id)}",
            _status(user_id, at, heartbeat=at),
        )

    def mark_running(
        self, user_id: int | None, *, now: datetime | None = None, notify: bool = True
    ) -> bool:
        """Mark ``user_id``'s service as running; counts as a heartbeat too. With ``notify``
        (and notices wired) the owner is told it started, once the row is written."""
        at = now or self.clock()
        notices = self.notices if notify and user_id is not None else None
        return self._write(
            f"mark the service of user {_who(user_id)} running",
            _status(user_id, at, running=True, heartbeat=at),
            (lambda: notices.started(user_id, at)) if notices and user_id is not None else None,
        )

    def mark_stopped(
        self, user_id: int | None, *, now: datetime | None = None, notify: bool = True
    ) -> bool:
        """Mark ``user_id``'s service as stopped (a stopped service is never stale). With
        ``notify`` (and notices wired) the owner is told it stopped, once the row is written."""
        at = now or self.clock()
        notices = self.notices if notify and user_id is not None else None
        return self._write(
            f"mark the service of user {_who(user_id)} stopped",
            _status(user_id, at, running=False),
            (lambda: notices.stopped(user_id, at)) if notices and user_id is not None else None,
        )

    def record_task(
        self,
        user_id: int | None,
        task_name: str,
        *,
        status: str,
        executed_at: datetime,
        duration_seconds: float,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Write one ``service_task_execution`` row and move ``last_task_execution`` (user
        None: the system user's)."""
        if status not in TASK_STATUSES:
            raise ValueError(f"status must be one of {', '.join(TASK_STATUSES)}, got {status!r}")
        record = {
            "kind": "task",
            "user_id": user_id,
            "now": self.clock().isoformat(),
            "task_name": task_name[:TASK_NAME_LENGTH],
            "status": status,
            "executed_at": executed_at.isoformat(),
            "duration_seconds": duration_seconds,
            "details": _details(details),
        }
        return self._write(f"record task {task_name!r} of user {_who(user_id)}", record)


def _status(
    user_id: int | None,
    at: datetime,
    *,
    running: bool | None = None,
    heartbeat: datetime | None = None,
) -> dict[str, Any]:
    return {
        "kind": "status",
        "user_id": user_id,
        "now": at.isoformat(),
        "running": running,
        "heartbeat": heartbeat.isoformat() if heartbeat else None,
    }


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _who(user_id: int | None) -> str:
    return "(system)" if user_id is None else str(user_id)


def _details(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    document = redact_jsonable(dict(details), max_str=2048, redactor=_redactor)
    return document if isinstance(document, dict) else {"details": document}
