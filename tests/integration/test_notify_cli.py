"""``tradelog notify``, ``tradelog prefs`` and ``tradelog worker`` on real databases and servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi, forbidden
from tests.support.smtp_server import SmtpServer
from tradelog.cli import main

REPO = Path(__file__).resolve().parents[2]


def run(db: MigratedDatabase, *argv: str) -> int:
    return main(["--database-url", db.url, *argv])


def as_json(db: MigratedDatabase, capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert run(db, "--json", *argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def channels_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeBotApi, SmtpServer]]:
    """A fake Bot API and an SMTP server (STARTTLS + AUTH) configured through TRADELOG_*."""
    with FakeBotApi() as api, SmtpServer(security="starttls", auth_required=True) as smtp:
        monkeypatch.setenv("TRADELOG_TELEGRAM_BOT_TOKEN", api.token)
        monkeypatch.setenv("TRADELOG_TELEGRAM_API_URL", api.api_url)
        monkeypatch.setenv("TRADELOG_SMTP_HOST", smtp.host)
        monkeypatch.setenv("TRADELOG_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("TRADELOG_SMTP_USERNAME", smtp.username)
        monkeypatch.setenv("TRADELOG_SMTP_PASSWORD", smtp.password)
        monkeypatch.setenv("TRADELOG_SMTP_FROM", "alerts@tradelog.example")
        monkeypatch.setenv("SSL_CERT_FILE", smtp.ca_cert_pem_path)
        yield api, smtp


def test_prefs_set_and_show(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """prefs set validates and audits; prefs show prints the stored values."""
    alice = str(users["alice"])
    assert (
        run(
            db,
            "prefs",
            "set",
            "--user",
            alice,
            "--chat-id",
            "42",
            "--telegram",
            "on",
            "--quiet-hours",
            "22:00-07:00",
            "--timezone",
            "Europe/Berlin",
            "--quiet-mode",
            "drop",
            "--trading",
            "off",
        )
        == 0
    )
    [shown] = as_json(db, capsys, "prefs", "show", "--user", alice)  # type: ignore[misc]
    assert shown["telegram_chat_id"] == "42"
    assert shown["telegram_enabled"] is True
    assert (shown["quiet_hours_start"], shown["quiet_hours_end"]) == ("22:00", "07:00")
    assert shown["timezone"] == "Europe/Berlin"
    assert shown["quiet_hours_mode"] == "drop"
    assert shown["notify_trading_events"] is False
    assert db.scalar("SELECT count(*) FROM audit_logs") == 1
    assert run(db, "prefs", "set", "--user", alice, "--quiet-hours", "off") == 0
    assert db.scalar("SELECT quiet_hours_start FROM user_notification_preferences") is None


def test_prefs_set_errors(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad values exit 2 with the reason; another user's preferences exit 4."""
    alice, bob = str(users["alice"]), str(users["bob"])
    assert run(db, "prefs", "set", "--user", alice, "--email-address", "nope") == 2
    assert "invalid email address" in capsys.readouterr().err
    assert run(db, "prefs", "set", "--user", alice, "--quiet-hours", "22:00") == 2
    assert run(db, "prefs", "set", "--user", alice) == 2
    assert run(db, "prefs", "set", "--user", alice, "--as", bob, "--errors", "off") == 4
    assert run(db, "prefs", "show", "--user", "424242") == 5


