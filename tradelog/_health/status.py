"""Reading service health: stale detection and the per-user overview (user-scoped).

A service is *stale* when ``service_status`` says it is running but its last heartbeat is older
than the threshold (or missing). A stopped service is never stale.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.models import ServiceStatus, User

__all__ = ["is_stale", "service_overview", "stale_services"]


def is_stale(
    *, running: bool, last_heartbeat: datetime | None, now: datetime, threshold: timedelta
) -> bool:
    """A service is stale when it says it is running but has not sent a heartbeat lately."""
    return running and (last_heartbeat is None or now - last_heartbeat > threshold)


def _threshold(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def stale_services(
    session: Session,
    now: datetime,
    threshold: timedelta | float,
    *,
    actor: ActorLike | None = None,
) -> list[ServiceStatus]:
    """``service_status`` rows marked running whose last heartbeat is older than ``threshold``
    (or missing), ordered by user.

    With ``actor`` the rows are scoped as usual (a user sees their own); without it this is the
    monitoring query for the operator's jobs.
    """
    cutoff = now - _threshold(threshold)
    query: Select[Any] = select(ServiceStatus).where(
        ServiceStatus.service_running.is_(True),
        or_(ServiceStatus.last_heartbeat.is_(None), ServiceStatus.last_heartbeat < cutoff),
    )
    if actor is not None:
        query = scoped(query, ServiceStatus.user_id, resolve_actor(session, actor))
    return list(session.scalars(query.order_by(ServiceStatus.user_id)))


def service_overview(
    session: Session, actor: ActorLike, now: datetime, threshold: timedelta | float
) -> list[dict[str, Any]]:
    """One dict per visible ``service_status`` row: user, state, heartbeat, errors."""
    who = resolve_actor(session, actor)
    limit = _threshold(threshold)
    joined: Any = select(ServiceStatus, User.email).join(User, User.id == ServiceStatus.user_id)
    query = scoped(joined, ServiceStatus.user_id, who).order_by(ServiceStatus.user_id)
    overview = []
    for row, email in session.execute(query):
        stale = is_stale(
            running=row.service_running,
            last_heartbeat=row.last_heartbeat,
            now=now,
            threshold=limit,
        )
        state = ("stale" if stale else "running") if row.service_running else "stopped"
        overview.append(
            {
                "user_id": row.user_id,
                "email": email,
                "state": state,
                "last_heartbeat": row.last_heartbeat,
                "last_task": row.last_task_execution,
                "error_count": row.error_count,
                "last_error": row.last_error,
            }
        )
    return overview
