"""Reading and resolving captured errors; every read is scoped to the acting user.

A user sees their own errors, an admin sees everyone's (:mod:`tradelog._access`). Resolving is
for admins only and is audited; resolving an error that is already resolved raises
:class:`~tradelog.exceptions.ConflictError` instead of silently overwriting who resolved it and
why. Retention: unresolved errors are kept forever; resolved ones are deleted
``days`` (90) after ``resolved_at`` by :func:`purge_resolved`.

Groups (:mod:`tradelog._errors.groups`) follow: resolving the last unresolved occurrence of a
fingerprint (or the fingerprint itself) resolves its group, so a later occurrence reopens it
as ``regressed``. :func:`ignore_group` silences a group (no alerts, counted still) and
:func:`reopen_group` makes a resolved or ignored group unresolved again. Every status change is
audited (resource ``error_group``) with the before/after of the changed fields.

Functions that change rows add them to the caller's session and flush; the caller commits
(except :func:`purge_resolved`, which commits each batch).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from sqlalchemy import and_, case, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from tradelog._access import Actor, ActorLike, require_admin, resolve_actor, scoped
from tradelog._db.base import utcnow
from tradelog._db.functions import before_keyset
from tradelog._db.models import ErrorGroup as GroupRow
from tradelog._db.models import ErrorLog
from tradelog._errors.groups import effective_substatus, ensure_group
from tradelog._logs.redact import redact_text
from tradelog.audit import diff, record_audit
from tradelog.exceptions import ConflictError, NotFound

__all__ = [
    "ErrorGroup",
    "ErrorPage",
    "error_groups",
    "expand_fingerprint",
    "get_error",
    "ignore_group",
    "list_errors",
    "purge_resolved",
    "reopen_group",
    "resolve",
    "resolved_cutoff",
]

MAX_LIMIT: Final = 1000
NOTES_LENGTH: Final = 512
FINGERPRINT_LENGTH: Final = 64
MIN_FINGERPRINT_PREFIX: Final = 6
GROUP_STATUSES: Final = ("unresolved", "resolved", "ignored")
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class ErrorPage:
    """One page of errors, newest first; pass ``next_cursor`` back for the next page."""

    items: list[ErrorLog]
    next_cursor: str | None


GROUP_FIELDS: Final = ("status", "substatus", "resolved_at", "resolved_by")


@dataclass(frozen=True)
class ErrorGroup:
    """All visible occurrences of one fingerprint, and the group's status.

    ``status`` is ``unresolved``, ``resolved`` or ``ignored``; ``substatus`` (unresolved
    only) ``new``, ``ongoing`` or ``regressed``, as of the time of reading.
    """

    fingerprint: str | None
    error_type: str
    count: int
    users: int
    unresolved: int
    first_seen: datetime
    last_seen: datetime
    sample_message: str
    status: str = "unresolved"
    substatus: str | None = None


def _encode_cursor(row: ErrorLog) -> str:
    raw = f"{row.occurred_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.rsplit("|", 1)
        at = datetime.fromisoformat(stamp)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at, int(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def _filters(
    *,
    resolved: bool | None,
    error_type: str | None,
    fingerprint: str | None,
    since: datetime | None,
    until: datetime | None,
    rows: Any = ErrorLog,
) -> list[Any]:
    """The occurrence filters over ``rows`` (``ErrorLog`` or an alias of it)."""
    clauses: list[Any] = []
    if resolved is not None:
        clauses.append(rows.resolved.is_(resolved))
    if error_type is not None:
        clauses.append(rows.error_type == error_type)
    if fingerprint is not None:
        clauses.append(rows.fingerprint == fingerprint)
    if since is not None:
        clauses.append(rows.occurred_at >= since)
    if until is not None:
        clauses.append(rows.occurred_at < until)
    return clauses


def list_errors(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    resolved: bool | None = None,
    error_type: str | None = None,
    fingerprint: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ErrorPage:
    """Errors visible to ``actor``, newest first, filtered; ``since`` inclusive, ``until``
    exclusive. Raises ``ValueError`` for a malformed ``cursor``."""
    who = resolve_actor(session, actor)
    size = max(1, min(int(limit), MAX_LIMIT))
    query: Any = scoped(select(ErrorLog), ErrorLog.user_id, who, user_id)
    clauses = _filters(
        resolved=resolved,
        error_type=error_type,
        fingerprint=fingerprint,
        since=since,
        until=until,
    )
    if cursor is not None:
        at, ident = _decode_cursor(cursor)
        clauses.append(before_keyset(ErrorLog.occurred_at, ErrorLog.id, at, ident))
    query = query.where(*clauses).order_by(ErrorLog.occurred_at.desc(), ErrorLog.id.desc())
    rows = list(session.scalars(query.limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return ErrorPage(rows, _encode_cursor(rows[-1]) if more and rows else None)


def get_error(session: Session, actor: ActorLike, error_id: int) -> ErrorLog:
    """One error by id; :class:`NotFound` when it does not exist or is not ``actor``'s."""
    who = resolve_actor(session, actor)
    query: Any = scoped(select(ErrorLog), ErrorLog.user_id, who)
    row = session.scalars(query.where(ErrorLog.id == error_id)).first()
    if row is None:
        raise NotFound(f"no error with id {error_id}")
    return row  # type: ignore[no-any-return]


