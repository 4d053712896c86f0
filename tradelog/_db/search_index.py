"""The keyword-search indexes of ``service_logs`` on PostgreSQL: on (the default) or off.

Revision ``0008_log_search_index`` builds two trigram GIN indexes, over ``message`` and
``context::text``, where the ``pg_trgm`` extension is available, so a keyword search
(``ILIKE '%word%'``) reads only the rows that hold the word. Every inserted row pays for them:
PostgreSQL extracts and files each trigram of both texts. Reading 200,000 built rows from a
file itself (``COPY ... FROM 'file'``, no client in the loop), one server process took 82,725
rows/s with them and 141,222 without (``bench/caller_bench.py`` prints both). A service that
logs more than it searches can turn them off (``tradelog db search-index off``): keyword
searches then read the user's rows in the time range (the user/time index still narrows
them), and the inserts cost what the remaining B-tree indexes cost. ``on`` builds them again.

Both commands take a lock that blocks writes to ``service_logs`` while they run (building takes
minutes on tens of millions of rows; the log writers spool meanwhile and replay after): run
them outside market hours. On a partitioned ``service_logs`` the indexes are dropped and built
on every partition.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Connection, text

__all__ = ["SEARCH_INDEXES", "SearchIndexUnavailable", "build", "drop", "state"]

SEARCH_INDEXES: Final = {
    "ix_service_logs_message_trgm": "message",
    "ix_service_logs_context_trgm": "(context::text)",
}
"""The indexes by name, with the expression each covers (as revision 0008 builds them)."""


class SearchIndexUnavailable(Exception):
    """The database cannot have the keyword-search indexes (not PostgreSQL, or no
    ``pg_trgm``)."""


def state(connection: Connection) -> str:
    """``on`` (both indexes exist), ``off`` (neither), ``partial``, or ``unavailable`` (not
    PostgreSQL, or ``pg_trgm`` neither installed nor available to install)."""
    if connection.dialect.name != "postgresql":
        return "unavailable"
    present = _present(connection)
    if len(present) == len(SEARCH_INDEXES):
        return "on"
    if present:
        return "partial"
    return "off" if _trigram_available(connection) else "unavailable"


def drop(connection: Connection) -> list[str]:
    """Drop the indexes that exist; returns their names."""
    if connection.dialect.name != "postgresql":
        return []
    present = _present(connection)
    for name in present:
        connection.execute(text(f'DROP INDEX IF EXISTS "{name}"'))
    return present


def build(connection: Connection) -> list[str]:
    """Build the indexes that are missing (creating ``pg_trgm`` when it is available but not
    installed); returns their names. Raises :class:`SearchIndexUnavailable` where they
    cannot exist. The build is not bound by the engine's statement timeout."""
    if connection.dialect.name != "postgresql":
        raise SearchIndexUnavailable("the keyword-search indexes need PostgreSQL")
    schema = _trigram_schema(connection)
    if schema is None:
        raise SearchIndexUnavailable(
            "the pg_trgm extension is not available on this PostgreSQL server"
        )
    connection.execute(text("SET LOCAL statement_timeout = 0"))
    present = set(_present(connection))
    built = []
    for name, expression in SEARCH_INDEXES.items():
        if name in present:
            continue
        connection.execute(
            text(
                f'CREATE INDEX IF NOT EXISTS "{name}" ON service_logs'
                f' USING gin ({expression} "{schema}".gin_trgm_ops)'
            )
        )
        built.append(name)
    return built


def _present(connection: Connection) -> list[str]:
    """The search indexes on ``service_logs`` in the connection's current schema."""
    rows = connection.execute(
        text(
            "SELECT i.relname FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_class t ON t.oid = x.indrelid"
            " JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE t.relname = 'service_logs' AND n.nspname = current_schema()"
        )
    )
    names = {str(row[0]) for row in rows}
    return [name for name in SEARCH_INDEXES if name in names]


def _trigram_schema(connection: Connection) -> str | None:
    """The schema holding ``pg_trgm`` (created when available but missing), or None."""
    query = text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    )
    installed = connection.execute(query).scalar()
    if installed is None:
        if not _trigram_available(connection):
            return None
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
        installed = connection.execute(query).scalar()
    return str(installed) if installed is not None else None


def _trigram_available(connection: Connection) -> bool:
    """Whether ``pg_trgm`` is installed or may be installed on this server."""
    return bool(
        connection.execute(
            text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        ).scalar()
    )
