"""Seed a benchmark database with a month of logs, errors and notifications (reproducible).

    python bench/seed_logs.py [--url URL] [--rows N] [--users 500] [--days 30] [--force]

Default database: PostgreSQL ``tradelog_bench`` on 127.0.0.1 (created when missing, migrated to
the newest revision); give ``--url sqlite:///path`` for SQLite. The default size is 10M
``service_logs`` rows on PostgreSQL and 2M on SQLite, for 500 users over 30 days, plus 100,000
notifications for user 1 (1% unread) and error occurrences in 300 fingerprint groups.

Rows go through each driver's bulk path: ``COPY ... FROM STDIN`` on PostgreSQL (with the
``service_logs`` indexes dropped during the load and rebuilt after, as a restore does), one
``executemany`` per 50,000 rows on SQLite. Every value comes from ``random.Random(--seed)``, so
two runs give the same rows; only the time axis moves: the newest row is at the start of the hour
the seeding ran (``--end`` to fix it). The benchmarks take "now" from the data
(``max(timestamp)``), so their filters select the same rows on every seeding.

A database that already holds ``service_logs`` rows is left alone unless ``--force`` is given
(seed once, benchmark many times); ``--force`` drops the database and seeds a new one.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tradelog_bench"
SYMBOLS = [
    "RELIANCE",
    "TCS",
    "INFY",
    "HDFCBANK",
    "ICICIBANK",
    "SBIN",
    "BHARTIARTL",
    "ITC",
    "LT",
    "KOTAKBANK",
    "AXISBANK",
    "HINDUNILVR",
    "BAJFINANCE",
    "MARUTI",
    "ASIANPAINT",
    "TITAN",
    "SUNPHARMA",
    "ULTRACEMCO",
    "NESTLEIND",
    "WIPRO",
    "TATAMOTORS",
    "POWERGRID",
    "NTPC",
    "ONGC",
    "COALINDIA",
    "JSWSTEEL",
    "TATASTEEL",
    "ADANIPORTS",
    "HCLTECH",
    "TECHM",
    "GRASIM",
    "DIVISLAB",
]
MODULES = (
    "strategy.rsi",
    "strategy.ema",
    "broker.kite.orders",
    "broker.kite.session",
    "scanner.daily",
    "risk.limits",
    "portfolio.sync",
    "ml.scoring",
    "news.sentiment",
    "scheduler",
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LEVEL_WEIGHTS = (30, 55, 10, 4.5, 0.5)
TEMPLATES = (
    ("order {oid} placed for {sym} qty {qty}", True),
    ("order {oid} filled at {price} for {sym}", True),
    ("price tick {sym} {price}", False),
    ("rsi {rsi} for {sym} below threshold", False),
    ("signal buy {sym} score {score}", False),
    ("heartbeat ok after {ms} ms", False),
    ("portfolio synced: {n} positions", False),
    ("broker rejected order {oid}: insufficient margin for {sym}", True),
    ("session token refreshed in {ms} ms", False),
    ("news sentiment {score} for {sym}", False),
)
ERROR_TYPES = ("ValueError", "KeyError", "TimeoutError", "ConnectionError", "BrokerError")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_PG_URL)
    parser.add_argument("--rows", type=int, help="service_logs rows (10M PG, 2M SQLite)")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=200_000, help="error_logs rows")
    parser.add_argument("--groups", type=int, default=300, help="error fingerprints")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--end", help="ISO time of the newest row (default: this hour, UTC)")
    parser.add_argument("--force", action="store_true", help="empty and seed again")
    return parser.parse_args(argv)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` when it does not exist."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            ).scalar()
            if not found:
                connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Remove the database of ``url`` (PostgreSQL: ``DROP DATABASE``; SQLite: the file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        if parsed.database:
            Path(parsed.database).unlink(missing_ok=True)
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def log_rows(
    rng: random.Random, rows: int, users: int, start: datetime, end: datetime
) -> Iterator[tuple[int, str, str, str, str, datetime]]:
    """``(user_id, level, module, message, context_json, timestamp)`` in time order, users
    interleaved as they arrive in production."""
    step = (end - start) / rows
    for n in range(rows):
        user = rng.randint(1, users)
        level = rng.choices(LEVELS, LEVEL_WEIGHTS)[0]
        template, has_order = TEMPLATES[rng.randrange(len(TEMPLATES))]
        sym = SYMBOLS[rng.randrange(len(SYMBOLS))]
        values = {
            "oid": f"{rng.randrange(10**9, 10**10)}",
            "sym": sym,
            "qty": rng.randint(1, 500),
            "price": f"{rng.uniform(50, 5000):.2f}",
            "rsi": rng.randint(5, 45),
            "score": rng.randint(-100, 100),
            "ms": rng.randint(1, 900),
            "n": rng.randint(0, 12),
        }
        message = template.format(**values)
        context: dict[str, Any] = {"symbol": sym, "qty": values["qty"]}
        if has_order:
            context["order_id"] = values["oid"]
        moment = start + step * n
        yield (
            user,
            level,
            MODULES[rng.randrange(len(MODULES))],
            message,
            json.dumps(context),
            moment,
        )


def _copy(engine: Engine, table: str, columns: str, lines: Iterator[str]) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            buffer = io.StringIO()
            for count, line in enumerate(lines, 1):
                buffer.write(line)
                if count % 20_000 == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()


def _stamp(moment: datetime) -> str:
    return moment.isoformat()


def seed_users(engine: Engine, users: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (email, name, password_hash, role) "
                "VALUES (:email, :name, '!', :role)"
            ),
            [
                {
                    "email": f"trader{n}@bench.invalid",
                    "name": f"Trader {n}",
                    "role": "admin" if n == users + 1 else "user",
                }
                for n in range(1, users + 2)
            ],
        )


def seed_logs_pg(engine: Engine, args: argparse.Namespace, start: datetime, end: datetime) -> None:
    rng = random.Random(args.seed)
    with engine.begin() as connection:
        definitions = [
            (name, sql)
            for name, sql in connection.execute(
                text(
                    "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid"
                    " WHERE i.indrelid = 'service_logs'::regclass AND NOT i.indisprimary"
                )
            )
        ]
        for name, _sql in definitions:
            connection.execute(text(f'DROP INDEX "{name}"'))
    lines = (
        f"{u}\t{lvl}\t{mod}\t{msg}\t{ctx}\t{_stamp(ts)}\n"
        for u, lvl, mod, msg, ctx, ts in log_rows(rng, args.rows, args.users, start, end)
    )
    began = time.perf_counter()
    _copy(engine, "service_logs", "user_id, level, module, message, context, timestamp", lines)
    print(f"  COPY {args.rows:,} service_logs rows: {time.perf_counter() - began:.1f} s")
    for name, sql in definitions:
        began = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text("SET maintenance_work_mem = '256MB'"))
            connection.execute(text(sql))
        print(f"  index {name}: {time.perf_counter() - began:.1f} s")


def seed_logs_sqlite(
    engine: Engine, args: argparse.Namespace, start: datetime, end: datetime
) -> None:
    rng = random.Random(args.seed)
    path = make_url(engine.url).database
    assert path
    connection = sqlite3.connect(path)
    try:
        began = time.perf_counter()
        batch: list[tuple[Any, ...]] = []
        insert = (
            "INSERT INTO service_logs (user_id, level, module, message, context, timestamp) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        for u, lvl, mod, msg, ctx, ts in log_rows(rng, args.rows, args.users, start, end):
            batch.append((u, lvl, mod, msg, ctx, ts.strftime("%Y-%m-%d %H:%M:%S.%f")))
            if len(batch) == 50_000:
                connection.executemany(insert, batch)
                connection.commit()
                batch = []
        connection.executemany(insert, batch)
        connection.commit()
        print(f"  executemany {args.rows:,} rows: {time.perf_counter() - began:.1f} s")
    finally:
        connection.close()


def seed_notifications(engine: Engine, args: argparse.Namespace, end: datetime) -> None:
    """``--notifications`` for user 1, newest 1% unread, spread over ``--days``."""
    rng = random.Random(args.seed + 1)
    total = args.notifications
    span = timedelta(days=args.days)
    rows = []
    for n in range(total):
        created = end - span + span * n / total
        unread = n >= total - total // 100
        rows.append(
            {
                "user_id": 1,
                "type": rng.choice(("service", "trading", "system", "error")),
                "level": rng.choice(("info", "info", "warning", "error")),
                "title": f"Order update {n}",
                "message": f"order {rng.randrange(10**9, 10**10)} changed state",
                "read": not unread,
                "read_at": None if unread else created + timedelta(minutes=5),
                "created_at": created,
            }
        )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO notifications (user_id, type, level, title, message, read, read_at,"
                " created_at, telegram_sent, email_sent, in_app_delivered) VALUES (:user_id,"
                " :type, :level, :title, :message, :read, :read_at, :created_at, false, false,"
                " true)"
            ),
            rows,
        )


def seed_errors(engine: Engine, args: argparse.Namespace, start: datetime, end: datetime) -> None:
    """``--errors`` occurrences over ``--groups`` fingerprints (a fifth resolved) and their
    ``error_groups`` rows, as the error pipeline leaves them."""
    rng = random.Random(args.seed + 2)
    step = (end - start) / max(args.errors, 1)
    rows = []
    for n in range(args.errors):
        group = min(int(rng.paretovariate(1.2)) - 1, args.groups - 1)
        moment = start + step * n
        resolved = group % 5 == 0
        rows.append(
            {
                "user_id": rng.randint(1, args.users),
                "error_type": ERROR_TYPES[group % len(ERROR_TYPES)],
                "error_message": f"failure {group} for order {rng.randrange(10**9, 10**10)}",
                "traceback": f"Traceback (most recent call last):\n  group {group}\n",
                "resolved": resolved,
                "resolved_at": end if resolved else None,
                "occurred_at": moment,
                "fingerprint": f"{group:064x}",
            }
        )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO error_logs (user_id, error_type, error_message, traceback, resolved,"
                " resolved_at, occurred_at, fingerprint) VALUES (:user_id, :error_type,"
                " :error_message, :traceback, :resolved, :resolved_at, :occurred_at,"
                " :fingerprint)"
            ),
            rows,
        )
        connection.execute(
            text(
                "INSERT INTO error_groups (fingerprint, error_type, status, substatus,"
                " first_seen, last_seen, times_seen, last_error_id, created_at, updated_at)"
                " SELECT fingerprint, min(error_type),"
                " CASE WHEN bool_and(resolved) THEN 'resolved' ELSE 'unresolved' END,"
                " CASE WHEN bool_and(resolved) THEN NULL ELSE 'ongoing' END,"
                " min(occurred_at), max(occurred_at), count(*), max(id), :now, :now"
                " FROM error_logs GROUP BY fingerprint"
                if engine.dialect.name == "postgresql"
                else "INSERT INTO error_groups (fingerprint, error_type, status, substatus,"
                " first_seen, last_seen, times_seen, last_error_id, created_at, updated_at)"
                " SELECT fingerprint, min(error_type),"
                " CASE WHEN min(resolved) = 1 THEN 'resolved' ELSE 'unresolved' END,"
                " CASE WHEN min(resolved) = 1 THEN NULL ELSE 'ongoing' END,"
                " min(occurred_at), max(occurred_at), count(*), max(id), :now, :now"
                " FROM error_logs GROUP BY fingerprint"
            ),
            {"now": end},
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = make_url(args.url).get_backend_name()
    if args.rows is None:
        args.rows = 10_000_000 if backend == "postgresql" else 2_000_000
    end = (
        datetime.fromisoformat(args.end).astimezone(UTC)
        if args.end
        else datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )
    start = end - timedelta(days=args.days)
    if args.force:
        drop_database(args.url)
    ensure_database(args.url)
    migrate.upgrade(args.url)
    engine = create_tradelog_engine(args.url)
    try:
        with engine.connect() as connection:
            present = connection.execute(text("SELECT count(*) FROM users")).scalar_one()
        if present and not args.force:
            print(f"{args.url}: already seeded ({present} users); --force to seed again")
            return 0
        print(f"seeding {args.url}: {args.rows:,} rows, {args.users} users, {args.days} days")
        began = time.perf_counter()
        seed_users(engine, args.users)
        with engine.connect() as connection:
            first = connection.execute(text("SELECT min(id) FROM users")).scalar_one()
        if first != 1:
            print("users must start at id 1: seed into a new database", file=sys.stderr)
            return 1
        if backend == "postgresql":
            seed_logs_pg(engine, args, start, end)
        else:
            seed_logs_sqlite(engine, args, start, end)
        seed_notifications(engine, args, end)
        seed_errors(engine, args, start, end)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        print(f"done in {time.perf_counter() - began:.1f} s")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
