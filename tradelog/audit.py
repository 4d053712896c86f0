"""The audit trail: who changed what, from where; readable by the actor (own rows) or an admin.

Writing: :func:`record_audit` adds an ``audit_logs`` row to the caller's session, so the change
and its audit row land in one transaction. The IP address and user agent come from the request
being served: a web framework's middleware (or any caller) wraps the request in
:func:`request_context`, and every row recorded inside it carries them::

    with tradelog.audit.request_context(ip_address="203.0.113.7", user_agent="Mozilla/5.0"):
        tradelog.trading_config.update_config(s, user, user, rsi_period=14)   # audited
        s.commit()

Trading-config, notification-preference, error-resolution and ML-registry changes are audited
by the functions that make them, each row holding the before/after of the changed fields only
(:func:`diff`).

Reading: :func:`query_audit` filters by user, action, resource (type and id) and time range,
newest first, with keyset paging; a user reads only their own rows, an admin everyone's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from tradelog._access import ActorLike, resolve_actor, scoped
from tradelog._db.models import AuditLog
from tradelog._logs.query import Cursor
from tradelog._logs.redact import redact_jsonable
from tradelog._logs.sanitize import clean_text

__all__ = [
    "AuditPage",
    "RequestInfo",
    "current_request",
    "diff",
    "list_audit",
    "query_audit",
    "record_audit",
    "request_context",
]

MAX_LIMIT: Final = 1000
IP_LENGTH: Final = 45
USER_AGENT_LENGTH: Final = 512


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Where the request being served comes from."""

    ip_address: str | None = None
    user_agent: str | None = None


_request: ContextVar[RequestInfo | None] = ContextVar("tradelog_audit_request", default=None)


@contextlib.contextmanager
def request_context(
    *, ip_address: str | None = None, user_agent: str | None = None
) -> Iterator[None]:
    """Audit rows recorded inside the block carry ``ip_address`` and ``user_agent``.

    Backed by a context variable, so concurrent requests (threads or asyncio tasks) each keep
    their own; nested blocks replace the outer values until they end.
    """
    token = _request.set(
        RequestInfo(_bounded(ip_address, IP_LENGTH), _bounded(user_agent, USER_AGENT_LENGTH))
    )
    try:
        yield
    finally:
        _request.reset(token)


def current_request() -> RequestInfo | None:
    """The request the current context serves (:func:`request_context`), or None."""
    return _request.get()


def _bounded(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value)).strip()
    return text[:limit] or None


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
    ``ip_address`` and ``user_agent`` default to those of the :func:`request_context` the call
    runs in.
    """
    request = _request.get()
    if request is not None:
        ip_address = ip_address if ip_address is not None else request.ip_address
        user_agent = user_agent if user_agent is not None else request.user_agent
    row = AuditLog(
        user_id=user_id,
        action=action[:32],
        resource_type=resource_type[:64],
        resource_id=resource_id,
        changes=redact_jsonable(dict(changes)) if changes is not None else None,
        ip_address=_bounded(ip_address, IP_LENGTH),
        user_agent=_bounded(user_agent, USER_AGENT_LENGTH),
    )
    session.add(row)
    return row


@dataclass(frozen=True)
class AuditPage:
    """Audit rows newest first, and the cursor of the next (older) page if there is one."""

    items: list[AuditLog]
    next_cursor: str | None


def query_audit(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> AuditPage:
    """One page of audit rows visible to ``actor``, newest first.

    ``user_id`` is who acted (an admin may name anyone; a user only themself, else
    :class:`~tradelog.exceptions.PermissionDenied`); ``since`` is inclusive, ``until``
    exclusive. Pass the page's ``next_cursor`` back as ``cursor`` for the next page
    (``ValueError`` for a malformed one).
    """
    who = resolve_actor(session, actor)
    size = max(1, min(int(limit), MAX_LIMIT))
    query = scoped(select(AuditLog), AuditLog.user_id, who, user_id)
    if action is not None:
        query = query.where(AuditLog.action == action)
    if resource_type is not None:
        query = query.where(AuditLog.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(AuditLog.resource_id == resource_id)
    if since is not None:
        query = query.where(AuditLog.timestamp >= since)
    if until is not None:
        query = query.where(AuditLog.timestamp < until)
    if cursor is not None:
        after = Cursor.decode(cursor)
        query = query.where(
            or_(
                AuditLog.timestamp < after.timestamp,
                and_(AuditLog.timestamp == after.timestamp, AuditLog.id < after.id),
            )
        )
    newest_first = query.order_by(AuditLog.timestamp.desc(), AuditLog.id.desc())
    rows = list(session.scalars(newest_first.limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if more and rows else None
    return AuditPage(rows, Cursor(last.timestamp, last.id).encode() if last else None)


def list_audit(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> Sequence[AuditLog]:
    """Audit rows visible to ``actor``, newest first (the first page of :func:`query_audit`)."""
    return query_audit(
        session,
        actor,
        user_id=user_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
        limit=limit,
    ).items
