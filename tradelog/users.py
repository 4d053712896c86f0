"""Users as tradelog needs them: the host's accounts, the acting user, and the system user.

Every row tradelog writes belongs to a user id that ``users`` holds. The host puts its accounts
there with their own ids - at start-up, or whenever an account is created - and may call it
again at any time (it is an upsert)::

    tradelog.ensure_user(42, email="asha@example.com", name="Asha")
    tradelog.ensure_users([{"id": 7, "email": "ravi@example.com"}, {"id": 8, "role": "admin"}])

or from the command line: ``tradelog users add 42 --email ... | sync accounts.csv | list``.
An id that is used before it is ensured is registered with a placeholder e-mail
(``user-<id>@unregistered.tradelog.invalid``) and one console warning, or refused with
``TRADELOG_UNKNOWN_USERS=reject`` (see :mod:`tradelog._users.registry`).

Every user-scoped read and change takes the acting user (an :class:`Actor`, a user id or a
``User`` row): a user sees only their own rows, an admin sees everyone's. Rows no user context
claims (an error without a ``user_id``) belong to the **system user**: the one row with
``users.is_system`` set, an inactive admin (id 0 when it is created on a database where no host
row has id 0), found with :func:`system_user_id`. A host account is never taken for it, whatever
its e-mail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import Actor, ActorLike, resolve_actor
from tradelog._db.models import User
from tradelog._facade import session as _runtime_session
from tradelog._users.store import (
    PLACEHOLDER_DOMAIN,
    SYSTEM_USER_EMAIL,
    EnsureResult,
    UserSpec,
    advance_id_sequence,
    is_placeholder,
    system_user_id,
    upsert_users,
)
from tradelog.exceptions import NotFound

__all__ = [
    "PLACEHOLDER_DOMAIN",
    "SYSTEM_USER_EMAIL",
    "Actor",
    "ActorLike",
    "EnsureResult",
    "UserSpec",
    "create_user",
    "ensure_system_user",
    "ensure_user",
    "ensure_users",
    "is_placeholder",
    "list_users",
    "resolve_actor",
    "system_user_id",
]


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    role: str = "user",
    password_hash: str = "!",  # noqa: S107
) -> User:
    """Insert a user with the next id and flush it so ``id`` is set; the caller commits.

    ``password_hash`` defaults to ``!``, an unusable hash: tradelog never handles passwords.
    On PostgreSQL the id sequence is first moved past ids inserted explicitly, so it does not
    collide with them. To keep the host's own ids, use :func:`ensure_user`.
    """
    if role not in ("admin", "user"):
        raise ValueError(f"role must be 'admin' or 'user', got {role!r}")
    advance_id_sequence(session)
    user = User(email=email, name=name, role=role, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def ensure_system_user(session: Session) -> int:
    """Same as :func:`system_user_id` (kept for callers of earlier versions)."""
    return system_user_id(session)


def _spec(item: UserSpec | Mapping[str, Any]) -> UserSpec:
    if isinstance(item, UserSpec):
        return item
    unknown = set(item) - {"id", "email", "name", "role"}
    if unknown:
        raise ValueError(f"unknown user field(s): {', '.join(sorted(unknown))}")
    return UserSpec(**item)


def ensure_users(
    users: Iterable[UserSpec | Mapping[str, Any]], *, session: Session | None = None
) -> EnsureResult:
    """Create or update many accounts at once (idempotent; see :func:`ensure_user`).

    Each item is a :class:`UserSpec` or a mapping with ``id`` and optionally ``email``,
    ``name``, ``role``. Everything is validated before anything is written, and written in
    one transaction: ``session``'s (the caller commits) or a new one on tradelog's engine.
    Raises :class:`ValueError` for a bad item and :class:`~tradelog.exceptions.ConflictError`
    for an e-mail that belongs to another account.
    """
    specs = [_spec(item) for item in users]
    if session is not None:
        return upsert_users(session, specs)
    with _runtime_session() as own:
        result = upsert_users(own, specs)
        own.commit()
    return result


def ensure_user(
    user_id: int,
    *,
    email: str | None = None,
    name: str | None = None,
    role: str = "user",
    session: Session | None = None,
) -> User:
    """Make sure account ``user_id`` exists with these details; returns its row.

    Idempotent: a new account is created with the id given (``email`` defaults to a
    placeholder, ``name`` to ``user <id>``); an existing one - a placeholder registered for an
    unknown id included - gets the e-mail and name given (``None`` keeps what is stored) and
    ``role``. ``session``: write in the caller's transaction (the caller commits).
    """
    spec = UserSpec(user_id, email=email, name=name, role=role)
    if session is not None:
        upsert_users(session, [spec])
        return _row(session, user_id)
    with _runtime_session() as own:
        upsert_users(own, [spec])
        own.commit()
        return _row(own, user_id)


def _row(session: Session, user_id: int) -> User:
    user = session.get(User, user_id, populate_existing=True)
    if user is None:  # pragma: no cover - upsert_users created it or raised
        raise NotFound(f"no user with id {user_id}")
    return user


def list_users(session: Session, actor: ActorLike) -> Sequence[User]:
    """The accounts ``actor`` may see, by id: an admin every one, a user only their own."""
    who = resolve_actor(session, actor)
    query = select(User).order_by(User.id)
    if not who.is_admin:
        query = query.where(User.id == who.id)
    return session.scalars(query).all()
