"""Logging only: structlog and stdlib loggers into ``service_logs`` and per-user JSONL files.

    .venv/bin/python examples/logging_only.py [--dir DIR]

Writes a SQLite database and a log directory under DIR (default: a new temporary directory),
then prints the rows and files it produced. Shows:

* ``tradelog.get_logger(name, user_id=...)``: a structlog logger bound to a user;
* ``structlog.contextvars.bound_contextvars(user_id=...)``: the user for everything inside,
  including plain stdlib ``logging`` calls;
* secrets (API keys, MPINs, bot tokens in URLs) scrubbed before any sink;
* events without a user going to the system file only;
* ``tradelog.flush()``: everything logged so far is in the database and the files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import tradelog
from tradelog.users import create_user

SECRET_KEY = "kite-api-key-7f3a9c"  # a value that must never reach a sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tradelog logging example")
    parser.add_argument("--dir", type=Path, help="output directory (default: a temp dir)")
    args = parser.parse_args(argv)
    base = (args.dir or Path(tempfile.mkdtemp(prefix="tradelog-logging-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    url, log_dir = f"sqlite:///{base / 'logging.db'}", base / "logs"

    # the host application's own setup: schema and a user account
    tradelog.db.upgrade(url)
    engine = create_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        found = session.execute(text("SELECT id FROM users WHERE email = 'trader@example.com'"))
        user_id = found.scalar() or create_user(session, email="trader@example.com", name="T").id
        session.commit()

    tradelog.configure(database_url=url, log_dir=log_dir, console=False, level="DEBUG")

    log = tradelog.get_logger("orders", user_id=user_id)
    log.info("AMO order placed", symbol="RELIANCE", qty=10, order_id="AMO-240105-0001")
    log.warning("price moved before fill", symbol="RELIANCE", change_pct=-1.8)
    log.debug("broker login", api_key=SECRET_KEY, mpin="4321")  # both values are scrubbed

    with structlog.contextvars.bound_contextvars(user_id=user_id):
        logging.getLogger("legacy.sell_monitor").info("stdlib logging lands in the same place")

    tradelog.get_logger("startup").info("no user bound: system file only")
    tradelog.flush(timeout=10)
    tradelog.shutdown()

    with engine.connect() as c:
        rows = c.execute(
            text("SELECT level, module, message, context FROM service_logs ORDER BY id")
        ).all()
    engine.dispose()
    print(f"database: {url}")
    print(f"service_logs rows for user {user_id}: {len(rows)}")
    for level, module, message, context in rows:
        print(f"  {level:<8} {module:<20} {message}  {context}")
    files = sorted(p for p in log_dir.rglob("*.jsonl"))
    print(f"files under {log_dir}:")
    leaked = False
    for path in files:
        content = path.read_text()
        leaked |= SECRET_KEY in content
        print(f"  {path.relative_to(log_dir)}: {len(content.splitlines())} line(s)")
        first = json.loads(content.splitlines()[0])
        print(f"    first line: {json.dumps(first)[:160]}")
    if leaked or any(SECRET_KEY in str(r) for r in rows):
        print("a secret reached a sink", file=sys.stderr)
        return 1
    print("secrets scrubbed: the API key and MPIN appear nowhere")
    return 0


if __name__ == "__main__":
    sys.exit(main())
