"""The few reads the web routes need beyond the public modules: a user's service and recent
task runs, a page of outbox deliveries, and where the live streams start.

Each is scoped like every other read (:mod:`tradelog._access`) and takes the session the
route opened.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tradelog._access import Actor, require_admin, scoped
from tradelog._db.models import (
    Notification,
    NotificationDelivery,
    ServiceStatus,
    ServiceTaskExecution,
)
from tradelog._health.status import is_stale

__all__ = ["DeliveryPage", "decode_id", "encode_id", "latest_id", "list_deliveries", "own_service"]


def encode_id(ident: int) -> str:
    """An opaque cursor for keyset paging by id."""
    return base64.urlsafe_b64encode(f"id|{ident}".encode()).decode().rstrip("=")


def decode_id(cursor: str) -> int:
    """The id :func:`encode_id` wrapped; :class:`ValueError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, ident = raw.partition("|")
        if tag != "id":
            raise ValueError(tag)
        return int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def latest_id(session: Session) -> int:
    """The highest notification id now (0 for none): a new stream starts after it."""
    return int(session.scalar(select(func.max(Notification.id))) or 0)


def own_service(
    session: Session, user_id: int, now: datetime, threshold: float, *, tasks: int = 20
) -> tuple[dict[str, Any] | None, list[ServiceTaskExecution]]:
    """``user_id``'s ``service_status`` (state running, stale or stopped) and latest task runs."""
    row = session.scalars(select(ServiceStatus).where(ServiceStatus.user_id == user_id)).first()
    service = None
    if row is not None:
        stale = is_stale(
            running=row.service_running,
            last_heartbeat=row.last_heartbeat,
            now=now,
            threshold=timedelta(seconds=threshold),
        )
        service = {
            "user_id": row.user_id,
            "state": ("stale" if stale else "running") if row.service_running else "stopped",
            "last_heartbeat": row.last_heartbeat,
            "last_task": row.last_task_execution,
            "error_count": row.error_count,
            "last_error": row.last_error,
        }
    runs = session.scalars(
        select(ServiceTaskExecution)
        .where(ServiceTaskExecution.user_id == user_id)
        .order_by(ServiceTaskExecution.executed_at.desc(), ServiceTaskExecution.id.desc())
        .limit(tasks)
    ).all()
    return service, list(runs)


@dataclass(frozen=True)
class DeliveryPage:
    """Deliveries newest first, and the cursor of the next page."""

    items: list[NotificationDelivery]
    next_cursor: str | None


def list_deliveries(
    session: Session,
    actor: Actor,
    *,
    user_id: int | None = None,
    status: str | None = None,
    channel: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> DeliveryPage:
    """Outbox deliveries, newest first (admins only), filtered; keyset paging by id."""
    require_admin(actor, "read the delivery outbox")
    deliveries = NotificationDelivery
    query = scoped(select(deliveries), deliveries.user_id, actor, user_id)
    if status is not None:
        query = query.where(deliveries.status == status)
    if channel is not None:
        query = query.where(deliveries.channel == channel)
    if cursor is not None:
        query = query.where(deliveries.id < decode_id(cursor))
    rows = list(session.scalars(query.order_by(deliveries.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(rows, encode_id(rows[-1].id) if more and rows else None)
