"""Every example runs in a fresh process against a temporary directory and does what it says."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``--dir directory`` and no TRADELOG_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOG_", "DEMO_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--dir", str(directory), *extra],
        env=env,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute(sql).fetchone()[0])


def test_every_example_is_tested() -> None:
    """A new example must get a test here."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "error_capture.py",
        "logging_only.py",
        "notify_quiet_hours.py",
        "trading_day.py",
    ]


def test_trading_day(tmp_path: Path) -> None:
    """The demo finishes, writes logs, errors, tasks and notifications for three users."""
    result = run_example("trading_day.py", tmp_path, "--pace", "0.01")
    assert result.returncode == 0, result.stderr
    db = tmp_path / "demo.db"
    assert f"sqlite:///{db}" in result.stdout
    assert count(db, "SELECT count(DISTINCT user_id) FROM service_logs") == 3
    assert count(db, "SELECT count(*) FROM service_logs WHERE context LIKE '%order_id%'") >= 6
    assert count(db, "SELECT count(*) FROM error_logs") >= 2
    assert count(db, "SELECT count(*) FROM service_task_execution WHERE status = 'failed'") == 1
    assert count(db, "SELECT count(*) FROM service_status WHERE service_running") == 0
    assert count(db, "SELECT count(*) FROM service_status WHERE last_heartbeat IS NOT NULL") == 3
    assert count(db, "SELECT count(DISTINCT user_id) FROM notifications") == 3
    files = list((tmp_path / "logs" / "users").glob("*/service-*.jsonl"))
    assert len(files) == 3
    assert "rows written" in result.stdout
    assert "errors list" in result.stdout
    assert "Traceback" not in result.stderr


def test_logging_only(tmp_path: Path) -> None:
    """Rows and files land; the secret appears nowhere."""
    result = run_example("logging_only.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert count(tmp_path / "logging.db", "SELECT count(*) FROM service_logs") == 4
    assert len(list((tmp_path / "logs" / "users").glob("*/service-*.jsonl"))) == 1
    assert list((tmp_path / "logs" / "system").glob("service-*.jsonl"))
    assert "secrets scrubbed" in result.stdout


def test_error_capture(tmp_path: Path) -> None:
    """Each capture path makes a row; the repeated bug is one group of two."""
    result = run_example("error_capture.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "errors.db"
    assert count(db, "SELECT count(*) FROM error_logs") == 5
    assert count(db, "SELECT count(DISTINCT fingerprint) FROM error_logs") == 4
    assert "ZeroDivisionError" in result.stdout


@pytest.mark.parametrize("runs", [1, 2])
def test_notify_quiet_hours(tmp_path: Path, runs: int) -> None:
    """Deferred, critical, duplicate, silent, dropped and switched-off outcomes are shown."""
    for _ in range(runs):
        result = run_example("notify_quiet_hours.py", tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "telegram: deferred until" in out
    assert "duplicate" in out
    assert "(silently)" in out
    assert "not created: system notifications are turned off" in out
    assert count(tmp_path / "notify.db", "SELECT count(*) FROM notifications") == 5
