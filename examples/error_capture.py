"""Error capture: ``log.exception``, ``capture_exception``, failed tasks and crashing threads.

    .venv/bin/python examples/error_capture.py [--dir DIR]

Every way an exception reaches ``error_logs``, then the grouped view an operator sees
(``tradelog errors groups``): the same bug hit twice is one group with a count of two.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import tradelog
from tradelog.errors import error_groups
from tradelog.users import Actor, create_user


class BrokerError(Exception):
    """The broker refused a request."""


def profit_factor(wins: float, losses: float) -> float:
    return wins / losses


def place_order(symbol: str) -> str:
    raise BrokerError(f"order rejected for {symbol}: insufficient margin")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tradelog error capture example")
    parser.add_argument("--dir", type=Path, help="output directory (default: a temp dir)")
    args = parser.parse_args(argv)
    base = (args.dir or Path(tempfile.mkdtemp(prefix="tradelog-errors-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{base / 'errors.db'}"

    tradelog.db.upgrade(url)
    engine = create_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        session.execute(text("DELETE FROM error_logs"))  # a fresh count on every run
        ids = dict(session.execute(text("SELECT email, id FROM users")).all())
        user_id = (
            ids.get("ravi@example.com")
            or create_user(session, email="ravi@example.com", name="Ravi").id
        )
        admin_id = (
            ids.get("ops@example.com")
            or create_user(session, email="ops@example.com", name="Ops", role="admin").id
        )
        session.commit()

    tradelog.configure(database_url=url, log_dir=base / "logs", console=False)
    log = tradelog.get_logger("reports", user_id=user_id)

    # 1. log.exception inside an except block (twice: one group, two occurrences)
    for day in ("2024-01-04", "2024-01-05"):
        try:
            profit_factor(1520.0, 0.0)
        except ZeroDivisionError:
            log.exception("daily report failed", day=day)

    # 2. capture_exception with explicit context
    try:
        place_order("TATAMOTORS")
    except BrokerError:
        tradelog.capture_exception(user_id=user_id, symbol="TATAMOTORS", order_id="AMO-7")

    # 3. a tracked task that fails: status "failed", the error captured, the exception re-raised
    try:
        with tradelog.track_task(user_id, "sell_monitor"):
            place_order("SBIN")
    except BrokerError:
        pass

    # 4. an uncaught exception in a thread (threading.excepthook), no user: the system user.
    #    Python's own hook still prints the traceback: tradelog chains, it does not replace.
    worker = threading.Thread(target=lambda: {}["missing-key"], name="quote-stream")
    worker.start()
    worker.join()

    tradelog.flush(timeout=10)
    tradelog.shutdown()

    with Session(engine, expire_on_commit=False) as session:
        groups = error_groups(session, Actor(admin_id, is_admin=True))
    with engine.connect() as c:
        total = c.execute(text("SELECT count(*) FROM error_logs")).scalar()
        status = c.execute(
            text("SELECT error_count, last_error FROM service_status WHERE user_id = :u"),
            {"u": user_id},
        ).one_or_none()
    engine.dispose()
    print(f"database: {url}")
    print(f"error_logs rows: {total}")
    print(f"{'COUNT':>5}  {'TYPE':<20} SAMPLE")
    for group in groups:
        print(f"{group.count:>5}  {group.error_type:<20} {group.sample_message[:70]}")
    if status is not None:
        print(f"service_status for user {user_id}: error_count={status[0]}, last={status[1]!r}")
    print(f"look closer: tradelog --database-url {url} errors list")
    return 0 if total and total >= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
