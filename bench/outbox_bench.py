"""The outbox at scale: in-app + email notifications through ``tradelog worker`` processes,
then Telegram paced at its ceiling.

    python bench/outbox_bench.py [ADMIN_POSTGRES_URL] [--notifications 10000] [--users 1000]
                                 [--producers 4] [--rate 0] [--workers 2] [--listen on|off]
                                 [--telegram-users 1000] [--telegram-processes 3]
                                 [--skip-telegram]

A fresh database is created next to ``ADMIN_POSTGRES_URL`` (default: the local test cluster)
and dropped afterwards.

Email: ``--notifications`` notifications (each an in-app inbox entry and an email) to
``--users`` users, made by ``--producers`` threads calling ``notify()`` (``--rate`` per second
in all, 0: as fast as they can) in this process, which runs no delivery worker: ``--workers``
``tradelog worker`` processes claim the deliveries (batches of up to their free slots, one
statement each) and send them to a local aiosmtpd server with STARTTLS and AUTH. The workers
hear of new deliveries through ``LISTEN`` (``--listen off``: by polling every second, the
default interval). Reported: ``notify()`` p50/p99 (the caller's cost: the preferences read,
two inserts, the commit), delivery lag p50/p99 (from ``notify()`` returning to the SMTP server
accepting the message), throughput, and copies/losses counted from the SMTP server and the
tables.

Telegram: ``bench/notify_bench.py``'s run (one message to each of ``--telegram-users`` users
through ``--telegram-processes`` workers against the fake Bot API enforcing Telegram's limits);
the target is at most 1.1 times the ``(N - 1) / 30`` seconds the limits allow.

The load average is printed with every table: on a shared machine the figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from sqlalchemy import Engine, text

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
from bench.notify_bench import telegram_bench
from tests.support.smtp_server import SmtpServer
from tradelog._db.engine import create_tradelog_engine
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups


def produce(
    engine: Engine, users: list[int], count: int, producers: int, rate: float
) -> tuple[list[float], dict[int, float], float]:
    """``count`` notifications round-robin over ``users`` from ``producers`` threads.

    Returns each call's seconds, the epoch time each notification's ``notify()`` returned
    (after its commit) by notification id, and the seconds the whole burst took.
    """
    durations: list[float] = []
    committed: dict[int, float] = {}
    lock = threading.Lock()
    per_thread = rate / producers if rate > 0 else 0.0
    start = threading.Barrier(producers + 1)

    def producer(index: int) -> None:
        service = NotificationService(engine, Wakeups())  # no worker here: nothing rings
        mine = range(index, count, producers)
        local: list[float] = []
        stamps: dict[int, float] = {}
        start.wait()
        began = time.perf_counter()
        for k, n in enumerate(mine):
            if per_thread:
                delay = began + k / per_thread - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            user = users[n % len(users)]
            t0 = time.perf_counter()
            result = service.notify(
                user, "trading", "info", f"Fill {n}", f"RELIANCE x{n % 50 + 1} @ 2900 for {user}"
            )
            local.append(time.perf_counter() - t0)
            assert result.notification_id is not None
            stamps[result.notification_id] = time.time()
        with lock:
            durations.extend(local)
            committed.update(stamps)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(producers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return durations, committed, time.perf_counter() - began


def email_bench(url: str, engine: Engine, args: argparse.Namespace) -> dict[str, Any]:
    users = email_users(engine, args.users, "mail")
    listen = args.listen == "on"
    with SmtpServer(security="starttls", auth_required=True) as smtp:
        children = start_email_workers(url, smtp, args.workers, listen=listen)
        try:
            listening = wait_listening(engine, args.workers if listen else 0)
            time.sleep(1.0)  # past each worker's first look
            load_before = load()
            durations, committed, burst = produce(
                engine, users, args.notifications, args.producers, args.rate
            )
            wait_for_mail(smtp, args.notifications, timeout=args.notifications / 20 + 120)
            arrived, copies = mail_by_notification(smtp)
            load_after = load()
            connections = smtp.connections
        finally:
            worker_stats = stop_workers(children)
    lags = [arrived[n] - at for n, at in committed.items() if n in arrived]
    first = min(committed.values()) - (durations[0] if durations else 0.0)
    last = max(arrived.values()) if arrived else float("nan")
    with engine.connect() as connection:
        notes = connection.execute(text("SELECT count(*) FROM notifications")).scalar_one()
        flagged = connection.execute(
            text("SELECT count(*) FROM notifications WHERE email_sent")
        ).scalar_one()
    return {
        "notifications": args.notifications,
        "users": args.users,
        "producers": args.producers,
        "rate": args.rate or "max",
        "workers": args.workers,
        "listen": args.listen,
        "workers_listening": listening,
        "notify_p50_ms": round(percentile(durations, 50) * 1000, 2),
        "notify_p99_ms": round(percentile(durations, 99) * 1000, 2),
        "notify_per_second": round(len(durations) / burst, 1),
        "lag_p50_s": round(percentile(lags, 50), 3),
        "lag_p99_s": round(percentile(lags, 99), 3),
        "lag_max_s": round(max(lags), 3) if lags else None,
        "first_notify_to_last_mail_s": round(last - first, 2),
        "emails_per_second": round(len(arrived) / (last - first), 1),
        "received": len(arrived),
        "lost": args.notifications - len(arrived),
        "copies": copies,
        "smtp_connections": connections,
        "notification_rows": int(notes),
        "email_sent_flags": int(flagged),
        "deliveries": statuses(engine, "email"),
        "worker_stats": worker_stats,
        "load_before": load_before,
        "load_after": load_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("admin_url", nargs="?", default=DEFAULT_PG)
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="notify() calls/s in all (0: max)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--listen", choices=("on", "off"), default="on")
    parser.add_argument("--telegram-users", type=int, default=1000)
    parser.add_argument("--telegram-processes", type=int, default=3)
    parser.add_argument("--skip-telegram", action="store_true")
    parser.add_argument("--skip-email", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    with postgres_database(args.admin_url, "outbox") as url:
        engine = create_tradelog_engine(url)
        try:
            if not args.skip_email:
                report["email"] = email_bench(url, engine, args)
            if not args.skip_telegram:
                before = load()
                report["telegram"] = telegram_bench(
                    url, engine, args.telegram_users, args.telegram_processes
                )
                report["telegram"]["load_before"] = before
                report["telegram"]["load_after"] = load()
        finally:
            engine.dispose()
    print(json.dumps(report, indent=2, default=str))
    if "email" in report:
        em = report["email"]
        print(
            f"\nin-app + email: {em['notifications']:,} notifications to {em['users']:,} users, "
            f"{em['producers']} producer threads (rate {em['rate']}), {em['workers']} "
            f"`tradelog worker` processes, LISTEN {em['listen']}; {em['load_before']} before, "
            f"{em['load_after']} after"
        )
        print(
            table(
                [
                    ("notify() p50 / p99", f"{em['notify_p50_ms']} ms / {em['notify_p99_ms']} ms"),
                    ("notify() calls/s", f"{em['notify_per_second']}"),
                    ("delivery lag p50 / p99", f"{em['lag_p50_s']} s / {em['lag_p99_s']} s"),
                    ("first notify -> last email", f"{em['first_notify_to_last_mail_s']} s"),
                    ("emails/s", f"{em['emails_per_second']}"),
                    (
                        "received / lost / copies",
                        f"{em['received']} / {em['lost']} / {em['copies']}",
                    ),
                    ("deliveries by status", json.dumps(em["deliveries"])),
                ]
            )
        )
    if "telegram" in report:
        tg = report["telegram"]
        print(
            f"\ntelegram: {tg['delivered']} messages to {tg['users']} users through "
            f"{tg['processes']} worker(s) in {tg['first_to_last_seconds']} s (limits allow "
            f"{tg['limits_allow_seconds']} s, ratio {tg['ratio']}), dropped {tg['dropped']}, "
            f"limit violations {tg['limit_violations']}; {tg['load_before']} before, "
            f"{tg['load_after']} after"
        )


if __name__ == "__main__":
    main()
