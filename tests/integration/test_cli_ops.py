"""``tradelog config``, ``retention`` and ``import-legacy`` on real databases."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._cli._progress import ProgressBar
from tradelog._db.models import ErrorLog, ServiceLog


def run(db: MigratedDatabase, *argv: str) -> int:
    return main(["--database-url", db.url, *argv])


# --------------------------------------------------------------------------- config


def test_config_show_table_and_json(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """show prints every field with what it accepts; --json prints the values."""
    alice = str(users["alice"])
    assert run(db, "config", "show", "--user", alice) == 0
    out = capsys.readouterr().out
    assert "FIELD" in out
    assert "ACCEPTS" in out
    assert "default_product" in out
    assert "one of CNC, MIS, NRML" in out
    assert run(db, "config", "show", "--user", alice, "--as", alice, "--json") == 0
    values = json.loads(capsys.readouterr().out)
    assert values["rsi_period"] == 10
    assert values["default_stop_loss_pct"] is None


def test_config_set_prints_the_diff_and_audits(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """set applies typed values from text, prints before/after, and writes an audit row."""
    alice = str(users["alice"])
    code = run(
        db,
        "--json",
        "config",
        "set",
        "--user",
        alice,
        "--as",
        alice,
        "rsi_period=14",
        "default_product=mis",
        "default_stop_loss_pct=0.08",
        "ml_enabled=yes",
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "default_product": {"before": "CNC", "after": "MIS"},
        "default_stop_loss_pct": {"before": None, "after": 0.08},
        "ml_enabled": {"before": False, "after": True},
        "rsi_period": {"before": 10, "after": 14},
    }
    assert db.scalar("SELECT user_id FROM audit_logs") == users["alice"]
    assert run(db, "config", "set", "--user", alice, "default_stop_loss_pct=null") == 0
    out = capsys.readouterr().out
    assert "BEFORE" in out
    assert "0.08" in out
    # without --as the change is made (and audited) by the system administrator account
    system = db.scalar("SELECT id FROM users WHERE email = 'system@tradelog.invalid'")
    assert db.scalar("SELECT user_id FROM audit_logs ORDER BY id DESC") == system
    assert run(db, "config", "set", "--user", alice, "rsi_period=14") == 0
    assert capsys.readouterr().out == "nothing changed\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rsi_period=abc"], "rsi_period must be an integer between 2 and 200"),
        (["rsi_oversold=150"], "rsi_oversold must be a number between 0 and 100"),
        (["bogus=1"], "unknown trading config field(s): bogus"),
        (["rsi_period"], "expected FIELD=VALUE"),
        (["default_exchange=NYSE"], "one of NSE, BSE"),
    ],
)
def test_config_set_errors(
    db: MigratedDatabase,
    users: dict[str, int],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    """Invalid changes are one line on stderr with a usage exit code; nothing is written."""
    assert run(db, "config", "set", "--user", str(users["alice"]), *argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert db.scalar("SELECT count(*) FROM audit_logs") == 0


def test_config_permission_and_not_found(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Another user's config is exit 4; an unknown user exit 5."""
    alice, bob = str(users["alice"]), str(users["bob"])
    assert run(db, "config", "show", "--user", alice, "--as", bob) == 4
    assert "may not read" in capsys.readouterr().err
    assert run(db, "config", "set", "--user", alice, "--as", bob, "rsi_period=12") == 4
    assert run(db, "config", "show", "--user", "9999") == 5
    assert "no user with id 9999" in capsys.readouterr().err


# --------------------------------------------------------------------------- retention


def seed_expired(db: MigratedDatabase, user_id: int, log_dir: Path) -> None:
    now = datetime.now(UTC)
    with db.session() as session:
        for days in (40, 35, 1):
            session.add(
                ServiceLog(
                    user_id=user_id,
                    level="INFO",
                    module="m",
                    message="x",
                    timestamp=now - timedelta(days=days),
                )
            )
        session.add(
            ErrorLog(
                user_id=user_id,
                error_type="E",
                error_message="m",
                resolved=True,
                resolved_at=now - timedelta(days=120),
            )
        )
        session.commit()
    old = (now - timedelta(days=100)).date().isoformat()
    directory = log_dir / "users" / str(user_id)
    directory.mkdir(parents=True)
    (directory / f"service-{old}.jsonl").write_text("{}\n")
    (directory / f"service-{now.date().isoformat()}.jsonl").write_text("{}\n")


