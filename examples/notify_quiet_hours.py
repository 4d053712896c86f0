"""Notifications and quiet hours: deferred, critical, silent, dropped, deduplicated, off.

    .venv/bin/python examples/notify_quiet_hours.py [--dir DIR]

A user with Telegram and email set up is put in quiet hours around the current time (their
timezone, Asia/Kolkata). ``tradelog.notify`` returns what it did on each channel; nothing is
sent here because no delivery worker runs (``tradelog worker`` or ``TRADELOG_WORKER=true`` in
a configured process sends what is due), so the example needs no bot token or mail server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import tradelog
from tradelog.notifications import update_preferences
from tradelog.users import create_user

IST = ZoneInfo("Asia/Kolkata")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tradelog quiet hours example")
    parser.add_argument("--dir", type=Path, help="output directory (default: a temp dir)")
    args = parser.parse_args(argv)
    base = (args.dir or Path(tempfile.mkdtemp(prefix="tradelog-notify-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{base / 'notify.db'}"
    tradelog.db.upgrade(url)
    engine = create_engine(url)

    now = datetime.now(IST)
    start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    end = (now + timedelta(hours=2)).time().replace(second=0, microsecond=0)

    def preferences(**changes: Any) -> None:
        with Session(engine, expire_on_commit=False) as session:
            update_preferences(session, user_id, user_id, **changes)
            session.commit()

    with Session(engine, expire_on_commit=False) as session:
        found = session.execute(text("SELECT id FROM users WHERE email = 'meera@example.com'"))
        user_id = found.scalar() or create_user(session, email="meera@example.com", name="M").id
        session.execute(text("DELETE FROM notification_deliveries"))  # fresh counts each run
        session.execute(text("DELETE FROM notifications"))
        session.commit()
    preferences(
        notify_system_events=True,
        quiet_hours_mode="defer",
        telegram_chat_id="100200300",
        telegram_enabled=True,
        email_address="meera@example.com",
        email_enabled=True,
        quiet_hours_start=start,
        quiet_hours_end=end,
    )
    print(f"Meera's quiet hours: {start:%H:%M}-{end:%H:%M} IST (it is {now:%H:%M} IST now)")

    tradelog.configure(database_url=url, log_dir=base / "logs", console=False, worker=False)

    def show(label: str, result: Any) -> None:
        print(f"\n{label}")
        for line in result.describe():
            print(f"  {line}")

    show(
        "an order fill during quiet hours (deferred to the end of the window):",
        tradelog.notify(user_id, "trading", "info", "Order filled", "10 x TCS @ 3,890.00"),
    )
    show(
        "a critical margin call (bypasses quiet hours):",
        tradelog.notify(user_id, "trading", "critical", "Margin call", "Add funds before 15:00"),
    )
    key = "fill:AMO-240105-0007"
    tradelog.notify(user_id, "trading", "info", "Filled", "AMO-240105-0007", dedupe_key=key)
    show(
        "the same fill reported by a second monitor (same dedupe key):",
        tradelog.notify(user_id, "trading", "info", "Filled", "AMO-240105-0007", dedupe_key=key),
    )
    preferences(quiet_hours_mode="silent")
    show(
        "quiet mode 'silent' (Telegram delivers now without a sound):",
        tradelog.notify(user_id, "service", "info", "Service restarted", "All monitors running"),
    )
    preferences(quiet_hours_mode="drop")
    show(
        "quiet mode 'drop' (external channels skipped; the inbox keeps it):",
        tradelog.notify(user_id, "service", "info", "Heartbeat restored", "Back after 40 s"),
    )
    preferences(notify_system_events=False)
    show(
        "system events switched off (no notification at all):",
        tradelog.notify(user_id, "system", "warning", "Disk 80% full", "/var/log"),
    )
    tradelog.shutdown()

    with engine.connect() as c:
        inbox = c.execute(
            text("SELECT count(*) FROM notifications WHERE user_id = :u"), {"u": user_id}
        ).scalar()
        outbox = c.execute(
            text(
                "SELECT channel, status, count(*) FROM notification_deliveries "
                "GROUP BY channel, status ORDER BY channel, status"
            )
        ).all()
    engine.dispose()
    print(f"\nin-app inbox: {inbox} notification(s)")
    for channel, status, count in outbox:
        print(f"outbox: {channel:<8} {status:<10} {count}")
    print(f"\nsend what is due: tradelog --database-url {url} worker")
    return 0 if inbox == 5 else 1


if __name__ == "__main__":
    sys.exit(main())
