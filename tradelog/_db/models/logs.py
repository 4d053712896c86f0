"""``service_logs``: structured log events, one row per event that names a user.

On PostgreSQL with ``pg_trgm``, two trigram GIN indexes (``message`` and ``context::text``,
revision ``0008_log_search_index``) serve keyword searches; they exist on PostgreSQL only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, cast, column, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, intpk, user_fk, utcnow


class ServiceLog(Base):
    """A structured log event scoped to a user."""

    __tablename__ = "service_logs"
    __table_args__ = (
        Index("ix_service_logs_user_timestamp_level", "user_id", "timestamp", "level"),
        Index(
            "ix_service_logs_message_trgm",
            "message",
            postgresql_using="gin",
            postgresql_ops={"message": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        Index(
            "ix_service_logs_context_trgm",
            cast(column("context"), Text).label("context_text"),
            postgresql_using="gin",
            postgresql_ops={"context_text": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    level: Mapped[str] = mapped_column(String(16), index=True)
    module: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(String(1024))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    timestamp: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )
