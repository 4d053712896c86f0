"""Uncaught errors reach ``error_logs`` from real processes, and earlier hooks still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.db import MigratedDatabase

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "tests" / "support" / "crash_app.py"


def _run(db: MigratedDatabase, tmp_path: Path, scenario: str, user_id: int) -> Any:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TRADELOG_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(APP), db.url, str(tmp_path / "logs"), scenario, str(user_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )


def _rows(db: MigratedDatabase) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT user_id, error_type, error_message, traceback, context FROM error_logs ORDER BY id"
    )


@pytest.mark.parametrize(
    "case",
    [
        (
            "main",
            "ValueError",
            "main thread crash",
            "PREVIOUS sys.excepthook ValueError: main thread crash",
            "sys.excepthook",
        ),
        (
            "thread",
            "ZeroDivisionError",
            "thread crash",
            "PREVIOUS threading.excepthook order-worker ZeroDivisionError: thread crash",
            "threading.excepthook",
        ),
        (
            "asyncio-new-loop",
            "KeyError",
            "'task crash'",
            "system log: Task exception was never retrieved",
            "asyncio",
        ),
        (
            "asyncio-running-loop",
            "KeyError",
            "'task crash'",
            "PREVIOUS loop handler KeyError('task crash')",
            "asyncio",
        ),
        (
            "unraisable",
            "RuntimeError",
            "cleanup failed",
            "PREVIOUS sys.unraisablehook RuntimeError: cleanup failed",
            "sys.unraisablehook",
        ),
    ],
    ids=lambda case: case[0],
)
def test_uncaught_error_is_recorded_and_previous_hook_runs(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, case: tuple[str, ...]
) -> None:
    """One row per crash (system user: no user context) and the host's hook output."""
    scenario, error_type, message, previous, source = case
    result = _run(db, tmp_path, scenario, users["alice"])
    if previous.startswith("system log: "):
        # asyncio's default handler logs through the stdlib, which tradelog now writes to the
        # system log file (no user)
        files = list((tmp_path / "logs" / "system").glob("service-*.jsonl"))
        text = "".join(path.read_text() for path in files)
        assert previous.removeprefix("system log: ") in text, result.stderr
    else:
        assert previous in result.stderr, result.stderr
    rows = _rows(db)
    assert len(rows) == 1, (rows, result.stderr)
    [row] = rows
    assert row["error_type"] == error_type
    assert row["error_message"] == message
    assert message.strip("'") in row["traceback"]
    assert source in str(row["context"])
    system = db.scalar("SELECT id FROM users WHERE email = 'system@tradelog.invalid'")
    assert row["user_id"] == system
    assert db.scalar("SELECT error_count FROM service_status WHERE user_id = :u", u=system) == 1


def test_main_thread_crash_keeps_exit_status(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """The crashing process still exits with status 1 after the row is written."""
    result = _run(db, tmp_path, "main", users["alice"])
    assert result.returncode == 1


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_child_crash_is_recorded(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, method: str
) -> None:
    """A child wrapped in ``guard`` records its crash for the user, once, and still fails."""
    result = _run(db, tmp_path, f"child-{method}", users["alice"])
    assert "child exit code 1" in result.stderr, result.stderr
    assert "MemoryError: child crash" in result.stderr  # multiprocessing still prints it
    rows = _rows(db)
    assert len(rows) == 1, (rows, result.stderr)
    [row] = rows
    assert row["user_id"] == users["alice"]
    assert row["error_type"] == "MemoryError"
    assert "backtest" in str(row["context"])
    assert "backtest-child" in str(row["context"])
    assert (
        db.scalar("SELECT error_count FROM service_status WHERE user_id = :u", u=users["alice"])
        == 1
    )


def test_crashes_alert_at_their_real_severity(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A child's crash that ``guard`` records and hands back is an ``error`` (the service
    process goes on): the operators get the detail, the owner a sentence without internals.
    Only the service process's own crash is ``critical``; without a user it goes to the
    operators alone."""
    result = _run(db, tmp_path, "child-fork", users["alice"])
    assert "child exit code 1" in result.stderr, result.stderr
    assert _run(db, tmp_path, "main", users["alice"]).returncode == 1
    notes = db.rows("SELECT user_id, type, level, title, message FROM notifications ORDER BY id")
    assert [(n["user_id"], n["type"], n["level"], n["title"]) for n in notes] == [
        (users["admin"], "error", "error", "New error: MemoryError"),
        (users["alice"], "error", "error", "Something went wrong"),
        (users["admin"], "error", "critical", "Crash: ValueError"),
    ]
    assert "child crash" in str(notes[0]["message"])
    assert "MemoryError" not in str(notes[1]["message"])
    assert "the operators have been told" in str(notes[1]["message"])
