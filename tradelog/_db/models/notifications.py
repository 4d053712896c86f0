"""``user_notification_preferences`` and ``notifications``.

Migration ``0004_notification_outbox`` adds, beyond the spec: the user's IANA ``timezone`` and
``quiet_hours_mode`` (defer | silent | drop) on preferences, and on notifications a
``dedupe_key`` (unique per user, enforced by the database) and ``full_message`` (the complete
text when it is longer than the 1,024 characters ``message`` holds).
"""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import Index, String, Text, Time, false, func, true
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, updated_at, user_fk, utcnow


class UserNotificationPreferences(Base):
    """Channels, notification types and quiet hours chosen by one user."""

    __tablename__ = "user_notification_preferences"

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk(unique=True)
    telegram_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64))
    email_enabled: Mapped[bool] = mapped_column(default=False, server_default=false())
    email_address: Mapped[str | None] = mapped_column(String(255))
    in_app_enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    notify_service_events: Mapped[bool] = mapped_column(default=True, server_default=true())
    notify_trading_events: Mapped[bool] = mapped_column(default=True, server_default=true())
    notify_system_events: Mapped[bool] = mapped_column(default=True, server_default=true())
    notify_errors: Mapped[bool] = mapped_column(default=True, server_default=true())
    quiet_hours_start: Mapped[time | None] = mapped_column(Time())
    quiet_hours_end: Mapped[time | None] = mapped_column(Time())
    timezone: Mapped[str] = mapped_column(
        String(64), default="Asia/Kolkata", server_default="Asia/Kolkata"
    )
    quiet_hours_mode: Mapped[str] = mapped_column(
        String(8), default="defer", server_default="defer"
    )
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class Notification(Base):
    """One notification sent (or to be sent) to a user, with per-channel delivery flags."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_read_created", "user_id", "read", "created_at"),
        Index("ix_notifications_user_id_dedupe_key", "user_id", "dedupe_key", unique=True),
        Index("ix_notifications_user_created_id", "user_id", "created_at", "id"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    type: Mapped[str] = mapped_column(String(32), index=True)
    level: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(String(1024))
    read: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )
    telegram_sent: Mapped[bool] = mapped_column(default=False, server_default=false())
    email_sent: Mapped[bool] = mapped_column(default=False, server_default=false())
    in_app_delivered: Mapped[bool] = mapped_column(default=True, server_default=true())
    dedupe_key: Mapped[str | None] = mapped_column(String(128))
    full_message: Mapped[str | None] = mapped_column(Text())

    @property
    def text(self) -> str:
        """The complete message text (``message`` may be a shortened copy)."""
        return self.full_message if self.full_message is not None else self.message
