"""Reading ``service_logs``: user-scoped filters, newest first, keyset paging, following.

Every read takes the acting user (:mod:`tradelog._access`): a user reads only their own logs,
an admin reads anyone's (all users, or one with ``user_id``).

Pages are ordered by ``(timestamp, id)`` descending and continue from a :class:`Cursor` (the
last entry of the previous page), so paging stays fast and stable while rows keep arriving.
:func:`follow_logs` yields new entries as they are written, tolerating rows that commit a
little out of order (several writer processes) and rows replayed long after their time.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, Text, cast, func, or_, select
from sqlalchemy.orm import Session

from tradelog._access import Actor, ActorLike, resolve_actor, scoped
from tradelog._db.functions import (
    LIKE_ESCAPE,
    ascii_lower,
    ascii_lower_text,
    before_keyset,
    like_escape,
)
from tradelog._db.models import ServiceLog
from tradelog._logs.levels import LEVEL_NAMES, level_number, levels_from

__all__ = [
    "Cursor",
    "LogEntry",
    "LogFilter",
    "LogPage",
    "follow_logs",
    "module_matches",
    "parse_moment",
    "query_logs",
]

_S = TypeVar("_S", bound=Select[Any])

MAX_LIMIT: Final = 10_000
_FOLLOW_LOOKBACK: Final = timedelta(seconds=10)
"""How far back each poll looks again for rows that committed after later ones."""
_FOLLOW_BATCH: Final = 1000


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One ``service_logs`` row."""

    id: int
    user_id: int
    level: str
    module: str
    message: str
    context: dict[str, Any] | None
    timestamp: datetime
    """Aware, UTC."""

    def as_dict(self, zone: ZoneInfo | None = None) -> dict[str, Any]:
        """JSON-friendly form; with ``zone``, ``local_time`` is added."""
        data: dict[str, Any] = {
            "id": self.id,
            "user_id": self.user_id,
            "level": self.level,
            "module": self.module,
            "message": self.message,
            "context": self.context,
            "timestamp": self.timestamp.isoformat(),
        }
        if zone is not None:
            data["local_time"] = self.timestamp.astimezone(zone).isoformat()
        return data


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the ``(timestamp, id)`` of its last entry."""

    timestamp: datetime
    id: int

    def encode(self) -> str:
        """An opaque string to hand back as ``before=``."""
        raw = f"{self.timestamp.astimezone(UTC).isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse :meth:`encode`'s output; raises :class:`ValueError` for anything else."""
        try:
            padded = text + "=" * (-len(text) % 4)
            stamp, _, ident = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
            moment = datetime.fromisoformat(stamp)
            if moment.tzinfo is None:
                raise ValueError("naive")
            return cls(moment.astimezone(UTC), int(ident))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a log cursor: {text!r}") from exc


@dataclass(frozen=True, slots=True)
class LogPage:
    """Entries newest first, and the cursor of the next (older) page if there is one."""

    entries: list[LogEntry]
    next_cursor: Cursor | None


@dataclass(frozen=True, kw_only=True)
class LogFilter:
    """What to look for. ``level`` is exact, ``min_level`` includes everything above it;
    ``module`` matches any part of the module name, ignoring case (``alpha`` finds
    ``strategy.Alpha``; ``*`` stands for any characters: ``broker.*.orders``); ``keyword``
    matches the message or the context (its keys and values, as text), case-insensitively.

    The module match folds ASCII letters only, on SQLite and PostgreSQL alike
    (:mod:`tradelog._db.functions`), so one filter gives the same rows on both."""

    user_id: int | None = None
    level: str | None = None
    min_level: str | None = None
    module: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    keyword: str | None = None

    def __post_init__(self) -> None:
        if self.level is not None and self.min_level is not None:
            raise ValueError("give either level or min_level, not both")
        for name in ("level", "min_level"):
            value = getattr(self, name)
            if value is not None:
                level_number(value)  # raises ValueError for an unknown name
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ValueError(f"{name} must be an aware datetime, got {value.isoformat()}")

    def apply(self, statement: _S, actor: Actor) -> _S:
        """Add the scoping and the filters to a select over ``ServiceLog``."""
        statement = scoped(statement, ServiceLog.user_id, actor, self.user_id)
        if self.level is not None:
            statement = statement.where(ServiceLog.level == _stored_level(self.level))
        if self.min_level is not None:
            statement = statement.where(ServiceLog.level.in_(levels_from(self.min_level)))
        if self.module:
            statement = statement.where(module_matches(self.module))
        if self.since is not None:
            statement = statement.where(ServiceLog.timestamp >= self.since)
        if self.until is not None:
            statement = statement.where(ServiceLog.timestamp < self.until)
        if self.keyword:
            context = cast(ServiceLog.context, Text)
            statement = statement.where(
                or_(
                    ServiceLog.message.ilike(f"%{like_escape(self.keyword)}%", escape=LIKE_ESCAPE),
                    *(
                        context.ilike(f"%{like_escape(form)}%", escape=LIKE_ESCAPE)
                        for form in _json_forms(self.keyword)
                    ),
                )
            )
        return statement


