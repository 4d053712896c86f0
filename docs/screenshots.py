"""Make the README's pictures: the inbox and the error console after the trading-day demo.

    .venv/bin/python docs/screenshots.py

Runs ``examples/trading_day.py`` into a temporary folder, serves its database with the router
behind a host app (bearer tokens per user, as in the tests), and has headless Chromium save
``docs/inbox.png`` (Ravi's inbox) and ``docs/error-console.png`` (Dev, the operator).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.support.browser import chromium, find_chromium, ink_ratio
from tests.support.web import host_app, serving
from tradelog import Runtime, Settings

DOCS = Path(__file__).resolve().parent


def main() -> int:
    executable = find_chromium()
    if executable is None:
        print("Chromium is not installed (bash .ci/ensure-chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(  # noqa: S603 - this repository's own example
            [sys.executable, str(DOCS.parent / "examples" / "trading_day.py"), "--dir", folder],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        url = f"sqlite:///{folder}/demo.db"
        engine = create_engine(url)
        with engine.connect() as connection:
            ids = dict(connection.execute(text("SELECT name, id FROM users")).all())
        engine.dispose()
        runtime = Runtime(Settings(database_url=url, log_dir=Path(folder) / "logs", console=False))
        runtime.start(logging_=False, hooks=False, background=False)
        host = host_app(runtime)
        host.tokens.update({"ravi": ids["Ravi"], "dev": ids["Dev"]})
        try:
            with serving(host.app) as server, chromium(executable) as page:
                for who, path, name in (
                    ("ravi", "/api/ui/inbox", "inbox.png"),
                    ("dev", "/api/ui/admin/errors?status=all", "error-console.png"),
                ):
                    page.headers(Authorization=f"Bearer {who}")
                    page.open(server.url + path)
                    shot = page.screenshot(DOCS / name)
                    print(f"{shot} ({ink_ratio(shot.read_bytes()):.0%} ink)")
        finally:
            runtime.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
