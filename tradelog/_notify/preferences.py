"""Notification preferences: read (get-or-create with the spec's defaults), validate, update, audit.

Preferences are read from the database every time a notification is dispatched or delivered;
nothing caches them, so a change takes effect with the next notification. A change to the
quiet hours (window, timezone or mode) also re-times the deliveries they are holding back: to
the end of the new window, or now when the new settings no longer hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, time
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor
from tradelog._db.base import utcnow
from tradelog._db.models import NotificationDelivery, User, UserNotificationPreferences
from tradelog._db.upsert import dialect_insert
from tradelog._notify.policy import (
    PreferenceSnapshot,
    quiet_window_end,
    validate_chat_id,
    validate_email_address,
    validate_quiet_hours,
    validate_quiet_mode,
    validate_timezone,
)
from tradelog.audit import diff, record_audit
from tradelog.exceptions import NotFound, PermissionDenied

__all__ = [
    "EDITABLE_FIELDS",
    "get_preferences",
    "preferences_dict",
    "preferences_row",
    "retime_deferred",
    "snapshot",
    "update_preferences",
]

_BOOLEAN_FIELDS: Final = (
    "telegram_enabled",
    "email_enabled",
    "in_app_enabled",
    "notify_service_events",
    "notify_trading_events",
    "notify_system_events",
    "notify_errors",
)
EDITABLE_FIELDS: Final[tuple[str, ...]] = (
    *_BOOLEAN_FIELDS,
    "telegram_chat_id",
    "email_address",
    "quiet_hours_start",
    "quiet_hours_end",
    "timezone",
    "quiet_hours_mode",
)
"""Fields :func:`update_preferences` accepts."""

_SHOWN_FIELDS: Final = ("user_id", *EDITABLE_FIELDS, "updated_at")
_QUIET_FIELDS: Final = ("quiet_hours_start", "quiet_hours_end", "timezone", "quiet_hours_mode")


def _find(session: Session, user_id: int) -> UserNotificationPreferences | None:
    return session.execute(
        select(UserNotificationPreferences).where(UserNotificationPreferences.user_id == user_id)
    ).scalar_one_or_none()


def get_preferences(
    session: Session, actor: ActorLike, user_id: int | None = None
) -> UserNotificationPreferences:
    """The preferences of ``user_id`` (default: the acting user's own), as ``actor`` reads them.

    A user reads their own preferences; an admin anyone's; anyone else gets
    :class:`~tradelog.exceptions.PermissionDenied`. The row is created with the spec's
    defaults when missing (:class:`NotFound` for an unknown user).
    """
    who = resolve_actor(session, actor)
    target = who.id if user_id is None else user_id
    if target != who.id and not who.is_admin:
        raise PermissionDenied(
            f"user {who.id} may not read the notification preferences of user {target}"
        )
    return preferences_row(session, target)


def preferences_row(session: Session, user_id: int) -> UserNotificationPreferences:
    """The preferences row of ``user_id``, created with the spec's defaults when missing.

    Internal: no acting user (dispatch and the delivery worker read a user's own
    preferences); callers on behalf of a person use :func:`get_preferences`. Safe against a
    concurrent creator: the row is created with ``INSERT ... ON CONFLICT DO
    NOTHING`` on the unique ``user_id``, so a race never raises and never needs a savepoint
    (savepoints are unreliable on SQLite's Python driver and would disturb a caller's
    transaction). Raises :class:`NotFound` for an unknown user.
    """
    row = _find(session, user_id)
    if row is not None:
        return row
    if session.get(User, user_id) is None:
        raise NotFound(f"no user with id {user_id}")
    session.execute(
        dialect_insert(session, UserNotificationPreferences)
        .values(user_id=user_id)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    row = _find(session, user_id)
    if row is None:  # pragma: no cover - the user was deleted in between
        raise NotFound(f"no user with id {user_id}")
    return row


def snapshot(row: UserNotificationPreferences) -> PreferenceSnapshot:
    """The pure-policy view of a preferences row."""
    return PreferenceSnapshot(
        telegram_enabled=bool(row.telegram_enabled),
        telegram_chat_id=row.telegram_chat_id,
        email_enabled=bool(row.email_enabled),
        email_address=row.email_address,
        in_app_enabled=bool(row.in_app_enabled),
        notify_service_events=bool(row.notify_service_events),
        notify_trading_events=bool(row.notify_trading_events),
        notify_system_events=bool(row.notify_system_events),
        notify_errors=bool(row.notify_errors),
        quiet_hours_start=row.quiet_hours_start,
        quiet_hours_end=row.quiet_hours_end,
        timezone=row.timezone or "Asia/Kolkata",
        quiet_hours_mode=row.quiet_hours_mode or "defer",
    )


def preferences_dict(row: UserNotificationPreferences) -> dict[str, Any]:
    """The user-visible fields of ``row`` as a plain dict (times as ``HH:MM``)."""
    shown: dict[str, Any] = {}
    for name in _SHOWN_FIELDS:
        value = getattr(row, name)
        if isinstance(value, time):
            value = value.isoformat(timespec="minutes" if value.second == 0 else "seconds")
        shown[name] = value
    return shown


def _as_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "on", "yes", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "off", "no", "0"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _validated(row: UserNotificationPreferences, changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown preference(s) {', '.join(unknown)}; "
            f"expected one of: {', '.join(EDITABLE_FIELDS)}"
        )
    values: dict[str, Any] = {}
    for name, value in changes.items():
        if name in _BOOLEAN_FIELDS:
            values[name] = _as_bool(name, value)
        elif name == "telegram_chat_id":
            values[name] = None if value in (None, "") else validate_chat_id(value)
        elif name == "email_address":
            values[name] = None if value in (None, "") else validate_email_address(value)
        elif name == "timezone":
            values[name] = validate_timezone(value).key
        elif name == "quiet_hours_mode":
            values[name] = validate_quiet_mode(value)

    if "in_app_enabled" in values and not values["in_app_enabled"]:
        raise ValueError("in_app_enabled cannot be turned off: the in-app inbox always records")

    start = changes.get("quiet_hours_start", row.quiet_hours_start)
    end = changes.get("quiet_hours_end", row.quiet_hours_end)
    if "quiet_hours_start" in changes or "quiet_hours_end" in changes:
        window = validate_quiet_hours(start or None, end or None)
        values["quiet_hours_start"], values["quiet_hours_end"] = window or (None, None)

    merged = {name: getattr(row, name) for name in EDITABLE_FIELDS} | values
    if merged["telegram_enabled"] and not merged["telegram_chat_id"]:
        raise ValueError("telegram_enabled needs a telegram_chat_id: set the chat id first")
    if merged["email_enabled"] and not merged["email_address"]:
        raise ValueError("email_enabled needs an email_address: set the address first")
    return values


def retime_deferred(session: Session, user_id: int, *, now: datetime | None = None) -> int:
    """Re-time ``user_id``'s deliveries held by quiet hours after their settings changed.

    Still inside the (new) window: held until its end, or released now without sound in
    ``silent`` mode. Outside it: released now. Deliveries stay marked as deferred, so the ones
    released together still go out as one digest. Returns how many were re-timed.
    """
    now = now or utcnow()
    view = snapshot(preferences_row(session, user_id))
    start, end = view.quiet_hours_start, view.quiet_hours_end
    until = None
    if start is not None and end is not None:
        until = quiet_window_end(start, end, view.zone(), now)
    values: dict[str, Any] = {"not_before": until or now, "next_attempt_at": until or now}
    if until is not None and view.quiet_hours_mode == "silent":
        values = {"not_before": now, "next_attempt_at": now, "silent": True}
    held = NotificationDelivery
    result = session.execute(
        update(held)
        .where(
            held.user_id == user_id,
            held.status == "pending",
            held.not_before.is_not(None),
            held.not_before > now,
        )
        .values(**values, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def update_preferences(
    session: Session, actor: ActorLike, user_id: int, **changes: Any
) -> UserNotificationPreferences:
    """Validate and apply ``changes`` to the preferences of ``user_id``; audit the difference.

    Only the user themself or an admin may change them (:class:`PermissionDenied` otherwise).
    Invalid values raise :class:`ValueError` naming the field and the accepted values. Quiet
    hours are set together or cleared together (``None`` for both). The audit row (action
    ``update``, resource ``notification_preferences``) holds the before/after of each changed
    field. Changed quiet hours re-time the deliveries they hold (:func:`retime_deferred`). The
    caller commits.
    """
    who = resolve_actor(session, actor)
    if who.id != user_id and not who.is_admin:
        raise PermissionDenied(
            f"user {who.id} may not change the notification preferences of user {user_id}"
        )
    row = preferences_row(session, user_id)
    values = _validated(row, changes)
    before = preferences_dict(row)
    for name, value in values.items():
        setattr(row, name, value)
    after = preferences_dict(row) | {"updated_at": before["updated_at"]}
    changed = diff(before, after)
    if changed:
        session.flush()
        record_audit(
            session,
            user_id=who.id,
            action="update",
            resource_type="notification_preferences",
            resource_id=row.id,
            changes=changed,
        )
        if any(name in changed for name in _QUIET_FIELDS):
            retime_deferred(session, user_id)
    return row
