"""Notification outbox: per-channel deliveries, dedupe keys, user timezone and quiet-hours mode,
full message text and the shared Telegram rate-limit state.

Revision ID: 0004_notification_outbox
Revises: 0003_error_fingerprint
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004_notification_outbox"
down_revision: str | None = "0003_error_fingerprint"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("user_notification_preferences") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(64), server_default="Asia/Kolkata", nullable=False)
        )
        batch.add_column(
            sa.Column("quiet_hours_mode", sa.String(8), server_default="defer", nullable=False)
        )

    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(128), nullable=True))
        batch.add_column(sa.Column("full_message", sa.Text(), nullable=True))
    op.create_index(
        "ix_notifications_user_id_dedupe_key",
        "notifications",
        ["user_id", "dedupe_key"],
        unique=True,
    )

    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", TS, nullable=True),
        sa.Column("next_attempt_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("silent", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("parts_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(1024), nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("digest_id", sa.Integer(), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", TS, nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notification_deliveries"),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name="fk_notification_deliveries_notification_id_notifications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_notification_deliveries_user_id_users"
        ),
        sa.ForeignKeyConstraint(
            ["digest_id"],
            ["notification_deliveries.id"],
            name="fk_notification_deliveries_digest_id_notification_deliveries",
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint(
            "notification_id",
            "channel",
            name="uq_notification_deliveries_notification_id_channel",
        ),
    )
    op.create_index(
        "ix_notification_deliveries_status_next_attempt_at",
        "notification_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_notification_deliveries_user_channel_status",
        "notification_deliveries",
        ["user_id", "channel", "status"],
    )

    op.create_table(
        "notification_rate_limits",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_notification_rate_limits"),
    )


def downgrade() -> None:
    op.drop_table("notification_rate_limits")
    op.drop_index(
        "ix_notification_deliveries_user_channel_status", table_name="notification_deliveries"
    )
    op.drop_index(
        "ix_notification_deliveries_status_next_attempt_at", table_name="notification_deliveries"
    )
    op.drop_table("notification_deliveries")
    op.drop_index("ix_notifications_user_id_dedupe_key", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("full_message")
        batch.drop_column("dedupe_key")
    with op.batch_alter_table("user_notification_preferences") as batch:
        batch.drop_column("quiet_hours_mode")
        batch.drop_column("timezone")
