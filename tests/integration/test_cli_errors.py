"""``tradelog errors`` and ``tradelog status`` on real databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._cli._common import CommandError
from tradelog._cli.errors import parse_when
from tradelog._db.base import utcnow
from tradelog._db.models import ErrorLog
from tradelog._health.writer import ServiceHealth

FP = "c" * 64


def run(db: MigratedDatabase, *argv: str) -> int:
    return main(["--database-url", db.url, *argv])


@pytest.fixture
def errors(db: MigratedDatabase, users: dict[str, int]) -> list[int]:
    """Two errors for alice (one fingerprint) and one for bob, in the last hour."""
    now = utcnow()
    with db.session() as session:
        rows = [
            ErrorLog(
                user_id=users["alice"],
                error_type="ValueError",
                error_message="bad qty",
                traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: bad qty',
                context={"symbol": "INFY"},
                occurred_at=now - timedelta(minutes=30),
                fingerprint=FP,
            ),
            ErrorLog(
                user_id=users["alice"],
                error_type="ValueError",
                error_message="bad qty again",
                occurred_at=now - timedelta(minutes=20),
                fingerprint=FP,
            ),
            ErrorLog(
                user_id=users["bob"],
                error_type="KeyError",
                error_message="'ltp'",
                occurred_at=now - timedelta(minutes=10),
                fingerprint="d" * 64,
            ),
        ]
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def test_list_table_json_and_scoping(
    db: MigratedDatabase,
    users: dict[str, int],
    errors: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The operator sees all; ``--as`` a user sees only theirs; pages continue by cursor."""
    assert run(db, "errors", "list") == 0
    out = capsys.readouterr().out
    assert "ERROR_TYPE" in out
    assert "KeyError" in out
    assert "+0530" in out  # times in the configured timezone
    assert run(db, "errors", "list", "--as", str(users["alice"]), "--json", "--limit", "1") == 0
    page = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in page["items"]] == [errors[1]]
    assert page["next_cursor"]
    assert (
        run(
            db,
            "--json",
            "errors",
            "list",
            "--as",
            str(users["alice"]),
            "--cursor",
            page["next_cursor"],
        )
        == 0
    )
    rest = json.loads(capsys.readouterr().out)
    assert [item["id"] for item in rest["items"]] == [errors[0]]
    assert rest["next_cursor"] is None
    assert run(db, "errors", "list", "--type", "KeyError", "--since", "2h", "--json") == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)["items"]] == [errors[2]]
    assert run(db, "errors", "list", "--as", str(users["alice"]), "--user", str(users["bob"])) == 4
    assert "may not read" in capsys.readouterr().err
    assert run(db, "errors", "list", "--cursor", "garbage") == 2
    assert run(db, "errors", "list", "--since", "yesterday") == 2


