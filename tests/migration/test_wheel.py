"""The built wheel carries its migrations: ``tradelog db upgrade`` works from a plain install."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tradelog._db import migrate

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_wheel_install_can_migrate(tmp_path: Path) -> None:
    """Build the wheel, install it (not editable) in a fresh venv: db upgrade, check, current."""
    dist = tmp_path / "dist"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(REPO),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("tradelog-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "tradelog/migrations/env.py" in names
    assert "tradelog/migrations/versions/0002_phase1_multi_user_schema.py" in names
    assert "tradelog/py.typed" in names  # the host's mypy reads tradelog's annotations

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    # Dependencies come from this interpreter's site-packages; the source tree stays off sys.path.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    url = f"sqlite:///{tmp_path / 'wheel.db'}"
    run = subprocess.run(
        [str(python), "-I", "-m", "tradelog", "--database-url", url, "db", "upgrade"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    where = subprocess.run(
        [str(python), "-I", "-c", "import tradelog._db.migrate as m; print(m.script_location())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(site) in where
    check = subprocess.run(
        [str(python), "-I", "-m", "tradelog", "--database-url", url, "db", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    current = subprocess.run(
        [str(python), "-I", "-m", "tradelog", "--json", "--database-url", url, "db", "current"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert current.returncode == 0, current.stderr
    assert '"revision": "' + migrate.head() + '"' in current.stdout
