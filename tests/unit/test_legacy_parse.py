"""Tests for parsing one legacy JSONL line into a service_logs row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tradelog._legacy_import import LineError, discover, parse_line
from tradelog._logs.redact import Redactor
from tradelog.exceptions import NotFound

IST = ZoneInfo("Asia/Kolkata")
REDACTOR = Redactor()


def parse(data: Any, user_id: int = 5) -> dict[str, Any] | None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_line(raw, user_id, IST, REDACTOR)


def line(**fields: Any) -> dict[str, Any]:
    base = {
        "timestamp": "2024-01-05T09:05:00",
        "level": "INFO",
        "module": "premarket",
        "message": "retry AMO",
        "context": {"symbol": "RELIANCE"},
        "user_id": 5,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-01-05T09:05:00", datetime(2024, 1, 5, 3, 35, tzinfo=UTC)),  # naive = IST
        ("2024-01-05 09:05:00.123456", datetime(2024, 1, 5, 3, 35, 0, 123456, tzinfo=UTC)),
        ("2024-01-05T09:05:00+05:30", datetime(2024, 1, 5, 3, 35, tzinfo=UTC)),
        ("2024-01-05T03:35:00Z", datetime(2024, 1, 5, 3, 35, tzinfo=UTC)),
        ("2024-01-05T09:05:00-04:00", datetime(2024, 1, 5, 13, 5, tzinfo=UTC)),
        (1704425700, datetime(2024, 1, 5, 3, 35, tzinfo=UTC)),
        (1704425700.5, datetime(2024, 1, 5, 3, 35, 0, 500000, tzinfo=UTC)),
    ],
)
def test_timestamps(timestamp: Any, expected: datetime) -> None:
    """Naive times are IST, offsets are honoured, numbers are epoch seconds; all end in UTC."""
    row = parse(line(timestamp=timestamp))
    assert row is not None
    assert row["timestamp"] == expected
    assert row["timestamp"].utcoffset().total_seconds() == 0


def test_a_full_line() -> None:
    """Every field lands in its column; extra fields are kept in the context."""
    row = parse(line(level="warn", host="box-1"))
    assert row == {
        "user_id": 5,
        "timestamp": datetime(2024, 1, 5, 3, 35, tzinfo=UTC),
        "level": "WARNING",
        "module": "premarket",
        "message": "retry AMO",
        "context": {"host": "box-1", "symbol": "RELIANCE"},
    }


@pytest.mark.parametrize(
    ("fields", "context"),
    [
        ({"context": None}, None),
        ({"context": ...}, None),
        ({"context": [1, 2]}, {"context": [1, 2]}),
        ({"context": {"nested": {"mpin": "1234"}}}, {"nested": {"mpin": "[REDACTED]"}}),
    ],
)
def test_context(fields: dict[str, Any], context: Any) -> None:
    """Context is optional, wrapped when not an object, and scrubbed of secrets."""
    row = parse(line(**fields))
    assert row is not None
    assert row["context"] == context


def test_sanitising() -> None:
    """Secrets in text are scrubbed, NULs removed, long text cut with a marker."""
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    row = parse(line(message=f"GET https://api.telegram.org/bot{token}/send\x00 " + "x" * 2000))
    assert row is not None
    assert token not in row["message"]
    assert "\x00" not in row["message"]
    assert len(row["message"]) == 1024
    row = parse(line(module="m" * 300, message={"structured": True}))
    assert row is not None
    assert len(row["module"]) == 128
    assert row["message"] == '{"structured": true}'


def test_missing_module_and_user_id_are_fine() -> None:
    """A line without module or user_id still imports."""
    row = parse(line(module=..., user_id=...))
    assert row is not None
    assert row["module"] == "legacy"
    assert parse(line(user_id="5")) is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object but list"),
        (b'"text"', "not a JSON object but str"),
        (json.dumps(line(timestamp=...)).encode(), "missing timestamp"),
        (json.dumps(line(timestamp="")).encode(), "missing timestamp"),
        (json.dumps(line(timestamp="yesterday")).encode(), "unreadable timestamp 'yesterday'"),
        (json.dumps(line(timestamp=True)).encode(), "timestamp is not a date/time"),
        (json.dumps(line(timestamp=["x"])).encode(), "timestamp is not text"),
        (json.dumps(line(timestamp=1e20)).encode(), "out of range"),
        (json.dumps(line(level="LOUD")).encode(), "unknown level 'LOUD'"),
        (json.dumps(line(level=...)).encode(), "missing level"),
        (json.dumps(line(level=3)).encode(), "level is not text"),
        (json.dumps(line(message="")).encode(), "missing message"),
        (json.dumps(line(message=...)).encode(), "missing message"),
        (json.dumps(line(user_id=6)).encode(), "user_id 6 does not match the directory user_5"),
        (json.dumps(line(user_id=True)).encode(), "does not match"),
    ],
)
def test_bad_lines(raw: bytes, reason: str) -> None:
    """Each kind of bad line raises LineError with a readable reason."""
    with pytest.raises(LineError, match=reason.replace("(", r"\(")):
        parse_line(raw, 5, IST, REDACTOR)


@pytest.mark.parametrize("raw", [b"", b"\n", b"   \r\n"])
def test_blank_lines(raw: bytes) -> None:
    """Blank lines are neither rows nor errors."""
    assert parse_line(raw, 5, IST, REDACTOR) is None


def test_discover_layouts(tmp_path: Path) -> None:
    """The root, the users dir, a user dir and a single file all work."""
    for user, names in {"user_2": ["service_20240102.jsonl", "notes.txt"], "user_10": []}.items():
        (tmp_path / "users" / user).mkdir(parents=True)
        for name in names:
            (tmp_path / "users" / user / name).write_text("{}\n")
    (tmp_path / "users" / "other").mkdir()
    file = tmp_path / "users" / "user_2" / "service_20240102.jsonl"
    assert discover(tmp_path) == ([(2, file)], [tmp_path / "users" / "user_2" / "notes.txt"])
    assert discover(tmp_path / "users")[0] == [(2, file)]
    assert discover(tmp_path / "users" / "user_2")[0] == [(2, file)]
    assert discover(file) == ([(2, file)], [])


def test_discover_refuses_what_is_not_legacy(tmp_path: Path) -> None:
    """Missing paths, empty trees and stray files are NotFound."""
    with pytest.raises(NotFound, match="does not exist"):
        discover(tmp_path / "nope")
    with pytest.raises(NotFound, match="no user_<id> directories"):
        discover(tmp_path)
    stray = tmp_path / "service_20240101.jsonl"
    stray.write_text("{}")
    with pytest.raises(NotFound, match="not a legacy log file"):
        discover(stray)
