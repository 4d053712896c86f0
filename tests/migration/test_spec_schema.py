"""The migrated schema against the schema spec, table by table, on SQLite and PostgreSQL.

The spec is transcribed here as data: every column with its type, length, nullability and
default, every index name with its columns, every foreign key. The migrated database is
reflected and compared; the ORM models are compared with the same data, so a default or an index
cannot exist on one side only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, DateTime, Engine, Float, Integer, String, Time, inspect

from tradelog._db.base import Base
from tradelog._db.engine import create_tradelog_engine

# kind: int | float | bool | str(N) | time | json | ts
# default: None (no default), a value, or NOW (a server default of the current time)
NOW = object()


def col(kind: str, *, null: bool = False, default: Any = None) -> tuple[str, bool, Any]:
    return kind, null, default


def _ts(*, null: bool = False) -> tuple[str, bool, Any]:
    return col("ts", null=null)


SPEC: dict[str, dict[str, tuple[str, bool, Any]]] = {
    "service_status": {
        "id": col("int"),
        "user_id": col("int"),
        "service_running": col("bool", default=False),
        "last_heartbeat": _ts(null=True),
        "last_task_execution": _ts(null=True),
        "error_count": col("int", default=0),
        "last_error": col("str(512)", null=True),
        "created_at": col("ts", default=NOW),
        "updated_at": col("ts", default=NOW),
    },
    "service_task_execution": {
        "id": col("int"),
        "user_id": col("int"),
        "task_name": col("str(64)"),
        "executed_at": col("ts", default=NOW),
        "status": col("str(16)"),
        "duration_seconds": col("float"),
        "details": col("json", null=True),
    },
    "service_logs": {
        "id": col("int"),
        "user_id": col("int"),
        "level": col("str(16)"),
        "module": col("str(128)"),
        "message": col("str(1024)"),
        "context": col("json", null=True),
        "timestamp": col("ts", default=NOW),
    },
    "error_logs": {
        "id": col("int"),
        "user_id": col("int"),
        "error_type": col("str(128)"),
        "error_message": col("str(1024)"),
        "traceback": col("str(8192)", null=True),
        "context": col("json", null=True),
        "resolved": col("bool", default=False),
        "resolved_at": _ts(null=True),
        "resolved_by": col("int", null=True),
        "resolution_notes": col("str(512)", null=True),
        "occurred_at": col("ts", default=NOW),
    },
    "user_trading_config": {
        "id": col("int"),
        "user_id": col("int"),
        "rsi_period": col("int", default=10),
        "rsi_oversold": col("float", default=30.0),
        "rsi_extreme_oversold": col("float", default=20.0),
        "rsi_near_oversold": col("float", default=40.0),
        "user_capital": col("float", default=200000.0),
        "max_portfolio_size": col("int", default=6),
        "max_position_volume_ratio": col("float", default=0.10),
        "min_absolute_avg_volume": col("int", default=10000),
        "chart_quality_enabled": col("bool", default=True),
        "chart_quality_min_score": col("float", default=50.0),
        "chart_quality_max_gap_frequency": col("float", default=25.0),
        "chart_quality_min_daily_range_pct": col("float", default=1.0),
        "chart_quality_max_extreme_candle_frequency": col("float", default=20.0),
        "default_stop_loss_pct": col("float", null=True),
        "tight_stop_loss_pct": col("float", null=True),
        "min_stop_loss_pct": col("float", null=True),
        "default_target_pct": col("float", default=0.10),
        "strong_buy_target_pct": col("float", default=0.12),
        "excellent_target_pct": col("float", default=0.15),
        "strong_buy_risk_reward": col("float", default=3.0),
        "buy_risk_reward": col("float", default=2.5),
        "excellent_risk_reward": col("float", default=3.5),
        "default_exchange": col("str(8)", default="NSE"),
        "default_product": col("str(8)", default="CNC"),
        "default_order_type": col("str(16)", default="MARKET"),
        "default_variety": col("str(8)", default="AMO"),
        "default_validity": col("str(8)", default="DAY"),
        "allow_duplicate_recommendations_same_day": col("bool", default=False),
        "exit_on_ema9_or_rsi50": col("bool", default=True),
        "min_combined_score": col("int", default=25),
        "news_sentiment_enabled": col("bool", default=True),
        "news_sentiment_lookback_days": col("int", default=30),
        "news_sentiment_min_articles": col("int", default=2),
        "news_sentiment_pos_threshold": col("float", default=0.25),
        "news_sentiment_neg_threshold": col("float", default=-0.25),
        "ml_enabled": col("bool", default=False),
        "ml_model_version": col("str(16)", null=True),
        "ml_confidence_threshold": col("float", default=0.5),
        "ml_combine_with_rules": col("bool", default=True),
        "task_schedule": col("json", null=True),
        "created_at": col("ts", default=NOW),
        "updated_at": col("ts", default=NOW),
    },
    "ml_training_jobs": {
        "id": col("int"),
        "started_by": col("int"),
        "status": col("str(16)"),
        "model_type": col("str(64)"),
        "algorithm": col("str(32)"),
        "training_data_path": col("str(512)"),
        # the spec names no default; it is filled with the current time like created_at
        "started_at": col("ts", default=NOW),
        "completed_at": _ts(null=True),
        "model_path": col("str(512)", null=True),
        "accuracy": col("float", null=True),
        "error_message": col("str(1024)", null=True),
        "logs": col("str(16384)", null=True),
    },
    "ml_models": {
        "id": col("int"),
        "model_type": col("str(64)"),
        "version": col("str(16)"),
        "model_path": col("str(512)"),
        "accuracy": col("float", null=True),
        "training_job_id": col("int"),
        "is_active": col("bool", default=False),
        "created_at": col("ts", default=NOW),
        "created_by": col("int"),
    },
    "user_notification_preferences": {
        "id": col("int"),
        "user_id": col("int"),
        "telegram_enabled": col("bool", default=False),
        "telegram_chat_id": col("str(64)", null=True),
        "email_enabled": col("bool", default=False),
        "email_address": col("str(255)", null=True),
        "in_app_enabled": col("bool", default=True),
        "notify_service_events": col("bool", default=True),
        "notify_trading_events": col("bool", default=True),
        "notify_system_events": col("bool", default=True),
        "notify_errors": col("bool", default=True),
        "quiet_hours_start": col("time", null=True),
        "quiet_hours_end": col("time", null=True),
        "created_at": col("ts", default=NOW),
        "updated_at": col("ts", default=NOW),
    },
    "notifications": {
        "id": col("int"),
        "user_id": col("int"),
        "type": col("str(32)"),
        "level": col("str(16)"),
        "title": col("str(255)"),
        "message": col("str(1024)"),
        "read": col("bool", default=False),
        "read_at": _ts(null=True),
        "created_at": col("ts", default=NOW),
        "telegram_sent": col("bool", default=False),
        "email_sent": col("bool", default=False),
        "in_app_delivered": col("bool", default=True),
    },
    "audit_logs": {
        "id": col("int"),
        "user_id": col("int"),
        "action": col("str(32)"),
        "resource_type": col("str(64)"),
        "resource_id": col("int", null=True),
        "changes": col("json", null=True),
        "ip_address": col("str(45)", null=True),
        "user_agent": col("str(512)", null=True),
        "timestamp": col("ts", default=NOW),
    },
    # 0002's additions to 0001 tables
    "orders": {
        "order_id": col("str(64)", null=True),
        "broker_order_id": col("str(64)", null=True),
    },
}

# index name -> (table, columns, unique); every index the spec lists, plus the spec's INDEXED
# column service_task_execution.executed_at (its index list forgets it) and activity.user_id.
SPEC_INDEXES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "ix_service_status_user_id": ("service_status", ("user_id",), True),
    "ix_service_task_execution_user_id": ("service_task_execution", ("user_id",), False),
    "ix_service_task_execution_task_name": ("service_task_execution", ("task_name",), False),
    "ix_service_task_execution_status": ("service_task_execution", ("status",), False),
    "ix_service_task_execution_executed_at": ("service_task_execution", ("executed_at",), False),
    "ix_service_task_user_name_time": (
        "service_task_execution",
        ("user_id", "task_name", "executed_at"),
        False,
    ),
    "ix_service_logs_user_id": ("service_logs", ("user_id",), False),
    "ix_service_logs_level": ("service_logs", ("level",), False),
    "ix_service_logs_timestamp": ("service_logs", ("timestamp",), False),
    "ix_service_logs_user_timestamp_level": (
        "service_logs",
        ("user_id", "timestamp", "level"),
        False,
    ),
    "ix_error_logs_user_id": ("error_logs", ("user_id",), False),
    "ix_error_logs_occurred_at": ("error_logs", ("occurred_at",), False),
    "ix_error_logs_resolved": ("error_logs", ("resolved",), False),
    "ix_error_logs_user_occurred_resolved": (
        "error_logs",
        ("user_id", "occurred_at", "resolved"),
        False,
    ),
    "ix_user_trading_config_user_id": ("user_trading_config", ("user_id",), True),
    "ix_ml_training_jobs_started_by": ("ml_training_jobs", ("started_by",), False),
    "ix_ml_training_jobs_status": ("ml_training_jobs", ("status",), False),
    "ix_ml_models_model_type": ("ml_models", ("model_type",), False),
    "ix_ml_models_version": ("ml_models", ("version",), False),
    "ix_ml_models_is_active": ("ml_models", ("is_active",), False),
    "ix_user_notification_preferences_user_id": (
        "user_notification_preferences",
        ("user_id",),
        True,
    ),
    "ix_notifications_user_id": ("notifications", ("user_id",), False),
    "ix_notifications_type": ("notifications", ("type",), False),
    "ix_notifications_level": ("notifications", ("level",), False),
    "ix_notifications_read": ("notifications", ("read",), False),
    "ix_notifications_created_at": ("notifications", ("created_at",), False),
    "ix_notifications_user_read_created": (
        "notifications",
        ("user_id", "read", "created_at"),
        False,
    ),
    "ix_audit_logs_user_id": ("audit_logs", ("user_id",), False),
    "ix_audit_logs_action": ("audit_logs", ("action",), False),
    "ix_audit_logs_resource_type": ("audit_logs", ("resource_type",), False),
    "ix_audit_logs_timestamp": ("audit_logs", ("timestamp",), False),
    "ix_audit_logs_user_timestamp_type": (
        "audit_logs",
        ("user_id", "timestamp", "resource_type"),
        False,
    ),
    "ix_activity_user_id": ("activity", ("user_id",), False),
}

# (table, column) -> (referred table, on delete)
SPEC_FOREIGN_KEYS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("service_status", "user_id"): ("users", None),
    ("service_task_execution", "user_id"): ("users", None),
    ("service_logs", "user_id"): ("users", None),
    ("error_logs", "user_id"): ("users", None),
    ("error_logs", "resolved_by"): ("users", None),
    ("user_trading_config", "user_id"): ("users", None),
    ("ml_training_jobs", "started_by"): ("users", None),
    ("ml_models", "training_job_id"): ("ml_training_jobs", None),
    ("ml_models", "created_by"): ("users", None),
    ("user_notification_preferences", "user_id"): ("users", None),
    ("notifications", "user_id"): ("users", None),
    ("audit_logs", "user_id"): ("users", None),
    ("activity", "user_id"): ("users", "SET NULL"),
}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_tradelog_engine(db_url)
    yield engine
    engine.dispose()


def _kind_matches(kind: str, column_type: Any, backend: str) -> bool:
    if kind.startswith("str("):
        return isinstance(column_type, String) and column_type.length == int(kind[4:-1])
    if kind == "ts":
        # SQLite has no timezone type; on PostgreSQL the column is timestamptz
        return isinstance(column_type, DateTime) and (
            backend == "sqlite" or column_type.timezone is True
        )
    expected = {"int": Integer, "float": Float, "bool": Boolean, "time": Time, "json": JSON}[kind]
    return isinstance(column_type, expected)


def _server_default(text: str | None) -> Any:
    """A reflected server default as a Python value (or NOW for the current time)."""
    if text is None:
        return None
    raw = text.strip()
    if "now()" in raw.lower() or "current_timestamp" in raw.lower():
        return NOW
    raw = re.sub(r"::[a-z ]+$", "", raw).strip()
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.startswith("'") and raw.endswith("'"):
        raw = raw[1:-1]
    for parse in (int, float):
        try:
            return parse(raw)
        except ValueError:
            pass
    return raw


def _same_default(expected: Any, found: Any, kind: str) -> bool:
    if expected is NOW or found is NOW:
        return expected is found
    if kind == "bool" and isinstance(found, int):
        found = bool(found)
    if kind == "float" and isinstance(found, int | float):
        return isinstance(expected, float) and abs(found - expected) < 1e-12
    return bool(expected == found and type(expected) is type(found))


@pytest.mark.parametrize("table", sorted(SPEC))
def test_columns_match_the_spec(engine: Engine, backend: str, table: str) -> None:
    """Types, lengths, nullability and server defaults of every spec column, as migrated."""
    reflected = {c["name"]: c for c in inspect(engine).get_columns(table)}
    problems = []
    for name, (kind, nullable, default) in SPEC[table].items():
        column = reflected.get(name)
        if column is None:
            problems.append(f"{name}: missing")
            continue
        if not _kind_matches(kind, column["type"], backend):
            problems.append(f"{name}: type {column['type']!r}, spec {kind}")
        if column["nullable"] is not nullable and name != "id":
            problems.append(f"{name}: nullable={column['nullable']}, spec {nullable}")
        if name == "id":
            continue
        found = _server_default(column.get("default"))
        if not _same_default(default, found, kind):
            problems.append(f"{name}: server default {column.get('default')!r}, spec {default!r}")
    assert problems == []


@pytest.mark.parametrize("table", sorted(SPEC))
def test_orm_defaults_match_the_spec(table: str) -> None:
    """Every spec default is also the ORM default, so ORM and raw inserts agree."""
    model_table = Base.metadata.tables[table]
    problems = []
    for name, (kind, _nullable, default) in SPEC[table].items():
        column = model_table.c[name]
        orm = column.default.arg if column.default is not None else None
        if default is NOW:
            ok = callable(orm) and column.server_default is not None
        elif default is None:
            ok = orm is None and column.server_default is None
        else:
            ok = orm == default and type(orm) is type(default) and column.server_default is not None
        if not ok:
            problems.append(f"{name}: ORM default {orm!r}, spec {default!r}")
        if kind.startswith("str("):
            assert column.type.length == int(kind[4:-1]), name
    assert problems == []


def test_indexes_match_the_spec(engine: Engine) -> None:
    """Each spec index exists under its spec name, on the spec columns, with its uniqueness."""
    inspector = inspect(engine)
    found: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    for table in {t for t, _, _ in SPEC_INDEXES.values()}:
        for index in inspector.get_indexes(table):
            found[index["name"]] = (table, tuple(index["column_names"]), bool(index["unique"]))
    missing = {name: spec for name, spec in SPEC_INDEXES.items() if found.get(name) != spec}
    assert missing == {}


def test_unique_constraints(engine: Engine) -> None:
    """``uq_ml_models_type_version`` over (model_type, version) and the one-active-model index."""
    inspector = inspect(engine)
    unique = {
        u["name"]: tuple(u["column_names"]) for u in inspector.get_unique_constraints("ml_models")
    }
    assert unique["uq_ml_models_type_version"] == ("model_type", "version")
    partial = {i["name"]: i for i in inspector.get_indexes("ml_models")}
    assert partial["uq_ml_models_one_active_per_type"]["unique"]
    assert partial["uq_ml_models_one_active_per_type"]["column_names"] == ["model_type"]


def test_foreign_keys_match_the_spec(engine: Engine) -> None:
    """Every spec relationship is a foreign key (activity's with ON DELETE SET NULL)."""
    inspector = inspect(engine)
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    for table in {t for t, _ in SPEC_FOREIGN_KEYS}:
        for fk in inspector.get_foreign_keys(table):
            ondelete = (fk.get("options") or {}).get("ondelete")
            found[(table, fk["constrained_columns"][0])] = (
                fk["referred_table"],
                ondelete.upper() if ondelete else None,
            )
    assert {key: found.get(key) for key in SPEC_FOREIGN_KEYS} == SPEC_FOREIGN_KEYS


def test_no_columns_beyond_spec_and_documented_additions(engine: Engine) -> None:
    """Spec tables carry only spec columns plus the additions later migrations document."""
    additions = {
        "error_logs": {"fingerprint"},
        "user_notification_preferences": {"timezone", "quiet_hours_mode"},
        "notifications": {"dedupe_key", "full_message"},
    }
    inspector = inspect(engine)
    extra = {}
    for table, columns in SPEC.items():
        if table == "orders":
            continue
        names = {c["name"] for c in inspector.get_columns(table)}
        surplus = names - set(columns) - additions.get(table, set())
        if surplus:
            extra[table] = surplus
    assert extra == {}