def test_show_and_groups(
    db: MigratedDatabase,
    users: dict[str, int],
    errors: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """show prints the fields and the traceback; groups counts per fingerprint."""
    assert run(db, "errors", "show", str(errors[0])) == 0
    out = capsys.readouterr().out
    assert "INFY" in out
    assert out.rstrip().endswith("ValueError: bad qty")
    assert run(db, "errors", "show", str(errors[0]), "--as", str(users["bob"])) == 5
    capsys.readouterr()
    assert run(db, "errors", "groups", "--json") == 0
    groups = json.loads(capsys.readouterr().out)
    assert [(g["fingerprint"], g["count"], g["unresolved"]) for g in groups] == [
        ("d" * 64, 1, 1),
        (FP, 2, 2),
    ]
    assert groups[1]["sample_message"] == "bad qty again"
    assert run(db, "errors", "groups") == 0
    assert "cccccccccccc" in capsys.readouterr().out


def test_resolve_flow(
    db: MigratedDatabase,
    users: dict[str, int],
    errors: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Admins resolve by id or fingerprint; users are refused; a second resolve conflicts."""
    admin = str(users["admin"])
    assert run(db, "errors", "resolve", str(errors[2]), "--as", str(users["bob"])) == 4
    assert run(db, "errors", "resolve", str(errors[2]), "--as", admin, "--notes", "fixed") == 0
    assert run(db, "errors", "resolve", str(errors[2]), "--as", admin) == 6
    assert "already resolved" in capsys.readouterr().err
    assert run(db, "--json", "errors", "resolve", "--fingerprint", FP, "--as", admin) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["error_ids"] == errors[:2]
    assert run(db, "errors", "resolve", "999999", "--as", admin) == 5
    assert db.scalar("SELECT count(*) FROM error_logs WHERE resolved = :r", r=True) == 3
    assert run(db, "errors", "list", "--unresolved", "--json") == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


def test_resolve_by_the_fingerprint_the_table_shows(
    db: MigratedDatabase,
    users: dict[str, int],
    errors: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 12 digits printed by ``errors list``/``groups`` resolve and filter like the full
    fingerprint; too short, non-hex or shared prefixes are usage errors."""
    admin = str(users["admin"])
    with db.session() as session:
        session.add(
            ErrorLog(
                user_id=users["bob"],
                error_type="KeyError",
                error_message="x",
                fingerprint="d" * 12 + "e" * 52,
            )
        )
        session.commit()
    assert run(db, "--json", "errors", "list", "--fingerprint", FP[:12]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)["items"]] == errors[1::-1]
    assert run(db, "errors", "resolve", "--fingerprint", "dddddddddddd", "--as", admin) == 2
    assert "matches several" in capsys.readouterr().err
    assert run(db, "errors", "resolve", "--fingerprint", "ccc", "--as", admin) == 2
    assert run(db, "errors", "resolve", "--fingerprint", "cc%", "--as", admin) == 2
    assert run(db, "errors", "resolve", "--fingerprint", "0" * 12, "--as", admin) == 5
    assert run(db, "errors", "resolve", "--fingerprint", FP[:12], "--as", str(users["alice"])) == 4
    capsys.readouterr()
    assert (
        run(db, "--json", "errors", "resolve", "--fingerprint", FP[:12].upper(), "--as", admin) == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["error_ids"] == errors[:2]


def test_conflict_shows_the_earlier_resolution_in_local_time(
    db: MigratedDatabase,
    users: dict[str, int],
    errors: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Resolving twice names when (in the configured timezone) and by whom."""
    admin = str(users["admin"])
    assert run(db, "errors", "resolve", str(errors[0]), "--as", admin) == 0
    assert run(db, "errors", "resolve", str(errors[0]), "--as", admin) == 6
    err = capsys.readouterr().err
    assert " IST by user " + admin in err
    assert "+00:00" not in err


@pytest.mark.parametrize("command", ["list", "groups"])
def test_unknown_user_filter_is_not_found(
    db: MigratedDatabase, errors: list[int], command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--user`` naming no user exits 5 instead of printing an empty table."""
    assert run(db, "errors", command, "--user", "424242") == 5
    assert capsys.readouterr().err == "tradelog: error: no user with id 424242\n"


def test_status_shows_services_and_flags_stale(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Running with a fresh heartbeat is fine; a stale service makes the exit status 1."""
    health = ServiceHealth(db.engine)
    health.mark_running(users["alice"])
    health.mark_running(users["bob"], now=utcnow() - timedelta(hours=1))
    assert run(db, "status") == 1
    out = capsys.readouterr().out
    assert "services (1 stale" in out
    assert "stale" in out
    assert "outbox" in out
    assert "log writers" in out
    assert run(db, "status", "--json", "--threshold", "7200") == 0
    report = json.loads(capsys.readouterr().out)
    assert {row["user_id"]: row["state"] for row in report["services"]} == {
        users["alice"]: "running",
        users["bob"]: "running",
    }
    assert report["stale"] == 0
    assert run(db, "status", "--json", "--as", str(users["alice"])) == 0
    mine = json.loads(capsys.readouterr().out)
    assert [row["user_id"] for row in mine["services"]] == [users["alice"]]
    assert str(mine["outbox"]).startswith("n/a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", datetime(2026, 3, 1, 4, 0, tzinfo=UTC)),
        ("90m", datetime(2026, 3, 2, 2, 30, tzinfo=UTC)),
        ("2026-03-02T09:15", datetime(2026, 3, 2, 3, 45, tzinfo=UTC)),
        ("2026-03-02T09:15+00:00", datetime(2026, 3, 2, 9, 15, tzinfo=UTC)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    """Durations count back from now; naive times are in the configured timezone (IST)."""
    now = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
    assert parse_when(text, now, ZoneInfo("Asia/Kolkata")) == expected


def test_parse_when_rejects_nonsense() -> None:
    """Anything else is a usage error."""
    with pytest.raises(CommandError):
        parse_when("last tuesday", datetime(2026, 3, 2, tzinfo=UTC), ZoneInfo("UTC"))


def test_status_lists_log_writers(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The counters a writer published under the log directory are shown."""
    import os

    import tradelog

    tradelog.configure(database_url=db.url, log_dir=tmp_path / "logs", console=False)
    tradelog.get_logger("x", user_id=users["alice"]).info("hello")
    tradelog.shutdown()
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path / "logs"))
    assert run(db, "status") == 0
    out = capsys.readouterr().out
    writers = out.split("log writers\n", 1)[1]
    assert "WRITTEN" in writers
    assert str(os.getpid()) in writers
    assert run(db, "status", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["writers"][0]["pid"] == os.getpid()
    assert report["writers"][0]["updated_at"].endswith("+05:30")  # configured timezone
    assert "+0530" in writers


def test_status_lists_recent_delivery_failures_in_local_time(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Failed deliveries get their own table; outbox times are in the configured timezone."""
    from tradelog._db.models import Notification, NotificationDelivery

    with db.session() as session:
        note = Notification(
            user_id=users["alice"], type="trading", level="info", title="t", message="m"
        )
        session.add(note)
        session.flush()
        session.add_all(
            [
                NotificationDelivery(
                    notification_id=note.id,
                    user_id=users["alice"],
                    channel="telegram",
                    status="failed",
                    attempts=8,
                    last_error="Forbidden: bot was blocked by the user",
                ),
                NotificationDelivery(
                    notification_id=note.id, user_id=users["alice"], channel="email"
                ),
            ]
        )
        session.commit()
    assert run(db, "status") == 1  # a delivery failed for good in the last 24 hours
    out = capsys.readouterr().out
    assert "1 deliveries failed for good in the last 24 hours" in out
    failures = out.split("recent delivery failures\n", 1)[1]
    assert "bot was blocked by the user" in failures
    assert "+0530" in failures
    assert run(db, "status", "--json") == 1
    outbox = json.loads(capsys.readouterr().out)["outbox"]
    assert outbox["oldest_due_at"].endswith("+05:30")
    assert outbox["recent_failures"][0]["at"].endswith("+05:30")


def test_status_exits_1_when_deliveries_are_overdue(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """A delivery due for longer than the unserved timeout makes status exit 1 with a hint."""
    from tradelog._db.models import Notification, NotificationDelivery

    with db.session() as session:
        note = Notification(
            user_id=users["alice"], type="trading", level="info", title="t", message="m"
        )
        session.add(note)
        session.flush()
        delivery = NotificationDelivery(
            notification_id=note.id, user_id=users["alice"], channel="email"
        )
        session.add(delivery)
        session.commit()
    assert run(db, "status") == 0  # due just now: not overdue yet
    capsys.readouterr()
    with db.session() as session:
        stored = session.get(NotificationDelivery, delivery.id)
        assert stored is not None
        stored.next_attempt_at = utcnow() - timedelta(hours=1)
        session.commit()
    assert run(db, "status") == 1
    assert "1 deliveries overdue" in capsys.readouterr().out
    assert run(db, "status", "--json") == 1
    assert json.loads(capsys.readouterr().out)["outbox"]["overdue"] == 1
