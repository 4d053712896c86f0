"""What a host gets from the package: type information, and a demo that installs only what
tradelog needs at run time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_hosts_mypy_sees_tradelogs_types(tmp_path: Path) -> None:
    """``get_logger`` is typed as structlog's bound logger: a misspelt method is an error in
    the host's own strict mypy run, a correct call is not."""
    host = tmp_path / "host_app.py"
    host.write_text(
        "import tradelog\n"
        "log = tradelog.get_logger(__name__, user_id=7)\n"
        "log.info('order placed', qty=3)\n"
        "bound = log.bind(symbol='TCS')\n"
        "bound.informative('typo')\n"
        "tradelog.ensure_user(7, email='a@example.com')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(host)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert 'has no attribute "informative"' in result.stdout, result.stdout
    assert result.stdout.count("error:") == 1, result.stdout
    assert "missing library stubs" not in result.stdout


@pytest.mark.slow
def test_make_demo_installs_only_the_runtime_extras(tmp_path: Path) -> None:
    """``make demo`` on a fresh checkout installs ``.[all]``, never the dev extra."""
    result = subprocess.run(
        ["make", "-n", "demo", f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    installs = [line for line in result.stdout.splitlines() if "pip install" in line]
    assert any("-e '.[all]'" in line for line in installs), result.stdout
    assert not any("dev" in line for line in installs), result.stdout
    assert "examples/trading_day.py" in result.stdout
