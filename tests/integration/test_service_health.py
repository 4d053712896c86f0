"""Heartbeats, running state, stale detection and task tracking, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._errors.pipeline import ErrorCapture
from tradelog._health.status import is_stale, service_overview, stale_services
from tradelog._health.tasks import TaskSkipped, current_task, skip, track_task
from tradelog._health.writer import ServiceHealth
from tradelog.config import Settings

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


@pytest.fixture
def health(db: MigratedDatabase, tmp_path: Path) -> Iterator[ServiceHealth]:
    """Service health on the test database, failed tasks captured into ``error_logs``."""
    settings = Settings(database_url=db.url, log_dir=tmp_path / "logs", console=False)
    capture = ErrorCapture(settings, db.engine, notifier=None)
    yield ServiceHealth(db.engine, capture=capture)
    capture.close()


def _status(db: MigratedDatabase, user_id: int) -> dict[str, Any]:
    [row] = db.rows("SELECT * FROM service_status WHERE user_id = :u", u=user_id)
    return row


def _tasks(db: MigratedDatabase) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT user_id, task_name, status, duration_seconds FROM service_task_execution "
        "ORDER BY id"
    )


def test_running_heartbeat_and_stopped(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """One status row per user, created on first use and updated in place."""
    alice = users["alice"]
    assert health.mark_running(alice, now=T0)
    assert health.heartbeat(alice, now=T0 + timedelta(minutes=1))
    with db.session() as session:
        from tradelog._db.models import ServiceStatus

        row = session.query(ServiceStatus).filter_by(user_id=alice).one()
        assert row.service_running
        assert row.last_heartbeat == T0 + timedelta(minutes=1)
    assert health.mark_stopped(alice, now=T0 + timedelta(minutes=2))
    assert not _status(db, alice)["service_running"]
    assert db.scalar("SELECT count(*) FROM service_status") == 1


def test_stale_services(health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]) -> None:
    """Running without a recent heartbeat is stale; stopped services never are."""
    health.mark_running(users["alice"], now=T0)
    health.mark_running(users["bob"], now=T0)
    health.heartbeat(users["bob"], now=T0 + timedelta(minutes=9))
    health.mark_running(users["admin"], now=T0)
    health.mark_stopped(users["admin"], now=T0 + timedelta(minutes=1))
    now = T0 + timedelta(minutes=10)
    with db.session() as session:
        stale = stale_services(session, now, timedelta(minutes=5))
        assert [s.user_id for s in stale] == [users["alice"]]
        assert stale_services(session, now, 1200) == []
        assert [s.user_id for s in stale_services(session, now, 30.0)] == [
            users["alice"],
            users["bob"],
        ]
        assert stale_services(session, now, 300, actor=users["bob"]) == []
        overview = service_overview(session, users["admin"], now, 300)
        states = {row["user_id"]: row["state"] for row in overview}
        assert states == {
            users["admin"]: "stopped",
            users["alice"]: "stale",
            users["bob"]: "running",
        }
        mine = service_overview(session, users["bob"], now, 300)
        assert [row["user_id"] for row in mine] == [users["bob"]]


@pytest.mark.parametrize(
    ("running", "heartbeat", "expected"),
    [
        (True, None, True),
        (True, T0 - timedelta(seconds=301), True),
        (True, T0 - timedelta(seconds=300), False),
        (True, T0, False),
        (False, None, False),
        (False, T0 - timedelta(days=9), False),
    ],
)
def test_is_stale(running: bool, heartbeat: datetime | None, expected: bool) -> None:
    """Stale means running and no heartbeat within the threshold."""
    assert (
        is_stale(running=running, last_heartbeat=heartbeat, now=T0, threshold=timedelta(minutes=5))
        is expected
    )


def test_database_errors_never_reach_the_caller(
    health: ServiceHealth, db: MigratedDatabase
) -> None:
    """An unknown user violates the foreign key: the call returns False instead of raising."""
    assert health.heartbeat(424242) is False
    assert (
        health.record_task(424242, "x", status="success", executed_at=T0, duration_seconds=0.1)
        is False
    )
    with pytest.raises(ValueError, match="status"):
        health.record_task(1, "x", status="done", executed_at=T0, duration_seconds=0.1)


def test_track_task_success_with_details(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """The yielded dict becomes details; duration is measured; last_task_execution moves."""
    alice = users["alice"]
    with track_task(alice, "sell_monitor", health=health) as task:
        assert current_task() is task
        task["orders"] = 3
        task["broker_token"] = "abc"
    assert current_task() is None
    [row] = _tasks(db)
    assert row["status"] == "success"
    assert row["task_name"] == "sell_monitor"
    assert 0 <= row["duration_seconds"] < 5
    with db.session() as session:
        from tradelog._db.models import ServiceTaskExecution

        stored = session.query(ServiceTaskExecution).one()
        assert stored.details == {"orders": 3, "broker_token": "[REDACTED]"}
        status = _status(db, alice)
        assert status["last_task_execution"] is not None
        assert stored.executed_at.tzinfo is not None


def test_track_task_failure_is_recorded_counted_and_reraised(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A failing task: status failed, the error captured for the user, the exception kept."""
    bob = users["bob"]
    with (
        pytest.raises(ConnectionError, match="broker down"),
        track_task(bob, "premarket_retry", health=health),
    ):
        raise ConnectionError("broker down")
    assert health.capture is not None
    assert health.capture.flush(10)
    [row] = _tasks(db)
    assert row["status"] == "failed"
    [error] = db.rows("SELECT user_id, error_type, context FROM error_logs")
    assert error["user_id"] == bob
    assert error["error_type"] == "ConnectionError"
    assert "premarket_retry" in str(error["context"])
    assert _status(db, bob)["error_count"] == 1
    assert "broker down" in str(db.scalar("SELECT details FROM service_task_execution"))


