"""Tests for the retention job against real databases and real files."""

from __future__ import annotations

import gzip
import time as clock
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import tradelog
from tests.support.db import MigratedDatabase, add_service_logs
from tradelog._db.models import ErrorLog, ServiceLog
from tradelog.config import Settings
from tradelog.retention import (
    DailyRetention,
    RetentionJob,
    RetentionPolicy,
    next_daily_run,
)

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)


def add_logs(db: MigratedDatabase, user_id: int, days_ago: float, count: int) -> None:
    """Insert ``count`` service_logs rows dated ``days_ago`` before NOW."""
    moment = NOW - timedelta(days=days_ago)
    add_service_logs(db, user_id, ((f"m{i}", moment, None) for i in range(count)))


def add_error(
    db: MigratedDatabase, user_id: int, *, resolved_days_ago: float | None, occurred_days: int = 200
) -> None:
    with db.session() as session:
        session.add(
            ErrorLog(
                user_id=user_id,
                error_type="ValueError",
                error_message="bad",
                occurred_at=NOW - timedelta(days=occurred_days),
                resolved=resolved_days_ago is not None,
                resolved_at=None
                if resolved_days_ago is None
                else NOW - timedelta(days=resolved_days_ago),
            )
        )
        session.commit()


def write_files(log_dir: Path, names: dict[str, list[str]]) -> None:
    for directory, files in names.items():
        (log_dir / directory).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = log_dir / directory / name
            if name.endswith(".gz"):
                path.write_bytes(gzip.compress(b'{"event": "x"}\n'))
            else:
                path.write_text('{"event": "x"}\n')


