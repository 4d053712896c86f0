"""Rows of ``users`` as tradelog writes them: host accounts, placeholders and the system user.

Every function works in the session it is given (the caller commits), so a user can be created
inside the same transaction as the row that needs it.

**Explicit ids.** Hosts name their accounts by their own ids, and tradelog inserts those ids
as they are (:func:`upsert_users`, :func:`register_placeholders`). On PostgreSQL an explicit id
does not move the ``users.id`` sequence, so after inserting one tradelog moves the sequence past
the highest id (:func:`advance_id_sequence`): a later insert that takes its id from the
sequence - the host's or tradelog's - does not collide. These writes take a transaction-scoped
advisory lock first, so tradelog's own processes never move the sequence backwards under each
other.

**The system user** owns what no user context claims (errors without a user). It is the one row
with ``is_system`` set (a partial unique index keeps it at most one), an inactive admin with an
unusable password hash. A host account cannot become it by accident: an e-mail, a name or a role
is not enough, and a flagged row that is not an admin is refused rather than trusted. A new
system user takes the id 0 (host ids are positive), falling back to the sequence if a host row
already has 0; a failed insert is looked at before it is retried, so an id or e-mail collision
is never mistaken for another process having created it first.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tradelog._db.base import USER_ID_MAX
from tradelog._db.models import User
from tradelog._db.models.users import ROLES
from tradelog._db.upsert import dialect_insert
from tradelog.exceptions import ConflictError, StorageError

__all__ = [
    "PLACEHOLDER_DOMAIN",
    "SYSTEM_USER_EMAIL",
    "SYSTEM_USER_NAME",
    "UNUSABLE_PASSWORD",
    "EnsureResult",
    "UserSpec",
    "advance_id_sequence",
    "find_system_user",
    "is_placeholder",
    "placeholder_email",
    "register_placeholders",
    "system_user_id",
    "upsert_users",
]

SYSTEM_USER_EMAIL: Final = "system@tradelog.invalid"
SYSTEM_USER_NAME: Final = "tradelog system"
PLACEHOLDER_DOMAIN: Final = "unregistered.tradelog.invalid"
"""Users registered for an unknown id get ``user-<id>@`` this (``.invalid`` is reserved)."""
UNUSABLE_PASSWORD: Final = "!"  # noqa: S105 - tradelog never handles passwords
_PREFERRED_SYSTEM_ID: Final = 0
_LOCK_KEY: Final = 0x7472_6164_656C_6F67 & 0x7FFF_FFFF_FFFF_FFFF  # "tradelog"
_FIELD_MAX: Final = 255
_CREATE_ATTEMPTS: Final = 4


@dataclass(frozen=True)
class UserSpec:
    """One account to ensure: its id and, optionally, its e-mail and name; its role."""

    id: int
    email: str | None = None
    name: str | None = None
    role: str = "user"

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id <= 0:
            raise ValueError(f"a user id is a positive integer, got {self.id!r}")
        if self.id > USER_ID_MAX:
            raise ValueError(f"user ids go up to {USER_ID_MAX}, got {self.id}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.email is not None:
            email = str(self.email).strip()
            if "@" not in email or len(email) > _FIELD_MAX or any(c.isspace() for c in email):
                raise ValueError(f"not an e-mail address: {self.email!r}")
            object.__setattr__(self, "email", email)
        if self.name is not None:
            name = str(self.name).strip()
            if not name or len(name) > _FIELD_MAX:
                raise ValueError(f"a name is 1 to {_FIELD_MAX} characters, got {self.name!r}")
            object.__setattr__(self, "name", name)


@dataclass
class EnsureResult:
    """What :func:`upsert_users` did, by user id."""

    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)


def placeholder_email(user_id: int) -> str:
    """The e-mail a user registered for an unknown id gets until the host gives a real one."""
    return f"user-{user_id}@{PLACEHOLDER_DOMAIN}"


def is_placeholder(email: str | None) -> bool:
    """Whether ``email`` is a placeholder (the account was registered for an unknown id)."""
    return bool(email) and str(email).endswith("@" + PLACEHOLDER_DOMAIN)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _lock(session: Session) -> None:
    """Serialise tradelog's own user creation (PostgreSQL; SQLite writes one at a time)."""
    if _postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


def advance_id_sequence(session: Session) -> None:
    """PostgreSQL: move the ``users.id`` sequence past the highest id, if it is behind."""
    if not _postgres(session):
        return
    sequence = session.execute(text("SELECT pg_get_serial_sequence('users', 'id')")).scalar()
    if not sequence:
        return  # an id without a sequence: nothing takes ids from one
    last, called = session.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one()
    next_value = int(last) + 1 if called else int(last)
    top = session.execute(select(func.max(User.id))).scalar()
    if top is not None and int(top) >= next_value:
        session.execute(text("SELECT setval(:s, :v, true)"), {"s": sequence, "v": int(top)})