def expand_fingerprint(session: Session, actor: ActorLike, prefix: str) -> str:
    """The full fingerprint that ``prefix`` (at least 6 hex digits, as the tables show 12)
    starts, among the errors ``actor`` may see.

    ``ValueError`` for text that cannot be a fingerprint or a prefix shared by several;
    :class:`NotFound` when no visible error has it.
    """
    text = prefix.strip().lower()
    if not _HEX.match(text) or len(text) > FINGERPRINT_LENGTH:
        raise ValueError(f"a fingerprint is up to 64 hexadecimal digits, got {prefix!r}")
    if len(text) == FINGERPRINT_LENGTH:
        return text
    if len(text) < MIN_FINGERPRINT_PREFIX:
        raise ValueError(
            f"give at least {MIN_FINGERPRINT_PREFIX} digits of a fingerprint, got {prefix!r}"
        )
    who = resolve_actor(session, actor)
    query: Any = scoped(select(ErrorLog.fingerprint), ErrorLog.user_id, who)
    found = list(
        session.scalars(query.where(ErrorLog.fingerprint.startswith(text)).distinct().limit(2))
    )
    if not found:
        raise NotFound(f"no errors with fingerprint {text}")
    if len(found) > 1:
        raise ValueError(f"fingerprint prefix {text} matches several fingerprints: give more")
    return str(found[0])


