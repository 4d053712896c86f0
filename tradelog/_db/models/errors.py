"""``error_logs``: captured exceptions with a resolution workflow; ``error_groups``: one row per
fingerprint with the group's status (added by ``0005_error_groups``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, false, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, updated_at, user_fk, utcnow

GROUP_STATUSES = ("unresolved", "resolved", "ignored")
GROUP_SUBSTATUSES = ("new", "ongoing", "regressed")


class ErrorLog(Base):
    """One captured exception for a user."""

    __tablename__ = "error_logs"
    __table_args__ = (
        Index("ix_error_logs_user_occurred_resolved", "user_id", "occurred_at", "resolved"),
        Index("ix_error_logs_fingerprint_occurred_id", "fingerprint", "occurred_at", "id"),
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


class ErrorGroup(Base):
    """Every occurrence of one fingerprint, as one issue with a status.

    ``status`` is ``unresolved``, ``resolved`` or ``ignored``; ``substatus`` (unresolved groups
    only) is ``new``, ``ongoing`` or ``regressed``. ``resolved_at``/``resolved_by`` keep the
    latest resolution also after a regression reopened the group: an occurrence dated before it
    belongs to what was resolved. ``last_alert_at``/``alerts`` throttle the operators' alerts.
    """

    __tablename__ = "error_groups"
    __table_args__ = (
        CheckConstraint("status IN ('unresolved', 'resolved', 'ignored')", name="status"),
        CheckConstraint(
            "substatus IS NULL OR substatus IN ('new', 'ongoing', 'regressed')", name="substatus"
        ),
    )

    id: Mapped[intpk]
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    error_type: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(
        String(16), default="unresolved", server_default="unresolved", index=True
    )
    substatus: Mapped[str | None] = mapped_column(String(16), default="new")
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    times_seen: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error_id: Mapped[int | None] = mapped_column(Integer)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    regressed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    alerts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
