"""The module-level API: one-line conveniences over the configured runtime.

Each function here finds the runtime through :func:`tradelog._runtime.require` (the configured
one; before ``configure()``, a standalone runtime built from the ``TRADELOG_*`` environment) and
calls the part that does the work. This module sits above the composition root; nothing imports
it but the public modules.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, overload

import structlog
from sqlalchemy.orm import Session

from tradelog._errors.guard import Guard
from tradelog._errors.hooks import Capturer
from tradelog._errors.pipeline import exception_from
from tradelog._health import tasks as _tasks
from tradelog._health.writer import ServiceHealth, describe_failure
from tradelog._notify.dispatch import NotifyResult
from tradelog._runtime import require

__all__ = [
    "anotify",
    "capture_exception",
    "get_logger",
    "guard",
    "heartbeat",
    "install_loop_handler",
    "mark_running",
    "mark_stopped",
    "notify",
    "session",
    "track_task",
]

_F = Any
_health_log = logging.getLogger("tradelog.service")


def get_logger(name: str | None = None, **bind: Any) -> Any:
    """A structlog logger named ``name`` (default: the calling module) with ``bind`` bound.

    Bind ``user_id`` to attribute events to a user. Works before ``configure`` too: the
    logger picks up the configuration on first use.
    """
    if name is None:
        try:
            name = str(sys._getframe(1).f_globals.get("__name__", "root"))
        except Exception:  # pragma: no cover - no frames (exotic interpreters)
            name = "root"
    return structlog.get_logger(name, **bind)


def session() -> Session:
    """A new session on tradelog's own database, for the user-scoped APIs
    (:mod:`tradelog.notifications`, :mod:`tradelog.errors`, :mod:`tradelog.logs` ...)::

        with tradelog.session() as s:
            page = tradelog.notifications.list_notifications(s, actor=7)
    """
    return require().session()


def notify(
    user_id: int,
    type: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None = None,
    session: Session | None = None,
    channels: Iterable[str] | None = None,
) -> NotifyResult:
    """Notify ``user_id``; returns what happened on each channel.

    ``type`` is one of service, trading, system, error; ``level`` one of info, warning,
    error, critical (anything else raises :class:`ValueError` listing the valid values).
    ``dedupe_key``: a second notification with the same key for the same user returns the
    first one as a duplicate and sends nothing. ``session``: write inside the caller's
    transaction (the caller commits or rolls back; nothing is sent after a rollback).
    ``channels``: the channels this call may use, within what the user's preferences allow
    (``channels=("in_app",)`` records in the inbox and sends nothing out).
    """
    return require().notifications.notify(
        user_id,
        type,
        level,
        title,
        message,
        dedupe_key=dedupe_key,
        session=session,
        channels=channels,
    )


async def anotify(
    user_id: int,
    type: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None = None,
    session: Any = None,
    channels: Iterable[str] | None = None,
) -> NotifyResult:
    """The ``async`` form of :func:`notify` (``session`` may be an ``AsyncSession``); the event
    loop is never blocked."""
    service = (await asyncio.to_thread(require)).notifications
    return await service.anotify(
        user_id,
        type,
        level,
        title,
        message,
        dedupe_key=dedupe_key,
        session=session,
        channels=channels,
    )


def capture_exception(
    exc: BaseException | tuple[Any, Any, Any] | None = None,
    *,
    user_id: int | None = None,
    **context: Any,
) -> bool:
    """Record ``exc`` (default: the exception being handled) with ``context``.

    Returns whether it was queued; False when there is no exception, it was already
    recorded, or it could not be. Never raises. ``tradelog.flush()`` waits for the write.
    """
    try:
        value = exception_from(exc if exc is not None else sys.exc_info())
        if value is None:
            return False
        return require().errors.capture(
            value, user_id=user_id, context={"source": "capture_exception", **context}
        )
    except Exception:
        return False


def _capture() -> Capturer | None:
    return require().errors


@overload
def guard(fn: _F, /) -> _F: ...


@overload
def guard(fn: None = None, /, *, user_id: int | None = None, **context: Any) -> Guard: ...


def guard(
    fn: Callable[..., Any] | None = None, /, *, user_id: int | None = None, **context: Any
) -> Any:
    """Record an exception escaping a block or function synchronously, then re-raise it.

    For code whose exceptions never reach ``sys.excepthook``, above all the target of a
    :mod:`multiprocessing` child process::

        @tradelog.guard
        def work(order_id): ...

        multiprocessing.Process(target=work, args=(7,)).start()

        with tradelog.guard(user_id=3, job="rebalance"):
            ...

    In a forked child the parent's configuration is reused (with fresh connections); a spawned
    child uses ``tradelog.configure()`` if it called it, else the ``TRADELOG_*`` environment.
    """
    if fn is not None:
        return Guard(_capture, None, {})(fn)
    return Guard(_capture, user_id, context)


def install_loop_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the chained asyncio exception handler on ``loop`` (default: the running loop).

    For loops the policy does not create (a custom ``loop_factory``, uvloop installed after
    ``configure()``); call it first thing in the main coroutine.
    """
    target = loop if loop is not None else asyncio.get_running_loop()
    require().install_loop_handler(target)


def _health() -> ServiceHealth:
    return require().health


def _write(action: str, method: Callable[[ServiceHealth], bool]) -> bool:
    try:
        health = _health()
    except Exception as exc:
        _health_log.warning("tradelog could not %s: %s", action, describe_failure(exc))
        return False
    return method(health)


def heartbeat(user_id: int) -> bool:
    """Record that ``user_id``'s service is alive; False if it could not be written."""
    return _write("record a heartbeat", lambda h: h.heartbeat(user_id))


def mark_running(user_id: int, *, notify: bool = True) -> bool:
    """Mark ``user_id``'s service running (and record a heartbeat); the owner gets a
    ``service`` notification unless ``notify=False`` (or their preferences say no)."""
    return _write("mark a service running", lambda h: h.mark_running(user_id, notify=notify))


def mark_stopped(user_id: int, *, notify: bool = True) -> bool:
    """Mark ``user_id``'s service stopped; the owner is told as for :func:`mark_running`."""
    return _write("mark a service stopped", lambda h: h.mark_stopped(user_id, notify=notify))


def track_task(user_id: int, task_name: str, *, notify_success: bool = False) -> _tasks.track_task:
    """Record one run of a task in ``service_task_execution``: a context manager (sync and
    async) and a decorator. A failure notifies the owner (type ``service``); a success only
    with ``notify_success=True``. See :class:`tradelog.health.track_task`."""
    return _tasks.track_task(user_id, task_name, health=_health, notify_success=notify_success)
