"""Declarative base, naming convention, the UTC datetime type and column aliases.

Every model reads like the spec table it implements: ``created_at``, ``user_fk`` and friends are
``Annotated`` aliases so defaults (ORM-side *and* server-side) are declared once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from sqlalchemy import JSON, DateTime, Dialect, ForeignKey, MetaData, func, types
from sqlalchemy.orm import DeclarativeBase, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "USER_ID_MAX",
    "Base",
    "UTCDateTime",
    "created_at",
    "intpk",
    "json_doc",
    "updated_at",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp column stores)."""
    return datetime.now(UTC)


class UTCDateTime(types.TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC on every backend.

    Binding a naive datetime is an error: naive values are how a system silently loses 5h30 by
    mixing IST and UTC. Values come back aware (UTC) on SQLite as well as on PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} refused: pass an aware datetime (UTC)"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base for every tradelog table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy reads it as a class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


USER_ID_MAX: Final = 2**31 - 1
"""The largest user id: ``users.id`` is an INTEGER (the schema spec), 32 bits on PostgreSQL.
Held to on SQLite too, whose integers are wider, so ids mean the same on both databases and a
service can move from one to the other."""

intpk = Annotated[int, mapped_column(primary_key=True)]
created_at = Annotated[
    datetime, mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
]
updated_at = Annotated[
    datetime,
    mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()),
]
json_doc = Annotated[dict[str, Any] | None, mapped_column(JSON(), nullable=True)]


def user_fk(
    *, index: bool = True, unique: bool = False, nullable: bool = False, ondelete: str | None = None
) -> Any:
    """A ``user_id`` column referring to ``users.id``."""
    return mapped_column(
        ForeignKey("users.id", ondelete=ondelete), index=index, unique=unique, nullable=nullable
    )
