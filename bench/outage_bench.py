"""Outage benchmark: rows per second into PostgreSQL before, during and after an outage.

    python bench/outage_bench.py [--producers P] [--rate R] [--before S] [--outage S]
                                 [--after S] [--mode M] [--pg-url URL]

``--producers`` threads (default 4) each log ``--rate`` events per second (default 2,500)
through a TCP proxy (``tests/support/tcp_proxy.py``) between tradelog and the server:
``--before`` seconds (default 3) with the network fine, ``--outage`` seconds (default 5) with
the proxy in ``--mode`` (``black_hole``, the default: nothing answers; or ``reset``: every
connection refused), ``--after`` seconds (default 3) with the network back. A sampler counts
``service_logs`` rows every 0.25 s and the table shows:

before            rows/s written while the network was fine
during            rows/s written during the outage (0: everything goes to the spool)
after             rows/s from the end of the outage until every row is in (spool replay
                  plus live traffic)
caller p99        the slowest 1 % of log calls over the whole run, in microseconds
exactly once      rows in the table == events logged, and no message twice

PostgreSQL: a temporary database created (and dropped) on the server of ``--pg-url``
(default ``TRADELOG_TEST_PG_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``). The
machine's load average is printed with the table: figures measured next to other work are
noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _database import postgres_database

import tradelog
from tests.support.tcp_proxy import TcpProxy
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog.users import create_user


def run(args: argparse.Namespace, url: str, log_dir: Path) -> dict[str, object]:
    engine = create_tradelog_engine(url)
    with session_factory(engine)() as session:
        user_id = create_user(session, email="outage@example.com", name="Outage").id
        session.commit()
    per_producer = int(args.rate * (args.before + args.outage + args.after))
    total = args.producers * per_producer
    samples: list[tuple[float, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        with engine.connect() as connection:
            while not stop_sampling.is_set():
                count = connection.execute(text("SELECT count(*) FROM service_logs")).scalar()
                samples.append((time.monotonic(), int(count or 0)))
                connection.commit()
                time.sleep(0.25)

    with TcpProxy.for_url(url) as proxy:
        runtime = tradelog.configure(
            database_url=proxy.url(url),
            log_dir=log_dir,
            console=False,
            db_write_timeout=2.0,
            schema_check="off",
        )
        latencies: list[list[float]] = [[] for _ in range(args.producers)]

        def produce(index: int) -> None:
            log = tradelog.get_logger("outage")
            mine = latencies[index]
            clock = time.perf_counter
            start = time.monotonic()
            for event in range(per_producer):
                due = start + event / args.rate
                if event % 100 == 0 and due > time.monotonic():
                    time.sleep(due - time.monotonic())
                started = clock()
                log.info(f"p{index} e{event}", user_id=user_id, n=event)
                mine.append(clock() - started)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=produce, args=(i,)) for i in range(args.producers)]
        begun = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.before)
        outage_start = time.monotonic()
        proxy.set_mode(args.mode)
        time.sleep(args.outage)
        proxy.set_mode("pass")
        outage_end = time.monotonic()
        for thread in threads:
            thread.join()
        runtime.flush(300)
        done = time.monotonic()
        stop_sampling.set()
        sampler.join()
        tradelog.shutdown()
    rows, distinct = (
        engine.connect()
        .execute(text("SELECT count(*), count(DISTINCT message) FROM service_logs"))
        .one()
    )
    engine.dispose()

    def rows_at(moment: float) -> int:
        before = [count for at, count in samples if at <= moment]
        return before[-1] if before else 0

    calls = sorted(x for per in latencies for x in per)
    return {
        "before": rows_at(outage_start) / max(outage_start - begun, 1e-9),
        "during": (rows_at(outage_end) - rows_at(outage_start)) / args.outage,
        "after": (rows - rows_at(outage_end)) / max(done - outage_end, 1e-9),
        "recovery_s": done - outage_end,
        "p50_us": statistics.median(calls) * 1e6,
        "p99_us": calls[int(len(calls) * 0.99)] * 1e6,
        "exact": rows == total and distinct == total,
        "rows": rows,
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2_500.0)
    parser.add_argument("--before", type=float, default=3.0)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=3.0)
    parser.add_argument("--mode", choices=["black_hole", "reset"], default="black_hole")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TRADELOG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, postgres_database(args.pg_url, "outage") as url:
        result = run(args, url, Path(folder))
    load = os.getloadavg()
    print(
        f"{args.producers} producers x {args.rate:,.0f} events/s, {args.before:g} s up,"
        f" {args.outage:g} s {args.mode}, {args.after:g} s up"
        f" (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
    )
    print(f"{'':24}{'value':>14}")
    print(f"{'rows/s before':24}{result['before']:>14,.0f}")
    print(f"{'rows/s during':24}{result['during']:>14,.0f}")
    print(f"{'rows/s after':24}{result['after']:>14,.0f}")
    print(f"{'recovery s':24}{result['recovery_s']:>14.2f}")
    print(f"{'caller p50 us':24}{result['p50_us']:>14.1f}")
    print(f"{'caller p99 us':24}{result['p99_us']:>14.1f}")
    print(f"{'rows / events':24}{result['rows']:>7,}/{result['total']:,}")
    print(f"{'exactly once':24}{result['exact']!s:>14}")


if __name__ == "__main__":
    main()
