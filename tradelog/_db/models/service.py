"""``service_status`` and ``service_task_execution``: per-user service health."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, false, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, updated_at, user_fk, utcnow


class ServiceStatus(Base):
    """Running state and health of one user's trading service (one row per user)."""

    __tablename__ = "service_status"

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk(unique=True)
    service_running: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_task_execution: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class ServiceTaskExecution(Base):
    """One run of a scheduled task for a user."""

    __tablename__ = "service_task_execution"
    __table_args__ = (
        Index("ix_service_task_user_name_time", "user_id", "task_name", "executed_at"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    task_name: Mapped[str] = mapped_column(String(64), index=True)
    # The spec marks executed_at INDEXED; the composite ix_service_task_user_name_time only
    # serves queries that pin user_id first, not "recent executions across users" by time.
    executed_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )
    status: Mapped[str] = mapped_column(String(16), index=True)
    duration_seconds: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON())
