"""The notification service: ``notify()`` and ``anotify()`` against an explicit engine.

Without ``session=`` the notification is written and committed on the service's own engine (the
runtime's, never the host's). With ``session=`` it is written inside the caller's transaction
and goes out only if the caller commits (roll back and nothing is ever sent). After a commit
the service rings its :class:`~tradelog._notify.wakeup.Wakeups`, so the delivery workers of this
process look at the outbox at once instead of at their next poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from tradelog._db.engine import session_factory
from tradelog._notify.dispatch import NotifyResult, dispatch
from tradelog._notify.wakeup import Wakeups

__all__ = ["NotificationService"]


class NotificationService:
    """Writes notifications (and their outbox deliveries) with ``engine``.

    ``engine`` may be a callable returning the engine, so that it is only created on first use.
    """

    def __init__(self, engine: Engine | Callable[[], Engine], wakeups: Wakeups) -> None:
        self._engine = engine
        self.wakeups = wakeups

    @property
    def engine(self) -> Engine:
        """The engine notifications are written with."""
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def _ring(self, *_args: Any) -> None:
        self.wakeups.ring()

    def notify(
        self,
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
        """Notify ``user_id``; see :func:`tradelog.notify`."""
        options: dict[str, Any] = {"dedupe_key": dedupe_key, "channels": channels}
        if session is not None:
            result = dispatch(session, user_id, type, level, title, message, **options)
            if result.created:
                event.listen(session, "after_commit", self._ring, once=True)
            return result
        with session_factory(self.engine)() as own:
            result = dispatch(own, user_id, type, level, title, message, **options)
            own.commit()
        if result.created:
            self._ring()
        return result

    async def anotify(
        self,
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
        """The ``async`` form of :meth:`notify`.

        ``session`` may be a ``Session`` or an SQLAlchemy ``AsyncSession`` (written through its
        ``run_sync``). Without one, database work runs in a worker thread, so the event loop is
        never blocked.
        """
        if (
            session is not None
            and not isinstance(session, Session)
            and hasattr(session, "run_sync")
        ):

            def run(sync: Session) -> NotifyResult:
                return self.notify(
                    user_id,
                    type,
                    level,
                    title,
                    message,
                    dedupe_key=dedupe_key,
                    session=sync,
                    channels=channels,
                )

            result: NotifyResult = await session.run_sync(run)
            return result
        return await asyncio.to_thread(
            self.notify,
            user_id,
            type,
            level,
            title,
            message,
            dedupe_key=dedupe_key,
            session=session,
            channels=channels,
        )
