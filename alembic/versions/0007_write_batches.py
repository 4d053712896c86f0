"""Write batches: the ids of batches committed into ``service_logs`` and ``error_logs``.

A writer claims a batch's id in the same transaction as the batch's rows. A batch whose commit
was never acknowledged (the connection dropped after PostgreSQL committed), or that a killed
process was replaying from its spool, is kept with its id; replaying it claims the id again,
finds it taken and skips the rows. Rows are pruned by retention once no spool can still hold
their batch.

Revision ID: 0007_write_batches
Revises: 0006_system_user_flag
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007_write_batches"
down_revision: str | None = "0006_system_user_flag"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tradelog_write_batches",
        sa.Column("batch_id", sa.String(length=96), nullable=False),
        sa.Column(
            "committed_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_tradelog_write_batches")),
    )
    op.create_index(
        op.f("ix_tradelog_write_batches_committed_at"),
        "tradelog_write_batches",
        ["committed_at"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_tradelog_write_batches_committed_at"), table_name="tradelog_write_batches"
    )
    op.drop_table("tradelog_write_batches")
