"""Notification delivery under Telegram's rate limits, and an email burst.

    python bench/notify_bench.py [DATABASE_URL] [--users 1000] [--processes 1]
                                 [--emails 200] [--skip-email]

Default database: a new SQLite file in a temporary directory. For PostgreSQL pass an empty
database's URL (it is migrated first).

Telegram: one notification to each of ``--users`` users is queued, then delivered by
``--processes`` ``tradelog worker`` processes (1 = a worker in this process) through the local
fake Bot API with ``enforce_limits=True`` (at most 30 messages in any second per bot, one per
second per chat, refusals answered 429). The time limits allow is ``(N - 1) / 30`` seconds
(33.3 s for 1,000); the target is at most 1.1 times that, nothing dropped, no refusal.

Email: ``--emails`` notifications to distinct users through a local aiosmtpd server with
STARTTLS and AUTH; reports messages per second and SMTP connections used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from tests.support.fake_bot_api import FakeBotApi
from tests.support.smtp_server import SmtpServer
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog._notify.channels.email import EmailChannel
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog._notify.wiring import build_channels
from tradelog._notify.worker import DeliveryWorker
from tradelog.config import Settings
from tradelog.users import create_user

REPO = Path(__file__).resolve().parents[1]
TELEGRAM_LIMIT_PER_SECOND = 30


def _users(engine: Engine, count: int, prefix: str, **prefs: Any) -> list[int]:
    ids: list[int] = []
    with session_factory(engine)() as session:
        for i in range(count):
            user = create_user(session, email=f"{prefix}{i}@bench.example", name=f"{prefix}{i}")
            changes = {k: (v(user.id) if callable(v) else v) for k, v in prefs.items()}
            update_preferences(session, user.id, user.id, **changes)
            ids.append(user.id)
        session.commit()
    return ids


def _queue(engine: Engine, user_ids: list[int], title: str) -> float:
    started = time.perf_counter()
    with session_factory(engine)() as session:
        for user_id in user_ids:
            dispatch(session, user_id, "trading", "info", title, f"RELIANCE x10 for {user_id}")
        session.commit()
    return time.perf_counter() - started


def _statuses(engine: Engine, channel: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT status, count(*) FROM notification_deliveries "
                "WHERE channel = :c GROUP BY status"
            ),
            {"c": channel},
        )
        return {str(status): int(count) for status, count in rows}


def _worker_processes(url: str, api: FakeBotApi, count: int) -> list[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "TRADELOG_DATABASE_URL": url,
        "TRADELOG_TELEGRAM_BOT_TOKEN": api.token,
        "TRADELOG_TELEGRAM_API_URL": api.api_url,
        "TRADELOG_WORKER_POLL_INTERVAL": "0.05",
    }
    env.pop("TRADELOG_SMTP_HOST", None)
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


def telegram_bench(url: str, engine: Engine, users: int, processes: int) -> dict[str, Any]:
    """Deliver one message to each of ``users`` users under enforced Telegram limits."""
    ids = _users(
        engine,
        users,
        "tg",
        telegram_chat_id=lambda uid: str(10_000 + uid),
        telegram_enabled=True,
    )
    with FakeBotApi(enforce_limits=True) as api:
        settings = Settings(
            database_url=url,
            telegram_bot_token=api.token,
            telegram_api_url=api.api_url,
            worker_poll_interval=0.05,
        )
        children: list[subprocess.Popen[str]] = []
        worker: DeliveryWorker | None = None
        if processes > 1:
            children = _worker_processes(url, api, processes)
            time.sleep(1.5)
        else:
            worker = DeliveryWorker(engine, settings, channels=build_channels(engine, settings))
            worker.start()
        queue_seconds = _queue(engine, ids, "Order filled")
        started = time.monotonic()
        try:
            messages = api.wait_for_messages(users, timeout=users / 10 + 60)
            elapsed = messages[-1].processed_monotonic - messages[0].processed_monotonic
            wall = time.monotonic() - started
        finally:
            if worker is not None:
                worker.stop()
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                child.communicate(timeout=30)
        refused = sum(1 for r in api.requests_for("sendMessage") if r.status == 429)
        delivered = {m.chat_id for m in api.sent_messages()}
        allowed = (users - 1) / TELEGRAM_LIMIT_PER_SECOND
        return {
            "users": users,
            "processes": processes,
            "queue_seconds": round(queue_seconds, 3),
            "first_to_last_seconds": round(elapsed, 2),
            "wall_seconds": round(wall, 2),
            "limits_allow_seconds": round(allowed, 2),
            "ratio": round(elapsed / allowed, 3),
            "delivered": len(api.sent_messages()),
            "unique_chats": len(delivered),
            "dropped": users - len(delivered),
            "limit_violations": api.limit_violations,
            "http_429": refused,
            "statuses": _statuses(engine, "telegram"),
        }


def email_bench(url: str, engine: Engine, count: int) -> dict[str, Any]:
    """Deliver ``count`` emails through aiosmtpd (STARTTLS + AUTH) with one worker."""
    ids = _users(
        engine,
        count,
        "mail",
        email_address=lambda uid: f"user{uid}@bench.example",
        email_enabled=True,
    )
    _queue(engine, ids, "Daily summary")
    with SmtpServer(security="starttls", auth_required=True) as smtp:
        channel = EmailChannel(
            host=smtp.host,
            port=smtp.port,
            security="starttls",
            username=smtp.username,
            password=smtp.password,
            sender="alerts@bench.example",
            tls_context=smtp.client_ssl_context(),
            local_hostname="localhost",
        )
        worker = DeliveryWorker(
            engine, Settings(database_url=url), channels={"email": channel}, concurrency=8
        )
        started = time.perf_counter()
        asyncio.run(worker.run_once())
        elapsed = time.perf_counter() - started
        received = len(smtp.messages)
        return {
            "emails": count,
            "received": received,
            "seconds": round(elapsed, 3),
            "messages_per_second": round(received / elapsed, 1),
            "smtp_connections": smtp.connections,
            "statuses": _statuses(engine, "email"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("database_url", nargs="?")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument("--skip-email", action="store_true")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    migrate.upgrade(url)
    engine = create_tradelog_engine(url)
    try:
        report: dict[str, Any] = {"database": engine.dialect.name}
        report["telegram"] = telegram_bench(url, engine, args.users, args.processes)
        if not args.skip_email:
            report["email"] = email_bench(url, engine, args.emails)
    finally:
        engine.dispose()
        tmp.cleanup()
    print(json.dumps(report, indent=2))
    tg = report["telegram"]
    print(
        f"telegram: {tg['delivered']} messages in {tg['first_to_last_seconds']}s "
        f"(limits allow {tg['limits_allow_seconds']}s, ratio {tg['ratio']}), "
        f"dropped {tg['dropped']}, limit violations {tg['limit_violations']}"
    )
    if "email" in report:
        em = report["email"]
        print(
            f"email: {em['received']} messages in {em['seconds']}s "
            f"({em['messages_per_second']}/s) over {em['smtp_connections']} connection(s)"
        )


if __name__ == "__main__":
    main()