def query_logs(
    session: Session,
    actor: ActorLike,
    *,
    filters: LogFilter | None = None,
    limit: int = 100,
    before: Cursor | str | None = None,
    **filter_options: Any,
) -> LogPage:
    """One page of log entries visible to ``actor``, newest first.

    Filters come as a :class:`LogFilter` or as its keywords (``user_id=``, ``level=``,
    ``min_level=``, ``module=``, ``since=``, ``until=``, ``keyword=``). Pass the page's
    ``next_cursor`` as ``before`` for the next page. Raises :class:`ValueError` for invalid
    filters, :class:`~tradelog.exceptions.PermissionDenied` when a user asks for someone
    else's logs.
    """
    chosen = filters if filters is not None else LogFilter(**filter_options)
    who = resolve_actor(session, actor)
    size = max(1, min(int(limit), MAX_LIMIT))
    statement = chosen.apply(select(ServiceLog), who)
    if before is not None:
        cursor = Cursor.decode(before) if isinstance(before, str) else before
        statement = statement.where(
            before_keyset(ServiceLog.timestamp, ServiceLog.id, cursor.timestamp, cursor.id)
        )
    statement = statement.order_by(ServiceLog.timestamp.desc(), ServiceLog.id.desc()).limit(
        size + 1
    )
    rows = list(session.execute(statement).scalars())
    entries = [_entry(row) for row in rows[:size]]
    more = len(rows) > size
    next_cursor = Cursor(entries[-1].timestamp, entries[-1].id) if more and entries else None
    return LogPage(entries, next_cursor)


