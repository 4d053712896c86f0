"""The state of a user's account an error row carries: their trading config and service status.

What an admin needs to reproduce a failure is what the account was set to when it happened.
When ``TRADELOG_ERROR_SNAPSHOT`` is on (the default), each stored error of a known user gets
``context["snapshot"]``::

    {"taken_at": "...", "trading_config": {...every field...} | null,
     "service_status": {"service_running": true, "last_heartbeat": "...", ...} | null}

It is read in the transaction that stores the error, before the row's own ``error_count``
increment, so it shows the account as the error found it (within the error queue's delay,
milliseconds). Rows written long after they occurred - replayed from a spill file - get no
snapshot (:data:`MAX_AGE`): today's settings would mislead about an old failure.

The snapshot is scrubbed like every context (secret keys and values redacted) and bounded:
strings over 256 characters are cut, and a snapshot whose JSON exceeds :data:`LIMIT`
characters loses ``task_schedule`` first, then everything but a marker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from tradelog._db.models import ServiceStatus, UserTradingConfig
from tradelog._logs.sanitize import to_jsonable

__all__ = ["LIMIT", "MAX_AGE", "Snapshots", "bounded"]

LIMIT: Final = 4096
"""Characters of JSON one snapshot may take."""
MAX_AGE: Final = timedelta(minutes=10)
"""Rows stored later than this after they occurred get no snapshot."""
_SKIPPED: Final = frozenset({"id", "user_id"})
_STATUS_FIELDS: Final = (
    "service_running",
    "last_heartbeat",
    "last_task_execution",
    "error_count",
    "last_error",
)

Scrub = Callable[[Any], Any]


def _columns(row: object) -> dict[str, Any]:
    mapper = inspect(type(row))
    return {c.key: getattr(row, c.key) for c in mapper.column_attrs if c.key not in _SKIPPED}


def bounded(snapshot: dict[str, Any], limit: int = LIMIT) -> dict[str, Any]:
    """``snapshot`` within ``limit`` characters of JSON (see the module docstring)."""
    size = len(json.dumps(snapshot, default=str))
    if size <= limit:
        return snapshot
    config = snapshot.get("trading_config")
    if isinstance(config, dict) and "task_schedule" in config:
        trimmed = {**config, "task_schedule": f"[omitted: {size} characters of snapshot]"}
        smaller = {**snapshot, "trading_config": trimmed}
        if len(json.dumps(smaller, default=str)) <= limit:
            return smaller
    return {"taken_at": snapshot.get("taken_at"), "omitted": f"{size} characters over {limit}"}


class Snapshots:
    """Reads the snapshots of a batch of users in the caller's transaction."""

    def __init__(self, scrub: Scrub, *, limit: int = LIMIT) -> None:
        self.scrub = scrub
        self.limit = limit

    def take(self, session: Session, user_ids: Iterable[int], now: datetime) -> dict[int, Any]:
        """One scrubbed, bounded snapshot per user id (two queries for the whole batch)."""
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        configs = {
            row.user_id: _columns(row)
            for row in session.scalars(
                select(UserTradingConfig).where(UserTradingConfig.user_id.in_(wanted))
            )
        }
        statuses = {
            row.user_id: {name: getattr(row, name) for name in _STATUS_FIELDS}
            for row in session.scalars(
                select(ServiceStatus).where(ServiceStatus.user_id.in_(wanted))
            )
        }
        taken: dict[int, Any] = {}
        for user_id in wanted:
            raw = {
                "taken_at": now,
                "trading_config": configs.get(user_id),
                "service_status": statuses.get(user_id),
            }
            clean = self.scrub(to_jsonable(raw, max_str=256))
            taken[user_id] = bounded(clean if isinstance(clean, dict) else {}, self.limit)
        return taken

    @staticmethod
    def fresh(occurred_at: datetime, now: datetime) -> bool:
        """Whether a row that occurred at ``occurred_at`` is recent enough for a snapshot."""
        return now - occurred_at <= MAX_AGE
