"""Error capture and service health timings on a fresh database.

    python bench/errors_bench.py [DATABASE_URL] [--errors N]

Default database: a new SQLite file in a temporary directory. For PostgreSQL pass an empty
database's URL (it is migrated first). Prints caller-side cost of a queued capture, writer
throughput, the synchronous crash path, heartbeats and tracked tasks.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog._errors.pipeline import ErrorCapture
from tradelog._health.tasks import track_task
from tradelog._health.writer import ServiceHealth
from tradelog.config import Settings
from tradelog.users import create_user


def _fail(n: int) -> None:
    raise ValueError(f"order {n} rejected: qty must be positive")


def _exceptions(count: int) -> list[BaseException]:
    found: list[BaseException] = []
    for n in range(count):
        try:
            _fail(n)
        except ValueError as exc:
            found.append(exc)
    return found


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _report(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p50 = statistics.median(samples) * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    print(f"{name:<38} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?")
    parser.add_argument("--errors", type=int, default=5000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tradelog-bench-"))
    url = args.url or f"sqlite:///{workdir / 'bench.db'}"
    migrate.upgrade(url)
    engine = create_tradelog_engine(url)
    with session_factory(engine)() as session:
        users = [
            create_user(session, email=f"bench{n}-{time.time_ns()}@example.com", name="b").id
            for n in range(10)
        ]
        session.commit()
    settings = Settings(
        database_url=url, log_dir=workdir / "logs", console=False, queue_size=args.errors * 2
    )
    capture = ErrorCapture(settings, engine)
    print(f"database: {engine.url.render_as_string(hide_password=True)}")

    excs = _exceptions(args.errors)
    start = time.perf_counter()
    caller = []
    for n, exc in enumerate(excs):
        t0 = time.perf_counter()
        capture.capture(exc, user_id=users[n % len(users)], context={"symbol": "INFY", "n": n})
        caller.append(time.perf_counter() - t0)
    queued = time.perf_counter() - start
    assert capture.flush(600)
    total = time.perf_counter() - start
    _report("capture() on the caller's thread", caller)
    print(
        f"{'queued + written':<38} {args.errors} errors in {total:.2f} s "
        f"({args.errors / total:,.0f}/s; enqueue {queued:.3f} s)"
    )

    crashes = iter(_exceptions(200))
    _report(
        "uncaught crash (synchronous write)",
        _timed(lambda: capture.capture(next(crashes), user_id=users[0], sync=True), 200),
    )

    health = ServiceHealth(engine, capture=capture)
    _report("heartbeat()", _timed(lambda: health.heartbeat(users[1]), 300))

    def task() -> None:
        with track_task(users[2], "bench", health=health) as run:
            run["n"] = 1

    _report("track_task() around an empty block", _timed(task, 300))
    print(f"counters: {capture.stats()}")
    capture.close()
    engine.dispose()


if __name__ == "__main__":
    main()