def test_track_task_skip(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``task.skip(reason)`` and ``skip(reason)`` end the block quietly as skipped."""
    alice = users["alice"]
    reached = []
    with track_task(alice, "buy_orders", health=health) as task:
        try:
            task.skip("market closed")
        except Exception:  # a task's broad handler does not swallow the skip
            reached.append("swallowed")
        reached.append("after skip")
    with track_task(alice, "buy_orders", health=health):
        skip()
    assert reached == []
    assert [r["status"] for r in _tasks(db)] == ["skipped", "skipped"]
    assert "market closed" in str(db.scalar("SELECT details FROM service_task_execution"))
    with pytest.raises(TaskSkipped):
        skip("outside a task")


def test_track_task_decorates_sync_and_async_functions(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Each call of a decorated function is one run; return values pass through."""
    alice = users["alice"]

    @track_task(alice, "eod_report", health=health)
    def report(n: int) -> int:
        task = current_task()
        assert task is not None
        task["rows"] = n
        return n * 2

    @track_task(alice, "poll_quotes", health=health)
    async def poll(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise TimeoutError("quotes late")
        return "ok"

    assert report(4) == 8
    assert report(5) == 10
    assert asyncio.run(poll(False)) == "ok"
    with pytest.raises(TimeoutError):
        asyncio.run(poll(True))
    assert [(r["task_name"], r["status"]) for r in _tasks(db)] == [
        ("eod_report", "success"),
        ("eod_report", "success"),
        ("poll_quotes", "success"),
        ("poll_quotes", "failed"),
    ]
    assert report.__name__ == "report"


def test_track_task_as_async_context_manager(
    health: ServiceHealth, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``async with`` records the run without blocking the loop."""

    async def main() -> None:
        async with track_task(users["bob"], "stream", health=health) as task:
            task["ticks"] = 120
            await asyncio.sleep(0.01)
        async with track_task(users["bob"], "stream", health=health) as task:
            task.skip("holiday")

    asyncio.run(main())
    rows = _tasks(db)
    assert [r["status"] for r in rows] == ["success", "skipped"]
    assert rows[0]["duration_seconds"] >= 0.005


def test_module_functions_use_the_configured_runtime(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``heartbeat``/``mark_running``/``mark_stopped``/``track_task`` of the public module."""
    tradelog.configure(database_url=db.url, log_dir=tmp_path / "logs", console=False)
    try:
        assert tradelog.health.mark_running(users["alice"])
        assert tradelog.health.heartbeat(users["alice"])
        with tradelog.health.track_task(users["alice"], "sell_monitor") as task:
            task["orders"] = 1
        assert tradelog.health.mark_stopped(users["alice"])
    finally:
        tradelog.shutdown()
    assert [r["status"] for r in _tasks(db)] == ["success"]
    assert not _status(db, users["alice"])["service_running"]


def test_module_functions_fall_back_to_the_environment(
    db: MigratedDatabase, users: dict[str, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without ``configure()`` the ``TRADELOG_*`` settings are used; a bad one returns False."""
    service = tradelog.health

    monkeypatch.setenv("TRADELOG_DATABASE_URL", db.url)
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path / "logs"))
    assert service.heartbeat(users["bob"])
    assert _status(db, users["bob"])["last_heartbeat"] is not None
    monkeypatch.setenv("TRADELOG_TIMEZONE", "Mars/Olympus")
    assert service.mark_running(users["bob"]) is False
    with service.track_task(users["bob"], "ignored"):
        pass
    assert _tasks(db) == []
