"""The audit trail: who changed what, readable by the actor (own rows) or an admin (all rows).

Inside a web request the request's ip address and user agent are known
(:func:`request_context`: bound per request by :class:`tradelog.asgi.TradelogMiddleware`, or
by the host with :func:`bind_request`); :func:`record_audit` uses them unless given others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.models import AuditLog
from tradelog._logs.sanitize import to_jsonable
from tradelog._request import RequestContext, bind_request, request_context

__all__ = [
    "RequestContext",
    "bind_request",
    "diff",
    "list_audit",
    "record_audit",
    "request_context",
]


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

    ``ip_address`` and ``user_agent`` default to the request being served
    (:func:`request_context`).
    """
    request = request_context()
    if request is not None:
        ip_address = ip_address if ip_address is not None else request.ip_address
        user_agent = user_agent if user_agent is not None else request.user_agent
    row = AuditLog(
        user_id=user_id,
        action=action[:32],
        resource_type=resource_type[:64],
        resource_id=resource_id,
        changes=to_jsonable(dict(changes)) if changes is not None else None,
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
