"""Status tells the truth: live figures while a database write hangs, the current state after
recovery, and local backlog (dead letters, unwritten errors) that makes ``tradelog status`` exit 1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.reliability.test_db_bounds import _locked
from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._logs.stats import stats_path


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _published(log_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(stats_path(log_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data


@pytest.mark.slow
def test_status_during_a_hung_write_and_after_recovery(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While the log writer's insert waits on a lock, stats(), the published file and
    `tradelog status` say the database is stalled (exit 1); once the lock is gone they say ok
    with no last_error, and status exits 0."""
    runtime = tradelog.configure(
        database_url=db.url,
        log_dir=tmp_path,
        console=False,
        worker=False,
        db_write_timeout=30,
    )
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path))
    log = tradelog.get_logger("strategy", user_id=users["alice"])
    log.info("before")
    assert runtime.flush(10)
    with _locked(db, "service_logs"):
        log.info("while locked")
        assert _wait_for(lambda: runtime.stats()["database"] == "stalled", 10)
        assert _wait_for(lambda: _published(tmp_path).get("database") == "stalled", 5)
        stats = runtime.stats()
        assert stats["stalled_for"] >= 2  # stalled past 2 s, rounded to 0.1 s (2.04 -> 2.0)
        assert "has not returned" in stats["last_error"]
        if db.backend == "postgresql":  # SQLite: the lock holder blocks the CLI's own writes
            assert main(["--database-url", db.url, "status", "--json"]) == 1
            shown = json.loads(capsys.readouterr().out)
            assert any("stalled" in line for line in shown["problems"])
            mine = next(w for w in shown["writers"] if w["pid"] == stats["pid"])
            assert mine["database"] == "stalled"
    assert runtime.flush(20)
    assert _wait_for(lambda: _published(tmp_path).get("database") == "ok", 5)
    stats = runtime.stats()
    assert stats["database"] == "ok"
    assert stats["last_error"] is None
    assert main(["--database-url", db.url, "status"]) == 0
    out = capsys.readouterr().out
    assert "stalled" not in out
    assert "waiting in local files" in out
    assert db.scalar("SELECT count(*) FROM service_logs") == 2


def test_unwritten_errors_and_dead_letters_make_status_exit_1(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Error rows waiting in _runtime/errors-unwritten-*.jsonl and log rows in _dead_letter/
    show in the table and JSON and make status exit 1."""
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path))
    assert main(["--database-url", db.url, "status"]) == 0
    capsys.readouterr()
    (tmp_path / "_runtime").mkdir(mode=0o700)
    (tmp_path / "_runtime" / "errors-unwritten-999999.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    assert main(["--database-url", db.url, "status"]) == 1
    out = capsys.readouterr().out
    assert "2 error rows not yet in error_logs" in out
    assert "unwritten_errors" in out
    (tmp_path / "_dead_letter").mkdir(mode=0o700)
    (tmp_path / "_dead_letter" / "service_logs-2026-01-02.jsonl").write_text('{"r": 1}\n')
    assert main(["--database-url", db.url, "status", "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["backlog"]["dead_letters"] == 1
    assert shown["backlog"]["unwritten_errors"] == 2
    assert len(shown["problems"]) == 2
