"""Tests for the pure retention cut-offs and log file name parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from tradelog.config import Settings
from tradelog.retention import RetentionPolicy, log_file_date, next_daily_run


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("service-2024-03-01.jsonl", date(2024, 3, 1)),
        ("service-2024-03-01.1.jsonl.gz", date(2024, 3, 1)),
        ("service-2024-03-01.12.jsonl.gz", date(2024, 3, 1)),
        ("service-2024-03-01.3.jsonl", date(2024, 3, 1)),
        ("service-2024-03-01.jsonl.gz", date(2024, 3, 1)),
        ("service-2024-02-30.jsonl", None),
        ("service_20240301.jsonl", None),
        ("service-2024-03-01.jsonl.tmp", None),
        ("notes.txt", None),
        ("service-2024-3-1.jsonl", None),
        ("writer-123.json", None),
    ],
)
def test_log_file_date(name: str, expected: date | None) -> None:
    """Only tradelog's dated log file names yield a date."""
    assert log_file_date(name) == expected


def test_row_cutoffs_are_now_minus_the_periods() -> None:
    """service_logs and resolved errors cut-offs are exact instants in UTC."""
    policy = RetentionPolicy(service_logs_days=30, resolved_errors_days=90)
    now = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
    assert policy.service_logs_cutoff(now) == datetime(2024, 5, 31, 12, 0, tzinfo=UTC)
    assert policy.resolved_errors_cutoff(now) == datetime(2024, 4, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "cutoff"),
    [
        # 20:00 UTC on 31 March is already 1 April in India
        (datetime(2024, 3, 31, 20, 0, tzinfo=UTC), date(2024, 1, 2)),
        (datetime(2024, 3, 31, 18, 29, tzinfo=UTC), date(2024, 1, 1)),
        (datetime(2024, 3, 31, 18, 30, tzinfo=UTC), date(2024, 1, 2)),
    ],
)
def test_file_cutoff_uses_the_local_date(now: datetime, cutoff: date) -> None:
    """The file cut-off is today's date in the configured timezone minus the period."""
    assert RetentionPolicy(log_files_days=90).log_files_cutoff(now) == cutoff


@pytest.mark.parametrize(
    ("name", "expired"),
    [
        ("service-2024-01-01.jsonl", True),
        ("service-2024-01-01.4.jsonl.gz", True),
        ("service-2024-01-02.jsonl", False),
        ("service-2024-03-31.jsonl", False),
        ("readme.md", False),
    ],
)
def test_file_expired(name: str, expired: bool) -> None:
    """A file dated before the cut-off expires; its rotated segments too; others never."""
    now = datetime(2024, 3, 31, 20, 0, tzinfo=UTC)
    assert RetentionPolicy().file_expired(name, now) is expired


def test_naive_now_is_refused() -> None:
    """Policy code takes aware times only."""
    with pytest.raises(ValueError, match="timezone-aware"):
        RetentionPolicy().service_logs_cutoff(datetime(2024, 1, 1))


def test_periods_must_be_positive() -> None:
    """A zero-day period would delete everything; it is refused."""
    with pytest.raises(ValueError, match="service_logs_days"):
        RetentionPolicy(service_logs_days=0)


def test_from_settings() -> None:
    """The periods and timezone come from the settings."""
    settings = Settings(
        service_logs_retention_days=7,
        log_files_retention_days=14,
        resolved_errors_retention_days=21,
        timezone="Europe/London",
    )
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(
        service_logs_days=7, log_files_days=14, resolved_errors_days=21, timezone="Europe/London"
    )


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 03:30 IST is 22:00 UTC the day before
        (datetime(2024, 5, 1, 12, 0, tzinfo=UTC), datetime(2024, 5, 1, 22, 0, tzinfo=UTC)),
        (datetime(2024, 5, 1, 21, 59, tzinfo=UTC), datetime(2024, 5, 1, 22, 0, tzinfo=UTC)),
        (datetime(2024, 5, 1, 22, 0, tzinfo=UTC), datetime(2024, 5, 2, 22, 0, tzinfo=UTC)),
        (datetime(2024, 5, 1, 23, 0, tzinfo=UTC), datetime(2024, 5, 2, 22, 0, tzinfo=UTC)),
    ],
)
def test_next_daily_run(now: datetime, expected: datetime) -> None:
    """The next run is the next local 03:30, strictly after now."""
    assert next_daily_run(now, time(3, 30), "Asia/Kolkata") == expected


def test_next_daily_run_across_dst() -> None:
    """Local wall-clock time holds across a DST change."""
    before = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)  # London switches on 31 March
    assert next_daily_run(before, time(3, 30), "Europe/London") == datetime(
        2024, 3, 31, 2, 30, tzinfo=UTC
    )
