"""The system user is recognised by a flag no host sets by accident: ``users.is_system``.

At most one row may carry it (a partial unique index, on SQLite and PostgreSQL). The system user
earlier installs created - the inactive admin ``system@tradelog.invalid`` with the unusable
password hash ``!`` - gets the flag; a host account that merely uses that e-mail does not.

Revision ID: 0006_system_user_flag
Revises: 0005_error_groups
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006_system_user_flag"
down_revision: str | None = "0005_error_groups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONLY_FLAGGED = sa.text("is_system")


def upgrade() -> None:
    # ALTER TABLE ... ADD COLUMN in place on both databases: a batch copy of users (SQLite)
    # would drop the table every other table refers to.
    op.add_column(
        "users", sa.Column("is_system", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index(
        "uq_users_is_system",
        "users",
        ["is_system"],
        unique=True,
        sqlite_where=_ONLY_FLAGGED,
        postgresql_where=_ONLY_FLAGGED,
    )
    users = sa.table(
        "users",
        sa.column("email", sa.String()),
        sa.column("role", sa.String()),
        sa.column("password_hash", sa.String()),
        sa.column("is_active", sa.Boolean()),
        sa.column("is_system", sa.Boolean()),
    )
    op.execute(
        users.update()
        .where(
            users.c.email == "system@tradelog.invalid",
            users.c.role == "admin",
            users.c.password_hash == "!",  # noqa: S105 - the unusable hash, not a password
            users.c.is_active == sa.false(),
        )
        .values(is_system=True)
    )


def downgrade() -> None:
    op.drop_index("uq_users_is_system", table_name="users")
    if op.get_bind().dialect.name == "sqlite":
        # In place (SQLite 3.35+): a batch copy of users would have to drop the table every
        # other table refers to, which foreign keys forbid while rows refer to it.
        op.execute("ALTER TABLE users DROP COLUMN is_system")
        return
    op.drop_column("users", "is_system")
