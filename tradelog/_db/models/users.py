"""``users``, ``orders`` and ``activity`` (``0001_initial``, amended by ``0002_phase1`` and
``0006_system_user_flag``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, updated_at, user_fk, utcnow

ROLES = ("admin", "user")


class User(Base):
    """An account of the trading service; ``role`` is ``admin`` or ``user``.

    ``is_system`` marks tradelog's own system user (``0006_system_user_flag``): at most one row,
    never a host account.
    """

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'user')", name="role"),
        Index(
            "uq_users_is_system",
            "is_system",
            unique=True,
            sqlite_where=text("is_system"),
            postgresql_where=text("is_system"),
        ),
    )

    id: Mapped[intpk]
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    is_system: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    @property
    def is_admin(self) -> bool:
        """True for administrators, who may read every user's rows."""
        return self.role == "admin"


class Order(Base):
    """A broker order placed for a user."""

    __tablename__ = "orders"

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk()
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    order_type: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    price: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    avg_price: Mapped[float | None] = mapped_column(Float)
    placed_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.now()
    )
    filled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # added by 0002_phase1
    order_id: Mapped[str | None] = mapped_column(String(64))
    broker_order_id: Mapped[str | None] = mapped_column(String(64))


class Activity(Base):
    """A free-form activity record; ``user_id`` is set NULL when its user is deleted."""

    __tablename__ = "activity"

    id: Mapped[intpk]
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, nullable=True
    )
    type: Mapped[str] = mapped_column(String(64))
    ref_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
