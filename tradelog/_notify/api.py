"""``tradelog.notify()`` and ``await tradelog.anotify()``: the public way to notify a user.

Without ``session=`` the notification is written and committed on tradelog's own connection:
the configured runtime's database (``tradelog.configure``), else ``TRADELOG_DATABASE_URL``.
With ``session=`` it is written inside the caller's transaction and goes out only if the caller
commits (roll back and nothing is ever sent).

With a configured runtime the runtime's engine is used. Otherwise engines opened here (one
per database URL, created on first use) are shared by every call in the process and disposed
by :func:`close`, which the runtime calls at shutdown.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog._notify.dispatch import NotifyResult, dispatch
from tradelog.config import Settings

__all__ = ["anotify", "close", "default_engine", "notify"]

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def _runtime() -> Any:
    try:
        return importlib.import_module("tradelog._runtime").current()
    except ImportError:  # pragma: no cover - runtime module absent
        return None


def default_engine(settings: Settings | None = None) -> Engine:
    """The engine ``notify`` writes with: the configured runtime's, else one for ``settings``
    (default: from the environment), created once per database URL."""
    if settings is None:
        runtime = _runtime()
        if runtime is not None:
            shared: Engine = runtime.engine
            return shared
        settings = Settings.from_env()
    url = settings.database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_tradelog_engine(url)
        return engine


def close() -> None:
    """Dispose the engines this module opened."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.dispose()


def _wake_workers(*_args: Any) -> None:
    from tradelog._notify.worker import wake_local_workers  # noqa: PLC0415 - avoid an import cycle

    wake_local_workers()


def notify(
    user_id: int,
    type: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None = None,
    session: Session | None = None,
) -> NotifyResult:
    """Notify ``user_id``; returns what happened on each channel.

    ``type`` is one of service, trading, system, error; ``level`` one of info, warning,
    error, critical (anything else raises :class:`ValueError` listing the valid values).
    ``dedupe_key``: a second notification with the same key for the same user returns the
    first one as a duplicate and sends nothing. ``session``: write inside the caller's
    transaction (the caller commits or rolls back).
    """
    if session is not None:
        result = dispatch(session, user_id, type, level, title, message, dedupe_key=dedupe_key)
        if result.created:
            event.listen(session, "after_commit", _wake_workers, once=True)
        return result
    with session_factory(default_engine())() as own:
        result = dispatch(own, user_id, type, level, title, message, dedupe_key=dedupe_key)
        own.commit()
    if result.created:
        _wake_workers()
    return result


async def anotify(
    user_id: int,
    type: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None = None,
    session: Any = None,
) -> NotifyResult:
    """The ``async`` form of :func:`notify`.

    ``session`` may be a ``Session`` or an SQLAlchemy ``AsyncSession`` (written through its
    ``run_sync``). Without one, database work runs in a worker thread, so the event loop is
    never blocked.
    """
    if session is not None and not isinstance(session, Session) and hasattr(session, "run_sync"):

        def run(sync: Session) -> NotifyResult:
            return notify(user_id, type, level, title, message, dedupe_key=dedupe_key, session=sync)

        result: NotifyResult = await session.run_sync(run)
        return result
    return await asyncio.to_thread(
        notify, user_id, type, level, title, message, dedupe_key=dedupe_key, session=session
    )
