"""Users as tradelog needs them: accounts, the acting user, and the system user.

Every user-scoped read and change takes the acting user (an :class:`Actor`, a user id or a
``User`` row): a user sees only their own rows, an admin sees everyone's. Rows no user context
claims (an error without a ``user_id``) belong to the system user.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradelog._access import Actor, ActorLike, resolve_actor
from tradelog._db.models import User

__all__ = [
    "SYSTEM_USER_EMAIL",
    "Actor",
    "ActorLike",
    "create_user",
    "ensure_system_user",
    "resolve_actor",
]

SYSTEM_USER_EMAIL = "system@tradelog.invalid"


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    role: str = "user",
    password_hash: str = "!",  # noqa: S107
) -> User:
    """Insert a user and flush it so ``id`` is set; the caller commits.

    ``password_hash`` defaults to ``!``, an unusable hash: tradelog never handles passwords.
    """
    if role not in ("admin", "user"):
        raise ValueError(f"role must be 'admin' or 'user', got {role!r}")
    user = User(email=email, name=name, role=role, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def ensure_system_user(session: Session) -> int:
    """Return the id of the system user that owns events no user context claims (created once)."""
    found = session.execute(select(User.id).where(User.email == SYSTEM_USER_EMAIL)).scalar()
    if found is not None:
        return int(found)
    try:
        with session.begin_nested():
            user = User(
                email=SYSTEM_USER_EMAIL,
                name="system",
                role="admin",
                password_hash="!",  # noqa: S106 - unusable hash
                is_active=False,
            )
            session.add(user)
        return user.id
    except IntegrityError:  # another process created it first
        return int(
            session.execute(select(User.id).where(User.email == SYSTEM_USER_EMAIL)).scalar_one()
        )
