"""The audit trail: who changed what, readable by the actor (own rows) or an admin (all rows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.models import AuditLog
from tradelog._logs.redact import redact_jsonable

__all__ = ["diff", "list_audit", "record_audit"]


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The ``{"field": {"before": x, "after": y}}`` map of keys whose values differ."""
    return {
        key: {"before": before.get(key), "after": after.get(key)}
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def record_audit(
    session: Session,
    *,
    user_id: int,
    action: str,
    resource_type: str,
    resource_id: int | None = None,
    changes: Mapping[str, Any] | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
) -> AuditLog:
    """Add an audit row to ``session`` (the caller's transaction decides whether it lands).

    ``changes`` is made JSON-safe and scrubbed like a log value: values under secret keys
    (``password``, ``api_key``, nested tokens ...) and secrets inside text are masked.
    """
    row = AuditLog(
        user_id=user_id,
        action=action[:32],
        resource_type=resource_type[:64],
        resource_id=resource_id,
        changes=redact_jsonable(dict(changes)) if changes is not None else None,
        ip_address=ip_address[:45] if ip_address else None,
        user_agent=user_agent[:512] if user_agent else None,
    )
    session.add(row)
    return row


def list_audit(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> Sequence[AuditLog]:
    """Audit rows visible to ``actor``, newest first."""
    who = resolve_actor(session, actor)
    query = scoped(select(AuditLog), AuditLog.user_id, who, user_id)
    if action is not None:
        query = query.where(AuditLog.action == action)
    if resource_type is not None:
        query = query.where(AuditLog.resource_type == resource_type)
    if since is not None:
        query = query.where(AuditLog.timestamp >= since)
    if until is not None:
        query = query.where(AuditLog.timestamp < until)
    newest_first = query.order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
    return session.scalars(newest_first.limit(limit)).all()