def test_send_list_read(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """send queues per preferences; list/unread/read manage the inbox."""
    alice = str(users["alice"])
    run(db, "prefs", "set", "--user", alice, "--email-address", "a@example.com", "--email", "on")
    sent = as_json(
        db,
        capsys,
        "notify",
        "send",
        "--user",
        alice,
        "--type",
        "trading",
        "--level",
        "warning",
        "--title",
        "Fill",
        "--message",
        "INFY x5",
        "--dedupe-key",
        "fill-1",
    )
    assert [(r["channel"], r["status"]) for r in sent] == [  # type: ignore[attr-defined]
        ("email", "queued"),
        ("in_app", "recorded"),
    ]
    again = as_json(
        db,
        capsys,
        "notify",
        "send",
        "--user",
        alice,
        "--type",
        "trading",
        "--title",
        "Fill",
        "--dedupe-key",
        "fill-1",
    )
    assert {r["status"] for r in again} == {"duplicate"}  # type: ignore[attr-defined]
    as_json(db, capsys, "notify", "send", "--user", alice, "--type", "system", "--title", "Two")
    listed = as_json(db, capsys, "notify", "list", "--user", alice, "--limit", "1")
    assert [r["title"] for r in listed] == ["Two"]  # type: ignore[attr-defined]
    capsys.readouterr()
    assert run(db, "notify", "list", "--user", alice, "--limit", "1") == 0
    out = capsys.readouterr().out
    assert "next page: --cursor" in out
    cursor = out.rsplit("--cursor ", 1)[1].strip()
    rest = as_json(db, capsys, "notify", "list", "--user", alice, "--cursor", cursor)
    assert [r["title"] for r in rest] == ["Fill"]  # type: ignore[attr-defined]
    assert as_json(db, capsys, "notify", "unread", "--user", alice) == [
        {"user": users["alice"], "unread": 2}
    ]
    first = rest[0]["id"]  # type: ignore[index]
    assert run(db, "notify", "read", "--user", str(users["bob"]), str(first)) == 4
    marked = as_json(db, capsys, "notify", "read", "--user", alice, str(first))
    assert marked == [{"user": users["alice"], "marked_read": 1, "unread": 1}]
    marked = as_json(db, capsys, "notify", "read", "--user", alice, "--all")
    assert marked == [{"user": users["alice"], "marked_read": 1, "unread": 0}]
    assert run(db, "notify", "send", "--user", alice, "--type", "trading", "--title", " ") == 2
    assert run(db, "notify", "list", "--user", alice, "--cursor", "???") == 2


def test_send_type_switched_off(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """A switched-off type prints 'not created' with the reason."""
    alice = str(users["alice"])
    run(db, "prefs", "set", "--user", alice, "--system", "off")
    rows = as_json(
        db, capsys, "notify", "send", "--user", alice, "--type", "system", "--title", "x"
    )
    assert rows[0]["status"] == "not created"  # type: ignore[index]


def test_worker_once_deliveries_and_retry(
    db: MigratedDatabase,
    users: dict[str, int],
    channels_env: tuple[FakeBotApi, SmtpServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """worker --once delivers over both channels; failed ones are listed and can be requeued."""
    api, smtp = channels_env
    alice = str(users["alice"])
    run(
        db,
        "prefs",
        "set",
        "--user",
        alice,
        "--chat-id",
        "42",
        "--telegram",
        "on",
        "--email-address",
        "alice@example.com",
        "--email",
        "on",
    )
    api.script(chat_id="42", responses=[forbidden()])
    run(db, "notify", "send", "--user", alice, "--type", "trading", "--title", "Fill")
    stats = as_json(db, capsys, "worker", "--once", "--concurrency", "2")
    assert stats[0]["sent"] == 1  # type: ignore[index]
    assert stats[0]["failed"] == 1  # type: ignore[index]
    assert len(smtp.messages) == 1
    failed = as_json(db, capsys, "notify", "deliveries", "--status", "failed")
    assert [r["channel"] for r in failed] == ["telegram"]  # type: ignore[attr-defined]
    assert "blocked" in failed[0]["error"]  # type: ignore[index]
    assert as_json(db, capsys, "notify", "retry", "--all-failed") == [{"requeued": 1}]
    as_json(db, capsys, "worker", "--once")
    assert len(api.sent_messages("42")) == 1
    assert db.scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'sent'") == 2


def test_test_channel(
    db: MigratedDatabase,
    users: dict[str, int],
    channels_env: tuple[FakeBotApi, SmtpServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """test-channel sends directly on each channel and reports the outcome per channel."""
    api, smtp = channels_env
    bob = str(users["bob"])
    rows = as_json(db, capsys, "notify", "test-channel", "--user", bob)
    assert [r["result"] for r in rows] == ["skipped", "skipped"]  # type: ignore[attr-defined]
    run(db, "prefs", "set", "--user", bob, "--chat-id", "99", "--email-address", "bob@example.com")
    rows = as_json(db, capsys, "notify", "test-channel", "--user", bob)
    assert [(r["channel"], r["result"]) for r in rows] == [  # type: ignore[attr-defined]
        ("telegram", "sent"),
        ("email", "sent"),
    ]
    assert "tradelog test message" in (api.sent_messages("99")[0].text or "")
    assert smtp.messages[0].subject == "[INFO] tradelog test message"
    api.script(chat_id="99", responses=[forbidden()])
    capsys.readouterr()
    assert run(db, "notify", "test-channel", "--user", bob, "--channel", "telegram") == 1
    assert "blocked" in capsys.readouterr().out


def test_test_channel_not_configured(
    db: MigratedDatabase,
    users: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a token or SMTP host the command says which variable to set."""
    for name in ("TRADELOG_TELEGRAM_BOT_TOKEN", "TRADELOG_SMTP_HOST"):
        monkeypatch.delenv(name, raising=False)
    bob = str(users["bob"])
    run(db, "prefs", "set", "--user", bob, "--chat-id", "99", "--email-address", "bob@example.com")
    rows = as_json(db, capsys, "notify", "test-channel", "--user", bob)
    assert [r["result"] for r in rows] == ["not configured", "not configured"]  # type: ignore[attr-defined]
    assert "TRADELOG_TELEGRAM_BOT_TOKEN" in rows[0]["detail"]  # type: ignore[index]


def test_worker_process_stops_on_sigterm(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """`tradelog worker` runs until SIGTERM, delivers meanwhile and exits 0."""
    with FakeBotApi() as api:
        alice = str(users["alice"])
        run(db, "prefs", "set", "--user", alice, "--chat-id", "42", "--telegram", "on")
        env = {
            **os.environ,
            "TRADELOG_DATABASE_URL": db.url,
            "TRADELOG_TELEGRAM_BOT_TOKEN": api.token,
            "TRADELOG_TELEGRAM_API_URL": api.api_url,
            "TRADELOG_WORKER_POLL_INTERVAL": "0.1",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "tradelog", "--json", "worker"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            run(db, "notify", "send", "--user", alice, "--type", "system", "--title", "hi")
            api.wait_for_messages(1, timeout=20)
            time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert json.loads(out)[0]["sent"] == 1
        assert "delivery worker" in err
