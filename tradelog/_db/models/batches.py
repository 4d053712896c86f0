"""``tradelog_write_batches`` (added by ``0007_write_batches``): the id of every batch of
``service_logs`` or ``error_logs`` rows, committed in the same transaction as the rows, so a
batch retried after an unacknowledged commit or a killed replay is recognised and skipped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, utcnow


class WriteBatch(Base):
    """One committed batch of log or error rows."""

    __tablename__ = "tradelog_write_batches"

    batch_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    committed_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )
