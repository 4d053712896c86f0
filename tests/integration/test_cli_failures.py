"""What the CLI says when things go wrong: one line on stderr, a meaningful exit code, no
traceback, no secret."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase, PostgresTemplate
from tradelog._cli import main
from tradelog._db.models import ErrorLog


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["errors", "list"],
        ["errors", "resolve", "1", "--as", "1"],
        ["config", "show", "--user", "1"],
        ["retention", "run", "--dry-run"],
    ],
)
def test_unmigrated_database_is_one_line_with_a_hint(
    empty_url: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A database without the schema exits 3 and says to run ``tradelog db upgrade``."""
    code = main(["--database-url", empty_url, *argv])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith("tradelog: error: ")
    assert "tradelog db upgrade" in err
    assert len(err.strip().splitlines()) == 1


def test_database_error_never_shows_the_password(
    pg_template: PostgresTemplate, capsys: pytest.CaptureFixture[str]
) -> None:
    """The failing database's URL is shown with its password masked."""
    with pg_template.empty() as url:
        secret_url = url.replace("postgres@", "postgres:pa55word-xyz@")
        assert main(["--database-url", secret_url, "status"]) == 3
    err = capsys.readouterr().err
    assert "pa55word-xyz" not in err
    assert "tradelog db upgrade" in err


def test_status_without_a_database_still_shows_the_local_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that refuses connections: ``status`` prints what waits in local files (and
    says what is wrong with it), then the one-line database error, and exits 3."""
    dead = tmp_path / "logs" / "_dead_letter"
    dead.mkdir(parents=True)
    (dead / "rows-1.jsonl").write_text('{"user_id": 5}\n{"user_id": 6}\n')
    url = "postgresql://tradelog:hunter2@127.0.0.1:9/nowhere"
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path / "logs"))
    argv = ["--database-url", url, "status"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert "waiting in local files (the database could not be read)" in captured.out
    assert "dead" in captured.out
    assert captured.err.startswith("tradelog: error: ")
    assert "hunter2" not in captured.out + captured.err
    assert main([*argv, "--json"]) == 3
    document = json.loads(capsys.readouterr().out)
    assert document["database"] == "unreachable"
    assert document["problems"]


def test_unknown_revision_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``db upgrade``/``db downgrade`` to a revision that does not exist exit 2."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["--database-url", url, "db", "upgrade", "nosuch"]) == 2
    assert main(["--database-url", url, "db", "downgrade", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tradelog: error: Can't locate revision identified by 'nosuch'"] * 2


def test_command_errors_share_the_prefix(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Validation errors read like every other error: ``tradelog: error: ...``."""
    assert main(["--database-url", db_url, "errors", "list", "--since", "yesterday"]) == 2
    assert capsys.readouterr().err.startswith("tradelog: error: expected a time")


@pytest.mark.slow
def test_closed_pipe_stops_quietly(db: MigratedDatabase, users: dict[str, int]) -> None:
    """``tradelog errors list | head -1`` ends without a BrokenPipeError traceback."""
    with db.session() as session:
        session.add_all(
            ErrorLog(user_id=users["alice"], error_type="ValueError", error_message=f"bad {i}")
            for i in range(1500)
        )
        session.commit()
    argv = ["--database-url", db.url, "errors", "list", "--limit", "1000"]
    writer = subprocess.Popen(
        [sys.executable, "-m", "tradelog", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().startswith(b"ID")
    writer.stdout.close()
    _, err = writer.communicate(timeout=60)
    assert err == b""
    assert writer.returncode == 141


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--threshold", "-5"],
        ["status", "--threshold", "nan"],
        ["errors", "list", "--limit", "0"],
        ["errors", "groups", "--limit", "x"],
    ],
)
def test_nonsensical_numbers_are_usage_errors(
    db_url: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Thresholds and limits are checked by the parser (exit 2), not used as given."""
    with pytest.raises(SystemExit) as exited:
        main(["--database-url", db_url, *argv])
    assert exited.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
