"""``tradelog notify``, ``tradelog prefs`` and ``tradelog worker`` on real databases and servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi, forbidden
from tests.support.smtp_server import SmtpServer
from tradelog._cli import main

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


@pytest.mark.slow
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


def test_user_names_the_target_and_as_the_actor(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """--user is whose rows, --as who asks (default: the system admin); non-admins see their own."""
    alice, bob, admin = str(users["alice"]), str(users["bob"]), str(users["admin"])
    for user in (alice, alice, bob):
        assert run(db, "notify", "send", "--user", user, "--type", "system", "--title", "t") == 0
    everyone = as_json(db, capsys, "notify", "list")
    assert sorted(r["user"] for r in everyone) == sorted([users["alice"]] * 2 + [users["bob"]])  # type: ignore[attr-defined]
    mine = as_json(db, capsys, "notify", "list", "--as", bob)
    assert [r["user"] for r in mine] == [users["bob"]]  # type: ignore[attr-defined]
    narrowed = as_json(db, capsys, "notify", "list", "--user", alice, "--as", admin)
    assert {r["user"] for r in narrowed} == {users["alice"]}  # type: ignore[attr-defined]
    assert as_json(db, capsys, "notify", "unread", "--user", alice) == [
        {"user": users["alice"], "unread": 2}
    ]
    capsys.readouterr()
    refused = [
        ("notify", "list", "--user", alice, "--as", bob),
        ("notify", "unread", "--user", alice, "--as", bob),
        ("notify", "send", "--user", alice, "--as", bob, "--type", "system", "--title", "x"),
        ("notify", "deliveries", "--user", alice, "--as", bob),
        ("notify", "retry", "--all-failed", "--user", alice, "--as", bob),
        ("notify", "test-channel", "--user", alice, "--as", bob),
        ("prefs", "show", "--user", alice, "--as", bob),
        ("prefs", "set", "--user", alice, "--as", bob, "--errors", "off"),
    ]
    for argv in refused:
        assert run(db, *argv) == 4, argv
        err = capsys.readouterr().err
        assert err.startswith("tradelog: error: "), (argv, err)
        assert err.count("\n") == 1, (argv, err)
    assert run(db, "notify", "list", "--user", "424242") == 5
    assert run(db, "notify", "list", "--as", "424242") == 5
    assert db.scalar("SELECT count(*) FROM notifications") == 3


def test_prefs_set_audits_the_acting_user(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --as the change is recorded as the system admin's; with --as as that user's."""
    alice = str(users["alice"])
    assert run(db, "prefs", "set", "--user", alice, "--trading", "OFF") == 0
    assert run(db, "prefs", "set", "--user", alice, "--as", alice, "--quiet-mode", "Silent") == 0
    rows = db.rows("SELECT user_id, resource_type FROM audit_logs ORDER BY id")
    system = db.scalar("SELECT id FROM users WHERE email LIKE 'system%'")
    assert [r["user_id"] for r in rows] == [system, users["alice"]]
    assert {r["resource_type"] for r in rows} == {"notification_preferences"}
    [shown] = as_json(db, capsys, "prefs", "show", "--user", alice, "--as", alice)  # type: ignore[misc]
    assert (shown["notify_trading_events"], shown["quiet_hours_mode"]) == (False, "silent")


