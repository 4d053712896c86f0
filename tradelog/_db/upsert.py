"""Dialect-aware ``INSERT`` statements that support ``ON CONFLICT``, and the ``service_status``
upsert that error capture and service health share.

SQLAlchemy's generic ``insert()`` has no ``ON CONFLICT`` clause; PostgreSQL's and SQLite's
dialect inserts do, with the same API. :func:`dialect_insert` picks the right one for a session
or engine, so table code states its conflict rule once for both backends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tradelog._db.models import ServiceStatus

__all__ = ["LAST_ERROR_LENGTH", "dialect_insert", "upsert_status"]

LAST_ERROR_LENGTH = 512


def _dialect(bind: Session | Engine | Connection) -> str:
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def dialect_insert(bind: Session | Engine | Connection, model: Any) -> Any:
    """An ``INSERT`` into ``model`` with ``on_conflict_do_nothing``/``on_conflict_do_update``.

    PostgreSQL gets its dialect insert; SQLite (the only other backend tradelog runs on) its own.
    """
    if _dialect(bind) == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def upsert_status(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    running: bool | None = None,
    heartbeat: datetime | None = None,
    task_at: datetime | None = None,
    errors: int = 0,
    last_error: str | None = None,
) -> None:
    """Create or update ``user_id``'s ``service_status`` row in ``session``'s transaction.

    One ``INSERT ... ON CONFLICT (user_id) DO UPDATE``, so concurrent writers never collide.
    ``errors`` is added to ``error_count`` atomically in the database; the other values are set
    when given. The caller commits.
    """
    values: dict[str, Any] = {"updated_at": now}
    if running is not None:
        values["service_running"] = running
    if heartbeat is not None:
        values["last_heartbeat"] = heartbeat
    if task_at is not None:
        values["last_task_execution"] = task_at
    if last_error is not None:
        values["last_error"] = last_error[:LAST_ERROR_LENGTH]
    statement = dialect_insert(session, ServiceStatus).values(
        user_id=user_id, created_at=now, error_count=errors, **values
    )
    changes: dict[str, Any] = dict(values)
    if errors:
        changes["error_count"] = ServiceStatus.error_count + statement.excluded.error_count
    session.execute(statement.on_conflict_do_update(index_elements=["user_id"], set_=changes))
