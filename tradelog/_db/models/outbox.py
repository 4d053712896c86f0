"""The notification outbox: one ``notification_deliveries`` row per external channel, and the
shared rate-limit state every delivery worker process consults before calling Telegram.

A delivery moves through these states::

    pending ──claim──> sending ──> sent
       ^                  │   ├──> failed       (permanent error, or attempts exhausted)
       └──── retry ───────┘   └──> digested     (carried by another delivery's digest)
    suppressed                                  (never sent on purpose: quiet hours "drop",
                                                 channel switched off before dispatch)

While ``sending``, ``next_attempt_at`` holds the claim's lease expiry, so a single
``(status, next_attempt_at)`` index serves both "due pending rows" and "expired claims".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String, UniqueConstraint, false, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, updated_at, user_fk, utcnow

__all__ = ["DELIVERY_STATUSES", "NotificationDelivery", "NotificationRateLimit"]

DELIVERY_STATUSES = ("pending", "sending", "sent", "failed", "suppressed", "digested")


class NotificationDelivery(Base):
    """One notification on one external channel (Telegram or email)."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("notification_id", "channel"),
        Index("ix_notification_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_notification_deliveries_user_channel_status", "user_id", "channel", "status"),
    )

    id: Mapped[intpk]
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    user_id: Mapped[int] = user_fk(index=False)
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    #: End of the quiet hours this delivery was deferred to (None when not deferred).
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When the delivery is due; while ``sending``, when the worker's claim expires.
    next_attempt_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.now()
    )
    silent: Mapped[bool] = mapped_column(default=False, server_default=false())
    #: Telegram parts already delivered (a retry resumes after them).
    parts_sent: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(1024))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: For ``digested`` rows: the delivery whose digest message carried this one.
    digest_id: Mapped[int | None] = mapped_column(
        ForeignKey("notification_deliveries.id", ondelete="SET NULL")
    )
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]


class NotificationRateLimit(Base):
    """The earliest time (epoch seconds) the next message under ``key`` may be sent."""

    __tablename__ = "notification_rate_limits"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    next_at: Mapped[float] = mapped_column(Float())
