"""Dialect helpers shared by the notification modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

__all__ = ["upsert"]


def upsert(session: Session, model: Any) -> Any:
    """An ``INSERT`` for ``model`` that supports ``on_conflict_do_nothing`` on this backend."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)
