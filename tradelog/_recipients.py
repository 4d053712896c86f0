"""Who hears about what the service does: the operators, and each account's owner.

*Operators* run the service for many accounts. They are every active admin (``role = 'admin'``
and ``is_active``) plus the active users named in ``TRADELOG_OPS_USER_IDS``; the system user
(inactive, the owner of rows no user claims) never is one. They get the detail of an error or
a stale service. An account's *owner* gets a plain sentence, with times in their own timezone
(``user_notification_preferences.timezone``, Asia/Kolkata by default).

Error alerts (:mod:`tradelog._errors.alerts`), the stale-service monitor
(:mod:`tradelog._health.stale`) and service lifecycle notices (:mod:`tradelog._health.lifecycle`)
share these lookups; each is one short query in the caller's session.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tradelog._db.models import User, UserNotificationPreferences
from tradelog.users import SYSTEM_USER_EMAIL

__all__ = ["DEFAULT_ZONE", "describe_user", "local_time", "operator_ids", "user_zone"]

DEFAULT_ZONE: Final = "Asia/Kolkata"


def operator_ids(session: Session, extra: Iterable[int] = ()) -> list[int]:
    """The operators' user ids, ascending: active admins and the active users in ``extra``."""
    named = sorted(set(extra))
    chosen = User.role == "admin"
    if named:
        chosen = or_(chosen, User.id.in_(named))
    query = select(User.id).where(chosen, User.is_active.is_(True), User.email != SYSTEM_USER_EMAIL)
    return sorted(int(i) for i in session.scalars(query))


def user_zone(session: Session, user_id: int) -> ZoneInfo:
    """The timezone ``user_id`` reads times in (Asia/Kolkata unless their preferences say)."""
    name = session.scalar(
        select(UserNotificationPreferences.timezone).where(
            UserNotificationPreferences.user_id == user_id
        )
    )
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ValueError, OSError):
        return ZoneInfo(DEFAULT_ZONE)


def local_time(moment: datetime, zone: ZoneInfo, *, now: datetime | None = None) -> str:
    """``10:42 IST`` (with the date in front when ``moment`` is not on ``now``'s local day)."""
    local = moment.astimezone(zone)
    if now is not None and now.astimezone(zone).date() != local.date():
        return local.strftime("%Y-%m-%d %H:%M %Z")
    return local.strftime("%H:%M %Z")


def describe_user(session: Session, user_id: int) -> str:
    """``user 7 (alice@example.com)`` for operators' messages."""
    email = session.scalar(select(User.email).where(User.id == user_id))
    if email is None:
        return f"user {user_id}"
    if email == SYSTEM_USER_EMAIL:
        return "no user (system)"
    return f"user {user_id} ({email})"