def test_retention_dry_run_then_run(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--dry-run reports and lists; run deletes the same; --json carries the counts."""
    log_dir = tmp_path / "logs"
    seed_expired(db, users["alice"], log_dir)
    assert run(db, "retention", "run", "--dry-run", "--log-dir", str(log_dir)) == 0
    out = capsys.readouterr()
    assert "WOULD DELETE" in out.out
    assert "files that would go:" in out.out
    assert "TRADELOG_AUDIT_LOGS_RETENTION_DAYS" in out.out
    assert " IST" in out.out  # cut-offs in the configured timezone, like every other time shown
    assert " UTC" not in out.out
    assert out.err == ""  # no progress bar when stderr is not a terminal
    assert db.scalar("SELECT count(*) FROM service_logs") == 3
    code = run(db, "retention", "run", "--log-dir", str(log_dir), "--batch-size", "1", "--json")
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dry_run"] is False
    assert (result["service_logs"], result["error_logs"], result["log_files"]) == (2, 1, 1)
    assert db.scalar("SELECT count(*) FROM service_logs") == 1
    assert len(list(log_dir.rglob("*.jsonl"))) == 1


def test_retention_bad_batch_size(db: MigratedDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """A nonsensical batch size is a usage error."""
    assert run(db, "retention", "run", "--batch-size", "0") == 2
    assert "--batch-size" in capsys.readouterr().err


# --------------------------------------------------------------------------- import-legacy


def test_import_legacy(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Import reports counts, bad lines and unknown users; exit 1 when there were problems."""
    alice = users["alice"]
    folder = tmp_path / "old" / "users" / f"user_{alice}"
    folder.mkdir(parents=True)
    good = {"timestamp": "2024-01-05T09:05:00", "level": "INFO", "module": "m", "message": "hi"}
    (folder / "service_20240105.jsonl").write_text(json.dumps(good) + "\nnot json\n")
    assert run(db, "import-legacy", str(tmp_path / "old")) == 1
    out = capsys.readouterr().out
    assert "IMPORTED" in out
    assert "service_20240105.jsonl:2: not JSON" in out
    (folder / "service_20240105.jsonl").write_text(json.dumps(good) + "\n")
    assert run(db, "--json", "import-legacy", str(tmp_path / "old")) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["imported"], result["duplicates"], result["bad"]) == (0, 1, 0)
    missing = tmp_path / "old" / "users" / "user_4242"
    missing.mkdir()
    (missing / "service_20240105.jsonl").write_text(json.dumps(good) + "\n")
    assert run(db, "import-legacy", str(tmp_path / "old")) == 1
    assert "user 4242 does not exist: 1 line(s) skipped" in capsys.readouterr().out


def test_import_legacy_errors(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing path is exit 5; a bad timezone exit 2."""
    assert run(db, "import-legacy", str(tmp_path / "nope")) == 5
    assert "does not exist" in capsys.readouterr().err
    assert run(db, "import-legacy", str(tmp_path), "--naive-timezone", "Mars/Base") == 2
    assert "Mars/Base" in capsys.readouterr().err


# --------------------------------------------------------------------------- real processes


@pytest.mark.slow
def test_database_url_option_beats_the_environment(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """--database-url wins over TRADELOG_DATABASE_URL (in a real process)."""
    env = {
        **os.environ,
        "TRADELOG_DATABASE_URL": f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}",
    }
    argv = [sys.executable, "-m", "tradelog", "--json", "config", "show"]
    argv += ["--user", str(users["bob"])]
    with_env = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert with_env.returncode == 3
    assert "Traceback" not in with_env.stderr
    with_option = subprocess.run(
        [*argv[:3], "--database-url", db.url, *argv[3:]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert with_option.returncode == 0, with_option.stderr
    assert json.loads(with_option.stdout)["default_exchange"] == "NSE"


@pytest.mark.slow
def test_retention_in_a_process_uses_env_settings(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """TRADELOG_* retention periods and log dir apply to the command."""
    log_dir = tmp_path / "logs"
    seed_expired(db, users["alice"], log_dir)
    env = {
        **os.environ,
        "TRADELOG_DATABASE_URL": db.url,
        "TRADELOG_LOG_DIR": str(log_dir),
        "TRADELOG_SERVICE_LOGS_RETENTION_DAYS": "38",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tradelog", "retention", "run", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["service_logs"], counts["log_files"]) == (1, 1)


# --------------------------------------------------------------------------- progress bar


def test_progress_bar_draws_only_when_enabled() -> None:
    """The bar writes nothing to a pipe and redraws in place on a terminal."""
    quiet = io.StringIO()
    with ProgressBar("work", 10, stream=quiet) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    with ProgressBar("work", 10, unit="rows", stream=shown, force=True, fps=0) as bar:
        bar.update(5)
        bar.update(10, label="done")
    text = shown.getvalue()
    assert "\rwork [############............]  50%  5/10 rows" in text
    assert "\rdone [########################] 100%  10/10 rows" in text
    assert text.endswith("\n")
    unknown = ProgressBar("scan", stream=io.StringIO(), force=True)
    unknown.update(7)
    assert unknown.render() == "scan 7"
