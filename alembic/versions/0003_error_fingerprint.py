"""Error fingerprints: group occurrences of the same error.

Revision ID: 0003_error_fingerprint
Revises: 0002_phase1
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003_error_fingerprint"
down_revision: str | None = "0002_phase1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("error_logs") as batch:
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index("ix_error_logs_fingerprint", "error_logs", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_error_logs_fingerprint", table_name="error_logs")
    with op.batch_alter_table("error_logs") as batch:
        batch.drop_column("fingerprint")
