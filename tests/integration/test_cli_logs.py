"""``tradelog logs``: tables, JSON, scoping, paging and following from the command line."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db.models import ServiceLog


@pytest.fixture
def logged(db: MigratedDatabase, users: dict[str, int]) -> dict[str, int]:
    now = datetime.now(UTC)
    with db.session() as session:
        session.add_all(
            [
                ServiceLog(
                    user_id=users["alice"],
                    level="INFO",
                    module="strategy",
                    message="order placed NIFTY",
                    context={"qty": 50},
                    timestamp=now - timedelta(hours=3),
                ),
                ServiceLog(
                    user_id=users["alice"],
                    level="ERROR",
                    module="broker",
                    message="order rejected\nsecond line",
                    context=None,
                    timestamp=now - timedelta(minutes=5),
                ),
                ServiceLog(
                    user_id=users["bob"],
                    level="WARNING",
                    module="broker",
                    message="slow NIFTY feed",
                    context=None,
                    timestamp=now - timedelta(minutes=1),
                ),
            ]
        )
        session.commit()
    return users


def test_table_as_operator(
    db: MigratedDatabase, logged: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator sees every user's logs, newest first, times in the configured zone."""
    assert main(["--database-url", db.url, "logs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "USER", "LEVEL", "MODULE", "MESSAGE", "CONTEXT"]
    assert [line.split()[6] for line in lines[1:]] == ["slow", "order", "order"]
    assert "order rejected second line" in out
    assert "+05" not in out  # local wall-clock time, no offset noise


def test_json_and_filters(
    db: MigratedDatabase, logged: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints entries with UTC and local times; filters combine."""
    assert (
        main(["--database-url", db.url, "logs", "--grep", "nifty", "--since", "2h", "--json"]) == 0
    )
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["message"] == "slow NIFTY feed"
    assert entry["local_time"].endswith("+05:30")
    assert main(["--json", "--database-url", db.url, "logs", "--min-level", "error"]) == 0
    assert [e["message"] for e in json.loads(capsys.readouterr().out)] == [
        "order rejected\nsecond line"
    ]
    assert main(["--json", "--database-url", db.url, "logs", "--module", "BROK"]) == 0
    assert [e["message"] for e in json.loads(capsys.readouterr().out)] == [
        "slow NIFTY feed",
        "order rejected\nsecond line",
    ]


def test_acting_as_a_user(
    db: MigratedDatabase, logged: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """--as reads with that user's permissions."""
    alice, bob = str(logged["alice"]), str(logged["bob"])
    assert main(["--database-url", db.url, "logs", "--as", alice, "--json"]) == 0
    assert {e["user_id"] for e in json.loads(capsys.readouterr().out)} == {logged["alice"]}
    assert main(["--database-url", db.url, "logs", "--as", alice, "--user", bob]) == 4
    assert "may not read" in capsys.readouterr().err
    assert main(["--database-url", db.url, "logs", "--as", "9999"]) == 5


def test_paging_with_cursor(
    db: MigratedDatabase, logged: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """A page that has more prints the cursor to continue with."""
    assert main(["--database-url", db.url, "logs", "--limit", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 2
    cursor = captured.err.strip().rsplit(" ", 1)[-1]
    assert (
        main(["--database-url", db.url, "logs", "--limit", "2", "--json", "--cursor", cursor]) == 0
    )
    captured = capsys.readouterr()
    assert [e["message"] for e in json.loads(captured.out)] == ["order placed NIFTY"]
    assert captured.err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "sometime"], "not a time"),
        (["--cursor", "garbage"], "not a log cursor"),
        (["--limit", "0"], "--limit"),
    ],
)
def test_bad_arguments(
    db: MigratedDatabase, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input is a usage error with a clear message."""
    assert main(["--database-url", db.url, "logs", *args]) == 2
    assert message in capsys.readouterr().err


def test_follow(
    db: MigratedDatabase, logged: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow prints the recent entries, then new ones as they are written."""

    def write_later() -> None:
        time.sleep(0.4)
        with db.session() as session:
            session.add(
                ServiceLog(
                    user_id=logged["alice"],
                    level="INFO",
                    module="live",
                    message="fresh event",
                    context=None,
                    timestamp=datetime.now(UTC),
                )
            )
            session.commit()

    writer = threading.Thread(target=write_later)
    writer.start()
    code = main(
        [
            "--database-url",
            db.url,
            "logs",
            "--follow",
            "--limit",
            "1",
            "--interval",
            "0.1",
            "--follow-timeout",
            "1.5",
            "--json",
        ]
    )
    writer.join()
    assert code == 0
    messages = [json.loads(line)["message"] for line in capsys.readouterr().out.splitlines()]
    assert messages == ["slow NIFTY feed", "fresh event"]
    code = main(
        [
            "--database-url",
            db.url,
            "logs",
            "-f",
            "--module",
            "live",
            "--follow-timeout",
            "0.2",
            "--interval",
            "0.1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "fresh event" in out
    assert out.startswith("ID  TIME")
