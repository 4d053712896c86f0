"""``ml_training_jobs`` and ``ml_models`` (admin-only registry)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String, UniqueConstraint, false, func
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, UTCDateTime, created_at, intpk, utcnow


class MLTrainingJob(Base):
    """A model training run started by an admin."""

    __tablename__ = "ml_training_jobs"

    id: Mapped[intpk]
    started_by: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_type: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[str] = mapped_column(String(32))
    training_data_path: Mapped[str] = mapped_column(String(512))
    started_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, server_default=func.now()
    )
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    model_path: Mapped[str | None] = mapped_column(String(512))
    accuracy: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(String(1024))
    logs: Mapped[str | None] = mapped_column(String(16384))


class MLModel(Base):
    """A versioned model; the database allows one active model per ``model_type``."""

    __tablename__ = "ml_models"
    __table_args__ = (UniqueConstraint("model_type", "version", name="uq_ml_models_type_version"),)

    id: Mapped[intpk]
    model_type: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(16), index=True)
    model_path: Mapped[str] = mapped_column(String(512))
    accuracy: Mapped[float | None] = mapped_column(Float)
    training_job_id: Mapped[int] = mapped_column(ForeignKey("ml_training_jobs.id"))
    is_active: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    created_at: Mapped[created_at]
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))


#: "Only one active model per model_type", enforced by a partial unique index.
Index(
    "uq_ml_models_one_active_per_type",
    MLModel.model_type,
    unique=True,
    sqlite_where=MLModel.is_active,
    postgresql_where=MLModel.is_active,
)
