"""The schema's promises, proven with raw SQL and the ORM on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tests.support.db import MigratedDatabase
from tradelog._db.models import (
    Activity,
    MLModel,
    MLTrainingJob,
    Notification,
    ServiceLog,
    ServiceStatus,
    UserNotificationPreferences,
    UserTradingConfig,
)

IST = timezone(timedelta(hours=5, minutes=30))


def test_raw_insert_gets_trading_config_defaults(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A raw INSERT naming only user_id gets every default of the spec."""
    db.execute("INSERT INTO user_trading_config (user_id) VALUES (:u)", u=users["alice"])
    row = db.rows("SELECT * FROM user_trading_config")[0]
    expected = {
        "rsi_period": 10,
        "rsi_oversold": 30.0,
        "rsi_extreme_oversold": 20.0,
        "rsi_near_oversold": 40.0,
        "user_capital": 200000.0,
        "max_portfolio_size": 6,
        "max_position_volume_ratio": 0.10,
        "min_absolute_avg_volume": 10000,
        "chart_quality_min_score": 50.0,
        "default_target_pct": 0.10,
        "strong_buy_target_pct": 0.12,
        "excellent_target_pct": 0.15,
        "strong_buy_risk_reward": 3.0,
        "buy_risk_reward": 2.5,
        "excellent_risk_reward": 3.5,
        "default_exchange": "NSE",
        "default_product": "CNC",
        "default_order_type": "MARKET",
        "default_variety": "AMO",
        "default_validity": "DAY",
        "min_combined_score": 25,
        "news_sentiment_lookback_days": 30,
        "news_sentiment_min_articles": 2,
        "news_sentiment_pos_threshold": 0.25,
        "news_sentiment_neg_threshold": -0.25,
        "ml_confidence_threshold": 0.5,
        "default_stop_loss_pct": None,
        "ml_model_version": None,
        "task_schedule": None,
    }
    assert {k: row[k] for k in expected} == expected
    flags = {
        k: bool(row[k])
        for k in (
            "chart_quality_enabled",
            "allow_duplicate_recommendations_same_day",
            "exit_on_ema9_or_rsi50",
            "news_sentiment_enabled",
            "ml_enabled",
            "ml_combine_with_rules",
        )
    }
    assert flags == {
        "chart_quality_enabled": True,
        "allow_duplicate_recommendations_same_day": False,
        "exit_on_ema9_or_rsi50": True,
        "news_sentiment_enabled": True,
        "ml_enabled": False,
        "ml_combine_with_rules": True,
    }
    assert row["created_at"] is not None
    assert row["updated_at"] is not None


def test_raw_insert_gets_notification_defaults(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Preferences and notifications inserted by raw SQL carry the spec's defaults."""
    db.execute("INSERT INTO user_notification_preferences (user_id) VALUES (:u)", u=users["bob"])
    prefs = db.rows("SELECT * FROM user_notification_preferences")[0]
    assert [bool(prefs[k]) for k in ("telegram_enabled", "email_enabled", "in_app_enabled")] == [
        False,
        False,
        True,
    ]
    assert all(
        bool(prefs[k])
        for k in (
            "notify_service_events",
            "notify_trading_events",
            "notify_system_events",
            "notify_errors",
        )
    )
    db.execute(
        "INSERT INTO notifications (user_id, type, level, title, message) "
        "VALUES (:u, 'trading', 'info', 't', 'm')",
        u=users["bob"],
    )
    note = db.rows("SELECT * FROM notifications")[0]
    assert [bool(note[k]) for k in ("read", "telegram_sent", "email_sent", "in_app_delivered")] == [
        False,
        False,
        False,
        True,
    ]
    assert note["created_at"] is not None


def test_raw_insert_service_and_error_defaults(db: MigratedDatabase, users: dict[str, int]) -> None:
    """service_status and error_logs defaults apply to raw inserts."""
    db.execute("INSERT INTO service_status (user_id) VALUES (:u)", u=users["alice"])
    status = db.rows("SELECT service_running, error_count FROM service_status")[0]
    assert (bool(status["service_running"]), status["error_count"]) == (False, 0)
    db.execute(
        "INSERT INTO error_logs (user_id, error_type, error_message) VALUES (:u, 'E', 'm')",
        u=users["alice"],
    )
    error = db.rows("SELECT resolved, occurred_at FROM error_logs")[0]
    assert not error["resolved"]
    assert error["occurred_at"] is not None


def test_orm_defaults_match_server_defaults(db: MigratedDatabase, users: dict[str, int]) -> None:
    """ORM objects get the same defaults before they ever reach the database."""
    with db.session() as session:
        config = UserTradingConfig(user_id=users["alice"])
        prefs = UserNotificationPreferences(user_id=users["alice"])
        session.add_all([config, prefs])
        session.commit()
        assert config.rsi_period == 10
        assert config.default_variety == "AMO"
        assert prefs.in_app_enabled is True
        assert prefs.telegram_enabled is False
        assert config.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("table", "column_sql"),
    [
        ("service_status", "(user_id) VALUES (:u)"),
        ("user_trading_config", "(user_id) VALUES (:u)"),
        ("user_notification_preferences", "(user_id) VALUES (:u)"),
    ],
)
def test_one_row_per_user(
    db: MigratedDatabase, users: dict[str, int], table: str, column_sql: str
) -> None:
    """One-to-one tables refuse a second row for the same user."""
    db.execute(f"INSERT INTO {table} {column_sql}", u=users["alice"])
    with pytest.raises(IntegrityError):
        db.execute(f"INSERT INTO {table} {column_sql}", u=users["alice"])