def upsert_users(session: Session, specs: Iterable[UserSpec]) -> EnsureResult:
    """Create or update each account (idempotent); the caller commits.

    A new account without an e-mail gets a placeholder, without a name ``user <id>``; an
    existing one keeps its e-mail and name unless new ones are given, and takes the role given.
    Raises :class:`ConflictError` for an e-mail another account has, or the system user's id.
    """
    wanted: dict[int, UserSpec] = {}
    for spec in specs:
        wanted[spec.id] = spec  # the last one for an id wins
    result = EnsureResult()
    if not wanted:
        return result
    _lock(session)
    system = find_system_user(session)
    if system is not None and system[0] in wanted:
        raise ConflictError(f"user id {system[0]} is tradelog's system user")
    existing = {user.id: user for user in session.scalars(select(User).where(User.id.in_(wanted)))}
    _refuse_taken_emails(session, wanted.values())
    fresh = [spec for user_id, spec in sorted(wanted.items()) if user_id not in existing]
    if fresh:
        statement = dialect_insert(session, User).on_conflict_do_nothing(index_elements=["id"])
        try:
            with session.begin_nested():
                session.execute(statement, [_new_row(spec) for spec in fresh])
        except IntegrityError as exc:
            raise ConflictError(f"cannot create users: {_reason(exc)}") from exc
        advance_id_sequence(session)
        created = set(session.scalars(select(User.id).where(User.id.in_([s.id for s in fresh]))))
        result.created.extend(spec.id for spec in fresh if spec.id in created)
    for user_id, user in sorted(existing.items()):
        spec = wanted[user_id]
        changes = {
            "email": spec.email if spec.email is not None else user.email,
            "name": spec.name if spec.name is not None else user.name,
            "role": spec.role,
        }
        if all(getattr(user, key) == value for key, value in changes.items()):
            result.unchanged.append(user_id)
            continue
        for key, value in changes.items():
            setattr(user, key, value)
        result.updated.append(user_id)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"cannot update users: {_reason(exc)}") from exc
    return result


def _new_row(spec: UserSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "email": spec.email or placeholder_email(spec.id),
        "name": spec.name or f"user {spec.id}",
        "role": spec.role,
        "password_hash": UNUSABLE_PASSWORD,
        "is_active": True,
        "is_system": False,
    }


def _refuse_taken_emails(session: Session, specs: Iterable[UserSpec]) -> None:
    by_email = {spec.email.lower(): spec.id for spec in specs if spec.email is not None}
    if not by_email:
        return
    owners = session.execute(
        select(User.id, User.email).where(func.lower(User.email).in_(list(by_email)))
    ).all()
    for owner, email in owners:
        wanted_by = by_email[str(email).lower()]
        if owner != wanted_by:
            raise ConflictError(f"e-mail {email} already belongs to user {owner}")


def register_placeholders(session: Session, ids: Iterable[int]) -> set[int]:
    """Create a placeholder account for each id that has none; returns the ids that exist
    afterwards (an id whose insert conflicted with something else is left out)."""
    wanted = sorted({int(i) for i in ids if not isinstance(i, bool) and int(i) > 0})
    if not wanted:
        return set()
    _lock(session)
    rows = [_new_row(UserSpec(user_id)) for user_id in wanted]
    session.execute(dialect_insert(session, User).on_conflict_do_nothing(), rows)
    advance_id_sequence(session)
    return set(session.scalars(select(User.id).where(User.id.in_(wanted))))


def find_system_user(session: Session) -> tuple[int, str] | None:
    """``(id, role)`` of the row flagged as the system user, or None."""
    row = session.execute(select(User.id, User.role).where(User.is_system.is_(True))).first()
    return None if row is None else (int(row[0]), str(row[1]))


def _checked(found: tuple[int, str]) -> int:
    user_id, role = found
    if role != "admin":
        raise ConflictError(
            f"tradelog's system user (id {user_id}) has role {role!r}, not admin: it is not "
            "trusted as the system user. Restore it with "
            "UPDATE users SET role = 'admin' WHERE is_system"
        )
    return user_id


def system_user_id(session: Session) -> int:
    """The id of the system user (created on first use; see the module docstring).

    Raises :class:`ConflictError` when the flagged row is not an admin, and
    :class:`StorageError` when it cannot be created.
    """
    found = find_system_user(session)
    if found is not None:
        return _checked(found)
    last: IntegrityError | None = None
    for _ in range(_CREATE_ATTEMPTS):
        try:
            with session.begin_nested():
                _lock(session)
                found = find_system_user(session)
                if found is not None:  # created while this one waited for the lock
                    return _checked(found)
                user = _system_row(session)
                session.add(user)
                session.flush()
                return int(user.id)
        except IntegrityError as exc:
            last = exc
            found = find_system_user(session)
            if found is not None:  # another process created it first
                return _checked(found)
            # an id or e-mail collision with rows written meanwhile: look again and retry
    raise StorageError(f"cannot create tradelog's system user: {_reason(last)}")


def _system_row(session: Session) -> User:
    taken = set(session.scalars(select(User.email).where(User.email == SYSTEM_USER_EMAIL)).all())
    email = (
        SYSTEM_USER_EMAIL
        if SYSTEM_USER_EMAIL not in taken
        else f"system-{secrets.token_hex(4)}@tradelog.invalid"
    )
    user = User(
        email=email,
        name=SYSTEM_USER_NAME,
        role="admin",
        password_hash=UNUSABLE_PASSWORD,
        is_active=False,
        is_system=True,
    )
    if session.get(User, _PREFERRED_SYSTEM_ID) is None:
        user.id = _PREFERRED_SYSTEM_ID
    else:
        advance_id_sequence(session)  # the sequence gives the id: make sure it is past them
    return user


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown reason"
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
