"""The notification service: ``notify()`` and ``anotify()`` against an explicit engine.

Without ``session=`` the notification is written and committed on the service's own engine (the
runtime's, never the host's). With ``session=`` it is written inside the caller's transaction
and goes out only if the caller commits (roll back and nothing is ever sent). After a commit
the service rings its :class:`~tradelog._notify.wakeup.Wakeups`, so the delivery workers of this
process look at the outbox at once instead of at their next poll. A user id ``users`` does not
hold yet is registered in the same transaction (``unknown_users=register``); with ``reject``
``notify`` raises :class:`~tradelog.exceptions.NotFound` as for any unknown user.

**Database down.** Every failure of the database is a
:class:`~tradelog.exceptions.StorageError` (the runtime's engines translate driver errors). With
``session=`` it propagates: the caller's transaction failed. Without ``session=`` and with a
``spool`` (the runtime passes one), a request the database cannot take is validated, scrubbed
and appended to the notification spool (``fsync``'d, ``0600``, see
:mod:`tradelog._spool_files`), and the result says ``spooled``. :meth:`replay_spool` - run by the
runtime's replayer every few seconds while something is spooled - writes the requests in the
order they were made, each in its own transaction, with their dedupe keys honoured (a request
whose key was taken meanwhile becomes a duplicate, nothing is sent twice). A database without
tradelog's tables is not an outage: that ``StorageError`` (it says to run
``tradelog db upgrade``) is raised, never spooled. A spooled request the database refuses for
good on replay (its user unknown and refused) is logged on ``tradelog.notify`` and left out.

At-least-once window: a process killed after a replayed request committed and before the spool
file was rewritten replays that request again; with a dedupe key it becomes a duplicate,
without one the user gets it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._db.engine import schema_missing, session_factory, storage_error
from tradelog._notify.dispatch import NotifyResult, check_request, dispatch
from tradelog._notify.wakeup import Wakeups
from tradelog._spool_files import JsonlSpool
from tradelog._users.registry import KnownUsers
from tradelog.exceptions import StorageError, TradelogError

__all__ = ["SPOOL_PREFIX", "NotificationService"]

SPOOL_PREFIX: Final = "notify-unwritten-"
_log = logging.getLogger("tradelog.notify")


class NotificationService:
    """Writes notifications (and their outbox deliveries) with ``engine``.

    ``engine`` may be a callable returning the engine, so that it is only created on first use.
    """

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        wakeups: Wakeups,
        *,
        users: KnownUsers | None = None,
        spool: JsonlSpool | None = None,
        on_spooled: Callable[[], object] | None = None,
    ) -> None:
        self._engine = engine
        self.wakeups = wakeups
        self.users = users
        self.spool = spool
        self._on_spooled = on_spooled
        self.spooled = 0
        self.replayed = 0
        self.refused = 0
        self._pending = spool is not None and spool.pending() > 0

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
            try:
                self._known(session, user_id)
                result = dispatch(session, user_id, type, level, title, message, **options)
            except DBAPIError as exc:  # a session on the host's own engine: not translated yet
                raise storage_error(exc, session.get_bind().engine.url) from exc
            if result.created:
                event.listen(session, "after_commit", self._ring, once=True)
            return result
        if self.spool is not None and self._pending:
            # requests wait in the spool: this one goes behind them (keeps the order, and
            # does not wait for a database that was down a moment ago)
            return self._spool_request(user_id, type, level, title, message, None, **options)
        try:
            with session_factory(self.engine)() as own:
                self._known(own, user_id)
                result = dispatch(own, user_id, type, level, title, message, **options)
                own.commit()
        except StorageError as exc:
            if self.spool is None or schema_missing(exc.__cause__ or exc):
                raise
            return self._spool_request(user_id, type, level, title, message, exc, **options)
        if result.created:
            self._ring()
        return result

    def _spool_request(  # noqa: PLR0917 - the notify arguments
        self,
        user_id: int,
        type_: str,
        level: str,
        title: str,
        message: str,
        failure: StorageError | None,
        *,
        dedupe_key: str | None,
        channels: Iterable[str] | None,
    ) -> NotifyResult:
        assert self.spool is not None
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
            raise failure or StorageError("notify: user_id must be a positive int")
        request = check_request(
            type_, level, title, message, dedupe_key=dedupe_key, channels=channels
        )
        request.update(user_id=user_id, at=utcnow().isoformat())
        why = str(failure) if failure is not None else "earlier requests wait in the spool"
        try:
            self.spool.append([request])
        except OSError as exc:
            raise StorageError(f"{why}; and the notification spool failed: {exc}") from exc
        if not self._pending:
            _log.warning("tradelog: notifications go to the local spool: %s", why)
        self._pending = True
        self.spooled += 1
        if self._on_spooled is not None:
            self._on_spooled()
        return NotifyResult(
            user_id,
            None,
            created=False,
            reason=f"kept in the local spool, written when the database takes it ({why})",
            spooled=True,
        )

    def replay_spool(self) -> int:
        """Write the spooled requests, in order (see the module docstring); returns how many
        went in. Stops at the first one the database cannot take."""
        if self.spool is None:
            return 0
        count = self.spool.replay(self._replay_batch, batch_size=1)
        was_pending, self._pending = self._pending, self.spool.pending() > 0
        self.replayed += count
        if was_pending and not self._pending:
            _log.warning(
                "tradelog: the spooled notifications are written (%d replayed)", self.replayed
            )
        return count

    def _replay_batch(self, requests: list[dict[str, Any]]) -> None:
        for request in requests:
            try:
                with session_factory(self.engine)() as own:
                    self._known(own, int(request["user_id"]))
                    result = dispatch(
                        own,
                        int(request["user_id"]),
                        request["type"],
                        request["level"],
                        request["title"],
                        request["message"],
                        dedupe_key=request.get("dedupe_key"),
                        channels=request.get("channels"),
                    )
                    own.commit()
            except StorageError:
                raise
            except (TradelogError, ValueError, KeyError, TypeError) as exc:
                self.refused += 1
                _log.warning(
                    "a spooled notification for user %s was refused and left out: %s",
                    request.get("user_id"),
                    exc,
                )
                continue
            if result.created:
                self._ring()

    def _known(self, session: Session, user_id: int) -> None:
        """Register an unknown ``user_id`` (or count it refused: dispatch raises NotFound)."""
        if self.users is None or isinstance(user_id, bool) or not isinstance(user_id, int):
            return
        if user_id > 0 and not self.users.ensure(session, [user_id]):
            self.users.reject()

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
