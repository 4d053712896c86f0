"""Every example runs in a fresh process against a temporary directory and does what it says."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import clients
from tests.support.fake_bot_api import DEFAULT_TOKEN, FakeBotApi
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.slow

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
        "fastapi_service.py",
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


def _start_service(
    directory: Path, database_url: str
) -> tuple[subprocess.Popen[str], str, list[str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRADELOG_", "DEMO_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "fastapi_service.py"),
            "--dir",
            str(directory),
            "--database-url",
            database_url,
            "--port",
            "0",
        ],
        env={**base, "PYTHONPATH": str(ROOT)},
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("serving "):
            return process, line.split()[1], lines
    process.kill()
    raise AssertionError(f"the service did not start: {''.join(lines)}{process.stderr.read()}")


def test_fastapi_service(db_url: str, tmp_path: Path) -> None:
    """The FastAPI example over real HTTP: requests, per-account tasks, a crash; rows, files,
    and the host's own stdout JSON lines and stderr console lines, each once."""

    from tradelog._db.engine import create_tradelog_engine

    process, base, out = _start_service(tmp_path, db_url)
    try:
        with clients.client(base_url=base, timeout=20) as client:
            assert client.get("/health").json() == {"ok": True}
            placed = client.post(
                "/orders",
                json={"symbol": "TCS", "qty": 5},
                headers={"X-Account": "101", "User-Agent": "desk/1.0"},
            )
            assert placed.status_code == 200, placed.text
            assert client.get("/fail", headers={"X-Account": "102"}).status_code == 500
        time.sleep(1.5)  # a few rounds of the per-account tasks
    finally:
        process.send_signal(signal.SIGTERM)
        rest, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    stdout = out + rest.splitlines(keepends=True)
    host_json = [json.loads(line) for line in stdout if line.startswith("{")]
    order = [line for line in host_json if line["event"] == "order placed"]
    assert len(order) == 1
    assert (order[0]["symbol"], order[0]["qty"], order[0]["user_id"]) == ("TCS", 5, 101)
    assert {"level", "timestamp", "request_id"} <= set(order[0])
    assert {line["user_id"] for line in host_json if line["event"] == "quotes polled"} == {
        101,
        102,
        103,
    }
    assert err.count("INFO service.orders order routed to broker: TCS x5") == 1
    assert "[info     ]" not in err  # tradelog renders nothing on the console: take_over=False

    engine = create_tradelog_engine(db_url)
    with engine.connect() as c:

        def one(sql: str) -> Any:
            return c.execute(text(sql)).scalar()

        assert one("SELECT count(*) FROM service_logs WHERE message = 'order placed'") == 1
        assert one("SELECT user_id FROM service_logs WHERE message LIKE 'order routed%'") == 101
        for account in (101, 102, 103):
            assert (
                one(
                    "SELECT count(*) FROM service_task_execution "
                    f"WHERE user_id = {account} AND task_name = 'quote_poll'"
                )
                >= 2
            )
            assert one(f"SELECT count(*) FROM service_status WHERE user_id = {account}") == 1
        error = c.execute(text("SELECT user_id, error_type, context FROM error_logs")).one()
        assert (error.user_id, error.error_type) == (102, "RuntimeError")
        assert "/fail" in str(error.context)
        audit = c.execute(text("SELECT user_id, ip_address, user_agent FROM audit_logs")).one()
        assert tuple(audit) == (101, "127.0.0.1", "desk/1.0")
        assert one("SELECT count(*) FROM notifications WHERE user_id = 101") == 1
        assert one("SELECT email FROM users WHERE id = 103") == "meera@example.com"
    engine.dispose()
    lines = (tmp_path / "logs" / "users" / "101").glob("service-*.jsonl")
    messages = [json.loads(line)["message"] for path in lines for line in path.open()]
    assert "order placed" in messages
    assert "order routed to broker: TCS x5" in messages