def follow_logs(
    sessions: Callable[[], Session],
    actor: ActorLike,
    *,
    filters: LogFilter | None = None,
    backlog: int = 20,
    interval: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[LogEntry]:
    """Yield the last ``backlog`` entries (oldest first), then new ones as they arrive.

    Polls every ``interval`` seconds with a fresh session from ``sessions`` until
    ``should_stop()`` is true. An entry is new when it was not there at the previous polls:
    rows that commit a little after later ones (several writer processes) are caught by their
    time, and rows written long after their time - replayed from a writer's spool once the
    database is back - by their id. Each poll's new entries come oldest first.
    """
    chosen = filters or LogFilter()
    with sessions() as session:
        who = resolve_actor(session, actor)
        first = query_logs(session, who, filters=chosen, limit=max(backlog, 1))
        horizon = first.entries[0].timestamp if first.entries else datetime.now(UTC)
        id_floor = _top_id(session)
        # Everything already visible in the look-back window counts as seen.
        known = chosen.apply(select(ServiceLog), who).where(
            ServiceLog.timestamp >= horizon - _FOLLOW_LOOKBACK
        )
        seen = {row.id: row.timestamp for row in session.execute(known).scalars()}
    seen.update((entry.id, entry.timestamp) for entry in first.entries)
    # (monotonic time, highest id then): an id becomes the floor once it is old enough that no
    # row with a lower id can still be in flight.
    tops: deque[tuple[float, int]] = deque()
    yield from reversed(first.entries) if backlog > 0 else ()
    while not should_stop():
        sleep(interval)
        moment = time.monotonic()
        while tops and tops[0][0] <= moment - _FOLLOW_LOOKBACK.total_seconds():
            id_floor = max(id_floor, tops.popleft()[1])
        window = chosen.apply(select(ServiceLog), who).where(
            or_(
                ServiceLog.timestamp >= horizon - _FOLLOW_LOOKBACK,
                ServiceLog.id > id_floor,
            )
        )
        fresh: list[LogEntry] = []
        with sessions() as session:
            tops.append((moment, _top_id(session)))
            after = 0
            while True:
                statement = window.where(ServiceLog.id > after).order_by(ServiceLog.id)
                found = session.execute(statement.limit(_FOLLOW_BATCH)).scalars()
                rows = [_entry(row) for row in found]
                fresh.extend(entry for entry in rows if entry.id not in seen)
                if len(rows) < _FOLLOW_BATCH:
                    break
                after = rows[-1].id
        fresh.sort(key=lambda entry: (entry.timestamp, entry.id))
        for entry in fresh:
            seen[entry.id] = entry.timestamp
            horizon = max(horizon, entry.timestamp)
            yield entry
        cutoff = horizon - _FOLLOW_LOOKBACK
        seen = {
            ident: moment for ident, moment in seen.items() if moment >= cutoff or ident > id_floor
        }


def _top_id(session: Session) -> int:
    """The highest ``service_logs`` id now (0 for an empty table)."""
    return int(session.scalar(select(func.max(ServiceLog.id))) or 0)


_RELATIVE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|wk)\s*$", re.I)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(text: str, *, now: datetime, zone: ZoneInfo) -> datetime:
    """Parse a user-given point in time to an aware UTC datetime.

    Accepts durations before ``now`` (``30s``, ``15m``, ``2h``, ``1d``, ``1w``), ``now``,
    ``today``/``yesterday`` (midnight in ``zone``), ISO dates (midnight in ``zone``) and ISO
    datetimes (naive ones in ``zone``). Raises :class:`ValueError` otherwise.
    """
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now.astimezone(UTC)
    if lowered in ("today", "yesterday"):
        day = now.astimezone(zone).date()
        if lowered == "yesterday":
            day -= timedelta(days=1)
        return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
    match = _RELATIVE.match(value)
    if match:
        amount = float(match.group(1))
        unit = _UNITS[match.group(2)[0].lower()]
        return (now - timedelta(seconds=amount * unit)).astimezone(UTC)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (use e.g. 15m, 2h, 1d, today, 2025-01-15 or 2025-01-15T09:15)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def module_matches(fragment: str) -> ColumnElement[bool]:
    """``service_logs.module`` contains ``fragment``, ignoring ASCII case; ``*`` in
    ``fragment`` matches any run of characters."""
    pattern = like_escape(ascii_lower_text(fragment)).replace("*", "%")
    return ascii_lower(ServiceLog.module).like(f"%{pattern}%", escape=LIKE_ESCAPE)


def _stored_level(level: str) -> str:
    number = level_number(level)
    for name in LEVEL_NAMES:
        if level_number(name) == number:
            return name
    raise ValueError(f"unknown log level {level!r}")


def _json_forms(keyword: str) -> list[str]:
    """How ``keyword`` can appear in the stored JSON text of ``context``: as typed, and as a
    JSON string body (quotes, backslashes and control characters escaped; non-ASCII characters
    as they are, as the log writer stores them, or as ``\\uXXXX`` escapes)."""
    forms = [keyword]
    for ascii_only in (False, True):
        escaped = json.dumps(keyword, ensure_ascii=ascii_only)[1:-1]
        if escaped not in forms:
            forms.append(escaped)
    return forms


def _entry(row: ServiceLog) -> LogEntry:
    return LogEntry(
        id=row.id,
        user_id=row.user_id,
        level=row.level,
        module=row.module,
        message=row.message,
        context=row.context,
        timestamp=row.timestamp,
    )
