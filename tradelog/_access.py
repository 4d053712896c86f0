"""Who is asking: the acting user and the row scoping every user-scoped read goes through.

A user sees only their own rows; an admin sees everyone's. Asking explicitly for another user's
rows as a non-admin raises :class:`PermissionDenied` rather than returning an empty result.
Admin rights come from the database: role ``admin`` *and* an active account (a deactivated
admin reads and changes only their own rows, like any user).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from tradelog._db.models import User
from tradelog.exceptions import NotFound, PermissionDenied

__all__ = ["Actor", "ActorLike", "require_admin", "resolve_actor", "scoped"]

_S = TypeVar("_S", bound=Select[Any])


@dataclass(frozen=True, slots=True)
class Actor:
    """The user on whose behalf a read or change is made."""

    id: int
    is_admin: bool = False


ActorLike = Actor | User | int


def resolve_actor(session: Session, actor: ActorLike) -> Actor:
    """Turn a user id, a :class:`User` or an :class:`Actor` into an :class:`Actor`.

    A bare id or a ``User`` is read from the database, so that the role and the active flag
    come from there, never from the caller: only an active user with role ``admin`` is an
    admin. An :class:`Actor` is taken as given (the caller vouches for it).
    """
    if isinstance(actor, Actor):
        return actor
    user_id = actor.id if isinstance(actor, User) else actor
    found = session.execute(
        select(User.role, User.is_active).where(User.id == user_id)
    ).one_or_none()
    if found is None:
        raise NotFound(f"no user with id {user_id}")
    role, active = found
    return Actor(int(user_id), role == "admin" and bool(active))


def require_admin(actor: Actor, action: str) -> None:
    """Raise :class:`PermissionDenied` unless ``actor`` is an admin."""
    if not actor.is_admin:
        raise PermissionDenied(f"only an admin may {action} (user {actor.id} is not an admin)")


def scoped(statement: _S, column: Any, actor: Actor, user_id: int | None = None) -> _S:
    """Restrict ``statement`` to the rows ``actor`` may see.

    ``user_id`` narrows an admin's view to one user; a non-admin naming someone else is refused.
    """
    if actor.is_admin:
        return statement if user_id is None else statement.where(column == user_id)
    if user_id is not None and user_id != actor.id:
        raise PermissionDenied(f"user {actor.id} may not read rows of user {user_id}")
    return statement.where(column == actor.id)
