"""Optional extras stay optional: tradelog works without them and names the one to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_BLOCKER = """
import importlib.abc, sys

class _Missing(importlib.abc.MetaPathFinder):
    BLOCKED = ("telegram", "aiosmtplib", "psycopg", "psycopg_binary", "starlette")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Missing())
"""


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(_BLOCKER + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.slow
def test_core_works_without_extras(tmp_path: Path) -> None:
    """import tradelog, configure, log, notify in-app and the CLI parser need no extra."""
    result = _run(
        f"""
        import tradelog, tradelog._cli, tradelog._notify.service
        from tradelog._db import migrate
        from tradelog.users import create_user
        from tradelog._db.engine import create_tradelog_engine, session_factory
        url = "sqlite:///{tmp_path / "x.db"}"
        migrate.upgrade(url)
        engine = create_tradelog_engine(url)
        with session_factory(engine)() as s:
            uid = create_user(s, email="a@example.com", name="A").id
            s.commit()
        tradelog.configure(database_url=url, log_dir="{tmp_path / "logs"}", console=False)
        tradelog.get_logger("t").info("hello", user_id=uid)
        result = tradelog.notify(uid, "trading", "info", "t", "m")
        assert tradelog.flush(10)
        tradelog.shutdown()
        tradelog._cli.build_parser()
        for name in ("telegram", "aiosmtplib", "psycopg", "starlette"):
            assert name not in sys.modules, name
        print("ok", result)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


@pytest.mark.slow
def test_missing_driver_and_channels_name_their_extra(tmp_path: Path) -> None:
    """A PostgreSQL URL, a channel or the ASGI middleware without its package raises
    MissingExtraError for it."""
    result = _run(
        """
        import importlib
        from tradelog.exceptions import MissingExtraError
        from tradelog._db.engine import create_tradelog_engine
        from tradelog._notify.channels.telegram import TelegramChannel
        from tradelog._notify.channels.email import EmailChannel
        attempts = {
            "postgres": lambda: create_tradelog_engine("postgresql://u@127.0.0.1/x"),
            "telegram": lambda: TelegramChannel("1:x", api_url="http://127.0.0.1:9"),
            "email": lambda: EmailChannel(host="127.0.0.1", sender="a@b.example"),
            "web": lambda: importlib.import_module("tradelog.asgi"),
        }
        for extra, attempt in attempts.items():
            try:
                attempt()
            except MissingExtraError as exc:
                assert exc.extra == extra, (exc.extra, extra)
                assert f"tradelog[{extra}]" in str(exc)
                print(extra, "ok")
            else:
                raise SystemExit(f"{extra}: no error")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "postgres",
        "ok",
        "telegram",
        "ok",
        "email",
        "ok",
        "web",
        "ok",
    ]
