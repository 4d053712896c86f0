"""The in-app inbox: list (filters, keyset paging), unread count, mark read, mark all read.

Reads follow :mod:`tradelog._access`: users see their own notifications, admins anyone's.
Changing read state is personal: only the owner may mark a notification read, and naming
someone else's notification raises :class:`~tradelog.exceptions.PermissionDenied` (never a
silent no-op). The unread count and "mark all read" use the
``ix_notifications_user_read_created (user_id, read, created_at)`` index.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import false, func, select, true, update
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.base import utcnow
from tradelog._db.functions import before_keyset
from tradelog._db.models import Notification
from tradelog._notify.policy import validate_level, validate_type
from tradelog.exceptions import NotFound, PermissionDenied

__all__ = ["Page", "list_notifications", "mark_all_read", "mark_read", "unread_count"]


@dataclass(frozen=True)
class Page:
    """One page of notifications, newest first; pass ``next_cursor`` to get the next page."""

    items: Sequence[Notification]
    next_cursor: str | None


def _encode(created_at: datetime, notification_id: int) -> str:
    raw = f"{created_at.isoformat()}|{notification_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, _, ident = base64.urlsafe_b64decode(padded).decode().partition("|")
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def list_notifications(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    unread_only: bool = False,
    read: bool | None = None,
    type_: str | None = None,
    level: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Notifications visible to ``actor`` (own, or anyone's for an admin), newest first.

    ``user_id`` narrows an admin's view (a non-admin naming another user is refused).
    ``read`` keeps only read (True) or unread (False) ones; ``unread_only=True`` is
    ``read=False``. ``since`` is inclusive, ``until`` exclusive. Paging is by keyset on
    ``(created_at, id)``: stable while new notifications arrive.
    """
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    who = resolve_actor(session, actor)
    query = scoped(select(Notification), Notification.user_id, who, user_id)
    if unread_only or read is False:
        query = query.where(Notification.read == false())
    elif read:
        query = query.where(Notification.read == true())
    if type_ is not None:
        query = query.where(Notification.type == validate_type(type_))
    if level is not None:
        query = query.where(Notification.level == validate_level(level))
    if since is not None:
        query = query.where(Notification.created_at >= since)
    if until is not None:
        query = query.where(Notification.created_at < until)
    if cursor is not None:
        when, ident = _decode(cursor)
        query = query.where(before_keyset(Notification.created_at, Notification.id, when, ident))
    rows = list(
        session.execute(
            query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit + 1)
        ).scalars()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode(rows[-1].created_at, rows[-1].id) if more and rows else None
    return Page(rows, next_cursor)


def unread_count(session: Session, actor: ActorLike, *, user_id: int | None = None) -> int:
    """How many unread notifications the user has (``actor`` itself unless an admin names one)."""
    who = resolve_actor(session, actor)
    target = who.id if user_id is None else user_id
    if target != who.id and not who.is_admin:
        raise PermissionDenied(f"user {who.id} may not read notifications of user {target}")
    return int(
        session.execute(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == target, Notification.read == false())
        ).scalar_one()
    )


def mark_read(
    session: Session, actor: ActorLike, notification_id: int, *, now: datetime | None = None
) -> Notification:
    """Mark one of ``actor``'s notifications read (``read_at`` is kept if already read).

    Raises :class:`NotFound` for an unknown id and :class:`PermissionDenied` for another
    user's notification. The caller commits.
    """
    who = resolve_actor(session, actor)
    row = session.get(Notification, notification_id)
    if row is None:
        raise NotFound(f"no notification with id {notification_id}")
    if row.user_id != who.id:
        raise PermissionDenied(
            f"notification {notification_id} belongs to another user; "
            f"user {who.id} may only mark their own notifications read"
        )
    if not row.read:
        row.read = True
        row.read_at = now or utcnow()
        session.flush()
    return row


def mark_all_read(session: Session, actor: ActorLike, *, now: datetime | None = None) -> int:
    """Mark every unread notification of ``actor`` read; returns how many rows changed.

    Rows already read are not touched (their ``read_at`` stays). The caller commits.
    """
    who = resolve_actor(session, actor)
    result = session.execute(
        update(Notification)
        .where(Notification.user_id == who.id, Notification.read == false())
        .values(read=true(), read_at=now or utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
