"""``service_logs``: structured log events, one row per event that names a user."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, intpk, user_fk, utcnow


class ServiceLog(Base):
    """A structured log event scoped to a user."""

    __tablename__ = "service_logs"
    __table_args__ = (
        Index("ix_service_logs_user_timestamp_level", "user_id", "timestamp", "level"),
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
