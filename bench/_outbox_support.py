"""What the outbox benchmarks share: users with email switched on,
``tradelog worker`` processes sending to a local aiosmtpd server, percentiles and the load.

Not a benchmark itself; ``bench/outbox_bench.py`` and ``bench/market_open_bench.py`` use it.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.support.smtp_server import SmtpServer
from tradelog._db.engine import session_factory
from tradelog._notify.outbox_listen import LISTENER_NAME
from tradelog._notify.preferences import update_preferences
from tradelog.users import create_user

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_KEY = re.compile(r"<tradelog\.(\d+)\.(\d+)@")


def load() -> str:
    """``os.getloadavg()`` as printed beside every table (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def email_users(engine: Engine, count: int, prefix: str) -> list[int]:
    """``count`` users with email switched on (``<prefix><id>@bench.example``)."""
    ids: list[int] = []
    with session_factory(engine)() as session:
        for i in range(count):
            user = create_user(session, email=f"{prefix}{i}@bench.example", name=f"{prefix}{i}")
            update_preferences(
                session,
                user.id,
                user.id,
                email_address=f"{prefix}{user.id}@bench.example",
                email_enabled=True,
            )
            ids.append(user.id)
        session.commit()
    return ids


def start_email_workers(
    url: str, smtp: SmtpServer, count: int, *, listen: bool = True, **extra: str
) -> list[subprocess.Popen[str]]:
    """``count`` ``tradelog worker`` processes sending email to ``smtp`` (STARTTLS + AUTH,
    trusting its test CA), at the default poll interval."""
    env = {
        **os.environ,
        "TRADELOG_DATABASE_URL": url,
        "TRADELOG_SMTP_HOST": smtp.host,
        "TRADELOG_SMTP_PORT": str(smtp.port),
        "TRADELOG_SMTP_SECURITY": "starttls",
        "TRADELOG_SMTP_USERNAME": smtp.username,
        "TRADELOG_SMTP_PASSWORD": smtp.password,
        "TRADELOG_SMTP_FROM": "alerts@bench.example",
        "TRADELOG_LISTEN": "on" if listen else "off",
        "SSL_CERT_FILE": str(smtp.ca_cert_pem_path),
        **extra,
    }
    env.pop("TRADELOG_TELEGRAM_BOT_TOKEN", None)
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tradelog", "--json", "worker", "--name", f"bench-{n}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]


def stop_workers(children: Sequence[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """SIGTERM each worker and collect its final counts (``--json`` output)."""
    import json

    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    stats: list[dict[str, Any]] = []
    for child in children:
        out, err = child.communicate(timeout=60)
        try:
            stats.extend(json.loads(out))
        except ValueError:
            stats.append({"exit": child.returncode, "stderr": err[-2000:]})
    return stats


def wait_listening(engine: Engine, count: int, timeout: float = 30.0) -> int:
    """Wait until ``count`` workers listen (PostgreSQL); returns how many do."""
    deadline = time.monotonic() + timeout
    found = 0
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            found = int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :n "
                        "AND datname = current_database()"
                    ),
                    {"n": LISTENER_NAME},
                ).scalar_one()
            )
        if found >= count:
            break
        time.sleep(0.1)
    return found


def wait_for_mail(smtp: SmtpServer, count: int, timeout: float) -> None:
    """Wait until ``smtp`` has received ``count`` messages (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while len(smtp.messages) < count and time.monotonic() < deadline:
        time.sleep(0.2)


def mail_by_notification(smtp: SmtpServer) -> tuple[dict[int, float], int]:
    """First arrival time (epoch seconds) per notification id, from each message's
    ``Message-ID``, and how many messages were copies of one already received."""
    first: dict[int, float] = {}
    seen: Counter[str] = Counter()
    for message in smtp.messages:
        key = str(message.message["Message-ID"])
        seen[key] += 1
        match = _KEY.search(key)
        if match is None:
            continue
        note = int(match.group(1))
        first[note] = min(first.get(note, math.inf), message.received_at)
    return first, sum(n - 1 for n in seen.values())


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def statuses(engine: Engine, channel: str) -> dict[str, int]:
    """Deliveries of ``channel`` by status."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM notification_deliveries "
                "WHERE channel = :c GROUP BY status"
            ),
            {"c": channel},
        )
        return {str(status): int(count) for status, count in rows}
