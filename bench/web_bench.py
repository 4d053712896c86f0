"""Web benchmark: route latency at scale, and live-stream delivery to many clients.

    python bench/web_bench.py [--pg-url URL] [--notifications 100000] [--logs 1000000]
                              [--requests 300] [--clients 500] [--explain]

On a temporary PostgreSQL database (created and dropped on the server of ``--pg-url``, default
``TRADELOG_TEST_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``):

1. one trader gets ``--notifications`` notifications (2% unread) over 90 days and ``--logs``
   ``service_logs`` rows, next to 99 other users with 1,000 notifications and 10,000 log rows
   each; 2,000 errors in 20 groups; then ``ANALYZE``.
2. a host app with :func:`tradelog.web.create_router` is served by uvicorn in a separate
   process; every route is called ``--requests`` times over one keep-alive HTTP connection
   (after 20 warm-up calls) and the client-side latency's p50 and p99 are printed.
3. ``--clients`` Server-Sent Events streams are opened (asyncio, one connection each):
   *fan-out*: all on the trader's stream, 20 notifications one after another, each reaching
   every client; *spread*: one stream per user for ``--clients`` users, each notified once in
   a burst. Latency is from the moment ``notify()`` returned (committed) in this process to
   the moment the client read the event.

Targets: list and count routes p99 <= 20 ms; stream delivery p99 <= 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from _database import postgres_database
from sqlalchemy.engine import make_url

from tradelog._runtime import Runtime
from tradelog.config import Settings

REPO = Path(__file__).resolve().parents[1]
NOW = datetime.now(UTC)
SERVER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI, Header
    import tradelog.web
    from tradelog import Runtime, Settings

    url, port = sys.argv[1], int(sys.argv[2])
    runtime = Runtime(Settings(database_url=url, console=False, log_dir=sys.argv[3]))
    runtime.start(logging_=False, hooks=False, background=False)

    def user(authorization: str = Header("")) -> int | None:
        return int(authorization[7:]) if authorization.startswith("Bearer ") else None

    router = tradelog.web.create_router(actor=user, runtime=runtime)
    app = FastAPI(lifespan=router.web_lifespan)
    app.include_router(router)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                timeout_graceful_shutdown=2, backlog=4096)
    """
)