def test_send_accepts_any_case_and_prints_details(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """--type/--level in any case; the detail column holds only what the status does not say."""
    alice = str(users["alice"])
    run(db, "prefs", "set", "--user", alice, "--email-address", "a@example.com", "--email", "on")
    rows = as_json(
        db,
        capsys,
        "notify",
        "send",
        "--user",
        alice,
        "--type",
        "TRADING",
        "--level",
        "WARNING",
        "--title",
        "Fill",
    )
    assert [(r["channel"], r["status"], r["detail"]) for r in rows] == [  # type: ignore[attr-defined]
        ("email", "queued", None),
        ("in_app", "recorded", None),
    ]
    assert db.scalar("SELECT level FROM notifications") == "warning"
    listed = as_json(db, capsys, "notify", "list", "--level", "Warning", "--type", "Trading")
    assert len(listed) == 1  # type: ignore[arg-type]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(db, "notify", "send", "--user", alice, "--type", "trade", "--title", "x")
    assert exit_info.value.code == 2
    assert "invalid choice: 'trade'" in capsys.readouterr().err


def test_read_is_the_owners_and_counts_truthfully(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """read acts as the owner; an admin --as is refused; already-read ids are not counted."""
    alice, admin = str(users["alice"]), str(users["admin"])
    for title in ("a", "b"):
        run(db, "notify", "send", "--user", alice, "--type", "system", "--title", title)
    first, second = (r["id"] for r in db.rows("SELECT id FROM notifications ORDER BY id"))
    marked = as_json(db, capsys, "notify", "read", "--user", alice, str(first))
    assert marked == [{"user": users["alice"], "marked_read": 1, "unread": 1}]
    marked = as_json(db, capsys, "notify", "read", "--user", alice, str(first), str(second))
    assert marked == [{"user": users["alice"], "marked_read": 1, "unread": 0}]
    assert run(db, "notify", "read", "--user", alice, "--as", admin, "--all") == 4
    assert "read state belongs to the inbox owner" in capsys.readouterr().err


def test_deliveries_and_retry_are_scoped(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """A user lists and retries only their own deliveries; named ids must exist and have failed."""
    alice, bob = str(users["alice"]), str(users["bob"])
    for user in (alice, bob):
        run(db, "prefs", "set", "--user", user, "--chat-id", "42", "--telegram", "on")
        run(db, "notify", "send", "--user", user, "--type", "system", "--title", "t")
    db.execute("UPDATE notification_deliveries SET status = 'failed', last_error = 'x'")
    ids = {
        r["user_id"]: r["id"] for r in db.rows("SELECT id, user_id FROM notification_deliveries")
    }
    mine = as_json(db, capsys, "notify", "deliveries", "--as", bob)
    assert [r["id"] for r in mine] == [ids[users["bob"]]]  # type: ignore[attr-defined]
    assert len(as_json(db, capsys, "notify", "deliveries")) == 2  # type: ignore[arg-type]
    capsys.readouterr()
    assert run(db, "notify", "retry", str(ids[users["alice"]]), "--as", bob) == 5
    assert run(db, "notify", "retry", "999999") == 5
    assert "no delivery with id 999999" in capsys.readouterr().err
    assert as_json(db, capsys, "notify", "retry", "--all-failed", "--as", bob) == [{"requeued": 1}]
    capsys.readouterr()
    assert run(db, "notify", "retry", str(ids[users["bob"]])) == 6
    assert "not failed" in capsys.readouterr().err
    statuses = {
        r["user_id"]: r["status"]
        for r in db.rows("SELECT user_id, status FROM notification_deliveries")
    }
    assert statuses == {users["alice"]: "failed", users["bob"]: "pending"}
    assert as_json(db, capsys, "notify", "retry", str(ids[users["alice"]])) == [{"requeued": 1}]


@pytest.mark.parametrize(
    "option", [("--concurrency", "0"), ("--poll-interval", "-1"), ("--lease", "nan")]
)
def test_worker_refuses_bad_numbers(
    db: MigratedDatabase, option: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Zero, negative and non-finite worker options are usage errors (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        run(db, "worker", "--once", *option)
    assert exit_info.value.code == 2
    assert option[0] in capsys.readouterr().err


def test_unconfigured_telegram_is_visible_then_fails_with_reason(
    db: MigratedDatabase,
    users: dict[str, int],
    channels_env: tuple[FakeBotApi, SmtpServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No bot token anywhere: status shows the delivery overdue; an email-only worker fails it
    with a reason naming the variable; a worker with nothing configured refuses to start."""
    _api, smtp = channels_env
    alice = str(users["alice"])
    run(db, "prefs", "set", "--user", alice, "--chat-id", "42", "--telegram", "on")
    run(db, "notify", "send", "--user", alice, "--type", "trading", "--title", "Fill")
    db.execute("UPDATE notification_deliveries SET next_attempt_at = :t", t=_hour_ago())
    monkeypatch.delenv("TRADELOG_TELEGRAM_BOT_TOKEN")
    monkeypatch.delenv("TRADELOG_SMTP_HOST")
    capsys.readouterr()
    assert run(db, "worker", "--once") == 2
    err = capsys.readouterr().err
    assert "nothing to deliver" in err
    assert "TRADELOG_TELEGRAM_BOT_TOKEN" in err
    capsys.readouterr()
    run(db, "--json", "status")
    summary = json.loads(capsys.readouterr().out)["outbox"]
    assert (summary["due"], summary["overdue"]) == (1, 1)
    assert summary["by_channel"] == {"telegram": {"pending": 1, "overdue": 1}}
    monkeypatch.setenv("TRADELOG_SMTP_HOST", smtp.host)
    stats = as_json(db, capsys, "worker", "--once")
    assert stats[0]["failed"] == 1  # type: ignore[index]
    [failed] = as_json(db, capsys, "notify", "deliveries", "--status", "failed")  # type: ignore[misc]
    assert "TRADELOG_TELEGRAM_BOT_TOKEN is not set" in failed["error"]
    capsys.readouterr()
    run(db, "--json", "status")
    summary = json.loads(capsys.readouterr().out)["outbox"]
    assert (summary["pending"], summary["overdue"], summary["failed"]) == (0, 0, 1)


def _hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def test_test_channel_waits_for_the_shared_rate_limit(
    db: MigratedDatabase,
    users: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """test-channel right after a worker delivered to the same chat waits for the chat's slot
    (Telegram's one message a second per chat) instead of being refused with 429."""
    alice = str(users["alice"])
    run(db, "prefs", "set", "--user", alice, "--chat-id", "42", "--telegram", "on")
    with FakeBotApi(enforce_limits=True) as api:
        monkeypatch.setenv("TRADELOG_TELEGRAM_BOT_TOKEN", api.token)
        monkeypatch.setenv("TRADELOG_TELEGRAM_API_URL", api.api_url)
        run(db, "notify", "send", "--user", alice, "--type", "system", "--title", "first")
        assert as_json(db, capsys, "worker", "--once")[0]["sent"] == 1  # type: ignore[index]
        rows = as_json(
            db, capsys, "notify", "test-channel", "--user", alice, "--channel", "telegram"
        )
        assert [r["result"] for r in rows] == ["sent"]  # type: ignore[attr-defined]
        assert api.limit_violations == 0
        first, second = api.sent_messages("42")
        assert second.processed_monotonic - first.processed_monotonic >= 1.0
