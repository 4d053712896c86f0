"""The logging backend end to end: what callers log lands in service_logs and in the files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from sqlalchemy import text

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import file_records, log_files, running, system_records
from tradelog._logs.stats import read_writer_stats
from tradelog._runtime import current


def _rows(db: MigratedDatabase, user_id: int | None = None) -> list[dict[str, Any]]:
    sql = "SELECT id, user_id, level, module, message, context, timestamp FROM service_logs"
    if user_id is not None:
        sql += f" WHERE user_id = {int(user_id)}"
    rows = db.rows(sql + " ORDER BY id")
    for row in rows:
        if isinstance(row["context"], str):
            row["context"] = json.loads(row["context"])
    return rows


def test_rows_and_files_match_what_was_logged(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Every event with a user is one row and one line in that user's file, identically."""
    alice, bob = users["alice"], users["bob"]
    with running(db.url, tmp_path) as runtime:
        log = tradelog.get_logger("strategy.momentum", user_id=alice)
        log.info("order placed", symbol="NIFTY", qty=50, price=123.5, live=True, note=None)
        structlog.contextvars.bind_contextvars(user_id=bob)
        try:
            structlog.get_logger("broker").warning("order rejected", reason="margin")
        finally:
            structlog.contextvars.clear_contextvars()
        tradelog.get_logger("risk").error("limit hit", user_id=alice, module="risk.limits")
        tradelog.get_logger("scheduler").info("market open")  # no user: system file only
        assert runtime.flush(10)
        stats = runtime.stats()

    rows = _rows(db)
    assert [(r["user_id"], r["level"], r["module"], r["message"]) for r in rows] == [
        (alice, "INFO", "strategy.momentum", "order placed"),
        (bob, "WARNING", "broker", "order rejected"),
        (alice, "ERROR", "risk.limits", "limit hit"),
    ]
    assert rows[0]["context"] == {
        "symbol": "NIFTY",
        "qty": 50,
        "price": 123.5,
        "live": True,
        "note": None,
    }
    assert rows[1]["context"] == {"reason": "margin"}
    assert rows[2]["context"] is None

    alice_lines = file_records(tmp_path, alice)
    assert [line["message"] for line in alice_lines] == ["order placed", "limit hit"]
    assert alice_lines[0]["context"] == rows[0]["context"]
    assert alice_lines[0]["user_id"] == alice
    assert [line["message"] for line in file_records(tmp_path, bob)] == ["order rejected"]
    assert [line["message"] for line in system_records(tmp_path)] == ["market open"]
    assert system_records(tmp_path)[0]["user_id"] is None

    assert stats["enqueued"] == 4
    assert stats["written"] == 3
    assert stats["file_lines"] == 4
    assert stats["system_lines"] == 1
    assert stats["dropped"] == 0
    assert stats["log_writer"] == "thread"  # the default writer says which it is


