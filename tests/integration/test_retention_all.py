"""Retention for everything: notifications (read and unread), finished deliveries, task
executions, stale episodes, audit rows, dead-letter and spill files; dedupe keys expire with
their notification."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db.models import (
    AuditLog,
    Notification,
    NotificationDelivery,
    ServiceStaleEpisode,
    ServiceTaskExecution,
    WriteBatch,
)
from tradelog.config import Settings
from tradelog.retention import RetentionJob, RetentionPolicy

NOW = datetime(2024, 6, 30, 12, 0, tzinfo=UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _note(user_id: int, title: str, days: float, *, read: bool, **extra: Any) -> Notification:
    return Notification(
        user_id=user_id,
        type="trading",
        level="info",
        title=title,
        message="m",
        read=read,
        created_at=ago(days),
        **extra,
    )


def seed(db: MigratedDatabase, users: dict[str, int]) -> dict[str, int]:
    """One row just past and one just inside each period."""
    alice, admin = users["alice"], users["admin"]
    with db.session() as session:
        notes = {
            "read_old": _note(alice, "read_old", 31, read=True, dedupe_key="k-old"),
            "read_new": _note(alice, "read_new", 29, read=True),
            "unread_old": _note(alice, "unread_old", 181, read=False),
            "unread_new": _note(alice, "unread_new", 179, read=False),
            "read_old_pending": _note(alice, "read_old_pending", 40, read=True),
            "read_old_sent": _note(alice, "read_old_sent", 40, read=True),
            "recent": _note(alice, "recent", 1, read=False),
        }
        session.add_all(notes.values())
        session.flush()

        def delivery(note: str, channel: str, status: str, days: float) -> None:
            session.add(
                NotificationDelivery(
                    notification_id=notes[note].id,
                    user_id=alice,
                    channel=channel,
                    status=status,
                    updated_at=ago(days),
                    created_at=ago(days),
                )
            )

        delivery("read_old_pending", "telegram", "pending", 40)
        delivery("read_old_sent", "telegram", "sent", 40)
        delivery("recent", "telegram", "sent", 31)  # finished long enough: goes
        delivery("recent", "email", "failed", 29)  # stays
        delivery("unread_new", "telegram", "pending", 60)  # unfinished: stays
        for days in (91, 89):
            session.add(
                ServiceTaskExecution(
                    user_id=alice,
                    task_name=f"t{days}",
                    executed_at=ago(days),
                    status="success",
                    duration_seconds=1.0,
                )
            )
        session.add_all(
            [
                ServiceStaleEpisode(
                    user_id=alice, since=ago(95), detected_at=ago(95), ended_at=ago(91)
                ),
                ServiceStaleEpisode(user_id=alice, since=ago(200), detected_at=ago(200)),
            ]
        )
        for days in (366, 364):
            session.add(
                AuditLog(
                    user_id=admin, action="update", resource_type="config", timestamp=ago(days)
                )
            )
        session.commit()
        return {name: note.id for name, note in notes.items()}


def test_every_category_goes_after_its_period(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A dry run counts exactly what the run then deletes; everything inside its period, and
    notifications with something left to deliver, stay."""
    seed(db, users)
    job = RetentionJob(db.engine, None, batch_size=1)
    preview = job.run_once(NOW, dry_run=True)
    expected = {
        "deliveries": 2,  # the sent ones of "recent" and "read_old_sent"
        "read_notifications": 2,  # read_old, read_old_sent
        "unread_notifications": 1,
        "task_executions": 1,
        "stale_episodes": 1,
        "audit_logs": 1,
    }
    assert {k: v for k, v in preview.counts().items() if v} == expected
    assert db.scalar("SELECT count(*) FROM notifications") == 7
    done = job.run_once(NOW)
    assert done.counts() == preview.counts()
    titles = sorted(str(r["title"]) for r in db.rows("SELECT title FROM notifications"))
    assert titles == ["read_new", "read_old_pending", "recent", "unread_new"]
    deliveries = db.rows("SELECT channel, status FROM notification_deliveries ORDER BY id")
    assert deliveries == [
        {"channel": "telegram", "status": "pending"},
        {"channel": "email", "status": "failed"},
        {"channel": "telegram", "status": "pending"},
    ]
    assert db.scalar("SELECT task_name FROM service_task_execution") == "t89"
    assert db.scalar("SELECT count(*) FROM service_stale_episodes WHERE ended_at IS NULL") == 1
    assert db.scalar("SELECT count(*) FROM service_stale_episodes") == 1
    assert db.scalar("SELECT count(*) FROM audit_logs") == 1
    assert set(job.run_once(NOW).counts().values()) == {0}


