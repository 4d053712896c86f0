"""Service health: running state, heartbeats, stale detection and task tracking.

Every write here is **synchronous** on the caller's thread and uses the toolkit's own engine
(the configured runtime's, or the one handed to :class:`ServiceHealth`), never the host's
session. They are rare (a heartbeat every few seconds, a task every minute or so) and cost a few
milliseconds; on PostgreSQL each transaction runs under a short ``statement_timeout``. A database
failure never reaches the host: it is logged on the ``tradelog.service`` stdlib logger and the
call returns ``False``.

``service_status`` has one row per user, created on first use by an upsert
(``INSERT ... ON CONFLICT (user_id) DO UPDATE``), so concurrent writers never collide and
``error_count`` increments are never lost.

Task tracking::

    with tradelog.track_task(user_id, "sell_monitor") as task:
        task["orders"] = 3              # becomes service_task_execution.details
        if market_closed:
            task.skip("market closed")  # status "skipped", the block is left quietly

    @tradelog.track_task(user_id, "premarket_retry")   # sync or async functions
    async def premarket_retry() -> None: ...

A task that raises is recorded as ``failed`` (the exception is captured into ``error_logs`` and
counted in ``service_status.error_count``) and the exception propagates unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar, cast

from sqlalchemy import Engine, Select, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.base import utcnow
from tradelog._db.models import ServiceStatus, ServiceTaskExecution, User
from tradelog._logs.redact import Redactor, redact_text
from tradelog._logs.sanitize import to_jsonable

if TYPE_CHECKING:
    from tradelog._errors.pipeline import ErrorCapture

__all__ = [
    "TASK_STATUSES",
    "ServiceHealth",
    "TaskRun",
    "TaskSkipped",
    "current_task",
    "heartbeat",
    "is_stale",
    "mark_running",
    "mark_stopped",
    "service_overview",
    "skip",
    "stale_services",
    "track_task",
    "upsert_status",
]

TASK_STATUSES: Final = ("success", "failed", "skipped")
STATEMENT_TIMEOUT_MS: Final = 5000
_TASK_NAME_LENGTH: Final = 64
_log = logging.getLogger("tradelog.service")
_redactor = Redactor()
_current: contextvars.ContextVar[TaskRun | None] = contextvars.ContextVar(
    "tradelog_task", default=None
)
_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- status rows


def upsert_status(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    running: bool | None = None,
    heartbeat: datetime | None = None,
    task_at: datetime | None = None,
    errors: int = 0,
    last_error: str | None = None,
) -> None:
    """Create or update ``user_id``'s ``service_status`` row in ``session``'s transaction.

    ``errors`` is added to ``error_count`` atomically in the database; the other values are
    set when given. The caller commits.
    """
    values: dict[str, Any] = {"updated_at": now}
    if running is not None:
        values["service_running"] = running
    if heartbeat is not None:
        values["last_heartbeat"] = heartbeat
    if task_at is not None:
        values["last_task_execution"] = task_at
    if last_error is not None:
        values["last_error"] = last_error[:512]
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(ServiceStatus).values(
            user_id=user_id, created_at=now, error_count=errors, **values
        )
        changes: dict[str, Any] = dict(values)
        if errors:
            changes["error_count"] = ServiceStatus.error_count + statement.excluded.error_count
        session.execute(statement.on_conflict_do_update(index_elements=["user_id"], set_=changes))
        return
    _portable_upsert(session, user_id, now=now, values=values, errors=errors)  # pragma: no cover


def _portable_upsert(  # pragma: no cover - only for backends without ON CONFLICT
    session: Session, user_id: int, *, now: datetime, values: dict[str, Any], errors: int
) -> None:
    changes = dict(values)
    if errors:
        changes["error_count"] = ServiceStatus.error_count + errors
    statement = update(ServiceStatus).where(ServiceStatus.user_id == user_id).values(**changes)
    if session.execute(statement).rowcount:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(
                ServiceStatus(user_id=user_id, created_at=now, error_count=errors, **values)
            )
    except IntegrityError:
        session.execute(statement)


def is_stale(
    *, running: bool, last_heartbeat: datetime | None, now: datetime, threshold: timedelta
) -> bool:
    """A service is stale when it says it is running but has not sent a heartbeat lately."""
    return running and (last_heartbeat is None or now - last_heartbeat > threshold)


def _threshold(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def stale_services(
    session: Session,
    now: datetime,
    threshold: timedelta | float,
    *,
    actor: ActorLike | None = None,
) -> list[ServiceStatus]:
    """``service_status`` rows marked running whose last heartbeat is older than ``threshold``
    (or missing), ordered by user.

    With ``actor`` the rows are scoped as usual (a user sees their own); without it this is the
    monitoring query for the operator's jobs.
    """
    cutoff = now - _threshold(threshold)
    query: Select[Any] = select(ServiceStatus).where(
        ServiceStatus.service_running.is_(True),
        or_(ServiceStatus.last_heartbeat.is_(None), ServiceStatus.last_heartbeat < cutoff),
    )
    if actor is not None:
        query = scoped(query, ServiceStatus.user_id, resolve_actor(session, actor))
    return list(session.scalars(query.order_by(ServiceStatus.user_id)))


def service_overview(
    session: Session, actor: ActorLike, now: datetime, threshold: timedelta | float
) -> list[dict[str, Any]]:
    """One dict per visible ``service_status`` row: user, state, heartbeat, errors."""
    who = resolve_actor(session, actor)
    limit = _threshold(threshold)
    joined: Any = select(ServiceStatus, User.email).join(User, User.id == ServiceStatus.user_id)
    query = scoped(joined, ServiceStatus.user_id, who).order_by(ServiceStatus.user_id)
    overview = []
    for row, email in session.execute(query):
        stale = is_stale(
            running=row.service_running,
            last_heartbeat=row.last_heartbeat,
            now=now,
            threshold=limit,
        )
        state = ("stale" if stale else "running") if row.service_running else "stopped"
        overview.append(
            {
                "user_id": row.user_id,
                "email": email,
                "state": state,
                "last_heartbeat": row.last_heartbeat,
                "last_task": row.last_task_execution,
                "error_count": row.error_count,
                "last_error": row.last_error,
            }
        )
    return overview


# --------------------------------------------------------------------------- writer


def _describe(exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {reason[0] if reason else ''}")


class ServiceHealth:
    """Heartbeats, running state and task rows written with an explicit engine.

    ``capture`` receives the exceptions of failed tasks (so they land in ``error_logs``); the
    module-level functions use the configured runtime's capture and engine.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        capture: ErrorCapture | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.capture = capture
        self.clock = clock

    def _write(self, action: str, work: Callable[[Session], None]) -> bool:
        try:
            with Session(self.engine) as session, session.begin():
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                work(session)
        except Exception as exc:
            _log.warning("tradelog could not %s: %s", action, _describe(exc))
            return False
        return True

    def heartbeat(self, user_id: int, *, now: datetime | None = None) -> bool:
        """Record that ``user_id``'s service is alive (``last_heartbeat``)."""
        at = now or self.clock()
        return self._write(
            f"record a heartbeat for user {user_id}",
            lambda s: upsert_status(s, user_id, now=at, heartbeat=at),
        )

    def mark_running(self, user_id: int, *, now: datetime | None = None) -> bool:
        """Mark ``user_id``'s service as running; counts as a heartbeat too."""
        at = now or self.clock()
        return self._write(
            f"mark the service of user {user_id} running",
            lambda s: upsert_status(s, user_id, now=at, running=True, heartbeat=at),
        )

    def mark_stopped(self, user_id: int, *, now: datetime | None = None) -> bool:
        """Mark ``user_id``'s service as stopped (a stopped service is never stale)."""
        at = now or self.clock()
        return self._write(
            f"mark the service of user {user_id} stopped",
            lambda s: upsert_status(s, user_id, now=at, running=False),
        )

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
                    task_name=task_name[:_TASK_NAME_LENGTH],
                    executed_at=executed_at,
                    status=status,
                    duration_seconds=duration_seconds,
                    details=document,
                )
            )
            upsert_status(session, user_id, now=self.clock(), task_at=executed_at)

        return self._write(f"record task {task_name!r} of user {user_id}", work)

    def track_task(self, user_id: int, task_name: str) -> track_task:
        """:func:`track_task` bound to this engine and capture."""
        return track_task(user_id, task_name, health=self)


