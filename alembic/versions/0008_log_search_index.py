"""Indexes for reads at scale: keyword search, the notification inbox, error group samples.

- ``ix_service_logs_message_trgm`` and ``ix_service_logs_context_trgm`` (PostgreSQL with the
  ``pg_trgm`` extension available): trigram GIN indexes over ``message`` and ``context::text``,
  so a keyword search (``ILIKE '%word%'``) finds its rows without reading every row of the
  user's month. The extension is created when missing (it is a trusted extension: the database
  owner may). Where it is not available the indexes are left out and keyword searches scan the
  user's rows as before; SQLite has neither.
- ``ix_notifications_user_created_id`` (user_id, created_at, id): the inbox page, newest first,
  read and unread together, without sorting every notification of the user.
- ``ix_error_logs_fingerprint_occurred_id`` (fingerprint, occurred_at, id): the newest sample
  message of each error group without reading every occurrence of the fingerprint.

Building the indexes holds a write lock on each table for the build (on 10M ``service_logs``
rows: minutes, so the migration lifts ``statement_timeout`` for its own transaction). Log
writers keep accepting events meanwhile (their spool takes what the database cannot); run the
upgrade outside market hours.

Revision ID: 0008_log_search_index
Revises: 0007_write_batches
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008_log_search_index"
down_revision: str | None = "0007_write_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGRAM_INDEXES = {
    "ix_service_logs_message_trgm": "message",
    "ix_service_logs_context_trgm": "(context::text)",
}


def _trigram_schema(bind: sa.Connection) -> str | None:
    """The schema holding ``pg_trgm`` (created when missing), or None without the extension."""
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).scalar()
    if not available:
        return None
    installed = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE e.extname = 'pg_trgm'"
        )
    ).scalar()
    if installed is None:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        installed = bind.execute(
            sa.text(
                "SELECT n.nspname FROM pg_extension e"
                " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            )
        ).scalar()
    return str(installed) if installed is not None else None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The builds take minutes on a large table: longer than the statement bound tradelog's
        # engines carry (TRADELOG_DB_STATEMENT_TIMEOUT); this migration's transaction only.
        op.execute("SET LOCAL statement_timeout = 0")
    op.create_index(
        "ix_notifications_user_created_id", "notifications", ["user_id", "created_at", "id"]
    )
    op.create_index(
        "ix_error_logs_fingerprint_occurred_id", "error_logs", ["fingerprint", "occurred_at", "id"]
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = _trigram_schema(bind)
    if schema is None:
        return
    for name, expression in TRIGRAM_INDEXES.items():
        op.execute(
            f'CREATE INDEX IF NOT EXISTS "{name}" ON service_logs'
            f' USING gin ({expression} "{schema}".gin_trgm_ops)'
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAM_INDEXES:
            op.execute(f'DROP INDEX IF EXISTS "{name}"')
    op.drop_index("ix_error_logs_fingerprint_occurred_id", table_name="error_logs")
    op.drop_index("ix_notifications_user_created_id", table_name="notifications")