def test_a_dedupe_key_expires_with_its_notification(
    db: MigratedDatabase, users: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the notification is kept its key is a duplicate; once retention deleted it, the
    key makes a new notification."""
    monkeypatch.setenv("TRADELOG_DATABASE_URL", db.url)
    alice = users["alice"]
    try:
        first = tradelog.notify(alice, "trading", "info", "Summary", "x", dedupe_key="eod:06-01")
        assert tradelog.notify(
            alice, "trading", "info", "Summary", "x", dedupe_key="eod:06-01"
        ).duplicate
        db.execute(
            "UPDATE notifications SET read = :r, created_at = :at WHERE id = :i",
            r=True,
            at=datetime.now(UTC) - timedelta(days=45),
            i=first.notification_id,
        )
        assert (
            RetentionJob(db.engine, None).run_once(datetime.now(UTC)).rows["read_notifications"]
            == 1
        )
        again = tradelog.notify(alice, "trading", "info", "Summary", "x", dedupe_key="eod:06-01")
        assert again.created
        assert not again.duplicate
    finally:
        tradelog.shutdown()


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(child.stdout)


def _aged(path: Path, days: float, text: str = "[]\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


@pytest.mark.slow
def test_dead_letters_and_abandoned_spills(db: MigratedDatabase, tmp_path: Path) -> None:
    """Dead letters go by the date in their name; spills untouched for the period go unless a
    live process holds them (a locked spool, the error spill of a running process)."""
    now = datetime.now(UTC)
    today = now.astimezone().date()
    log_dir = tmp_path / "logs"
    old_letter = _aged(
        log_dir / "_dead_letter" / f"service_logs-{today - timedelta(days=120)}.jsonl", 0
    )
    new_letter = _aged(
        log_dir / "_dead_letter" / f"service_logs-{today - timedelta(days=10)}.jsonl", 0
    )
    abandoned = _aged(log_dir / "_spool" / "spool-111-aaaa.jsonl", 40)
    offset = _aged(log_dir / "_spool" / "spool-111-aaaa.jsonl.offset", 40, "00000000000000000000\n")
    held = _aged(log_dir / "_spool" / "spool-222-bbbb.jsonl", 40)
    fresh = _aged(log_dir / "_spool" / "spool-333-cccc.jsonl", 2)
    gone = _aged(log_dir / "_runtime" / f"errors-unwritten-{_dead_pid()}.jsonl", 40)
    mine = _aged(log_dir / "_runtime" / f"errors-unwritten-{os.getpid()}.jsonl", 40)
    # A replay of this (live) process stopped part-way: its file and its progress mark stay.
    claim = f"errors-unwritten-{_dead_pid()}.replay-{os.getpid()}.jsonl"
    claimed = _aged(log_dir / "_runtime" / claim, 40)
    mark = _aged(log_dir / "_runtime" / f"{claim}.done", 40, "00000000000000000003\n")
    # The mark of a replay whose file is gone (it died between deleting the two) goes.
    stray = _aged(log_dir / "_runtime" / "errors-unwritten-1.replay-2.jsonl.done", 40, "0\n")
    counters = _aged(log_dir / "_runtime" / "writer-123.json", 400, "{}")
    lock = os.open(held, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        job = RetentionJob(db.engine, log_dir)
        preview = job.run_once(now, dry_run=True)
        listed = sorted(str(item.path) for item in preview.runtime_files)
        assert listed == sorted(str(p) for p in (old_letter, abandoned, gone, stray))
        assert (preview.counts()["dead_letters"], preview.counts()["spill_files"]) == (1, 3)
        assert old_letter.exists()
        done = job.run_once(now)
        assert done.counts() == preview.counts()
    finally:
        os.close(lock)
    assert not any(p.exists() for p in (old_letter, abandoned, offset, gone, stray))
    assert all(p.exists() for p in (new_letter, held, fresh, mine, counters, claimed, mark))


def test_settings_and_cli(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every period comes from its setting; ``retention run --dry-run --json`` shows each
    category with its cut-off."""
    settings = Settings(
        database_url=db.url,
        audit_logs_retention_days=400,
        read_notifications_retention_days=7,
        spill_files_retention_days=3,
    )
    policy = RetentionPolicy.from_settings(settings)
    assert (policy.audit_logs_days, policy.read_notifications_days, policy.spill_files_days) == (
        400,
        7,
        3,
    )
    assert policy.cutoff("audit_logs", NOW) == NOW - timedelta(days=400)
    with pytest.raises(ValueError, match="deliveries_days"):
        RetentionPolicy(deliveries_days=0)
    seed(db, users)
    assert main(["--database-url", db.url, "--json", "retention", "run", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    assert set(report["cutoffs"]) >= {"audit_logs", "deliveries", "unread_notifications"}
    # the command runs at the real time, long after the seeded 2024 rows
    assert report["audit_logs"] == 2
    assert report["unread_notifications"] == 2  # unread_new waits for its pending delivery
    assert db.scalar("SELECT count(*) FROM audit_logs") == 2


def test_write_batch_ids_go_after_the_spill_file_period(db: MigratedDatabase) -> None:
    """The id of a batch committed longer ago than spill files are kept (30 days) can no
    longer meet a replay of its batch: it goes; a younger one stays."""
    with db.session() as session:
        session.add_all(
            [
                WriteBatch(batch_id="old", committed_at=ago(31)),
                WriteBatch(batch_id="young", committed_at=ago(29)),
            ]
        )
        session.commit()
    result = RetentionJob(db.engine, None, batch_size=1).run_once(NOW)
    assert result.counts()["write_batches"] == 1
    assert [r["batch_id"] for r in db.rows("SELECT batch_id FROM tradelog_write_batches")] == [
        "young"
    ]
