"""Every example runs in a fresh process against a temporary directory and does what it says."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.support.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(
    name: str, directory: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``--dir directory`` and no TRADELOG_* settings inherited."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOG_", "DEMO_"))}
    env = {**base, "PYTHONPATH": str(ROOT), **(env or {})}
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
    """The demo finishes in seconds and shows the whole path through the recording channels:
    logs, errors and their groups, tasks, the owners' and the operator's notifications, the
    outbox sent by the worker, a quiet-hours digest and a stale service."""
    started = time.monotonic()
    result = run_example("trading_day.py", tmp_path, "--pace", "0.01")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 60
    db = tmp_path / "demo.db"
    out = result.stdout
    assert f"sqlite:///{db}" in out
    assert count(db, "SELECT count(DISTINCT user_id) FROM service_logs") == 3
    assert count(db, "SELECT count(*) FROM service_logs WHERE context LIKE '%order_id%'") >= 6
    assert count(db, "SELECT count(*) FROM error_logs") >= 2
    assert count(db, "SELECT count(*) FROM error_groups WHERE substatus = 'new'") >= 2
    assert count(db, "SELECT count(*) FROM service_task_execution WHERE status = 'failed'") == 1
    assert count(db, "SELECT count(*) FROM service_status WHERE service_running") == 1  # Ravi
    assert count(db, "SELECT count(*) FROM service_status WHERE last_heartbeat IS NOT NULL") == 3
    assert count(db, "SELECT count(*) FROM service_stale_episodes") == 1
    assert count(db, "SELECT count(DISTINCT user_id) FROM notifications") == 4
    dev = "(SELECT id FROM users WHERE name = 'Dev')"
    ravi = "(SELECT id FROM users WHERE name = 'Ravi')"
    assert count(db, f"SELECT count(*) FROM notifications WHERE user_id = {dev}") == 3
    assert (
        count(
            db,
            f"SELECT count(*) FROM notifications WHERE user_id = {ravi}"
            " AND title = 'sell_monitor failed'",
        )
        == 1
    )
    assert count(db, "SELECT count(*) FROM notification_deliveries WHERE status = 'pending'") == 0
    assert count(db, "SELECT count(*) FROM notification_deliveries WHERE status = 'digested'") >= 2
    assert count(db, "SELECT count(*) FROM notifications WHERE telegram_sent AND email_sent") >= 10
    assert "RECORDING channels" in out
    assert "notifications during quiet hours" in out
    assert "quiet-hours digest" in out
    assert "unresolved  new" in out  # tradelog errors groups, as the operator sees it
    assert "the operator's inbox" in out
    assert "Service stale: user" in out
    files = list((tmp_path / "logs" / "users").glob("*/service-*.jsonl"))
    assert len(files) == 3
    assert "rows written" in out
    assert "errors list" in out
    assert f"--database-url sqlite:///{db} serve --port 8000" in out  # the same database
    assert "http://127.0.0.1:8000/ui/admin/errors" in out
    assert "Traceback" not in result.stderr


def test_trading_day_with_telegram_and_email(tmp_path: Path) -> None:
    """With channels configured, everything is sent for real (the fake Bot API and an SMTP
    server); the quiet-hours user gets only the critical message during her quiet hours and
    the rest as one digest per channel after the clock jump; the bot token is in no file or
    row."""
    with FakeBotApi(enforce_limits=True) as bot, SmtpServer(security="none") as smtp:
        result = run_example(
            "trading_day.py",
            tmp_path,
            "--pace",
            "0.01",
            env={
                "TRADELOG_TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
                "TRADELOG_TELEGRAM_API_URL": bot.api_url,
                "DEMO_TELEGRAM_CHAT_ID": "424242",
                "TRADELOG_SMTP_HOST": smtp.host,
                "TRADELOG_SMTP_PORT": str(smtp.port),
                "TRADELOG_SMTP_SECURITY": "none",
                "TRADELOG_SMTP_FROM": "demo@tradelog.test",
                "DEMO_EMAIL_TO": "trader@example.com",
            },
        )
        assert result.returncode == 0, result.stderr
        telegram = [m.text for m in bot.sent_messages("424242")]
        emails = [m.subject for m in smtp.messages]
    db = tmp_path / "demo.db"
    sent = "SELECT count(*) FROM notification_deliveries WHERE status = 'sent' AND channel = "
    assert count(db, sent + "'telegram'") == len(telegram)
    assert count(db, sent + "'email'") == len(emails)
    assert count(db, "SELECT count(*) FROM notification_deliveries WHERE status = 'pending'") == 0
    meera = "(SELECT id FROM users WHERE name = 'Meera')"
    assert count(db, f"SELECT count(*) FROM notifications WHERE user_id = {meera}") == 7
    assert (
        count(db, f"SELECT count(*) FROM notifications WHERE user_id = {meera} AND telegram_sent")
        == 6
    )
    assert sum("Margin shortfall" in text for text in telegram) == 1
    assert sum("notifications during quiet hours" in text for text in telegram) == 1
    assert "deferred until" in result.stdout
    assert "RECORDING" not in result.stdout
    secret = DEFAULT_TOKEN.split(":")[1].encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]  # database, WAL, log files
    assert len(written) >= 4
    assert not [p for p in written if secret in p.read_bytes()]


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


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TRADELOG_QUEUE_SIZE": "-1"}, "TRADELOG_QUEUE_SIZE"),
        ({"TRADELOG_SMTP_HOST": "127.0.0.1", "DEMO_EMAIL_TO": "not-an-address"}, "not-an-address"),
    ],
)
def test_demo_bad_settings_are_one_line(tmp_path: Path, env: dict[str, str], named: str) -> None:
    """A bad TRADELOG_* or DEMO_* value stops the demo with one line naming it, exit 2."""
    result = run_example("trading_day.py", tmp_path, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert named in result.stderr
