"""Reads at scale through tradelog's own query functions: p50/p99 per query, and their plans.

    python bench/seed_logs.py                  # once: 10M rows into tradelog_bench
    python bench/query_bench.py [--url URL] [--repeat 200] [--user 7] [--explain]

Each query is the call a user's request makes (``tradelog.logs.query_logs``,
``tradelog.notifications.list_notifications`` / ``unread_count``,
``tradelog.errors.error_groups``), in a new session per call as a web request does, timed from
the call to the returned objects. "Now" is the newest row's time, so the filters select the same
rows however long ago the database was seeded. ``--explain`` prints ``EXPLAIN (ANALYZE,
BUFFERS)`` of each query's main statement as it was sent (PostgreSQL; ``EXPLAIN QUERY PLAN`` on
SQLite), captured from the engine. The load average is printed with the table: figures taken
while other work runs on the machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tradelog._db.engine import create_tradelog_engine
from tradelog._db.models import ServiceLog, User
from tradelog.errors import error_groups
from tradelog.logs import query_logs
from tradelog.notifications import list_notifications, unread_count

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tradelog_bench"


class Statements:
    """Records the statements an engine sends (the longest-running one is the query's own)."""

    def __init__(self, engine: Engine) -> None:
        self.sent: list[tuple[str, Any, float]] = []
        self._start = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        self._start = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        self.sent.append((statement, params, time.perf_counter() - self._start))


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def timed(engine: Engine, call: Callable[[Session], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        with Session(engine) as session:
            began = time.perf_counter()
            call(session)
            samples.append(time.perf_counter() - began)
    return samples


def explain(engine: Engine, recorder: Statements, call: Callable[[Session], object]) -> str:
    """The plan of the slowest statement ``call`` sends that is not the actor lookup (the
    read itself), run again with its parameters."""
    recorder.sent.clear()
    with Session(engine) as session:
        call(session)
    reads = [item for item in recorder.sent if "FROM users" not in item[0]]
    statement, params, _ = max(reads or recorder.sent, key=lambda item: item[2])
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        prefix = (
            "EXPLAIN (ANALYZE, BUFFERS) "
            if engine.dialect.name == "postgresql"
            else "EXPLAIN QUERY PLAN "
        )
        cursor.execute(prefix + statement, params)
        lines = [" | ".join(str(part) for part in row) for row in cursor.fetchall()]
    finally:
        raw.close()
    recorder.sent.clear()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--user", type=int, default=7, help="whose logs are read")
    parser.add_argument("--inbox-user", type=int, default=1, help="the 100k notifications")
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()

    engine = create_tradelog_engine(args.url)
    recorder = Statements(engine)
    with Session(engine) as session:
        now = session.scalar(select(func.max(ServiceLog.timestamp)))
        rows = session.scalar(select(func.count()).select_from(ServiceLog))
        mine = session.scalar(
            select(func.count()).select_from(ServiceLog).where(ServiceLog.user_id == args.user)
        )
        admin = session.scalar(select(User.id).where(User.role == "admin").limit(1))
        order_id = session.scalar(
            select(ServiceLog.context["order_id"].as_string())
            .where(ServiceLog.user_id == args.user, ServiceLog.message.like("order % placed%"))
            .order_by(ServiceLog.id)
            .offset(mine // 40)
            .limit(1)
        )
    assert now is not None, "seed first: python bench/seed_logs.py"
    assert admin is not None, "seed first: python bench/seed_logs.py"
    user = args.user
    week = now - timedelta(days=7)
    month = now - timedelta(days=30)

    def pages(session: Session, count: int) -> object:
        page = query_logs(session, user, limit=50)
        for _ in range(count - 1):
            page = query_logs(session, user, limit=50, before=page.next_cursor)
        return page

    fifth: dict[str, Any] = {}
    with Session(engine) as session:
        fourth = pages(session, 4)
        fifth["cursor"] = fourth.next_cursor  # type: ignore[attr-defined]

    queries: list[tuple[str, Callable[[Session], object]]] = [
        ("newest 50", lambda s: query_logs(s, user, limit=50)),
        (
            "newest 50, min WARNING, last 7 days",
            lambda s: query_logs(s, user, limit=50, min_level="WARNING", since=week),
        ),
        (
            "newest 50, level ERROR, last 7 days",
            lambda s: query_logs(s, user, limit=50, level="ERROR", since=week),
        ),
        (
            "page 5 by cursor (one page)",
            lambda s: query_logs(s, user, limit=50, before=fifth["cursor"]),
        ),
        ("pages 1-5 by cursor (five calls)", lambda s: pages(s, 5)),
        (
            f"keyword order id {order_id} (1 row), 30 d",
            lambda s: query_logs(s, user, limit=50, keyword=order_id, since=month),
        ),
        (
            "keyword 'TATASTEEL' (3% of rows), 30 d",
            lambda s: query_logs(s, user, limit=50, keyword="TATASTEEL", since=month),
        ),
        (
            "keyword 'insufficient margin', 30 d",
            lambda s: query_logs(s, user, limit=50, keyword="insufficient margin", since=month),
        ),
        (
            "keyword 'nosuchword' (no row), 30 d",
            lambda s: query_logs(s, user, limit=50, keyword="nosuchword", since=month),
        ),
        ("error groups of one user (admin)", lambda s: error_groups(s, admin, user_id=user)),
        ("error groups, all users (admin)", lambda s: error_groups(s, admin)),
        ("unread count at 100k notifications", lambda s: unread_count(s, args.inbox_user)),
        ("inbox page (50), 100k notifications", lambda s: list_notifications(s, args.inbox_user)),
    ]
    load = os.getloadavg()
    print(
        f"{engine.dialect.name}: {rows:,} service_logs rows, user {user} has {mine:,};"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared)"
    )
    print("| query | p50 ms | p99 ms | n |\n|---|---|---|---|")
    plans = []
    for name, call in queries:
        call_repeat = max(args.repeat // 5, 10) if "all users" in name else args.repeat
        with Session(engine) as session:
            call(session)  # warm the cache as a live system has it
        samples = timed(engine, call, call_repeat)
        p50 = statistics.median(samples) * 1000
        p99 = percentile(samples, 0.99) * 1000
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {call_repeat} |", flush=True)
        if args.explain:
            plans.append((name, explain(engine, recorder, call)))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, plan in plans:
        print(f"\n#### {name}\n\n```\n{plan}\n```")
    engine.dispose()


if __name__ == "__main__":
    main()
