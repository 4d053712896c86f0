"""Error groups with a status (new, regressed, resolved, ignored) and stale-service episodes.

Only adds tables: ``error_groups`` (one row per fingerprint) and ``service_stale_episodes``.
Existing fingerprints become groups: unresolved when any occurrence is, else resolved at the
latest resolution.

Revision ID: 0005_error_groups
Revises: 0004_notification_outbox
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005_error_groups"
down_revision: str | None = "0004_notification_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "error_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("error_type", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), server_default="unresolved", nullable=False),
        sa.Column("substatus", sa.String(16), nullable=True),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("times_seen", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error_id", sa.Integer(), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("regressed_at", TS, nullable=True),
        sa.Column("last_alert_at", TS, nullable=True),
        sa.Column("alerts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_error_groups"),
        sa.UniqueConstraint("fingerprint", name="uq_error_groups_fingerprint"),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["users.id"],
            name="fk_error_groups_resolved_by_users",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "status IN ('unresolved', 'resolved', 'ignored')", name="ck_error_groups_status"
        ),
        sa.CheckConstraint(
            "substatus IS NULL OR substatus IN ('new', 'ongoing', 'regressed')",
            name="ck_error_groups_substatus",
        ),
    )
    op.create_index("ix_error_groups_status", "error_groups", ["status"])
    op.create_index("ix_error_groups_last_seen", "error_groups", ["last_seen"])
    _backfill_groups()

    op.create_table(
        "service_stale_episodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_by", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_service_stale_episodes"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_service_stale_episodes_user_id_users"
        ),
        sa.UniqueConstraint("user_id", "since", name="uq_service_stale_episodes_user_id_since"),
    )
    op.create_index("ix_service_stale_episodes_user_id", "service_stale_episodes", ["user_id"])
    op.create_index("ix_service_stale_episodes_ended_at", "service_stale_episodes", ["ended_at"])


def _backfill_groups() -> None:
    """One group per fingerprint already stored."""
    op.execute(
        """
        INSERT INTO error_groups (
            fingerprint, error_type, status, substatus, first_seen, last_seen, times_seen,
            last_error_id, resolved_at, alerts
        )
        SELECT
            e.fingerprint,
            MIN(e.error_type),
            CASE WHEN SUM(CASE WHEN e.resolved THEN 0 ELSE 1 END) > 0
                 THEN 'unresolved' ELSE 'resolved' END,
            CASE WHEN SUM(CASE WHEN e.resolved THEN 0 ELSE 1 END) > 0
                 THEN 'ongoing' ELSE NULL END,
            MIN(e.occurred_at),
            MAX(e.occurred_at),
            COUNT(*),
            MAX(e.id),
            MAX(e.resolved_at),
            0
        FROM error_logs e
        WHERE e.fingerprint IS NOT NULL
        GROUP BY e.fingerprint
        """
    )


def downgrade() -> None:
    op.drop_index("ix_service_stale_episodes_ended_at", table_name="service_stale_episodes")
    op.drop_index("ix_service_stale_episodes_user_id", table_name="service_stale_episodes")
    op.drop_table("service_stale_episodes")
    op.drop_index("ix_error_groups_last_seen", table_name="error_groups")
    op.drop_index("ix_error_groups_status", table_name="error_groups")
    op.drop_table("error_groups")