def test_timestamps_are_utc_and_files_dated_in_the_configured_zone(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Rows carry the event time in UTC; the file name is the date in the configured zone."""
    before = datetime.now(UTC)
    with running(db.url, tmp_path, timezone="Asia/Kolkata") as runtime:
        tradelog.get_logger("t", user_id=users["alice"]).info("tick")
        assert runtime.flush(10)
    after = datetime.now(UTC)
    with db.session() as session:
        from tradelog._db.models import ServiceLog

        stored = session.query(ServiceLog).one().timestamp
    assert stored.tzinfo is not None
    assert before - timedelta(seconds=1) <= stored <= after + timedelta(seconds=1)
    (path,) = log_files(tmp_path, users["alice"])
    line = json.loads(path.read_text())
    moment = datetime.fromisoformat(line["timestamp"])
    assert abs(moment - stored) < timedelta(milliseconds=1)
    local_day = moment.astimezone(ZoneInfo("Asia/Kolkata")).date().isoformat()
    assert path.name == f"service-{local_day}.jsonl"


def test_stdlib_logging_flows_through_the_same_pipeline(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``logging.getLogger(...)`` records become rows too, extras included."""
    with running(db.url, tmp_path) as runtime:
        logging.getLogger("legacy.feed").warning(
            "feed %s lagging by %dms", "NSE", 250, extra={"user_id": users["bob"], "lag": 250}
        )
        structlog.contextvars.bind_contextvars(user_id=users["alice"])
        try:
            logging.getLogger("legacy.orders").info("bound through contextvars")
        finally:
            structlog.contextvars.clear_contextvars()
        logging.getLogger("legacy").debug("below the minimum level")
        assert runtime.flush(10)
    rows = _rows(db)
    assert [(r["user_id"], r["level"], r["module"], r["message"]) for r in rows] == [
        (users["bob"], "WARNING", "legacy.feed", "feed NSE lagging by 250ms"),
        (users["alice"], "INFO", "legacy.orders", "bound through contextvars"),
    ]
    assert rows[0]["context"] == {"lag": 250}


def test_minimum_level_filters_and_follows_reconfiguration(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Below-level calls are dropped; a logger used before reconfiguring follows the new level."""
    log = tradelog.get_logger("levels", user_id=users["alice"])
    with running(db.url, tmp_path / "a", level="WARNING") as runtime:
        log.debug("d1")
        log.info("i1")
        log.warning("w1")
        log.log(logging.ERROR, "e1")
        log.log(5, "custom level below")
        assert not log.is_enabled_for(logging.INFO)
        assert runtime.flush(10)
    with running(db.url, tmp_path / "b", level="DEBUG") as runtime:
        log.debug("d2")
        log.log(25, "custom level between info and warning")
        assert log.get_effective_level() == logging.DEBUG
        assert runtime.flush(10)
    assert [(r["level"], r["message"]) for r in _rows(db)] == [
        ("WARNING", "w1"),
        ("ERROR", "e1"),
        ("DEBUG", "d2"),
        ("INFO", "custom level between info and warning"),
    ]


def test_message_and_module_fit_their_columns_while_the_file_keeps_everything(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Over-long message/module are cut with a visible marker in the row only."""
    message = "m" * 3000
    module = "x" * 300
    with running(db.url, tmp_path) as runtime:
        tradelog.get_logger(module, user_id=users["alice"]).info(message)
        assert runtime.flush(10)
    (row,) = _rows(db)
    assert len(row["message"]) == 1024
    assert row["message"].endswith("…[truncated]")
    assert len(row["module"]) == 128
    assert row["module"].endswith("…[truncated]")
    (line,) = file_records(tmp_path, users["alice"])
    assert line["message"] == message
    assert line["module"] == module


def test_awkward_values_are_stored_json_safe(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """NUL characters, NaN, bytes, sets, datetimes and cycles land as JSON-safe values."""
    cycle: list[Any] = [1]
    cycle.append(cycle)
    with running(db.url, tmp_path) as runtime:
        tradelog.get_logger("odd", user_id=users["alice"]).info(
            "nul\x00in message",
            nan=float("nan"),
            inf=float("-inf"),
            raw=b"\x00\xffbytes",
            tags={"b", "a"},
            when=datetime(2025, 1, 15, 9, 15, tzinfo=UTC),
            cycle=cycle,
            text="nul\x00inside",
            obj=object(),
            amount=Decimal("1234.50"),
        )
        assert runtime.flush(10)
    (row,) = _rows(db)
    assert row["message"] == "nulin message"
    context = row["context"]
    assert context["nan"] == "NaN"
    assert context["inf"] == "-Infinity"
    assert context["raw"] == "\ufffdbytes"
    assert context["tags"] == ["a", "b"]
    assert context["when"] == "2025-01-15T09:15:00+00:00"
    assert context["cycle"] == [1, "<cycle>"]
    assert context["text"] == "nulinside"
    assert context["obj"].startswith("<object object")
    assert context["amount"] == "1234.50"
    assert file_records(tmp_path, users["alice"])[0]["context"] == context


def test_a_host_rollback_loses_no_log_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """The writer uses its own connection: the host's rolled-back transaction keeps the logs."""
    with running(db.url, tmp_path) as runtime:
        log = tradelog.get_logger("orders", user_id=users["alice"])
        with db.session() as session:
            session.execute(
                text(
                    "INSERT INTO orders (user_id, symbol, side, order_type, quantity, status) "
                    "VALUES (:u, 'NIFTY', 'BUY', 'MARKET', 50, 'PENDING')"
                ),
                {"u": users["alice"]},
            )
            log.info("placing order inside the host transaction")
            if db.backend == "postgresql":
                # SQLite has one writer: there the rows wait until the host lets go.
                assert runtime.flush(10)
            log.info("about to roll back")
            session.rollback()
        assert runtime.flush(10)
    assert db.scalar("SELECT count(*) FROM orders") == 0
    assert [r["message"] for r in _rows(db)] == [
        "placing order inside the host transaction",
        "about to roll back",
    ]


def test_exception_events_reach_observers_scrubbed(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Observers get the live exc_info and a scrubbed event; their own errors are counted."""
    seen: list[tuple[Any, dict[str, Any]]] = []

    def observer(exc_info: Any, event: Any) -> None:
        seen.append((exc_info, dict(event)))

    def broken(exc_info: Any, event: Any) -> None:
        raise RuntimeError("observer bug")

    with running(db.url, tmp_path) as runtime:
        runtime.add_exception_observer(observer)
        runtime.add_exception_observer(broken)
        log = tradelog.get_logger("broker", user_id=users["alice"])
        try:
            raise ValueError("login failed for password=hunter2")
        except ValueError:
            log.exception("broker login failed", api_key="k-123456")
        log.error("no exception here")
        error = KeyError("missing")
        logging.getLogger("std").error("stdlib", exc_info=error)
        assert runtime.flush(10)
        stats = runtime.stats()

    assert len(seen) == 2
    (kind, value, tb), event = seen[0]
    assert isinstance(value, ValueError)
    assert kind is ValueError
    assert tb is not None
    assert event["user_id"] == users["alice"]
    assert event["level"] == "ERROR"
    assert event["logger"] == "broker"
    assert event["event"] == "broker login failed"
    assert event["api_key"] == "[REDACTED]"
    assert "hunter2" not in event["exception"]
    assert seen[1][0][1] is error
    assert stats["observer_errors"] == 2
    row = _rows(db)[0]
    assert "ValueError" in row["context"]["exception"]
    assert "hunter2" not in json.dumps(row["context"])


def test_flush_covers_logs_and_errors(db_url: str, tmp_path: Path) -> None:
    """flush() is True once queued log rows and error rows are written; after shutdown nothing
    is configured and flush() has nothing to wait for."""
    with running(db_url, tmp_path):
        tradelog.get_logger("flush").info("one")
        try:
            raise ValueError("two")
        except ValueError:
            assert tradelog.capture_exception()
        assert tradelog.flush(10)
        assert tradelog.current() is not None
    assert current() is None
    assert tradelog.flush() is True


def test_reconfiguring_shuts_the_previous_runtime_down(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """configure() again flushes the old runtime and sends later events to the new one."""
    log = tradelog.get_logger("switch", user_id=users["alice"])
    first = tradelog.configure(
        database_url=db.url, log_dir=tmp_path / "one", console=False, flush_interval=10.0
    )
    log.info("to the first")
    second = tradelog.configure(database_url=db.url, log_dir=tmp_path / "two", console=False)
    try:
        assert first.closed
        assert current() is second
        log.info("to the second")
        assert second.flush(10)
    finally:
        tradelog.shutdown()
    assert [r["message"] for r in _rows(db)] == ["to the first", "to the second"]
    assert [line["message"] for line in file_records(tmp_path / "one")] == ["to the first"]
    assert [line["message"] for line in file_records(tmp_path / "two")] == ["to the second"]


@pytest.mark.slow
def test_events_after_shutdown_are_kept_for_the_next_writer(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A logger used after shutdown writes its file line at once and spools the row; the next
    writer adopts that spool once the process has gone and replays it."""
    script = f"""
import tradelog
log = tradelog.get_logger("late", user_id={users["alice"]})
tradelog.configure(database_url={db.url!r}, log_dir={str(tmp_path)!r}, console=False)
log.info("while running")
tradelog.shutdown()
log.info("after shutdown")
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert [line["message"] for line in file_records(tmp_path, users["alice"])] == [
        "while running",
        "after shutdown",
    ]
    assert [r["message"] for r in _rows(db)] == ["while running"]
    with running(db.url, tmp_path) as runtime:
        deadline = time.monotonic() + 10
        while runtime.stats()["replayed"] == 0 and time.monotonic() < deadline:
            runtime.flush(0.2)
    assert [r["message"] for r in _rows(db)] == ["while running", "after shutdown"]
    assert not list((tmp_path / "_spool").glob("*.jsonl"))


def test_writer_stats_are_published(db_url: str, tmp_path: Path) -> None:
    """The writer's counters are saved under _runtime/ for `tradelog status`."""
    with running(db_url, tmp_path) as runtime:
        tradelog.get_logger("s").info("one")
        assert runtime.flush(10)
        runtime.writer.save_stats()
        (live,) = read_writer_stats(tmp_path)
        assert live["alive"] is True
        assert live["file_lines"] == 1
    (final,) = read_writer_stats(tmp_path)
    assert final["running"] is False
    assert final["alive"] is False
    assert final["dropped"] == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_console_output_is_scrubbed(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the console on, rendered lines go to stderr without the secrets."""
    with running(db.url, tmp_path, console=True) as runtime:
        tradelog.get_logger("console", user_id=users["alice"]).info(
            "connecting", password="hunter2", dsn="postgresql://u:s3cret@db/x"
        )
        logging.getLogger("std.console").warning("token=abcdef123456")
        assert runtime.flush(10)
    err = capsys.readouterr().err
    assert "connecting" in err
    assert "std.console" in err
    assert "hunter2" not in err
    assert "s3cret" not in err
    assert "abcdef123456" not in err
