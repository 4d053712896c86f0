"""How long each synchronous call takes when the database is a black hole (accepts, never answers).

    python bench/bounds_bench.py [--connect-timeout S] [--statement-timeout S] [--calls N]

Starts a local TCP port that accepts connections and never answers, configures tradelog with
a PostgreSQL URL pointing at it, and times the first and the following calls of: heartbeat,
mark_running, track_task, notify (spooled), and a session read (unread_count, StorageError).
Prints median and worst per call with ``os.getloadavg()``; figures taken while the machine is
busy are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tradelog
from tests.support.blackhole import black_hole
from tradelog import notifications
from tradelog.exceptions import TradelogError


def _time(call: Callable[[], object]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        call()
        outcome = "returned"
    except TradelogError as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - started, outcome


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect-timeout", type=float, default=5.0)
    parser.add_argument("--statement-timeout", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    with black_hole() as port, tempfile.TemporaryDirectory() as log_dir:
        runtime = tradelog.configure(
            database_url=f"postgresql+psycopg://tl:pw@127.0.0.1:{port}/tradelog",
            log_dir=log_dir,
            console=False,
            worker=False,
            schema_check="off",
            db_connect_timeout=args.connect_timeout,
            db_statement_timeout=args.statement_timeout,
        )

        def task() -> None:
            with tradelog.track_task(1, "bench"):
                pass

        def read() -> None:
            with runtime.session() as session:
                notifications.unread_count(session, 1)

        calls: dict[str, Callable[[], object]] = {
            "heartbeat": lambda: tradelog.heartbeat(1),
            "mark_running": lambda: tradelog.mark_running(1),
            "track_task": task,
            "notify": lambda: tradelog.notify(1, "system", "info", "t", "m"),
            "unread_count": read,
        }
        print(f"loadavg {os.getloadavg()}  connect {args.connect_timeout:g} s")
        print(f"{'call':<14}{'first s':>9}{'median s':>10}{'max s':>8}  outcome")
        for name, call in calls.items():
            first, outcome = _time(call)
            rest = [_time(call)[0] for _ in range(args.calls)]
            print(
                f"{name:<14}{first:>9.3f}{statistics.median(rest):>10.3f}"
                f"{max(rest):>8.3f}  {outcome}"
            )
        started = time.perf_counter()
        tradelog.shutdown(2)
        print(f"shutdown(2)   {time.perf_counter() - started:>9.3f}")


if __name__ == "__main__":
    main()
