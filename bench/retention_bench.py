"""Retention under load: purge expired ``service_logs`` rows while producers keep logging.

    python bench/retention_bench.py [--url URL] [--expired 1000000] [--producers 4]
                                    [--rate 250] [--before 10] [--batch-size 5000]

The database (default PostgreSQL ``tradelog_retention_bench``, or ``--url sqlite:///path``) is
made new on every run: ``--expired`` rows 31-40 days old and ``--recent`` rows of the last days
are bulk-loaded (``bench/seed_logs.py``'s paths). Then ``--producers`` threads log through
tradelog (``log.info`` with four fields, each thread paced at ``--rate`` calls/s, console off)
for ``--before`` seconds; then a :class:`tradelog.retention.RetentionJob` runs in a thread of
the same process (as the daily retention of a worker process does) while the producers go on.
Printed: the producers' caller cost per ``log.info`` (p50/p99/max) before and during the purge,
their ratio, the purge's rows and seconds, and that every produced event reached the database.
The load average is printed with the table: on a shared machine the p99 figures are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

import tradelog
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine
from tradelog.retention import RetentionJob, RetentionPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_logs import (  # a sibling script
    drop_database,
    ensure_database,
    seed_logs_pg,
    seed_logs_sqlite,
    seed_users,
)

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/tradelog_retention_bench"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def prepare(args: argparse.Namespace) -> None:
    drop_database(args.url)
    ensure_database(args.url)
    migrate.upgrade(args.url)
    engine = create_tradelog_engine(args.url)
    backend = make_url(args.url).get_backend_name()
    seed = seed_logs_pg if backend == "postgresql" else seed_logs_sqlite
    try:
        seed_users(engine, args.producers)
        now = datetime.now(UTC)
        began = time.perf_counter()
        for rows, start, end in (
            (args.expired, now - timedelta(days=40), now - timedelta(days=31)),
            (args.recent, now - timedelta(days=3), now - timedelta(minutes=1)),
        ):
            seed(
                engine,
                argparse.Namespace(rows=rows, users=args.producers, seed=14),
                start,
                end,
            )
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        print(f"loaded {args.expired + args.recent:,} rows in {time.perf_counter() - began:.1f} s")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--recent", type=int, default=100_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=250.0, help="calls/s per producer")
    parser.add_argument("--before", type=float, default=10.0, help="seconds before the purge")
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()

    prepare(args)
    folder = Path(tempfile.mkdtemp(prefix="tradelog-retention-bench-"))
    runtime = tradelog.configure(database_url=args.url, log_dir=folder / "logs", console=False)
    phase = {"name": "before"}
    samples: dict[str, list[float]] = {"before": [], "during": []}
    produced = [0] * args.producers
    stop = threading.Event()

    def produce(index: int) -> None:
        log = tradelog.get_logger("bench.producer", user_id=index + 1).bind()
        interval = 1.0 / args.rate
        due = time.perf_counter()
        mine: dict[str, list[float]] = {"before": [], "during": []}
        while not stop.is_set():
            name = phase["name"]
            began = time.perf_counter()
            log.info("order placed", symbol="TCS", qty=10, price=3550.5, order_id=f"o-{index}")
            mine[name].append(time.perf_counter() - began)
            produced[index] += 1
            due += interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        for key, values in mine.items():
            samples[key].extend(values)

    threads = [
        threading.Thread(target=produce, args=(n,), daemon=True) for n in range(args.producers)
    ]
    for thread in threads:
        thread.start()
    time.sleep(args.before)
    load_before = os.getloadavg()
    engine = create_tradelog_engine(args.url)
    job = RetentionJob(engine, None, RetentionPolicy(), batch_size=args.batch_size)
    purge: dict[str, float] = {}

    def run_purge() -> None:
        began = time.perf_counter()
        result = job.run_once(datetime.now(UTC))
        purge["seconds"] = time.perf_counter() - began
        purge["rows"] = result.service_logs

    phase["name"] = "during"
    purger = threading.Thread(target=run_purge)
    purger.start()
    purger.join()
    stop.set()
    for thread in threads:
        thread.join()
    load_during = os.getloadavg()
    assert runtime.flush(120), "the writer did not drain"
    runtime.shutdown()
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT count(*) FROM service_logs WHERE module = 'bench.producer'")
        ).scalar_one()
    engine.dispose()

    print(
        f"{make_url(args.url).get_backend_name()}: {args.producers} producers x {args.rate:g}/s;"
        f" purge of {int(purge['rows']):,} rows in {purge['seconds']:.1f} s"
        f" ({purge['rows'] / purge['seconds']:,.0f} rows/s, batches of {args.batch_size:,})"
    )
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f},"
        f" after {load_during[0]:.2f} {load_during[1]:.2f} {load_during[2]:.2f}"
        " (2 cores, shared)"
    )
    print("| caller cost of log.info | calls | p50 µs | p99 µs | max µs |\n|---|---|---|---|---|")
    for name in ("before", "during"):
        values = samples[name]
        print(
            f"| {name} the purge | {len(values):,} | {statistics.median(values) * 1e6:.1f} |"
            f" {percentile(values, 0.99) * 1e6:.1f} | {max(values) * 1e6:.1f} |"
        )
    ratio = percentile(samples["during"], 0.99) / percentile(samples["before"], 0.99)
    print(f"p99 during / before: {ratio:.2f}x (target <= 2x)")
    print(f"events produced {sum(produced):,}, stored {stored:,}")


if __name__ == "__main__":
    main()
