"""Tests for the user-scoped trading config API on real databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import event

from tests.support.db import MigratedDatabase
from tradelog._access import Actor
from tradelog.audit import list_audit
from tradelog.exceptions import ConfigurationError, NotFound, PermissionDenied
from tradelog.trading_config import as_dict, get_config, update_config


def test_get_creates_with_spec_defaults_once(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The first read creates the row with the spec's defaults; later reads return it."""
    alice = users["alice"]
    with db.session() as session:
        config = get_config(session, alice, alice)
        values = as_dict(config)
        session.commit()
    assert values["rsi_period"] == 10
    assert values["user_capital"] == 200000.0
    assert values["default_exchange"] == "NSE"
    assert values["default_variety"] == "AMO"
    assert values["default_stop_loss_pct"] is None
    assert values["task_schedule"] is None
    assert values["exit_on_ema9_or_rsi50"] is True
    with db.session() as session:
        again = get_config(session, alice, alice)
        assert again.id == config.id
        session.commit()
    assert db.scalar("SELECT count(*) FROM user_trading_config") == 1


def test_user_may_not_read_or_change_another_users_config(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Another user's config is a permission error; an admin may do both."""
    alice, bob, admin = users["alice"], users["bob"], users["admin"]
    with db.session() as session:
        with pytest.raises(PermissionDenied):
            get_config(session, bob, alice)
        with pytest.raises(PermissionDenied):
            update_config(session, bob, alice, rsi_period=12)
        assert get_config(session, admin, alice).user_id == alice
        assert update_config(session, admin, alice, rsi_period=12) == {
            "rsi_period": {"before": 10, "after": 12}
        }
        session.commit()
    assert db.scalar("SELECT rsi_period FROM user_trading_config") == 12


def test_unknown_user_and_actor(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A missing target user or acting user id is NotFound."""
    with db.session() as session:
        with pytest.raises(NotFound):
            get_config(session, users["admin"], 9999)
        with pytest.raises(NotFound):
            get_config(session, 9999, users["alice"])


def test_update_is_audited_with_a_diff(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Each change records who changed which fields from what to what."""
    alice = users["alice"]
    with db.session() as session:
        changed = update_config(
            session,
            alice,
            alice,
            default_exchange="bse",
            default_stop_loss_pct=0.08,
            rsi_period=10,  # unchanged: not in the diff
            task_schedule={"sell_monitor": "09:15"},
        )
        session.commit()
    assert changed == {
        "default_exchange": {"before": "NSE", "after": "BSE"},
        "default_stop_loss_pct": {"before": None, "after": 0.08},
        "task_schedule": {"before": None, "after": {"sell_monitor": "09:15"}},
    }
    with db.session() as session:
        config = get_config(session, alice, alice)
        assert config.task_schedule == {"sell_monitor": "09:15"}
        rows = list_audit(session, alice, resource_type="user_trading_config")
    assert len(rows) == 1
    assert rows[0].user_id == alice
    assert rows[0].action == "update"
    assert rows[0].resource_id == config.id
    assert rows[0].changes == {"target_user_id": alice, "fields": changed}


def test_admin_change_is_audited_as_the_admin(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The audit row names the admin who made the change and the user it was made for."""
    with db.session() as session:
        update_config(session, Actor(users["admin"], is_admin=True), users["bob"], ml_enabled=True)
        session.commit()
    rows = db.rows("SELECT user_id, changes FROM audit_logs")
    assert len(rows) == 1
    assert rows[0]["user_id"] == users["admin"]


def test_no_change_writes_nothing(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Setting values to what they already are neither writes nor audits."""
    alice = users["alice"]
    with db.session() as session:
        assert update_config(session, alice, alice, rsi_period=10, default_exchange="nse") == {}
        session.commit()
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


def test_invalid_change_leaves_the_row_untouched(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """One bad value rejects the whole change; nothing is written or audited."""
    alice = users["alice"]
    with db.session() as session:
        with pytest.raises(ConfigurationError, match="default_product"):
            update_config(session, alice, alice, rsi_period=14, default_product="CASH")
        session.commit()
    assert db.scalar("SELECT rsi_period FROM user_trading_config") == 10
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


def test_rollback_drops_change_and_audit(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The change and its audit row share the caller's transaction."""
    alice = users["alice"]
    with db.session() as session:
        get_config(session, alice, alice)
        session.commit()
        update_config(session, alice, alice, rsi_period=20)
        session.rollback()
    assert db.scalar("SELECT rsi_period FROM user_trading_config") == 10
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


def test_concurrent_first_reads_create_one_row(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A second process creating the same row while the first holds it uncommitted waits and
    then reads the first one's row: one row, no error."""
    alice = users["alice"]
    first = db.session()
    created = get_config(first, alice, alice)  # inserted, not committed yet
    found: list[int] = []
    errors: list[BaseException] = []

    def second() -> None:
        with db.session() as session:
            try:
                found.append(get_config(session, alice, alice).id)
                session.commit()
            except BaseException as exc:
                errors.append(exc)

    inserting = threading.Event()

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is thread and statement.lstrip().upper().startswith("INSERT"):
            inserting.set()

    event.listen(db.engine, "before_cursor_execute", watch)
    thread = threading.Thread(target=second)
    try:
        thread.start()
        assert inserting.wait(30), "the second session never reached its INSERT"
        time.sleep(0.2)
        # It cannot finish while the first transaction holds the conflicting row (PostgreSQL)
        # or the write lock (SQLite): it is waiting, not failing.
        assert thread.is_alive()
        assert found == []
        assert errors == []
        first.commit()
        first.close()
        thread.join(30)
    finally:
        event.remove(db.engine, "before_cursor_execute", watch)
    assert not thread.is_alive()
    assert errors == []
    assert found == [created.id]
    assert db.scalar("SELECT count(*) FROM user_trading_config") == 1


def test_created_row_follows_the_callers_transaction(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A row created by a read is not committed behind the caller's back."""
    alice = users["alice"]
    with db.session() as session:
        get_config(session, alice, alice)
        session.rollback()
    assert db.scalar("SELECT count(*) FROM user_trading_config") == 0
