"""Task tracking: one ``service_task_execution`` row per run of a task (:class:`track_task`).

::

    with tradelog.track_task(user_id, "sell_monitor") as task:
        task["orders"] = 3              # becomes service_task_execution.details
        if market_closed:
            task.skip("market closed")  # status "skipped", the block is left quietly

    @tradelog.track_task(user_id, "premarket_retry")   # sync or async functions
    async def premarket_retry() -> None: ...

    with tradelog.bind_user(user_id), tradelog.track_task("sell_monitor"):
        ...                             # no user id: the one bound here (each run looks)

Without a user id a run belongs to the user bound where it starts (``tradelog.bind_user`` or a
``user_id`` in structlog's context variables), and with none bound to the system user.

A task that raises is recorded as ``failed`` (the exception is captured into ``error_logs`` and
counted in ``service_status.error_count``) and the exception propagates unchanged. The owner
is told of a failure (a ``service`` notification, :mod:`tradelog._health.lifecycle`), and of a
success only when the call asks for it (``notify_success=True``).

The rows are written with a :class:`~tradelog._health.writer.ServiceHealth`, given directly or
as a callable that returns the current one when a run ends (the module-level
``tradelog.track_task`` passes the configured runtime's).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, NoReturn, TypeAlias, TypeVar, cast

from tradelog._db.base import utcnow
from tradelog._health.writer import ServiceHealth, describe_failure
from tradelog._logs.redact import redact_text
from tradelog._logs.sanitize import truncate
from tradelog._users.context import bound_user_id

__all__ = ["HealthSource", "TaskRun", "TaskSkipped", "current_task", "skip", "track_task"]

HealthSource: TypeAlias = ServiceHealth | Callable[[], ServiceHealth]
"""A health writer, or a callable returning the one to use when a run ends."""

_log = logging.getLogger("tradelog.service")
_current: contextvars.ContextVar[TaskRun | None] = contextvars.ContextVar(
    "tradelog_task", default=None
)
_F = TypeVar("_F", bound=Callable[..., Any])


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

    def __init__(self, user_id: int | None, task_name: str) -> None:
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
        self,
        user_id: int | None,
        task_name: str,
        *,
        health: HealthSource,
        notify_success: bool = False,
    ) -> None:
        self.user_id = user_id
        self.task_name = task_name
        self.notify_success = notify_success
        self._health = health
        self._stack: list[_Started] = []

    def _resolve(self) -> ServiceHealth | None:
        if isinstance(self._health, ServiceHealth):
            return self._health
        try:
            return self._health()
        except Exception as exc:
            _log.warning("tradelog cannot track task %r: %s", self.task_name, describe_failure(exc))
            return None

    def __enter__(self) -> TaskRun:
        user_id = self.user_id if self.user_id is not None else bound_user_id()
        run = TaskRun(user_id, self.task_name)
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
            details.setdefault("error", truncate(redact_text(f"{type(exc).__name__}: {exc}"), 512))
        health = self._resolve()

        def write() -> None:
            if health is None:
                return
            failed = status == "failed" and isinstance(exc, Exception)
            notices = health.notices if run.user_id is not None else None  # no owner to tell
            owner = run.user_id
            capture = health.capture if failed and isinstance(exc, Exception) else None

            def record_failure() -> None:
                if capture is not None and isinstance(exc, Exception):
                    capture.capture(
                        exc, user_id=owner, context={"source": "task", "task": self.task_name}
                    )

            if notices is not None and failed and exc is not None and owner is not None:
                # The notice goes first, so the owner's error alert then finds the key taken;
                # both run after the rows queued before (on the telemetry thread), in this
                # context (the capture merges its context variables).
                failure, at, context = exc, health.clock(), contextvars.copy_context()

                def notice_then_capture() -> None:
                    notices.task_failed(owner, self.task_name, at, failure)
                    context.run(record_failure)

                health.later(notice_then_capture)
            else:
                record_failure()
            health.record_task(
                run.user_id,
                self.task_name,
                status=status,
                executed_at=started.executed_at,
                duration_seconds=duration,
                details=details,
            )
            if notices is not None and status == "success" and self.notify_success:
                assert owner is not None  # notices is None without an owner
                at = health.clock()
                health.later(lambda: notices.task_succeeded(owner, self.task_name, at, duration))

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
        loud = self.notify_success

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with track_task(user_id, name, health=health, notify_success=loud):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with track_task(user_id, name, health=health, notify_success=loud):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)