def test_foreign_keys_enforced(db: MigratedDatabase) -> None:
    """A log row for a user that does not exist is refused."""
    with pytest.raises(IntegrityError):
        db.execute(
            "INSERT INTO service_logs (user_id, level, module, message) "
            "VALUES (999, 'INFO', 'm', 'x')"
        )


def test_activity_user_delete_sets_null(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Deleting a user keeps their activity rows with user_id set to NULL."""
    db.execute("INSERT INTO activity (user_id, type) VALUES (:u, 'login')", u=users["bob"])
    db.execute("DELETE FROM users WHERE id = :u", u=users["bob"])
    assert db.rows("SELECT user_id, type FROM activity") == [{"user_id": None, "type": "login"}]


def test_json_round_trip(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Nested JSON context comes back as written."""
    context = {
        "symbol": "RELIANCE",
        "qty": 10,
        "nested": {"ids": [1, 2, 3], "ok": True, "p": 2450.5},
    }
    with db.session() as session:
        session.add(
            ServiceLog(
                user_id=users["alice"], level="INFO", module="m", message="x", context=context
            )
        )
        session.add(Activity(user_id=users["alice"], type="t", details={"k": ["v", None]}))
        session.commit()
    with db.session() as session:
        assert session.scalars(select(ServiceLog.context)).one() == context
        assert session.scalars(select(Activity.details)).one() == {"k": ["v", None]}


def test_time_round_trip(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Quiet hours stored as TIME come back as the same wall-clock time."""
    with db.session() as session:
        session.add(
            UserNotificationPreferences(
                user_id=users["alice"], quiet_hours_start=time(22, 30), quiet_hours_end=time(7, 0)
            )
        )
        session.commit()
    with db.session() as session:
        prefs = session.scalars(select(UserNotificationPreferences)).one()
        assert (prefs.quiet_hours_start, prefs.quiet_hours_end) == (time(22, 30), time(7, 0))


def test_utc_round_trip(db: MigratedDatabase, users: dict[str, int]) -> None:
    """An IST timestamp is stored as UTC and read back aware, the same instant, on both backends."""
    ist = datetime(2026, 11, 25, 9, 15, tzinfo=IST)
    with db.session() as session:
        session.add(ServiceStatus(user_id=users["alice"], last_heartbeat=ist))
        session.commit()
    with db.session() as session:
        stored = session.scalars(select(ServiceStatus.last_heartbeat)).one()
    assert stored == ist
    assert stored is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 3
    assert stored.minute == 45


def test_naive_datetime_refused(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A naive datetime is an error, not a silent 5h30 shift."""
    with db.session() as session:
        session.add(
            ServiceStatus(user_id=users["alice"], last_heartbeat=datetime(2026, 1, 1, 9, 15))
        )
        with pytest.raises(Exception, match="naive datetime"):
            session.commit()


def test_server_default_timestamp_is_utc(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A row timestamped by the database's default reads back as the current UTC time."""
    before = datetime.now(UTC) - timedelta(seconds=5)
    db.execute(
        "INSERT INTO service_logs (user_id, level, module, message) VALUES (:u, 'INFO', 'm', 'x')",
        u=users["alice"],
    )
    with db.session() as session:
        stamp = session.scalars(select(ServiceLog.timestamp)).one()
    assert before <= stamp <= datetime.now(UTC) + timedelta(seconds=5)


def _job(session_user: int) -> MLTrainingJob:
    return MLTrainingJob(
        started_by=session_user,
        status="completed",
        model_type="verdict_classifier",
        algorithm="xgboost",
        training_data_path="/data/train.csv",
    )


def test_one_active_model_per_type(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The database refuses a second active model of one type, but allows inactive ones."""
    with db.session() as session:
        job = _job(users["admin"])
        session.add(job)
        session.flush()

        def model(version: str, active: bool, model_type: str = "verdict_classifier") -> MLModel:
            return MLModel(
                model_type=model_type,
                version=version,
                model_path=f"/models/{version}.pkl",
                training_job_id=job.id,
                created_by=users["admin"],
                is_active=active,
            )

        session.add_all(
            [model("v1.0", True), model("v1.1", False), model("v1.0", True, "price_regressor")]
        )
        session.commit()
        session.add(model("v1.2", True))
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.add(model("v1.1", False))
        with pytest.raises(IntegrityError):
            session.commit()


def test_notification_flags_default_in_orm(db: MigratedDatabase, users: dict[str, int]) -> None:
    """ORM-created notifications start unread and undelivered except in-app."""
    with db.session() as session:
        note = Notification(
            user_id=users["alice"], type="trading", level="info", title="t", message="m"
        )
        session.add(note)
        session.commit()
        assert (note.read, note.telegram_sent, note.email_sent, note.in_app_delivered) == (
            False,
            False,
            False,
            True,
        )
