"""Parsing the points in time users type for log queries (pure: takes ``now``)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from tradelog._logs.query import Cursor, parse_moment

IST = ZoneInfo("Asia/Kolkata")
NOW = datetime(2025, 1, 15, 4, 0, tzinfo=UTC)  # 09:30 IST


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", datetime(2025, 1, 15, 4, 0, tzinfo=UTC)),
        ("30s", datetime(2025, 1, 15, 3, 59, 30, tzinfo=UTC)),
        ("15m", datetime(2025, 1, 15, 3, 45, tzinfo=UTC)),
        ("2h", datetime(2025, 1, 15, 2, 0, tzinfo=UTC)),
        ("1.5h", datetime(2025, 1, 15, 2, 30, tzinfo=UTC)),
        ("1d", datetime(2025, 1, 14, 4, 0, tzinfo=UTC)),
        ("1w", datetime(2025, 1, 8, 4, 0, tzinfo=UTC)),
        ("today", datetime(2025, 1, 14, 18, 30, tzinfo=UTC)),
        ("yesterday", datetime(2025, 1, 13, 18, 30, tzinfo=UTC)),
        ("2025-01-10", datetime(2025, 1, 9, 18, 30, tzinfo=UTC)),
        ("2025-01-15T09:15", datetime(2025, 1, 15, 3, 45, tzinfo=UTC)),
        ("2025-01-15T09:15:00+00:00", datetime(2025, 1, 15, 9, 15, tzinfo=UTC)),
    ],
)
def test_parse_moment(text: str, expected: datetime) -> None:
    """Durations count back from now; dates and naive times are in the configured zone."""
    assert parse_moment(text, now=NOW, zone=IST) == expected


@pytest.mark.parametrize("text", ["", "soon", "15x", "2025-13-40"])
def test_parse_moment_refuses_nonsense(text: str) -> None:
    """Anything else is a clear error."""
    with pytest.raises(ValueError, match="not a time"):
        parse_moment(text, now=NOW, zone=IST)


def test_cursor_round_trip() -> None:
    """A cursor survives encoding; garbage is refused."""
    cursor = Cursor(datetime(2025, 1, 15, 9, 15, 0, 123456, tzinfo=UTC), 42)
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "abc", Cursor(datetime(2025, 1, 1, tzinfo=UTC), 1).encode()[:-3] + "!!"):
        with pytest.raises(ValueError, match="not a log cursor"):
            Cursor.decode(bad)
