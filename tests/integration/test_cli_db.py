"""``tradelog db`` on a real database, and how the CLI reports failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tradelog._cli import main
from tradelog._db import migrate


def test_upgrade_check_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """upgrade, current and check work and print the revision."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["--database-url", url, "db", "upgrade"]) == 0
    assert main(["--database-url", url, "db", "check"]) == 0
    assert main(["--json", "--database-url", url, "db", "current"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(out)[0]["revision"] == migrate.head()


def test_check_on_old_schema_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check exits 1 when the database is behind, with a one-line hint."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert main(["--database-url", url, "db", "upgrade", "0001_initial"]) == 0
    assert main(["--database-url", url, "db", "check"]) == 1
    err = capsys.readouterr().err
    assert "tradelog db upgrade" in err
    assert main(["--database-url", url, "db", "downgrade", "base"]) == 0


def test_unreachable_database_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """A database that cannot be reached exits 3 with a one-line masked error."""
    code = main(["--database-url", "postgresql://u:hidden@127.0.0.1:1/x", "db", "current"])
    err = capsys.readouterr().err
    assert code == 3
    assert "hidden" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_invalid_configuration_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid TRADELOG_* value exits 2 naming the variable (run as a real process)."""
    env = {**os.environ, "TRADELOG_LEVEL": "CHATTY"}
    result = subprocess.run(
        [sys.executable, "-m", "tradelog", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "TRADELOG_LEVEL" in result.stderr
    assert "Traceback" not in result.stderr
