"""Error groups: one ``error_groups`` row per fingerprint, kept in step with every stored error.

A group's ``status`` is ``unresolved``, ``resolved`` or ``ignored``; an unresolved group has a
``substatus``: ``new`` (first seen lately), ``regressed`` (it came back after a resolution) or
``ongoing``. What one stored occurrence does to its group (:func:`record_occurrences`, in the
transaction that inserts the rows, under a row lock on PostgreSQL):

==============  =======================================  ==================================
group           occurrence                               result (the occurrence's *change*)
==============  =======================================  ==================================
none yet        the earliest of its batch                group created: ``new``
ignored         any                                      counted only: ``ignored``
resolved        occurred **after** ``resolved_at``       reopened, ``regressed``
resolved        occurred at or before ``resolved_at``    stored resolved with the group:
                                                         ``late``
unresolved      occurred at or before the last           stored resolved with that
                resolution (the group regressed since)   resolution: ``late``
unresolved      otherwise                                ``ongoing`` (``new`` stays ``new``)
==============  =======================================  ==================================

Regression is decided by the time the error *occurred*, never by the order rows arrive in: a row
replayed from a spill file after an admin resolved its group, but dated before the resolution,
is part of what was resolved; a later-dated row reopens the group once, whichever arrives first.

``new`` and ``regressed`` age into ``ongoing`` after :data:`FRESH_PERIOD` (7 days) from
``first_seen`` / ``regressed_at`` (:func:`effective_substatus`, also applied when reading).
Groups missing for rows written some other way are created from those rows on first use
(:func:`ensure_group`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from tradelog._db.models import ErrorGroup, ErrorLog
from tradelog._db.upsert import dialect_insert

__all__ = [
    "FRESH_PERIOD",
    "LATE_NOTE",
    "Change",
    "effective_substatus",
    "ensure_group",
    "locked_group",
    "record_occurrences",
]

FRESH_PERIOD: Final = timedelta(days=7)
LATE_NOTE: Final = "resolved with its group: it occurred before the group's resolution"

Change = Literal["new", "ongoing", "regressed", "ignored", "late"]


def effective_substatus(
    status: str,
    substatus: str | None,
    *,
    first_seen: datetime | None,
    regressed_at: datetime | None,
    now: datetime,
) -> str | None:
    """The substatus a group shows at ``now``: ``new``/``regressed`` for
    :data:`FRESH_PERIOD`, then ``ongoing``; None unless the group is unresolved (pure)."""
    if status != "unresolved":
        return None
    since = regressed_at if substatus == "regressed" else first_seen
    if substatus in ("new", "regressed") and since is not None and now - since > FRESH_PERIOD:
        return "ongoing"
    return substatus or "ongoing"


def locked_group(session: Session, fingerprint: str) -> ErrorGroup | None:
    """The group of ``fingerprint``, locked for this transaction on PostgreSQL (``FOR UPDATE``;
    SQLite serialises writers anyway), refreshed from the database."""
    query = select(ErrorGroup).where(ErrorGroup.fingerprint == fingerprint).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


def ensure_group(session: Session, fingerprint: str) -> ErrorGroup | None:
    """The locked group of ``fingerprint``, created from its stored rows when it has none
    (rows written before groups existed, or by other means); None without any row."""
    group = locked_group(session, fingerprint)
    if group is not None:
        return group
    unresolved = func.sum(case((ErrorLog.resolved.is_(False), 1), else_=0))
    found = session.execute(
        select(
            func.min(ErrorLog.error_type),
            func.min(ErrorLog.occurred_at),
            func.max(ErrorLog.occurred_at),
            func.count(ErrorLog.id),
            func.max(ErrorLog.id),
            unresolved,
            func.max(ErrorLog.resolved_at),
        ).where(ErrorLog.fingerprint == fingerprint)
    ).one()
    kind, first, last, count, last_id, open_count, resolved_at = found
    if not count:
        return None
    is_open = bool(open_count)
    session.execute(
        dialect_insert(session, ErrorGroup)
        .values(
            fingerprint=fingerprint,
            error_type=kind,
            status="unresolved" if is_open else "resolved",
            substatus="ongoing" if is_open else None,
            first_seen=first,
            last_seen=last,
            times_seen=int(count),
            last_error_id=last_id,
            resolved_at=resolved_at,
        )
        .on_conflict_do_nothing(index_elements=["fingerprint"])
    )
    return locked_group(session, fingerprint)


def _created(session: Session, rows: Sequence[ErrorLog]) -> bool:
    """Insert the group of ``rows`` (one fingerprint) unless it exists; True when inserted."""
    first = rows[0]
    inserted = session.execute(
        dialect_insert(session, ErrorGroup)
        .values(
            fingerprint=first.fingerprint,
            error_type=first.error_type,
            status="unresolved",
            substatus="new",
            first_seen=first.occurred_at,
            last_seen=first.occurred_at,
            times_seen=0,
        )
        .on_conflict_do_nothing(index_elements=["fingerprint"])
        .returning(ErrorGroup.id)
    ).scalar_one_or_none()
    return inserted is not None


def _apply(group: ErrorGroup, row: ErrorLog, *, fresh: bool) -> Change:
    """Move ``group`` on by one occurrence (``row``); returns what the occurrence changed."""
    at = row.occurred_at
    group.times_seen += 1
    group.first_seen = min(group.first_seen, at)
    if at >= group.last_seen or group.last_error_id is None:
        group.last_seen = at
        group.last_error_id = row.id
    resolution = group.resolved_at
    change: Change
    if group.status == "ignored":
        change = "ignored"
    elif group.status == "resolved":
        if resolution is None or at > resolution:
            group.status, group.substatus, group.regressed_at = "unresolved", "regressed", at
            change = "regressed"
        else:
            change = "late"
    elif resolution is not None and at <= resolution:
        change = "late"
    else:
        change = "new" if fresh else "ongoing"
        if (
            group.regressed_at is not None
            and at < group.regressed_at
            and group.substatus == "regressed"
        ):
            group.regressed_at = at  # an earlier return arrived later: it started then
    if change == "late":
        row.resolved = True
        row.resolved_at = resolution
        row.resolved_by = group.resolved_by
        row.resolution_notes = LATE_NOTE
    return change


def record_occurrences(session: Session, rows: Sequence[ErrorLog]) -> dict[int, Change]:
    """Update the groups of freshly inserted (flushed) ``rows``; returns each row's change by
    row id. Rows without a fingerprint belong to no group."""
    by_print: dict[str, list[ErrorLog]] = defaultdict(list)
    for row in rows:
        if row.fingerprint:
            by_print[row.fingerprint].append(row)
    changes: dict[int, Change] = {}
    for print_ in sorted(by_print):  # one lock order for every writer
        batch = sorted(by_print[print_], key=lambda r: (r.occurred_at, r.id))
        group = locked_group(session, print_)  # the common case: the group exists
        created = False
        if group is None:
            created = _created(session, batch)
            group = locked_group(session, print_)
        if group is None:  # pragma: no cover - inserted or found just above
            continue
        for index, row in enumerate(batch):
            changes[row.id] = _apply(group, row, fresh=created and index == 0)
        group.substatus = effective_substatus(
            group.status,
            group.substatus,
            first_seen=group.first_seen,
            regressed_at=group.regressed_at,
            now=group.last_seen,
        )
    session.flush()
    return changes
