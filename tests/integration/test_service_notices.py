"""Service lifecycle notifications: started, stopped, a failed task (once), a finished task
on request; the owner's ``notify_service_events`` decides."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog import _runtime as runtime
from tradelog._health.lifecycle import ServiceNotices
from tradelog._health.writer import ServiceHealth
from tradelog._notify.preferences import update_preferences
from tradelog.testing import FrozenClock

NOON_IST = datetime(2026, 1, 5, 6, 30, tzinfo=UTC)


@pytest.fixture
def configured(db: MigratedDatabase, tmp_path: Path) -> Iterator[runtime.Runtime]:
    """A runtime on the test database with a frozen clock at 12:00 IST."""
    rt = runtime.configure(
        database_url=db.url, log_dir=tmp_path / "logs", console=False, clock=FrozenClock(NOON_IST)
    )
    yield rt
    runtime.shutdown()


def _notes(db: MigratedDatabase, user_id: int) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT type, level, title, message FROM notifications WHERE user_id = :u ORDER BY id",
        u=user_id,
    )


def _prefs(db: MigratedDatabase, user_id: int, **changes: Any) -> None:
    with db.session() as session:
        update_preferences(session, user_id, user_id, **changes)
        session.commit()


def test_started_and_stopped_notify_the_owner(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``mark_running``/``mark_stopped`` send ``service`` notifications in the owner's time;
    ``notify=False`` and ``notify_service_events`` off send none."""
    alice, bob = users["alice"], users["bob"]
    assert tradelog.mark_running(alice)
    assert tradelog.mark_stopped(alice)
    assert tradelog.mark_running(alice, notify=False)
    _prefs(db, bob, notify_service_events=False)
    assert tradelog.mark_running(bob)
    assert _notes(db, alice) == [
        {
            "type": "service",
            "level": "info",
            "title": "Service started",
            "message": "Your trading service started at 12:00 IST.",
        },
        {
            "type": "service",
            "level": "info",
            "title": "Service stopped",
            "message": "Your trading service stopped at 12:00 IST.",
        },
    ]
    assert _notes(db, bob) == []
    assert db.scalar("SELECT service_running FROM service_status WHERE user_id = :u", u=bob) in (
        True,
        1,
    )


def _monitor(user_id: int) -> None:
    with tradelog.track_task(user_id, "sell_monitor"):
        raise ConnectionError("broker session expired")


def _fail(user_id: int) -> None:
    """The exception leaves the task and two more frames before it is caught, while the error
    writer may be building its row: both must see the traceback of the moment of capture."""

    def service_loop() -> None:
        _monitor(user_id)

    with pytest.raises(ConnectionError):
        service_loop()


def test_a_failed_task_tells_the_owner_once(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """With service and error notifications both on, a failed task reaches the owner once (the
    service notice); the operators get the error's detail. With service events off, the
    owner's error alert says the same."""
    alice, bob = users["alice"], users["bob"]
    _fail(alice)
    _prefs(db, bob, notify_service_events=False)
    _fail(bob)
    assert configured.flush(10)
    sentence = "Your sell_monitor run failed at 12:00 IST; the operators have been told."
    assert _notes(db, alice) == [
        {"type": "service", "level": "error", "title": "sell_monitor failed", "message": sentence}
    ]
    assert _notes(db, bob) == [
        {"type": "error", "level": "error", "title": "sell_monitor failed", "message": sentence}
    ]
    operator = _notes(db, users["admin"])
    assert [n["title"] for n in operator] == ["New error: ConnectionError"]
    assert "broker session expired" in str(operator[0]["message"])
    assert db.scalar("SELECT count(*) FROM error_logs") == 2


def test_success_only_when_asked(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A task that succeeds is silent unless the call asks (context manager and decorator)."""
    alice = users["alice"]
    with tradelog.track_task(alice, "premarket_retry"):
        pass

    @tradelog.track_task(alice, "end_of_day", notify_success=True)
    def end_of_day() -> None:
        return None

    end_of_day()
    with tradelog.track_task(alice, "place_amo_orders", notify_success=True) as task:
        task.skip("market holiday")
    [note] = _notes(db, alice)
    assert note["title"] == "end_of_day finished"
    assert note["message"].startswith("Your end_of_day run finished at 12:00 IST (")


def test_a_notice_that_cannot_be_sent_never_reaches_the_caller(
    db: MigratedDatabase, users: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """The running state is written even when the notice cannot be sent (here the notification
    service raises); the failure is a warning."""

    def send(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("notification store unavailable")

    notices = ServiceNotices(db.engine, send=send, window=900)
    health = ServiceHealth(db.engine, notices=notices)
    with caplog.at_level(logging.WARNING, logger="tradelog.service"):
        assert health.mark_running(users["alice"])
    assert "could not send the 'Service started' notice" in caplog.text
    assert db.scalar("SELECT count(*) FROM service_status") == 1
