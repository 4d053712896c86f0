"""Stale services: one alert per stale episode to the operators and the owner, one when it
ends; several monitors agree; the worker process runs the checks."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog import testing
from tradelog._cli import main
from tradelog._health.stale import StaleMonitor
from tradelog._health.writer import ServiceHealth
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups

T0 = datetime(2026, 1, 5, 5, 0, tzinfo=UTC)  # 10:30 IST


def monitor(db: MigratedDatabase, clock: testing.FrozenClock, **options: Any) -> StaleMonitor:
    return StaleMonitor(
        db.engine,
        send=NotificationService(db.engine, Wakeups()).notify,
        threshold=300,
        clock=clock,
        **options,
    )


def notes(db: MigratedDatabase, user_id: int) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT type, level, title, message FROM notifications WHERE user_id = :u ORDER BY id",
        u=user_id,
    )


def test_a_stale_episode_alerts_once_and_again_when_it_ends(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Stale past the threshold: one alert each to the operator and the owner, however often
    and by however many monitors it is checked; heartbeats resuming end it with one more; a
    later silence is a new episode."""
    alice, admin = users["alice"], users["admin"]
    health = ServiceHealth(db.engine)
    assert health.mark_running(alice, now=T0)
    clock = testing.FrozenClock(T0 + timedelta(minutes=4))
    first, second = monitor(db, clock), monitor(db, clock)
    assert first.check_once().opened == []
    clock.advance(timedelta(minutes=2))
    opened = first.check_once().opened
    assert len(opened) == 1
    for _ in range(3):
        clock.advance(timedelta(minutes=10))
        assert first.check_once().opened == []
        assert second.check_once().opened == []
    owner = notes(db, alice)
    assert owner == [
        {
            "type": "service",
            "level": "warning",
            "title": "Service not responding",
            "message": "Your trading service has not reported since 10:30 IST; "
            "the operators have been told.",
        }
    ]
    [alert] = notes(db, admin)
    assert alert["title"] == f"Service stale: user {alice}"
    assert "alice@example.com" in alert["message"]
    assert "no heartbeat since 10:30 IST (6 min; threshold 5 min)" in alert["message"]

    assert health.heartbeat(alice, now=clock())
    clock.advance(timedelta(minutes=1))
    assert second.check_once().ended == opened
    assert first.check_once().ended == []
    assert [n["title"] for n in notes(db, alice)][-1] == "Service reporting again"
    assert [n["title"] for n in notes(db, admin)][-1] == f"Service recovered: user {alice}"
    assert "heartbeats resumed at 11:06 IST after 36 min without one" in str(
        notes(db, admin)[-1]["message"]
    )

    clock.advance(timedelta(minutes=10))
    assert len(first.check_once().opened) == 1
    assert len(notes(db, alice)) == 3
    assert db.scalar("SELECT count(*) FROM service_stale_episodes") == 2


def test_stopped_while_stale_is_for_the_operators(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A stale service marked stopped ends its episode; only the operators hear of it (the
    owner gets ``mark_stopped``'s own notice); a stopped service is never stale."""
    health = ServiceHealth(db.engine)
    health.mark_running(users["bob"], now=T0)
    clock = testing.FrozenClock(T0 + timedelta(minutes=20))
    checks = monitor(db, clock)
    assert len(checks.check_once().opened) == 1
    health.mark_stopped(users["bob"], now=clock())
    assert len(checks.check_once().ended) == 1
    clock.advance(timedelta(hours=2))
    assert checks.check_once().opened == []
    assert [n["title"] for n in notes(db, users["bob"])] == ["Service not responding"]
    assert [n["title"] for n in notes(db, users["admin"])] == [
        f"Service stale: user {users['bob']}",
        f"Service stopped while stale: user {users['bob']}",
    ]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_monitors_in_several_processes_alert_once(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Four monitors checking the same stale service at the same moment: one episode, one
    alert per recipient."""
    ServiceHealth(db.engine).mark_running(users["alice"], now=T0)
    clock = testing.FrozenClock(T0 + timedelta(minutes=30))
    monitors = [monitor(db, clock) for _ in range(4)]
    start = threading.Barrier(4)
    opened: list[int] = []

    def check(m: StaleMonitor) -> None:
        start.wait()
        opened.extend(m.check_once().opened)

    threads = [threading.Thread(target=check, args=(m,)) for m in monitors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) == 1
    assert len(notes(db, users["alice"])) == 1
    assert len(notes(db, users["admin"])) == 1


def test_the_worker_process_checks_heartbeats(tmp_path: Path) -> None:
    """A runtime with the worker on runs the monitor: a service that goes silent is reported
    without anyone calling it."""
    clock = testing.FrozenClock(T0)
    testing.configure_for_tests(
        tmp_path,
        clock=clock,
        channels=testing.recording_channels(),
        stale_heartbeat_seconds=60,
        stale_check_interval=0.05,
    )
    try:
        with tradelog.session() as s:
            owner = tradelog.users.create_user(s, email="o@example.com", name="O").id
            s.commit()
        tradelog.mark_running(owner, notify=False)
        clock.advance(120)
        deadline = time.monotonic() + 10
        titles: list[str] = []
        while time.monotonic() < deadline and not titles:
            with tradelog.session() as s:
                page = tradelog.notifications.list_notifications(s, owner)
                titles = [n.title for n in page.items]
            time.sleep(0.05)
        assert titles == ["Service not responding"]
    finally:
        testing.reset()


def test_cli_worker_once_checks_heartbeats(
    db: MigratedDatabase,
    users: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tradelog worker --once`` runs one heartbeat check before delivering."""
    ServiceHealth(db.engine).mark_running(
        users["alice"], now=datetime.now(UTC) - timedelta(hours=1)
    )
    monkeypatch.setenv("TRADELOG_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TRADELOG_SMTP_FROM", "ops@example.com")
    assert main(["--database-url", db.url, "--json", "worker", "--once"]) == 0
    [stats] = json.loads(capsys.readouterr().out)
    assert stats["stale_opened"] == 1
    assert [n["title"] for n in notes(db, users["alice"])] == ["Service not responding"]


def test_an_alert_that_cannot_be_written_is_tried_again(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """The episode and its alerts are one transaction: when sending fails nothing is kept, the
    failure is counted, and the next check opens the episode and alerts."""
    ServiceHealth(db.engine).mark_running(users["alice"], now=T0)
    clock = testing.FrozenClock(T0 + timedelta(minutes=30))
    real = NotificationService(db.engine, Wakeups()).notify
    broken = {"on": True}

    def send(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise RuntimeError("notification store unavailable")
        return real(*args, **kwargs)

    checks = StaleMonitor(db.engine, send=send, threshold=300, clock=clock)
    assert checks.run_check() is None
    assert checks.failures == 1
    assert db.scalar("SELECT count(*) FROM service_stale_episodes") == 0
    broken["on"] = False
    result = checks.run_check()
    assert result is not None
    assert len(result.opened) == 1
    assert len(notes(db, users["alice"])) == 1