def test_deletes_expired_rows_in_batches(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Rows older than 30 days go (in batches of 7), newer ones and other tables stay."""
    add_logs(db, users["alice"], 45, 23)
    add_logs(db, users["bob"], 31, 5)
    add_logs(db, users["alice"], 29.9, 4)
    add_logs(db, users["bob"], 1, 3)
    seen: list[tuple[str, int, int]] = []
    job = RetentionJob(db.engine, None, batch_size=7)
    result = job.run_once(NOW, progress=lambda c, d, t: seen.append((c, d, t)))
    assert result.service_logs == 28
    assert db.scalar("SELECT count(*) FROM service_logs") == 7
    assert [s for s in seen if s[0] == "service_logs"] == [
        ("service_logs", 7, 28),
        ("service_logs", 14, 28),
        ("service_logs", 21, 28),
        ("service_logs", 28, 28),
        ("service_logs", 28, 28),
    ]
    again = job.run_once(NOW)
    assert set(again.counts().values()) == {0}


def test_batches_take_the_oldest_rows_first(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Each batch deletes the oldest expired rows by time, also when ids run the other way (rows
    replayed from a spool long after their time), and each batch is committed on its own."""
    alice = users["alice"]
    for days_ago in (31, 32, 33, 34, 35, 36):  # newest first: ids and times run opposite
        add_logs(db, alice, days_ago, 1)
    add_logs(db, alice, 1, 1)
    after_each: list[list[float]] = []

    def remaining(category: str, done: int, total: int) -> None:
        if category == "service_logs":
            rows = db.rows("SELECT timestamp FROM service_logs ORDER BY timestamp")
            after_each.append(
                [round((NOW - _aware(row["timestamp"])).total_seconds() / 86400) for row in rows]
            )

    RetentionJob(db.engine, None, batch_size=2).run_once(NOW, progress=remaining)
    assert after_each[:3] == [[34, 33, 32, 31, 1], [32, 31, 1], [1]]


def _aware(value: object) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_resolved_errors_go_90_days_after_resolution(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Unresolved errors stay forever; resolved ones after 90 days from resolved_at."""
    alice = users["alice"]
    add_error(db, alice, resolved_days_ago=None, occurred_days=1000)
    add_error(db, alice, resolved_days_ago=91)
    add_error(db, alice, resolved_days_ago=89)
    add_error(db, users["bob"], resolved_days_ago=365)
    result = RetentionJob(db.engine, None).run_once(NOW)
    assert result.error_logs == 2
    remaining = db.rows("SELECT resolved FROM error_logs ORDER BY id")
    assert [bool(r["resolved"]) for r in remaining] == [False, True]


def test_dry_run_counts_and_lists_without_deleting(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A dry run reports exactly what a real run then deletes."""
    add_logs(db, users["alice"], 40, 3)
    add_error(db, users["bob"], resolved_days_ago=100)
    write_files(
        tmp_path,
        {
            f"users/{users['alice']}": ["service-2024-01-01.jsonl", "service-2024-06-29.jsonl"],
            "system": ["service-2024-03-01.2.jsonl.gz"],
        },
    )
    job = RetentionJob(db.engine, tmp_path)
    preview = job.run_once(NOW, dry_run=True)
    assert preview.dry_run
    assert {k: v for k, v in preview.counts().items() if v} == {
        "service_logs": 3,
        "error_logs": 1,
        "log_files": 2,
    }
    assert db.scalar("SELECT count(*) FROM service_logs") == 3
    assert all(p.exists() for p in preview.files)
    done = job.run_once(NOW)
    assert done.counts() == preview.counts()
    assert done.files == preview.files
    assert not any(p.exists() for p in done.files)
    assert done.to_dict()["files"] == [str(p) for p in preview.files]


def test_files_by_date_in_name(tmp_path: Path, db: MigratedDatabase) -> None:
    """Dated files before the local cut-off go with their segments; anything else stays."""
    tmp_path = tmp_path / "logs"
    write_files(
        tmp_path,
        {
            "users/1": [
                "service-2024-03-31.jsonl",  # cut-off is 2024-04-01 (IST) -> goes
                "service-2024-03-31.1.jsonl.gz",
                "service-2024-04-01.jsonl",  # stays
                "notes.txt",
                "service_20240101.jsonl",  # legacy name: not ours
            ],
            "users/2": ["service-2023-12-31.3.jsonl.gz"],
            "system": ["service-2024-03-30.jsonl", "service-2024-06-30.jsonl"],
            "_runtime": ["service-2020-01-01.jsonl"],  # outside users/ and system/
        },
    )
    (tmp_path / "users" / "stray-file").write_text("x")
    sizes = {p.relative_to(tmp_path).as_posix(): p.stat().st_size for p in tmp_path.rglob("*.*")}
    result = RetentionJob(db.engine, tmp_path).run_once(NOW)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in result.files)
    assert names == [
        "system/service-2024-03-30.jsonl",
        "users/1/service-2024-03-31.1.jsonl.gz",
        "users/1/service-2024-03-31.jsonl",
        "users/2/service-2023-12-31.3.jsonl.gz",
    ]
    assert result.log_file_bytes == sum(sizes[name] for name in names)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert left == [
        "_runtime/service-2020-01-01.jsonl",
        "system/service-2024-06-30.jsonl",
        "users/1/notes.txt",
        "users/1/service-2024-04-01.jsonl",
        "users/1/service_20240101.jsonl",
        "users/stray-file",
    ]


def test_missing_log_dir_is_fine(db: MigratedDatabase, tmp_path: Path) -> None:
    """A log directory that does not exist yet has nothing to delete."""
    result = RetentionJob(db.engine, tmp_path / "nope").run_once(NOW)
    assert result.log_files == 0


def test_from_settings_uses_the_configured_periods(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Settings periods drive the job."""
    add_logs(db, users["alice"], 8, 2)
    add_logs(db, users["alice"], 6, 1)
    settings = Settings(database_url=db.url, log_dir=tmp_path, service_logs_retention_days=7)
    job = RetentionJob.from_settings(settings, db.engine)
    assert job.run_once(NOW).service_logs == 2


def test_daily_retention_runs_only_with_worker(db: MigratedDatabase, tmp_path: Path) -> None:
    """Without the worker setting nothing starts; with it a thread starts, and stops at
    shutdown."""
    options: dict[str, Any] = {"database_url": db.url, "log_dir": tmp_path, "console": False}
    assert tradelog.configure(**options).retention is None
    daily = tradelog.configure(**options, worker=True).retention
    assert daily is not None
    assert daily._thread is not None
    assert daily._thread.is_alive()
    tradelog.shutdown()
    assert not daily._thread.is_alive()


def test_daily_thread_runs_at_the_daily_time(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A clock 0.2 s before 03:30 IST makes the thread run once, then wait for tomorrow."""
    start = next_daily_run(datetime.now(UTC), time(3, 30), "Asia/Kolkata") - timedelta(seconds=0.2)
    first_read: list[float] = []

    def shifted() -> datetime:
        # The clock starts when the thread first reads it, however late the thread starts.
        if not first_read:
            first_read.append(clock.monotonic())
        return start + timedelta(seconds=clock.monotonic() - first_read[0])

    with db.session() as session:
        session.add(
            ServiceLog(
                user_id=users["alice"],
                level="INFO",
                module="t",
                message="old",
                timestamp=start - timedelta(days=40),
            )
        )
        session.commit()
    results: list[Any] = []
    daily = DailyRetention(
        RetentionJob(db.engine, tmp_path, RetentionPolicy()),
        clock=shifted,
        on_done=results.append,
    ).start()
    deadline = clock.monotonic() + 10
    while not results and clock.monotonic() < deadline:
        clock.sleep(0.05)
    daily.stop()
    assert daily.runs == 1
    assert results[0].service_logs == 1
    assert db.scalar("SELECT count(*) FROM service_logs") == 0


def test_failed_run_is_counted_not_raised(tmp_path: Path) -> None:
    """A database that cannot be reached makes a failed pass, not an exception."""
    from tradelog._db.engine import create_tradelog_engine

    engine = create_tradelog_engine(f"sqlite:///{tmp_path}/missing-dir/x.db")
    daily = DailyRetention(RetentionJob(engine, tmp_path))
    assert daily.run_now() is None
    assert daily.failures == 1
    engine.dispose()


def test_configure_with_worker_runs_retention_daily(db: MigratedDatabase, tmp_path: Path) -> None:
    """tradelog.configure(worker=True) starts the daily retention thread; shutdown stops it."""
    import threading

    import tradelog

    def retention_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "tradelog-retention"]

    tradelog.configure(database_url=db.url, log_dir=tmp_path, console=False, worker=False)
    try:
        assert retention_threads() == []
        tradelog.configure(database_url=db.url, log_dir=tmp_path, console=False, worker=True)
        assert len(retention_threads()) == 1
    finally:
        tradelog.shutdown()
    assert retention_threads() == []
