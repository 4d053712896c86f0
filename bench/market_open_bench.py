"""A simulated 09:15 market open on PostgreSQL: many users logging at once while notifications
go out through several ``tradelog worker`` processes.

    python bench/market_open_bench.py [ADMIN_POSTGRES_URL] [--users 500] [--rate 20]
                                      [--seconds 60] [--notifications 2000] [--workers 3]
                                      [--producers 2] [--console]

A fresh database is created next to ``ADMIN_POSTGRES_URL`` (default: the local test cluster)
and dropped afterwards. This process configures tradelog (``worker=false``, console off unless
``--console``) and, for ``--seconds``:

* ``--producers`` threads log ``--rate`` events per second for each of ``--users`` users
  (``log.info`` with a sequence number; 500 x 20/s = 10,000 events/s), each call timed;
* one thread calls ``tradelog.notify()`` ``--notifications`` times, evenly spread, round-robin
  over the users (in-app + email);
* a probe logs a marked event every 0.5 s and polls ``service_logs`` until it is there: the
  writer lag (call to committed row).

``--workers`` ``tradelog worker`` processes send the email to a local aiosmtpd server (STARTTLS
+ AUTH), woken through ``LISTEN``. Reported: caller p50/p99 and the rate reached, writer lag
p50/p99, the time to drain what was queued when the window ended, ``notify()`` p50/p99,
delivery lag p50/p99, and losses and copies counted from the tables (``service_logs`` rows by
user and sequence number, deliveries by status) and from the SMTP server (copies of one
``Message-ID``).

The machine this runs on may be shared: the load average is printed before and after, and the
size is parameterised so that a reduced run (say ``--users 100``) can be repeated at full size
on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

import tradelog
from bench._database import postgres_database
from bench._outbox_support import (
    DEFAULT_PG,
    email_users,
    load,
    mail_by_notification,
    percentile,
    start_email_workers,
    statuses,
    stop_workers,
    table,
    wait_for_mail,
    wait_listening,
)
from tests.support.smtp_server import SmtpServer
from tradelog._db.engine import create_tradelog_engine

PROBE_EVERY = 0.5
TICK = 0.05


class Window:
    """The timed window every thread runs in."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.began = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def open(self) -> bool:
        return self.elapsed() < self.seconds


def log_producer(
    window: Window, users: list[int], rate: float, out: list[int], counts: dict[int, int]
) -> None:
    """Log ``rate`` events/s for each of ``users`` until the window closes; appends each
    call's nanoseconds to ``out`` and the events logged per user to ``counts``."""
    loggers = [(user, tradelog.get_logger("market.feed", user_id=user)) for user in users]
    seq = dict.fromkeys(users, 0)
    due = 0.0
    per_tick = rate * TICK
    symbols = ("RELIANCE", "TCS", "INFY", "HDFCBANK", "SBIN")
    clock = time.perf_counter_ns
    while window.open():
        target = window.elapsed() // TICK * TICK
        due += per_tick
        whole = int(due)
        due -= whole
        for _ in range(whole):
            for user, log in loggers:
                n = seq[user] = seq[user] + 1
                t0 = clock()
                log.info("tick", symbol=symbols[n % 5], ltp=2900 + n % 7, seq=n)
                out.append(clock() - t0)
        pause = target + TICK - window.elapsed()
        if pause > 0:
            time.sleep(pause)
    counts.update(seq)


def notifier(
    window: Window, users: list[int], count: int, durations: list[float], at: dict[int, float]
) -> None:
    """``count`` notify() calls spread evenly over the window."""
    gap = window.seconds / max(1, count)
    for n in range(count):
        delay = n * gap - window.elapsed()
        if delay > 0:
            time.sleep(delay)
        user = users[n % len(users)]
        t0 = time.perf_counter()
        result = tradelog.notify(user, "trading", "info", f"Filled #{n}", f"SBIN x{n % 40 + 1}")
        durations.append(time.perf_counter() - t0)
        if result.notification_id is not None:
            at[result.notification_id] = time.time()


def probe(window: Window, engine: Engine, user: int, lags: list[float]) -> None:
    """Log a marked event every PROBE_EVERY seconds and time its arrival in the table."""
    log = tradelog.get_logger("market.probe", user_id=user)
    k = 0
    query = text("SELECT 1 FROM service_logs WHERE user_id = :u AND context->>'probe' = :k LIMIT 1")
    while window.open():
        k += 1
        t0 = time.perf_counter()
        log.info("probe", probe=str(k))
        with engine.connect() as connection:
            while connection.execute(query, {"u": user, "k": str(k)}).first() is None:
                connection.rollback()
                time.sleep(0.01)
                if time.perf_counter() - t0 > 120:
                    break
        lags.append(time.perf_counter() - t0)
        rest = PROBE_EVERY - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)


