"""What tradelog costs the caller beside the host's own logging, per way of wiring it in.

    python bench/host_logging_bench.py [--rounds N]

Median wall time per call over rounds of 1,000 calls (the writer's queue is emptied between
rounds, untimed, so only the caller's side is measured), each wiring in a fresh process state:

baselines                   the host's chain alone (no ``tradelog.processor``) and the host
                            record with no tradelog configured, for comparison
take-over, structlog        ``configure()``; ``tradelog.get_logger(...).info(...)``
take-over, stdlib           ``configure()``; ``logging.getLogger(...).info(...)``
host chain + processor      ``configure(take_over=False)``; the host's structlog chain with
                            ``tradelog.processor`` before a renderer writing to a null stream
stdlib + tradelog.Handler   ``configure(take_over=False)``; a logger with ``tradelog.Handler``
host record, not taken      take-over; a WARNING of a host logger below tradelog's level for it
                            (``TRADELOG_LOGGER_LEVELS``) with a host ``NullHandler``: the cost of
                            the ``callHandlers`` wrapper alone

Every event is ``info("order placed", symbol=..., qty=..., price=...)`` with ``user_id`` bound.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

import tradelog
from tradelog import _runtime
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog.users import create_user


def _runtime_for(url: str, log_dir: Path, **options: object) -> tradelog.Runtime:
    return tradelog.configure(
        database_url=url,
        log_dir=log_dir,
        console=False,
        flush_interval=30.0,
        queue_size=5_000_000,
        **options,
    )


def _median(runtime: tradelog.Runtime, call: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(1000):
            call()
        times.append((time.perf_counter_ns() - started) / 1000)
        runtime.writer.queue.clear()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="tradelog-host-bench-"))
    url = f"sqlite:///{base / 'bench.db'}"
    migrate.upgrade(url)
    engine = create_tradelog_engine(url)
    with session_factory(engine)() as session:
        user_id = create_user(session, email="bench@example.com", name="Bench").id
        session.commit()
    engine.dispose()
    fields = {"symbol": "NIFTY", "qty": 50, "price": 123.5}
    results: dict[str, float] = {}
    sink = io.StringIO()
    quiet = logging.getLogger("host.quiet")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False

    def host_chain(*, with_tradelog: bool) -> Callable[[], None]:
        processors: list[object] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
        ]
        if with_tradelog:
            processors.append(tradelog.processor)
        processors.append(structlog.processors.JSONRenderer())
        structlog.configure(
            processors=processors,
            logger_factory=structlog.PrintLoggerFactory(sink),
            cache_logger_on_first_use=True,
        )
        bound = structlog.get_logger("bench").bind(user_id=user_id)

        def call() -> None:
            bound.info("order placed", **fields)
            sink.seek(0)
            sink.truncate()

        return call

    baseline = _runtime_for(url, base / "logs", take_over=False)  # nothing wired in
    results["baseline: host chain alone"] = _median(
        baseline, host_chain(with_tradelog=False), args.rounds
    )
    results["baseline: host record alone"] = _median(
        baseline, lambda: quiet.warning("order placed"), args.rounds
    )
    _runtime.reset()

    runtime = _runtime_for(url, base / "logs", logger_levels="host.quiet=ERROR")
    log = tradelog.get_logger("bench", user_id=user_id)
    std = logging.getLogger("bench.std")
    results["take-over, structlog"] = _median(
        runtime, lambda: log.info("order placed", **fields), args.rounds
    )
    results["take-over, stdlib"] = _median(
        runtime,
        lambda: std.info("order placed", extra={"user_id": user_id, **fields}),
        args.rounds,
    )
    results["host record, not taken"] = _median(
        runtime, lambda: quiet.warning("order placed"), args.rounds
    )
    _runtime.reset()

    chain = host_chain(with_tradelog=True)
    runtime = _runtime_for(url, base / "logs", take_over=False)
    handled = logging.getLogger("bench.handled")
    handled.addHandler(tradelog.Handler())
    handled.propagate = False
    handled.setLevel(logging.INFO)
    results["host chain + processor"] = _median(runtime, chain, args.rounds)
    results["stdlib + tradelog.Handler"] = _median(
        runtime,
        lambda: handled.info("order placed", extra={"user_id": user_id, **fields}),
        args.rounds,
    )
    _runtime.reset()
    print(f"{'wiring':30s} {'ns/call':>9s}")
    for name, value in results.items():
        print(f"{name:30s} {value:9,.0f}")


if __name__ == "__main__":
    main()
