"""Notification preferences: defaults, validation, permissions and the audit trail."""

from __future__ import annotations

import threading
from datetime import time

import pytest
from sqlalchemy import select

from tests.support.db import MigratedDatabase
from tradelog._access import Actor
from tradelog._db.models import AuditLog, UserNotificationPreferences
from tradelog._notify.preferences import (
    get_preferences,
    preferences_dict,
    snapshot,
    update_preferences,
)
from tradelog.exceptions import NotFound, PermissionDenied


def test_get_creates_spec_defaults(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A user without a row gets one with the spec's defaults, Asia/Kolkata and defer."""
    with db.session() as session:
        row = get_preferences(session, users["alice"])
        session.commit()
    shown = preferences_dict(row)
    assert shown["telegram_enabled"] is False
    assert shown["email_enabled"] is False
    assert shown["in_app_enabled"] is True
    assert all(shown[f"notify_{t}"] for t in ("service_events", "trading_events", "errors"))
    assert shown["timezone"] == "Asia/Kolkata"
    assert shown["quiet_hours_mode"] == "defer"
    assert shown["quiet_hours_start"] is None
    assert db.scalar("SELECT count(*) FROM user_notification_preferences") == 1


def test_get_unknown_user(db: MigratedDatabase, users: dict[str, int]) -> None:
    """An unknown user id is NotFound, not a foreign-key crash."""
    with db.session() as session, pytest.raises(NotFound):
        get_preferences(session, 999_999)


def test_get_or_create_races_make_one_row(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Eight threads creating the same user's row at once end with exactly one row."""
    barrier = threading.Barrier(8)
    ids: list[int] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            with db.session() as session:
                barrier.wait()
                row = get_preferences(session, users["bob"])
                session.commit()
                ids.append(row.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 1
    assert db.scalar("SELECT count(*) FROM user_notification_preferences") == 1


def test_update_validates_and_audits(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A valid update applies and leaves one audit row with before/after of changed fields."""
    alice = users["alice"]
    with db.session() as session:
        update_preferences(
            session,
            alice,
            alice,
            telegram_chat_id=" 123456 ",
            telegram_enabled=True,
            email_address="Alice@Example.COM",
            email_enabled="on",
            quiet_hours_start="22:00",
            quiet_hours_end="07:00",
            timezone="Europe/London",
            quiet_hours_mode="SILENT",
        )
        session.commit()
    with db.session() as session:
        row = get_preferences(session, alice)
        view = snapshot(row)
        audit = session.execute(select(AuditLog)).scalars().all()
    assert view.telegram_chat_id == "123456"
    assert view.email_address == "Alice@example.com"
    assert view.quiet_hours_start == time(22, 0)
    assert view.quiet_hours_end == time(7, 0)
    assert view.timezone == "Europe/London"
    assert view.quiet_hours_mode == "silent"
    assert len(audit) == 1
    assert audit[0].user_id == alice
    assert audit[0].action == "update"
    assert audit[0].resource_type == "notification_preferences"
    assert audit[0].resource_id == row.id
    assert audit[0].changes is not None
    assert audit[0].changes["quiet_hours_start"] == {"before": None, "after": "22:00"}
    assert audit[0].changes["telegram_enabled"] == {"before": False, "after": True}
    assert "notify_errors" not in audit[0].changes


def test_no_change_no_audit(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Setting values to what they already are writes no audit row."""
    with db.session() as session:
        update_preferences(session, users["alice"], users["alice"], notify_errors=True)
        session.commit()
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"telegram_chat_id": "not a chat"}, "invalid telegram chat id"),
        ({"email_address": "alice@@example"}, "invalid email address"),
        ({"email_address": "a@b.com\r\nBcc: x@y.com"}, "control characters"),
        ({"quiet_hours_start": "22:00"}, "set together"),
        ({"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"}, "must be a time"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"quiet_hours_mode": "mute"}, "defer, silent, drop"),
        ({"telegram_enabled": True}, "needs a telegram_chat_id"),
        ({"email_enabled": True}, "needs an email_address"),
        ({"in_app_enabled": False}, "cannot be turned off"),
        ({"notify_errors": "maybe"}, "true or false"),
        ({"colour": "blue"}, "unknown preference"),
    ],
)
def test_update_rejects_bad_values(
    db: MigratedDatabase, users: dict[str, int], changes: dict[str, object], message: str
) -> None:
    """Invalid input is a ValueError naming the problem, and nothing changes."""
    with db.session() as session:
        with pytest.raises(ValueError, match=message):
            update_preferences(session, users["alice"], users["alice"], **changes)
        session.rollback()
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


def test_quiet_hours_cleared_together(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Quiet hours are cleared by setting both to None; one bound alone stays refused."""
    alice = users["alice"]
    with db.session() as session:
        update_preferences(
            session, alice, alice, quiet_hours_start="23:00", quiet_hours_end="06:00"
        )
        update_preferences(session, alice, alice, quiet_hours_start="22:30")
        assert get_preferences(session, alice).quiet_hours_end == time(6, 0)
        with pytest.raises(ValueError, match="set together"):
            update_preferences(session, alice, alice, quiet_hours_end=None)
        update_preferences(session, alice, alice, quiet_hours_start=None, quiet_hours_end=None)
        session.commit()
        row = get_preferences(session, alice)
    assert (row.quiet_hours_start, row.quiet_hours_end) == (None, None)


def test_only_owner_or_admin_may_update(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Bob cannot change Alice's preferences; an admin can, and the audit names the admin."""
    with db.session() as session:
        with pytest.raises(PermissionDenied):
            update_preferences(session, users["bob"], users["alice"], notify_errors=False)
        update_preferences(
            session, Actor(users["admin"], is_admin=True), users["alice"], notify_errors=False
        )
        session.commit()
        row = session.execute(
            select(UserNotificationPreferences).where(
                UserNotificationPreferences.user_id == users["alice"]
            )
        ).scalar_one()
        audit = session.execute(select(AuditLog)).scalar_one()
    assert row.notify_errors is False
    assert audit.user_id == users["admin"]
