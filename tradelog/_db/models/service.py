"""``service_status`` and ``service_task_execution``: per-user service health;
``service_stale_episodes`` (added by ``0005_error_groups``): when a running service stopped
sending heartbeats, and when that ended."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, UniqueConstraint, false, func
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


class ServiceStaleEpisode(Base):
    """One stretch of time a running service sent no heartbeat past the threshold.

    An episode is named by the user and the heartbeat it went stale after (``since``), so
    several monitoring processes agree on it: the first to insert it alerts, the others find it.
    ``ended_at`` is set (once, by whoever sees it first) when heartbeats resume
    (``ended_by = 'recovered'``) or the service is marked stopped (``'stopped'``).
    """

    __tablename__ = "service_stale_episodes"
    __table_args__ = (UniqueConstraint("user_id", "since"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    ended_by: Mapped[str | None] = mapped_column(String(16))
