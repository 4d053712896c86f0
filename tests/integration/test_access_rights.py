"""Who may read what: deactivated admins, preferences, and ``tradelog status`` as a user."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import update

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db.models import User
from tradelog._logs.stats import save
from tradelog._notify.dispatch import dispatch
from tradelog._notify.inbox import list_notifications
from tradelog.errors import list_errors, resolve
from tradelog.exceptions import PermissionDenied
from tradelog.notifications import get_preferences, update_preferences
from tradelog.users import resolve_actor


def _deactivate(db: MigratedDatabase, user_id: int) -> None:
    with db.session() as session:
        session.execute(update(User).where(User.id == user_id).values(is_active=False))
        session.commit()


def test_deactivated_admin_loses_admin_rights(db: MigratedDatabase, users: dict[str, int]) -> None:
    """An admin whose account was deactivated reads and changes only their own rows: other
    users' notifications, errors and preferences are refused or out of sight."""
    admin, alice = users["admin"], users["alice"]
    with db.session() as session:
        dispatch(session, alice, "trading", "info", "alice's", "fill")
        dispatch(session, admin, "system", "info", "admin's", "note")
        session.commit()
    try:
        raise ValueError("alice's error")
    except ValueError as exc:
        tradelog.configure(database_url=db.url, console=False, worker=False)
        tradelog.capture_exception(exc, user_id=alice)
        assert tradelog.flush(20)
        tradelog.shutdown()
    with db.session() as session:
        assert resolve_actor(session, admin).is_admin
        titles = {n.title for n in list_notifications(session, admin).items}
        assert {"alice's", "admin's"} <= titles
        assert len(list_errors(session, admin).items) == 1
    _deactivate(db, admin)
    with db.session() as session:
        who = resolve_actor(session, admin)
        assert not who.is_admin
        assert resolve_actor(session, session.get(User, admin)).is_admin is False  # type: ignore[arg-type]
        own = list_notifications(session, admin).items
        assert "admin's" in [n.title for n in own]
        assert {n.user_id for n in own} == {admin}  # alice's are out of sight
        assert list_errors(session, admin).items == []
        with pytest.raises(PermissionDenied):
            list_notifications(session, admin, user_id=alice)
        with pytest.raises(PermissionDenied):
            get_preferences(session, admin, alice)
        with pytest.raises(PermissionDenied):
            update_preferences(session, admin, alice, notify_trading_events=False)
        error_id = int(str(db.scalar("SELECT id FROM error_logs")))
        with pytest.raises(PermissionDenied):
            resolve(session, error_id, admin, "closing it")


def test_preferences_read_takes_the_acting_user(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A user reads their own preferences (the default target); another user's only as an
    admin."""
    admin, alice, bob = users["admin"], users["alice"], users["bob"]
    with db.session() as session:
        update_preferences(session, alice, alice, timezone="Europe/London")
        session.commit()
        assert get_preferences(session, alice).timezone == "Europe/London"
        assert get_preferences(session, alice, alice).user_id == alice
        assert get_preferences(session, admin, alice).timezone == "Europe/London"
        with pytest.raises(PermissionDenied):
            get_preferences(session, bob, alice)


def test_status_as_a_user_hides_other_writers_and_the_outbox(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tradelog status --as <user>`` shows that user's service only: no writer's host, pid
    or last error, no outbox; an admin sees them."""
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path))
    save(
        tmp_path,
        {"pid": 424242, "host": "trading-box-7", "last_error": "db at 10.0.0.5 refused"},
    )
    assert os.path.exists(tmp_path / "_runtime")
    for actor, sees in ((users["alice"], False), (users["admin"], True)):
        capsys.readouterr()
        main(["--database-url", db.url, "status", "--as", str(actor)])
        text = capsys.readouterr().out
        main(["--database-url", db.url, "--json", "status", "--as", str(actor)])
        data = json.loads(capsys.readouterr().out)
        for shown in (text, json.dumps(data)):
            assert ("trading-box-7" in shown) is sees
            assert ("424242" in shown) is sees
            assert ("10.0.0.5" in shown) is sees
        assert isinstance(data["outbox"], dict) is sees
        if not sees:
            assert data["writers"] == "n/a (admins only)"
