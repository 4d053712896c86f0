"""``error_logs``: captured exceptions with a resolution workflow."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, false, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, intpk, user_fk, utcnow


class ErrorLog(Base):
    """One captured exception for a user."""

    __tablename__ = "error_logs"
    __table_args__ = (
        Index("ix_error_logs_user_occurred_resolved", "user_id", "occurred_at", "resolved"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    error_type: Mapped[str] = mapped_column(String(128))
    error_message: Mapped[str] = mapped_column(String(1024))
    traceback: Mapped[str | None] = mapped_column(String(8192))
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    resolved: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution_notes: Mapped[str | None] = mapped_column(String(512))
    occurred_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )
    # added by 0003_error_fingerprint
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
