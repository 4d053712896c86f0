"""Turning query text into the values tradelog's functions take, naming the field when it fails.

Every failure here is a :class:`~tradelog.web._problems.BadRequest` for the parameter at fault,
so a client reads ``400`` with ``errors: [{"field": "since", ...}]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from tradelog._db.base import utcnow
from tradelog._logs.levels import level_number
from tradelog._logs.query import LogFilter, parse_moment
from tradelog.web._problems import BadRequest

__all__ = ["field_in", "log_filter", "moment", "naming"]

_T = TypeVar("_T")


def moment(name: str, text: str | None, zone: ZoneInfo) -> datetime | None:
    """``text`` (``15m``, ``2h``, ``today``, an ISO date or time; naive in ``zone``) in UTC."""
    if text is None or not text.strip():
        return None
    try:
        return parse_moment(text, now=utcnow(), zone=zone)
    except ValueError as exc:
        raise BadRequest(name, str(exc)) from None


@contextlib.contextmanager
def naming(field: str | None) -> Iterator[None]:
    """A ``ValueError`` raised inside is a :class:`BadRequest` for ``field``."""
    try:
        yield
    except BadRequest:
        raise
    except ValueError as exc:
        raise BadRequest(field, str(exc)) from None


def field_in(message: str, names: Iterable[str]) -> str | None:
    """The first of ``names`` that ``message`` mentions, as ``email_address`` or as ``email
    address`` (a validation message names its field), or None."""
    found = [
        (message.find(form), name)
        for name in names
        for form in (name, name.replace("_", " "))
        if form in message
    ]
    return min(found)[1] if found else None


def _level(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        level_number(value)
    except ValueError as exc:
        raise BadRequest(name, str(exc)) from None
    return value.strip().upper()


def log_filter(
    zone: ZoneInfo,
    *,
    user_id: int | None,
    level: str | None,
    min_level: str | None,
    module: str | None,
    since: str | None,
    until: str | None,
    keyword: str | None,
) -> LogFilter:
    """The :class:`~tradelog.logs.LogFilter` for a log query's parameters."""
    exact, minimum = _level("level", level), _level("min_level", min_level)
    if exact is not None and minimum is not None:
        raise BadRequest("min_level", "give either level or min_level, not both")
    return LogFilter(
        user_id=user_id,
        level=exact,
        min_level=minimum,
        module=(module or "").strip() or None,
        since=moment("since", since, zone),
        until=moment("until", until, zone),
        keyword=(keyword or "").strip() or None,
    )


def checked(field: str, work: Callable[[], _T]) -> _T:
    """``work()``, with a ``ValueError`` turned into a :class:`BadRequest` for ``field``."""
    with naming(field):
        return work()