def run(url: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    engine = create_tradelog_engine(url)
    users = email_users(engine, args.users, "trader")
    [probe_user] = email_users(engine, 1, "probe")
    with SmtpServer(security="starttls", auth_required=True) as smtp:
        children = start_email_workers(url, smtp, args.workers)
        runtime = tradelog.configure(
            database_url=url, log_dir=folder / "logs", console=args.console, worker=False
        )
        try:
            listening = wait_listening(engine, args.workers)
            time.sleep(1.0)
            window = Window(args.seconds)
            shares = [users[i :: args.producers] for i in range(args.producers)]
            calls: list[list[int]] = [[] for _ in shares]
            logged: list[dict[int, int]] = [{} for _ in shares]
            notify_durations: list[float] = []
            committed: dict[int, float] = {}
            writer_lags: list[float] = []
            threads = [
                threading.Thread(
                    target=log_producer, args=(window, share, args.rate, calls[i], logged[i])
                )
                for i, share in enumerate(shares)
            ]
            threads.append(
                threading.Thread(
                    target=notifier,
                    args=(window, users, args.notifications, notify_durations, committed),
                )
            )
            threads.append(
                threading.Thread(target=probe, args=(window, engine, probe_user, writer_lags))
            )
            load_before = load()
            window.began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            ended = time.perf_counter()
            flushed = runtime.flush(900)
            drain = time.perf_counter() - ended
            load_after_window = load()
            wait_for_mail(smtp, args.notifications, timeout=args.notifications / 10 + 120)
            arrived, copies = mail_by_notification(smtp)
            stats = runtime.stats()
        finally:
            tradelog.shutdown()
            worker_stats = stop_workers(children)
    expected = sum(sum(c.values()) for c in logged)
    durations = [ns for share in calls for ns in share]
    with engine.connect() as connection:
        rows, distinct = connection.execute(
            text(
                "SELECT count(*), count(DISTINCT (user_id, context->>'seq')) FROM service_logs "
                "WHERE user_id <> :probe AND message = 'tick'"
            ),
            {"probe": probe_user},
        ).one()
        notes = connection.execute(text("SELECT count(*) FROM notifications")).scalar_one()
        sent_twice = connection.execute(
            text(
                "SELECT count(*) FROM (SELECT notification_id FROM notification_deliveries "
                "WHERE status = 'sent' GROUP BY notification_id HAVING count(*) > 1) AS twice"
            )
        ).scalar_one()
    engine.dispose()
    lags = [arrived[n] - t for n, t in committed.items() if n in arrived]
    return {
        "users": args.users,
        "rate_per_user": args.rate,
        "seconds": args.seconds,
        "producers": args.producers,
        "console": args.console,
        "workers": args.workers,
        "workers_listening": listening,
        "events_target": int(args.users * args.rate * args.seconds),
        "events_logged": expected,
        "events_per_second": round(expected / args.seconds, 1),
        "caller_p50_us": round(percentile(durations, 50) / 1000, 1),
        "caller_p99_us": round(percentile(durations, 99) / 1000, 1),
        "writer_lag_p50_ms": round(percentile(writer_lags, 50) * 1000, 1),
        "writer_lag_p99_ms": round(percentile(writer_lags, 99) * 1000, 1),
        "writer_lag_max_ms": round(max(writer_lags) * 1000, 1) if writer_lags else None,
        "drain_after_window_s": round(drain, 2),
        "flushed": flushed,
        "rows": int(rows),
        "rows_lost": expected - int(distinct),
        "rows_duplicated": int(rows) - int(distinct),
        "notifications": args.notifications,
        "notify_p50_ms": round(percentile(notify_durations, 50) * 1000, 2),
        "notify_p99_ms": round(percentile(notify_durations, 99) * 1000, 2),
        "delivery_lag_p50_s": round(percentile(lags, 50), 3),
        "delivery_lag_p99_s": round(percentile(lags, 99), 3),
        "notification_rows": int(notes),
        "deliveries": statuses_from(url),
        "deliveries_sent_twice": int(sent_twice),
        "emails_received": len(arrived),
        "emails_lost": args.notifications - len(arrived),
        "email_copies": copies,
        "writer_stats": {k: v for k, v in stats.items() if isinstance(v, int | float)},
        "worker_stats": worker_stats,
        "load_before": load_before,
        "load_after_window": load_after_window,
        "load_after": load(),
    }


def statuses_from(url: str) -> dict[str, int]:
    engine = create_tradelog_engine(url)
    try:
        return statuses(engine, "email")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("admin_url", nargs="?", default=DEFAULT_PG)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per user")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--console", action="store_true", help="keep console output on")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, postgres_database(args.admin_url, "open") as url:
        report = run(url, args, Path(tmp))
    print(json.dumps(report, indent=2, default=str))
    r = report
    print(
        f"\nmarket open: {r['users']} users x {r['rate_per_user']:g} events/s for "
        f"{r['seconds']:g} s ({r['producers']} producer threads, console "
        f"{'on' if r['console'] else 'off'}) + {r['notifications']} notifications through "
        f"{r['workers']} `tradelog worker` processes on PostgreSQL\n"
        f"{r['load_before']} before, {r['load_after_window']} when the window closed"
    )
    print(
        table(
            [
                (
                    "events logged / target",
                    f"{r['events_logged']:,} / {r['events_target']:,} "
                    f"({r['events_per_second']:,}/s)",
                ),
                ("caller p50 / p99", f"{r['caller_p50_us']} µs / {r['caller_p99_us']} µs"),
                (
                    "writer lag p50 / p99 / max",
                    f"{r['writer_lag_p50_ms']} / {r['writer_lag_p99_ms']} / "
                    f"{r['writer_lag_max_ms']} ms",
                ),
                ("drain after the window", f"{r['drain_after_window_s']} s"),
                ("notify() p50 / p99", f"{r['notify_p50_ms']} ms / {r['notify_p99_ms']} ms"),
                (
                    "delivery lag p50 / p99",
                    f"{r['delivery_lag_p50_s']} s / {r['delivery_lag_p99_s']} s",
                ),
                ("log rows lost / duplicated", f"{r['rows_lost']} / {r['rows_duplicated']}"),
                (
                    "emails lost / copies",
                    f"{r['emails_lost']} / {r['email_copies']} "
                    f"(deliveries {json.dumps(r['deliveries'])}, sent twice "
                    f"{r['deliveries_sent_twice']})",
                ),
            ]
        )
    )


if __name__ == "__main__":
    main()
