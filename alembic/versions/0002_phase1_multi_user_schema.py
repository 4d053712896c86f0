"""Phase 1.1 multi-user schema: service health, logs, errors, trading config, ML registry,
notification preferences and history, audit trail; orders and activity changes.

Revision ID: 0002_phase1
Revises: 0001_initial
Create Date: 2025-01-15
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0002_phase1"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _id(table: str) -> list[Any]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    ]


def _fk(table: str, column: str, target: str = "users") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def _user(table: str) -> list[Any]:
    return [sa.Column("user_id", sa.Integer(), nullable=False), _fk(table, "user_id")]


def _now(name: str) -> sa.Column[Any]:
    return sa.Column(name, TS, server_default=sa.func.now(), nullable=False)


def _flag(name: str, default: bool) -> sa.Column[Any]:
    return sa.Column(
        name, sa.Boolean(), server_default=sa.true() if default else sa.false(), nullable=False
    )


def _float(name: str, default: float) -> sa.Column[Any]:
    return sa.Column(name, sa.Float(), server_default=repr(float(default)), nullable=False)


def _int(name: str, default: int) -> sa.Column[Any]:
    return sa.Column(name, sa.Integer(), server_default=str(default), nullable=False)


def _str(name: str, length: int, default: str) -> sa.Column[Any]:
    return sa.Column(name, sa.String(length), server_default=default, nullable=False)


def upgrade() -> None:
    # --- modified tables -------------------------------------------------------------------
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("order_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("broker_order_id", sa.String(64), nullable=True))
    with op.batch_alter_table("activity") as batch:
        batch.create_foreign_key(
            "fk_activity_user_id_users", "users", ["user_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index("ix_activity_user_id", "activity", ["user_id"])

    # --- 1. service_status ------------------------------------------------------------------
    op.create_table(
        "service_status",
        *_id("service_status"),
        *_user("service_status"),
        _flag("service_running", False),
        sa.Column("last_heartbeat", TS, nullable=True),
        sa.Column("last_task_execution", TS, nullable=True),
        _int("error_count", 0),
        sa.Column("last_error", sa.String(512), nullable=True),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_service_status_user_id", "service_status", ["user_id"], unique=True)

    # --- 2. service_task_execution ----------------------------------------------------------
    op.create_table(
        "service_task_execution",
        *_id("service_task_execution"),
        *_user("service_task_execution"),
        sa.Column("task_name", sa.String(64), nullable=False),
        _now("executed_at"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
    )
    op.create_index("ix_service_task_execution_user_id", "service_task_execution", ["user_id"])
    op.create_index("ix_service_task_execution_task_name", "service_task_execution", ["task_name"])
    op.create_index(
        "ix_service_task_execution_executed_at", "service_task_execution", ["executed_at"]
    )
    op.create_index("ix_service_task_execution_status", "service_task_execution", ["status"])
    op.create_index(
        "ix_service_task_user_name_time",
        "service_task_execution",
        ["user_id", "task_name", "executed_at"],
    )

    # --- 3. service_logs --------------------------------------------------------------------
    op.create_table(
        "service_logs",
        *_id("service_logs"),
        *_user("service_logs"),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("module", sa.String(128), nullable=False),
        sa.Column("message", sa.String(1024), nullable=False),
        sa.Column("context", sa.JSON(), nullable=True),
        _now("timestamp"),
    )
    op.create_index("ix_service_logs_user_id", "service_logs", ["user_id"])
    op.create_index("ix_service_logs_level", "service_logs", ["level"])
    op.create_index("ix_service_logs_timestamp", "service_logs", ["timestamp"])
    op.create_index(
        "ix_service_logs_user_timestamp_level", "service_logs", ["user_id", "timestamp", "level"]
    )

    # --- 4. error_logs ----------------------------------------------------------------------
    op.create_table(
        "error_logs",
        *_id("error_logs"),
        *_user("error_logs"),
        sa.Column("error_type", sa.String(128), nullable=False),
        sa.Column("error_message", sa.String(1024), nullable=False),
        sa.Column("traceback", sa.String(8192), nullable=True),
        sa.Column("context", sa.JSON(), nullable=True),
        _flag("resolved", False),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("resolution_notes", sa.String(512), nullable=True),
        _now("occurred_at"),
        _fk("error_logs", "resolved_by"),
    )
    op.create_index("ix_error_logs_user_id", "error_logs", ["user_id"])
    op.create_index("ix_error_logs_occurred_at", "error_logs", ["occurred_at"])
    op.create_index("ix_error_logs_resolved", "error_logs", ["resolved"])
    op.create_index(
        "ix_error_logs_user_occurred_resolved", "error_logs", ["user_id", "occurred_at", "resolved"]
    )

    # --- 5. user_trading_config -------------------------------------------------------------
    op.create_table(
        "user_trading_config",
        *_id("user_trading_config"),
        *_user("user_trading_config"),
        _int("rsi_period", 10),
        _float("rsi_oversold", 30.0),
        _float("rsi_extreme_oversold", 20.0),
        _float("rsi_near_oversold", 40.0),
        _float("user_capital", 200000.0),
        _int("max_portfolio_size", 6),
        _float("max_position_volume_ratio", 0.10),
        _int("min_absolute_avg_volume", 10000),
        _flag("chart_quality_enabled", True),
        _float("chart_quality_min_score", 50.0),
        _float("chart_quality_max_gap_frequency", 25.0),
        _float("chart_quality_min_daily_range_pct", 1.0),
        _float("chart_quality_max_extreme_candle_frequency", 20.0),
        sa.Column("default_stop_loss_pct", sa.Float(), nullable=True),
        sa.Column("tight_stop_loss_pct", sa.Float(), nullable=True),
        sa.Column("min_stop_loss_pct", sa.Float(), nullable=True),
        _float("default_target_pct", 0.10),
        _float("strong_buy_target_pct", 0.12),
        _float("excellent_target_pct", 0.15),
        _float("strong_buy_risk_reward", 3.0),
        _float("buy_risk_reward", 2.5),
        _float("excellent_risk_reward", 3.5),
        _str("default_exchange", 8, "NSE"),
        _str("default_product", 8, "CNC"),
        _str("default_order_type", 16, "MARKET"),
        _str("default_variety", 8, "AMO"),
        _str("default_validity", 8, "DAY"),
        _flag("allow_duplicate_recommendations_same_day", False),
        _flag("exit_on_ema9_or_rsi50", True),
        _int("min_combined_score", 25),
        _flag("news_sentiment_enabled", True),
        _int("news_sentiment_lookback_days", 30),
        _int("news_sentiment_min_articles", 2),
        _float("news_sentiment_pos_threshold", 0.25),
        _float("news_sentiment_neg_threshold", -0.25),
        _flag("ml_enabled", False),
        sa.Column("ml_model_version", sa.String(16), nullable=True),
        _float("ml_confidence_threshold", 0.5),
        _flag("ml_combine_with_rules", True),
        sa.Column("task_schedule", sa.JSON(), nullable=True),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index(
        "ix_user_trading_config_user_id", "user_trading_config", ["user_id"], unique=True
    )

    # --- 6. ml_training_jobs ----------------------------------------------------------------
    op.create_table(
        "ml_training_jobs",
        *_id("ml_training_jobs"),
        sa.Column("started_by", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model_type", sa.String(64), nullable=False),
        sa.Column("algorithm", sa.String(32), nullable=False),
        sa.Column("training_data_path", sa.String(512), nullable=False),
        _now("started_at"),
        sa.Column("completed_at", TS, nullable=True),
        sa.Column("model_path", sa.String(512), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("error_message", sa.String(1024), nullable=True),
        sa.Column("logs", sa.String(16384), nullable=True),
        _fk("ml_training_jobs", "started_by"),
    )
    op.create_index("ix_ml_training_jobs_started_by", "ml_training_jobs", ["started_by"])
    op.create_index("ix_ml_training_jobs_status", "ml_training_jobs", ["status"])

    # --- 7. ml_models -----------------------------------------------------------------------
    op.create_table(
        "ml_models",
        *_id("ml_models"),
        sa.Column("model_type", sa.String(64), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("model_path", sa.String(512), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("training_job_id", sa.Integer(), nullable=False),
        _flag("is_active", False),
        _now("created_at"),
        sa.Column("created_by", sa.Integer(), nullable=False),
        _fk("ml_models", "training_job_id", "ml_training_jobs"),
        _fk("ml_models", "created_by"),
        sa.UniqueConstraint("model_type", "version", name="uq_ml_models_type_version"),
    )
    op.create_index("ix_ml_models_model_type", "ml_models", ["model_type"])
    op.create_index("ix_ml_models_version", "ml_models", ["version"])
    op.create_index("ix_ml_models_is_active", "ml_models", ["is_active"])
    op.create_index(
        "uq_ml_models_one_active_per_type",
        "ml_models",
        ["model_type"],
        unique=True,
        sqlite_where=sa.text("is_active"),
        postgresql_where=sa.text("is_active"),
    )

    # --- 8. user_notification_preferences ---------------------------------------------------
    op.create_table(
        "user_notification_preferences",
        *_id("user_notification_preferences"),
        *_user("user_notification_preferences"),
        _flag("telegram_enabled", False),
        sa.Column("telegram_chat_id", sa.String(64), nullable=True),
        _flag("email_enabled", False),
        sa.Column("email_address", sa.String(255), nullable=True),
        _flag("in_app_enabled", True),
        _flag("notify_service_events", True),
        _flag("notify_trading_events", True),
        _flag("notify_system_events", True),
        _flag("notify_errors", True),
        sa.Column("quiet_hours_start", sa.Time(), nullable=True),
        sa.Column("quiet_hours_end", sa.Time(), nullable=True),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index(
        "ix_user_notification_preferences_user_id",
        "user_notification_preferences",
        ["user_id"],
        unique=True,
    )

    # --- 9. notifications -------------------------------------------------------------------
    op.create_table(
        "notifications",
        *_id("notifications"),
        *_user("notifications"),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("message", sa.String(1024), nullable=False),
        _flag("read", False),
        sa.Column("read_at", TS, nullable=True),
        _now("created_at"),
        _flag("telegram_sent", False),
        _flag("email_sent", False),
        _flag("in_app_delivered", True),
    )
    op.create_index("ix_notifications_user_id", "notifications", ["user_id"])
    op.create_index("ix_notifications_type", "notifications", ["type"])
    op.create_index("ix_notifications_level", "notifications", ["level"])
    op.create_index("ix_notifications_read", "notifications", ["read"])
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_index(
        "ix_notifications_user_read_created", "notifications", ["user_id", "read", "created_at"]
    )

    # --- 10. audit_logs ---------------------------------------------------------------------
    op.create_table(
        "audit_logs",
        *_id("audit_logs"),
        *_user("audit_logs"),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.Integer(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=True),
        sa.Column("ip_address", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.String(512), nullable=True),
        _now("timestamp"),
    )
    op.create_index("ix_audit_logs_user_id", "audit_logs", ["user_id"])
    op.create_index("ix_audit_logs_action", "audit_logs", ["action"])
    op.create_index("ix_audit_logs_resource_type", "audit_logs", ["resource_type"])
    op.create_index("ix_audit_logs_timestamp", "audit_logs", ["timestamp"])
    op.create_index(
        "ix_audit_logs_user_timestamp_type", "audit_logs", ["user_id", "timestamp", "resource_type"]
    )


def downgrade() -> None:
    for table in (
        "audit_logs",
        "notifications",
        "user_notification_preferences",
        "ml_models",
        "ml_training_jobs",
        "user_trading_config",
        "error_logs",
        "service_logs",
        "service_task_execution",
        "service_status",
    ):
        op.drop_table(table)
    op.drop_index("ix_activity_user_id", table_name="activity")
    with op.batch_alter_table("activity") as batch:
        batch.drop_constraint("fk_activity_user_id_users", type_="foreignkey")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("broker_order_id")
        batch.drop_column("order_id")
