"""What every route of one router shares: the runtime it reads from, and who is asking.

:class:`WebContext` finds the runtime (the one given to :func:`tradelog.web.create_router`, or
what the function given there returns, or the configured one; at request time), opens sessions
on its engine, and turns what the host's ``actor`` dependency returned into a :class:`WebUser`:

* a user id (``int``): the role, the active flag and the timezone are read from the database.
  An unknown id or an inactive account is refused (403); only an active ``admin`` is an admin.
* an :class:`~tradelog.users.Actor`: taken as vouched for by the host (``tradelog serve`` maps
  its admin token to the system admin this way); the account must still exist.
* ``None``: nobody is signed in (401).

Audit rows written by a request carry its client address and user agent
(:meth:`WebContext.audited`), unless the host's middleware already set a request context.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import Actor
from tradelog._db.models import User, UserNotificationPreferences
from tradelog._notify.policy import DEFAULT_TIMEZONE
from tradelog._runtime import Runtime, require
from tradelog.audit import current_request, request_context
from tradelog.exceptions import PermissionDenied

__all__ = ["WebContext", "WebUser"]


@dataclass(frozen=True, slots=True)
class WebUser:
    """The user a request acts for: id, admin rights, and the timezone times are shown in."""

    id: int
    is_admin: bool
    zone: ZoneInfo
    vouched: bool = False
    """The host's dependency returned an :class:`~tradelog.users.Actor` for it."""

    @property
    def actor(self) -> Actor:
        """The acting user for tradelog's user-scoped functions."""
        return Actor(self.id, self.is_admin)


def _zone(name: str | None, fallback: str) -> ZoneInfo:
    for candidate in (name, fallback, DEFAULT_TIMEZONE):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ValueError, KeyError):
                continue
    return ZoneInfo(DEFAULT_TIMEZONE)  # pragma: no cover - the default always exists


class WebContext:
    """The runtime a router reads from, its sessions, and the acting user (see the module)."""

    def __init__(self, runtime: Runtime | Callable[[], Runtime] | None = None) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        """The router's runtime: the one it was given (or what the function it was given
        returns now), else the configured one."""
        given = self._runtime
        if given is None:
            return require()
        return given if isinstance(given, Runtime) else given()

    def session(self) -> Session:
        """A new session on the runtime's engine (the caller closes it)."""
        return self.runtime.session()

    def resolve(self, acting: Any) -> WebUser:
        """The :class:`WebUser` for what the host's dependency returned (see the module)."""
        if acting is None:
            raise HTTPException(401, "not signed in", headers={"WWW-Authenticate": "Bearer"})
        vouched = isinstance(acting, Actor)
        if not vouched and (isinstance(acting, bool) or not isinstance(acting, int)):
            raise TypeError(f"the actor dependency returned {type(acting).__name__}, not a user id")
        user_id = acting.id if isinstance(acting, Actor) else int(acting)
        with self.session() as session:
            found = session.execute(
                select(User.role, User.is_active, UserNotificationPreferences.timezone)
                .outerjoin(
                    UserNotificationPreferences, UserNotificationPreferences.user_id == User.id
                )
                .where(User.id == user_id)
            ).one_or_none()
        if found is None:
            raise PermissionDenied(f"user {user_id} has no account here")
        role, active, timezone = found
        zone = _zone(timezone, self.runtime.settings.timezone)
        if isinstance(acting, Actor):
            return WebUser(user_id, acting.is_admin, zone, vouched=True)
        if not active:
            raise PermissionDenied(f"the account of user {user_id} is deactivated")
        return WebUser(user_id, role == "admin", zone)

    def resolve_again(self, user: WebUser) -> WebUser:
        """Check ``user`` again (a long stream): raises as :meth:`resolve` does when the account
        is gone or was deactivated since."""
        return self.resolve(Actor(user.id, user.is_admin) if user.vouched else user.id)

    def dependency(self, actor: Callable[..., Any]) -> Callable[..., WebUser]:
        """A FastAPI dependency giving the :class:`WebUser` of a request from ``actor``'s
        result (``actor`` is itself resolved as a dependency)."""

        def current_user(request: Request, acting: Any = Depends(actor)) -> WebUser:  # noqa: B008
            user = self.resolve(acting)
            request.state.tradelog_user = user
            return user

        return current_user

    @staticmethod
    @contextlib.contextmanager
    def audited(request: Request) -> Iterator[None]:
        """Audit rows written inside carry the request's client address and user agent
        (unless a request context is already set, e.g. by the host's middleware)."""
        if current_request() is not None:
            yield
            return
        client = request.client.host if request.client is not None else None
        with request_context(ip_address=client, user_agent=request.headers.get("user-agent")):
            yield