def _details(details: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not details:
        return None
    document = _redactor(to_jsonable(dict(details), max_str=2048))
    return document if isinstance(document, dict) else {"details": document}


# --------------------------------------------------------------------------- tasks


class TaskSkipped(BaseException):
    """Raised by :meth:`TaskRun.skip` / :func:`skip`; the tracking context catches it.

    It derives from ``BaseException`` so that a task's own ``except Exception`` does not
    swallow the skip.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class TaskRun(dict[str, Any]):
    """The ``details`` of a running task (a dict), plus :meth:`skip`."""

    def __init__(self, user_id: int, task_name: str) -> None:
        super().__init__()
        self.user_id = user_id
        self.task_name = task_name

    def skip(self, reason: str = "") -> NoReturn:
        """Stop the task here and record it as ``skipped`` with ``reason``."""
        raise TaskSkipped(reason)


def skip(reason: str = "") -> NoReturn:
    """Skip the innermost tracked task (for decorated functions that have no ``TaskRun``)."""
    raise TaskSkipped(reason)


def current_task() -> TaskRun | None:
    """The innermost task being tracked in this context, or None."""
    return _current.get()


def _default_health() -> ServiceHealth:
    from tradelog._errors.capture import active  # noqa: PLC0415 - capture imports this module

    capture = active()
    return ServiceHealth(capture.engine, capture=capture)


@dataclass
class _Started:
    run: TaskRun
    executed_at: datetime
    started: float
    token: contextvars.Token[TaskRun | None]


class track_task:  # noqa: N801 - used like a function: ``with track_task(...)``, ``@track_task(...)``
    """Record one run of a task: a context manager (sync and async) and a decorator.

    Entering yields a :class:`TaskRun` (a dict) whose content becomes the row's ``details``.
    Leaving writes ``service_task_execution`` with a :func:`time.monotonic` duration and status
    ``success``, ``failed`` (the exception is captured and propagates) or ``skipped``. Each
    decorated call gets its own run; recording never raises into the task.
    """

    def __init__(
        self, user_id: int, task_name: str, *, health: ServiceHealth | None = None
    ) -> None:
        self.user_id = user_id
        self.task_name = task_name
        self._health = health
        self._stack: list[_Started] = []

    def _resolve(self) -> ServiceHealth | None:
        if self._health is None:
            try:
                self._health = _default_health()
            except Exception as exc:
                _log.warning("tradelog cannot track task %r: %s", self.task_name, _describe(exc))
        return self._health

    def __enter__(self) -> TaskRun:
        run = TaskRun(self.user_id, self.task_name)
        self._stack.append(_Started(run, utcnow(), time.monotonic(), _current.set(run)))
        return run

    def _finish(self, exc: BaseException | None) -> tuple[bool, Callable[[], None]]:
        started = self._stack.pop()
        duration = time.monotonic() - started.started
        _current.reset(started.token)
        run = started.run
        details: dict[str, Any] = dict(run)
        if exc is None:
            status = "success"
        elif isinstance(exc, TaskSkipped):
            status = "skipped"
            if exc.reason:
                details["skip_reason"] = exc.reason
        else:
            status = "failed"
            details.setdefault("error", f"{type(exc).__name__}: {exc}"[:512])
        health = self._resolve()

        def write() -> None:
            if health is None:
                return
            if status == "failed" and isinstance(exc, Exception) and health.capture is not None:
                health.capture.capture(
                    exc,
                    user_id=self.user_id,
                    context={"source": "task", "task": self.task_name},
                )
            health.record_task(
                self.user_id,
                self.task_name,
                status=status,
                executed_at=started.executed_at,
                duration_seconds=duration,
                details=details,
            )

        return status == "skipped", write

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        suppress, write = self._finish(exc)
        write()
        return suppress

    async def __aenter__(self) -> TaskRun:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        suppress, write = self._finish(exc)
        await asyncio.to_thread(write)
        return suppress

    def __call__(self, fn: _F) -> _F:
        """Decorate ``fn`` (sync or async): every call is tracked as one run."""
        user_id, name, health = self.user_id, self.task_name, self._health

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with track_task(user_id, name, health=health):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with track_task(user_id, name, health=health):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)


# --------------------------------------------------------------------------- module API


def _call(action: str, method: Callable[[ServiceHealth], bool]) -> bool:
    try:
        health = _default_health()
    except Exception as exc:
        _log.warning("tradelog could not %s: %s", action, _describe(exc))
        return False
    return method(health)


def heartbeat(user_id: int) -> bool:
    """Record that ``user_id``'s service is alive; False if it could not be written."""
    return _call("record a heartbeat", lambda h: h.heartbeat(user_id))


def mark_running(user_id: int) -> bool:
    """Mark ``user_id``'s service running (and record a heartbeat)."""
    return _call("mark a service running", lambda h: h.mark_running(user_id))


def mark_stopped(user_id: int) -> bool:
    """Mark ``user_id``'s service stopped."""
    return _call("mark a service stopped", lambda h: h.mark_stopped(user_id))