def _copy(cursor: psycopg.Cursor[Any], table: str, columns: str, rows: Iterator[str]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for count, row in enumerate(rows, 1):
            buffer.write(row)
            if count % 50_000 == 0:
                copy.write(buffer.getvalue())
                buffer = io.StringIO()
        copy.write(buffer.getvalue())


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def fill(url: str, *, notifications: int, logs: int, users: int) -> dict[str, int]:
    """The trader, ``users`` - 1 others and an admin; rows as the module docstring says."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    rng = random.Random(7)
    with psycopg.connect(plain, autocommit=False) as connection, connection.cursor() as cursor:
        ids = []
        for i in range(users + 1):
            role = "admin" if i == users else "user"
            cursor.execute(
                "INSERT INTO users (email, name, password_hash, role) VALUES (%s, %s, '!', %s)"
                " RETURNING id",
                (f"user{i}@bench.example", f"user {i}", role),
            )
            ids.append(cursor.fetchone()[0])  # type: ignore[index]
        trader, admin = ids[0], ids[-1]
        span = 90 * 86400

        def notes() -> Iterator[str]:
            for user, count in [(trader, notifications), *((u, 1000) for u in ids[1:-1])]:
                for n in range(count):
                    at = NOW - timedelta(seconds=span * (1 - n / count))
                    read = "t" if n < count * 0.98 else "f"  # the newest 2% are unread
                    level = ("info", "warning", "error", "critical")[n % 4]
                    yield (
                        f"{user}\ttrading\t{level}\tSold {n}\tSold {n} at 100.5\t"
                        f"{read}\t{_stamp(at)}\tt\n"
                    )

        _copy(
            cursor,
            "notifications",
            "user_id, type, level, title, message, read, created_at, in_app_delivered",
            notes(),
        )
        levels = ["DEBUG", "INFO", "INFO", "INFO", "INFO", "WARNING", "ERROR"]
        modules = ["strategy.alpha", "broker.orders", "market.feed", "risk.limits"]

        def log_rows() -> Iterator[str]:
            for user, count in [(trader, logs), *((u, 10_000) for u in ids[1:-1])]:
                for n in range(count):
                    at = NOW - timedelta(seconds=span * (1 - n / count))
                    context = json.dumps({"order_id": f"AMO-{n}", "qty": n % 50})
                    yield (
                        f"{user}\t{levels[n % 7]}\t{modules[n % 4]}\tevent {n} on "
                        f"{rng.choice(['TCS', 'INFY', 'RELIANCE'])}\t{context}\t{_stamp(at)}\n"
                    )

        _copy(
            cursor,
            "service_logs",
            "user_id, level, module, message, context, timestamp",
            log_rows(),
        )
        for n in range(2000):
            cursor.execute(
                "INSERT INTO error_logs (user_id, error_type, error_message, fingerprint,"
                " occurred_at, resolved) VALUES (%s, %s, %s, %s, %s, false)",
                (
                    ids[n % (len(ids) - 1)],
                    f"Error{n % 20}",
                    f"broker said no ({n})",
                    f"{n % 20:064x}",
                    NOW - timedelta(minutes=n),
                ),
            )
        for user in ids[:-1]:
            cursor.execute(
                "INSERT INTO service_status (user_id, service_running, last_heartbeat)"
                " VALUES (%s, true, %s)",
                (user, NOW),
            )
        connection.commit()
        connection.autocommit = True
        cursor.execute("ANALYZE")
    return {"trader": trader, "admin": admin, "first": ids[1], "count": len(ids)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(url: str, log_dir: str) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, url, str(port), log_dir],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRADELOG_")},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(20)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _page_at(
    client: httpx.Client, path: str, headers: dict[str, str], *, limit: int, pages: int
) -> dict[str, Any]:
    """The page ``pages`` pages deep (or the last one)."""
    page: dict[str, Any] = client.get(path, params={"limit": limit}, headers=headers).json()
    for _ in range(pages):
        if not page.get("next"):
            break
        page = client.get(
            path, params={"limit": limit, "cursor": page["next"]}, headers=headers
        ).json()
    return page


def routes(base: str, ids: dict[str, int], requests: int) -> list[tuple[str, float, float]]:
    """p50 and p99 milliseconds of each route."""
    trader, admin = ids["trader"], ids["admin"]
    results = []
    with httpx.Client(base_url=base, timeout=30) as client:
        as_trader = {"Authorization": f"Bearer {trader}"}
        as_admin = {"Authorization": f"Bearer {admin}"}
        deep = _page_at(client, "/notifications", as_trader, limit=100, pages=50)
        deep_logs = _page_at(client, "/logs", as_trader, limit=500, pages=100)
        unread = [
            n["id"]
            for n in client.get(
                "/notifications", params={"read": "false", "limit": 100}, headers=as_trader
            ).json()["data"]
        ]
        cases: list[tuple[str, str, str, dict[str, Any], dict[str, str]]] = [
            ("GET /notifications", "GET", "/notifications", {}, as_trader),
            (
                "GET /notifications?read=false",
                "GET",
                "/notifications",
                {"read": "false"},
                as_trader,
            ),
            (
                "GET /notifications?level=error",
                "GET",
                "/notifications",
                {"level": "error"},
                as_trader,
            ),
            (
                "GET /notifications (page 51)",
                "GET",
                "/notifications",
                {"cursor": deep.get("next")},
                as_trader,
            ),
            (
                "GET /notifications/unread-count",
                "GET",
                "/notifications/unread-count",
                {},
                as_trader,
            ),
            ("POST /notifications/{id}/read", "POST", "/notifications/{id}/read", {}, as_trader),
            ("GET /logs", "GET", "/logs", {}, as_trader),
            ("GET /logs?min_level=ERROR", "GET", "/logs", {"min_level": "ERROR"}, as_trader),
            ("GET /logs?module=broker", "GET", "/logs", {"module": "broker"}, as_trader),
            (
                "GET /logs (row 50,500)",
                "GET",
                "/logs",
                {"cursor": deep_logs.get("next")},
                as_trader,
            ),
            ("GET /logs?keyword=AMO-999999", "GET", "/logs", {"keyword": "AMO-999999"}, as_trader),
            ("GET /errors", "GET", "/errors", {}, as_trader),
            ("GET /status", "GET", "/status", {}, as_trader),
            ("GET /preferences", "GET", "/preferences", {}, as_trader),
            ("GET /config", "GET", "/config", {}, as_trader),
            ("GET /admin/logs?user_id=trader", "GET", "/admin/logs", {"user_id": trader}, as_admin),
            ("GET /admin/errors/groups", "GET", "/admin/errors/groups", {}, as_admin),
            ("GET /admin/services", "GET", "/admin/services", {}, as_admin),
            ("GET /admin/deliveries", "GET", "/admin/deliveries", {}, as_admin),
            ("GET /admin/audit", "GET", "/admin/audit", {}, as_admin),
            ("GET /ui/inbox (page)", "GET", "/ui/inbox", {}, as_trader),
        ]
        for name, method, path, params, headers in cases:
            samples = []
            count = requests if "keyword" not in name else max(20, requests // 10)
            for i in range(20 + count):
                target = path
                if "{id}" in path:
                    target = path.replace("{id}", str(unread[i % len(unread)]))
                started = time.perf_counter()
                given = {k: v for k, v in params.items() if v is not None}
                response = client.request(method, target, params=given, headers=headers)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise SystemExit(f"{name}: {response.status_code} {response.text[:200]}")
                if i >= 20:
                    samples.append(elapsed * 1000)
            p50, p99 = _percentiles(samples)
            results.append((name, p50, p99))
            print(f"  {name:<36} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms", flush=True)
    return results


_EVENT = re.compile(rb"id: (\d+)\nevent: notification\n")


async def _client(
    base: str, user: int, arrivals: dict[int, list[float]], ready: asyncio.Event, counter: list[int]
) -> None:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /notifications/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {user}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    buffer = b""
    while b"retry:" not in buffer:
        buffer += await reader.read(4096)
    counter[0] += 1
    if counter[0] == counter[1]:
        ready.set()
    buffer = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            buffer += chunk
            for match in _EVENT.finditer(buffer):
                arrivals.setdefault(int(match.group(1)), []).append(now)
            buffer = buffer[-200:] if _EVENT.search(buffer) is None else b""
    finally:
        writer.close()


async def streams(base: str, url: str, ids: dict[str, int], clients: int, log_dir: str) -> None:
    runtime = Runtime(Settings(database_url=url, console=False, log_dir=Path(log_dir) / "n"))
    runtime.start(logging_=False, hooks=False, background=False)
    try:
        for scenario in ("fan-out", "spread"):
            if scenario == "fan-out":
                users = [ids["trader"]] * clients
            else:
                users = list(range(ids["first"], ids["first"] + min(clients, ids["count"] - 2)))
                users = (users * (clients // len(users) + 1))[:clients]
            arrivals: dict[int, list[float]] = {}
            ready = asyncio.Event()
            counter = [0, len(users)]
            tasks = [asyncio.create_task(_client(base, u, arrivals, ready, counter)) for u in users]
            await asyncio.wait_for(ready.wait(), 120)
            await asyncio.sleep(1.0)
            sent: dict[int, float] = {}
            expected: dict[int, int] = {}
            if scenario == "fan-out":
                for i in range(20):
                    result = await asyncio.to_thread(
                        runtime.notifications.notify,
                        ids["trader"],
                        "trading",
                        "info",
                        f"fan {i}",
                        "x",
                    )
                    sent[result.notification_id or 0] = time.time()
                    expected[result.notification_id or 0] = clients
                    await asyncio.sleep(0.3)
            else:
                distinct = sorted(set(users))
                for user in distinct:
                    result = await asyncio.to_thread(
                        runtime.notifications.notify, user, "trading", "info", "spread", "x"
                    )
                    sent[result.notification_id or 0] = time.time()
                    expected[result.notification_id or 0] = users.count(user)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(len(arrivals.get(i, [])) >= n for i, n in expected.items()):
                    break
                await asyncio.sleep(0.1)
            delays = [
                (at - sent[ident]) * 1000
                for ident, times in arrivals.items()
                if ident in sent
                for at in times
            ]
            missing = sum(expected.values()) - len(delays)
            p50, p99 = _percentiles(delays) if delays else (float("nan"), float("nan"))
            print(
                f"  {scenario:<8} {len(users)} streams, {len(sent)} notifications: "
                f"{len(delays)} deliveries, missing {missing}, "
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(delays or [0]):.0f} ms",
                flush=True,
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(1.0)
    finally:
        runtime.shutdown()


def explain(url: str, ids: dict[str, int]) -> None:
    """The plans of the inbox page, the unread count and the first log page."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    queries = {
        "notifications page": (
            "SELECT * FROM notifications WHERE user_id = %s "
            "ORDER BY created_at DESC, id DESC LIMIT 21"
        ),
        "unread count": "SELECT count(*) FROM notifications WHERE user_id = %s AND read = false",
        "logs page": (
            "SELECT * FROM service_logs WHERE user_id = %s "
            "ORDER BY timestamp DESC, id DESC LIMIT 51"
        ),
    }
    with psycopg.connect(plain) as connection, connection.cursor() as cursor:
        for name, query in queries.items():
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, (ids["trader"],))
            print(f"\n  EXPLAIN {name}:")
            for (line,) in cursor.fetchall():
                print(f"    {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get(
        "TRADELOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--pg-url", default=default)
    parser.add_argument("--notifications", type=int, default=100_000)
    parser.add_argument("--logs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with postgres_database(args.pg_url, "webbench") as url:
        started = time.monotonic()
        ids = fill(url, notifications=args.notifications, logs=args.logs, users=args.users)
        print(
            f"filled {args.notifications:,} notifications and {args.logs:,} log rows for one "
            f"user (+{args.users - 1} others) in {time.monotonic() - started:.0f} s",
            flush=True,
        )
        log_dir = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"webbench-{os.getpid()}")
        with served(url, log_dir) as base:
            print("routes (client-side, one keep-alive connection):", flush=True)
            routes(base, ids, args.requests)
            print(f"live streams ({args.clients} clients):", flush=True)
            asyncio.run(streams(base, url, ids, args.clients, log_dir))
        if args.explain:
            explain(url, ids)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