def error_groups(
    session: Session,
    actor: ActorLike,
    *,
    user_id: int | None = None,
    resolved: bool | None = None,
    error_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    fingerprint: str | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> list[ErrorGroup]:
    """Occurrences grouped by fingerprint (rows without one by type), most recent first.

    ``resolved`` filters occurrences; ``fingerprint`` keeps one group; ``status`` filters
    groups (``unresolved``, ``resolved``, ``ignored``; ``ValueError`` otherwise). Substatuses
    are as of ``now`` (default: now).
    """
    if status is not None and status not in GROUP_STATUSES:
        raise ValueError(f"status must be one of {', '.join(GROUP_STATUSES)}, got {status!r}")
    who = resolve_actor(session, actor)
    size = max(1, min(int(limit), MAX_LIMIT))
    moment = now or utcnow()
    filters: dict[str, Any] = {
        "resolved": resolved,
        "error_type": error_type,
        "fingerprint": fingerprint,
        "since": since,
        "until": until,
    }
    # Two hash-friendly steps instead of one sort of every occurrence (which a
    # count(DISTINCT user_id) grouped with the group's columns needed): occurrences per
    # (group, user), then per group; the groups' own rows are joined to the few results.
    per_user: Any = select(
        ErrorLog.fingerprint,
        ErrorLog.error_type,
        func.count(ErrorLog.id).label("occurrences"),
        func.sum(case((ErrorLog.resolved.is_(False), 1), else_=0)).label("unresolved"),
        func.min(ErrorLog.occurred_at).label("first_seen"),
        func.max(ErrorLog.occurred_at).label("last_seen"),
    )
    per_user = scoped(per_user, ErrorLog.user_id, who, user_id).where(*_filters(**filters))
    per_user = per_user.group_by(
        ErrorLog.fingerprint, ErrorLog.error_type, ErrorLog.user_id
    ).subquery("per_user")
    totals = (
        select(
            per_user.c.fingerprint,
            per_user.c.error_type,
            func.sum(per_user.c.occurrences).label("occurrences"),
            func.count().label("users"),
            func.sum(per_user.c.unresolved).label("unresolved"),
            func.min(per_user.c.first_seen).label("first_seen"),
            func.max(per_user.c.last_seen).label("last_seen"),
        )
        .group_by(per_user.c.fingerprint, per_user.c.error_type)
        .subquery("totals")
    )
    grouped: Any = select(
        totals.c.fingerprint,
        totals.c.error_type,
        totals.c.occurrences,
        totals.c.users,
        totals.c.unresolved,
        totals.c.first_seen,
        totals.c.last_seen,
        GroupRow.status,
        GroupRow.substatus,
        GroupRow.first_seen,
        GroupRow.regressed_at,
        _newest_message(totals, who, user_id, filters),
    ).outerjoin(GroupRow, GroupRow.fingerprint == totals.c.fingerprint)
    if status is not None:
        grouped = grouped.where(func.coalesce(GroupRow.status, "unresolved") == status)
    grouped = grouped.order_by(totals.c.last_seen.desc()).limit(size)
    groups = []
    for row in session.execute(grouped):
        print_, kind, count, users, unresolved, first, last = row[:7]
        group_status, group_substatus, group_first, regressed_at, message = row[7:]
        shown_status = group_status or ("unresolved" if unresolved else "resolved")
        groups.append(
            ErrorGroup(
                fingerprint=print_,
                error_type=kind,
                count=int(count),
                users=int(users),
                unresolved=int(unresolved or 0),
                first_seen=first,
                last_seen=last,
                sample_message=message or "",
                status=shown_status,
                substatus=effective_substatus(
                    shown_status,
                    group_substatus,
                    first_seen=group_first,
                    regressed_at=regressed_at,
                    now=moment,
                ),
            )
        )
    return groups


def _newest_message(groups: Any, who: Actor, user_id: int | None, filters: dict[str, Any]) -> Any:
    """The newest matching occurrence's message of each group, as a column of the grouping
    query: a correlated subquery the database runs for the groups on the page only (one index
    probe each on ``(fingerprint, occurred_at, id)``), not a query per group from here.

    Rows without a fingerprint form one group per type; their subquery is a separate branch
    so that both branches stay index lookups."""
    sample = aliased(ErrorLog, name="sample")

    def newest(without_fingerprint: bool) -> Any:
        query: Any = select(sample.error_message)
        query = scoped(query, sample.user_id, who, user_id).where(
            *_filters(**filters, rows=sample),
            sample.error_type == groups.c.error_type,
            sample.fingerprint.is_(None)
            if without_fingerprint
            else sample.fingerprint == groups.c.fingerprint,
        )
        query = query.order_by(sample.occurred_at.desc(), sample.id.desc()).limit(1)
        return query.correlate(groups).scalar_subquery()

    return case((groups.c.fingerprint.is_(None), newest(True)), else_=newest(False))


def _group_state(group: GroupRow) -> dict[str, Any]:
    return {name: getattr(group, name) for name in GROUP_FIELDS}


def _audit_group(
    session: Session,
    who: Actor,
    action: str,
    group: GroupRow,
    before: dict[str, Any],
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    changes = diff(before, _group_state(group)) | (extra or {})
    if changes:
        record_audit(
            session,
            user_id=who.id,
            action=action,
            resource_type="error_group",
            resource_id=group.id,
            changes=changes,
        )


def _resolve_groups(
    session: Session, who: Actor, fingerprints: set[str], at: datetime, notes: str | None
) -> None:
    """Resolve the groups of ``fingerprints`` that have no unresolved occurrence left."""
    for print_ in sorted(fingerprints):
        left = session.scalar(
            select(func.count(ErrorLog.id)).where(
                ErrorLog.fingerprint == print_, ErrorLog.resolved.is_(False)
            )
        )
        group = ensure_group(session, print_)
        if left or group is None or group.status == "resolved":
            continue
        before = _group_state(group)
        group.status, group.substatus = "resolved", None
        group.resolved_at, group.resolved_by = at, who.id
        extra = {"resolution_notes": {"before": None, "after": notes}} if notes else None
        _audit_group(session, who, "resolve", group, before, extra=extra)


def _set_group_status(
    session: Session, fingerprint: str, admin: ActorLike, status: str, action: str
) -> GroupRow:
    who = resolve_actor(session, admin)
    require_admin(who, f"{action} error groups")
    group = ensure_group(session, fingerprint)
    if group is None:
        raise NotFound(f"no errors with fingerprint {fingerprint}")
    if group.status == status:
        raise ConflictError(f"error group {fingerprint[:12]} is already {status}")
    before = _group_state(group)
    group.status = status
    group.substatus = "ongoing" if status == "unresolved" else None
    _audit_group(session, who, action, group, before)
    session.flush()
    return group


def ignore_group(session: Session, fingerprint: str, admin: ActorLike) -> GroupRow:
    """Silence the group of ``fingerprint``: its occurrences are still stored and counted, but
    alert nobody. Admins only; :class:`ConflictError` when it already is ignored; audited. The
    caller commits."""
    return _set_group_status(session, fingerprint, admin, "ignored", "ignore")


def reopen_group(session: Session, fingerprint: str, admin: ActorLike) -> GroupRow:
    """Make a resolved or ignored group unresolved (``ongoing``) again. Admins only;
    :class:`ConflictError` when it is unresolved already; audited. The caller commits."""
    return _set_group_status(session, fingerprint, admin, "unresolved", "reopen")


def resolve(
    session: Session,
    target: int | str,
    admin: ActorLike,
    notes: str | None = None,
    *,
    now: datetime | None = None,
    zone: tzinfo = UTC,
) -> list[int]:
    """Mark an error (``target`` an id) or every unresolved occurrence of a fingerprint
    (``target`` a string) resolved; returns the ids resolved.

    Only admins may (:class:`~tradelog.exceptions.PermissionDenied`). :class:`NotFound` when
    nothing matches, :class:`ConflictError` when everything matching is already resolved.
    Audited as ``resolve`` on ``error_log``; the caller commits. ``zone`` is the timezone
    the conflict message shows the earlier resolution time in.
    """
    who = resolve_actor(session, admin)
    require_admin(who, "resolve errors")
    at = now or utcnow()
    text = redact_text(notes.strip())[:NOTES_LENGTH] if notes and notes.strip() else None
    values = {"resolved": True, "resolved_at": at, "resolved_by": who.id, "resolution_notes": text}
    if isinstance(target, bool) or not isinstance(target, int | str):
        raise TypeError("target must be an error id (int) or a fingerprint (str)")
    if isinstance(target, int):
        row = session.get(ErrorLog, target)
        if row is None:
            raise NotFound(f"no error with id {target}")
        match = ErrorLog.id == target
        what = f"error {target}"
    else:
        match = ErrorLog.fingerprint == target
        what = f"errors with fingerprint {target}"
        if session.scalar(select(func.count(ErrorLog.id)).where(match)) == 0:
            raise NotFound(f"no {what}")
    statement = (
        update(ErrorLog)
        .where(match, ErrorLog.resolved.is_(False))
        .values(**values)
        .returning(ErrorLog.id)
        .execution_options(synchronize_session="fetch")
    )
    ids = sorted(int(i) for i in session.scalars(statement))
    if not ids:
        earlier = session.execute(
            select(ErrorLog.resolved_at, ErrorLog.resolved_by)
            .where(match)
            .order_by(ErrorLog.resolved_at.desc())
            .limit(1)
        ).first()
        by = ""
        if earlier and earlier[0]:
            when = earlier[0].astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
            by = f" at {when} by user {earlier[1]}"
        raise ConflictError(f"{what} already resolved{by}")
    if isinstance(target, int):
        record_audit(
            session,
            user_id=who.id,
            action="resolve",
            resource_type="error_log",
            resource_id=target,
            changes=diff(
                {
                    "resolved": False,
                    "resolved_at": None,
                    "resolved_by": None,
                    "resolution_notes": None,
                },
                values,
            ),
        )
    prints = set(
        session.scalars(select(ErrorLog.fingerprint).where(ErrorLog.id.in_(ids)).distinct())
    )
    _resolve_groups(session, who, {p for p in prints if p}, at, text)
    session.flush()
    return ids


def resolved_cutoff(now: datetime, days: int = 90) -> datetime:
    """Resolved errors whose ``resolved_at`` is before this are due for deletion."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    return now - timedelta(days=days)


def purge_resolved(
    session: Session, now: datetime, *, days: int = 90, batch_size: int = 1000
) -> int:
    """Delete errors resolved more than ``days`` before ``now``, a batch per transaction.

    Unresolved errors are never deleted. Returns how many rows were deleted.
    """
    cutoff = resolved_cutoff(now, days)
    expired = and_(ErrorLog.resolved.is_(True), ErrorLog.resolved_at < cutoff)
    total = 0
    while True:
        ids: Sequence[int] = session.scalars(
            select(ErrorLog.id).where(expired).order_by(ErrorLog.id).limit(max(batch_size, 1))
        ).all()
        if not ids:
            return total
        session.execute(
            delete(ErrorLog)
            .where(ErrorLog.id.in_(ids))
            .execution_options(synchronize_session=False)
        )
        session.commit()
        total += len(ids)
