"""What happens to a user id tradelog has not seen: :class:`UserRegistry`.

Log events, error rows, task rows, heartbeats and notifications all name a ``user_id`` that
``users`` must hold (every table refers to it). The host creates its accounts with
:func:`tradelog.ensure_user` (or ``tradelog users add | sync``); an id that is not there yet is
handled by the ``unknown_users`` setting:

``register`` (default)
    the id is inserted as a placeholder account (e-mail ``user-<id>@unregistered.tradelog.invalid``,
    role ``user``) in the same transaction as the row that needs it, and the row lands.
``reject``
    nothing is created; the row is refused the way its writer refuses rows (a log event goes
    to the dead-letter file, a heartbeat or task returns False, a notification raises
    ``NotFound``, an error is kept under the system user with ``unknown_user_id``) and counted.

Either way each unknown id is named once on the console (``tradelog.users`` logger, WARNING).
Ids found are remembered, so a known user costs a set lookup, not a query.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Final, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tradelog._db.models import User
from tradelog._users.store import placeholder_email, register_placeholders

__all__ = ["KnownUsers", "UserRegistry"]

_log: Final = logging.getLogger("tradelog.users")


class KnownUsers(Protocol):
    """What the writers need from a :class:`UserRegistry`."""

    def ensure(self, session: Session, ids: Iterable[int]) -> set[int]: ...

    def resolve(self, ids: Iterable[int]) -> set[int]: ...

    def reject(self, count: int = 1) -> None: ...


def _nothing(count: int) -> None:
    return None


class UserRegistry:
    """Known user ids, and the ``register`` / ``reject`` policy for the others.

    ``engine`` is used by :meth:`resolve` (callers without a session of their own, such as the
    log writer); ``on_reject`` is told how many rows were refused for an unknown user.
    """

    def __init__(
        self,
        engine: Engine | Callable[[], Engine],
        *,
        mode: str = "register",
        on_reject: Callable[[int], None] = _nothing,
    ) -> None:
        if mode not in ("register", "reject"):
            raise ValueError(f"unknown_users must be register or reject, got {mode!r}")
        self._engine = engine
        self.mode = mode
        self.on_reject = on_reject
        self._known: set[int] = set()
        self._named: set[int] = set()
        self._lock = threading.Lock()
        self.registered = 0
        self.rejected = 0

    @property
    def engine(self) -> Engine:
        return self._engine if isinstance(self._engine, Engine) else self._engine()

    def forget(self) -> None:
        """Forget the ids seen so far (after a fork, or when the database may have changed)."""
        with self._lock:
            self._known.clear()

    def ensure(self, session: Session, ids: Iterable[int]) -> set[int]:
        """Which of ``ids`` are users once this returns, in ``session``'s transaction
        (placeholders for the others are added there with ``register``; the caller commits)."""
        wanted = {int(i) for i in ids}
        with self._lock:
            unknown = wanted - self._known
        if not unknown:
            return wanted
        found = set(session.scalars(select(User.id).where(User.id.in_(unknown))))
        missing = unknown - found
        created: set[int] = set()
        if missing and self.mode == "register":
            created = register_placeholders(session, missing) & missing
            missing -= created
        with self._lock:
            self._known.update(found)
            self._known.update(created)
        for user_id in sorted(created):
            self._name(user_id, registered=True)
        for user_id in sorted(missing):
            self._name(user_id, registered=False)
        return wanted - missing

    def resolve(self, ids: Iterable[int]) -> set[int]:
        """:meth:`ensure` in a transaction of its own on the registry's engine (committed)."""
        with Session(self.engine) as session, session.begin():
            return self.ensure(session, ids)

    def reject(self, count: int = 1) -> None:
        """Count ``count`` rows refused because their user is unknown."""
        with self._lock:
            self.rejected += count
        self.on_reject(count)

    def _name(self, user_id: int, *, registered: bool) -> None:
        with self._lock:
            if registered:
                self.registered += 1
            first = user_id not in self._named
            self._named.add(user_id)
        if not first:
            return
        if registered:
            _log.warning(
                "user %d was not known to tradelog: registered it as %s (role user); give it "
                "its details with tradelog.ensure_user(%d, ...) or `tradelog users add`",
                user_id,
                placeholder_email(user_id),
                user_id,
            )
        else:
            _log.warning(
                "user %d is not known to tradelog: what names it is refused "
                "(TRADELOG_UNKNOWN_USERS=reject); create it with tradelog.ensure_user(%d, ...)",
                user_id,
                user_id,
            )
