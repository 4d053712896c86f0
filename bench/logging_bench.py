"""Logging benchmark: caller cost and drain rate of tradelog against the usual alternatives.

    python bench/logging_bench.py [--events N] [--pg-url URL] [--burst B] [--no-postgres]

Every contender logs the same event - ``info("order placed", symbol=..., qty=..., price=...,
order_id=...)`` with ``user_id`` bound - and is measured the same ways:

caller ns/call (burst)
    median wall time per call over bursts of ``--burst`` calls (default 1,000); between bursts
    tradelog is flushed (not timed), so this is what one call costs the caller's thread.
caller ns/call (sustained)
    wall time per call of ``--events`` calls in a row. For tradelog the background writer runs
    at the same time and competes for the GIL, so this includes its share.
caller CPU ns/call
    CPU time of the calling thread per call in the sustained run (``time.thread_time``).
drain rows/s
    file loggers: events per second written in the sustained run (they write synchronously).
    tradelog: ``--events`` events are queued with the writer stopped, then the writer is
    started and timed until everything is in ``service_logs`` and the per-user files.
    raw driver: the same rows, already built, inserted in batches of the writer's batch size
    with the driver's best bulk path (sqlite3 ``executemany``; psycopg ``COPY``).

SQLite uses a migrated database in a temporary directory; PostgreSQL a temporary database
created (and dropped) on the server of ``--pg-url`` (default ``TRADELOG_TEST_PG_URL`` or
``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import structlog
from _database import postgres_database
from sqlalchemy import text
from sqlalchemy.engine import make_url

import tradelog
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog._logs.process_writer import ProcessLogWriter
from tradelog._logs.rows import RowBuilder
from tradelog._runtime import Runtime
from tradelog.config import Settings
from tradelog.users import create_user

FIELDS: dict[str, Any] = {"symbol": "NIFTY", "qty": 50, "price": 123.5, "order_id": "abc-123"}
FILTERED: dict[str, float] = {}
"""ns per call of a debug call below the INFO minimum level."""


@dataclass
class Result:
    backend: str
    name: str
    burst: float | None = None
    sustained: float | None = None
    cpu: float | None = None
    drain: float | None = None


def _burst(call: Callable[[], None], events: int, size: int, between: Callable[[], None]) -> float:
    samples = []
    for _ in range(max(3, events // size)):
        between()
        gc.disable()
        start = time.perf_counter()
        for _ in range(size):
            call()
        samples.append((time.perf_counter() - start) / size * 1e9)
        gc.enable()
    return statistics.median(samples)


def _sustained(call: Callable[[], None], events: int) -> tuple[float, float]:
    start = time.perf_counter()
    cpu = time.thread_time()
    for _ in range(events):
        call()
    cpu = time.thread_time() - cpu
    elapsed = time.perf_counter() - start
    return elapsed / events * 1e9, cpu / events * 1e9


def _nothing() -> None:
    return None


def bench_stdlib(folder: Path, events: int, burst: int) -> Result:
    logger = logging.getLogger("bench.stdlib")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(folder / "stdlib.log")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s %(user_id)s %(symbol)s")
    )
    logger.addHandler(handler)
    extra = {"user_id": 1, **FIELDS}

    def call() -> None:
        logger.info("order placed", extra=extra)

    result = Result("-", "stdlib logging -> file", burst=_burst(call, events, burst, _nothing))
    result.sustained, result.cpu = _sustained(call, events)
    result.drain = 1e9 / result.sustained
    logger.removeHandler(handler)
    handler.close()
    return result


def bench_structlog(folder: Path, events: int, burst: int) -> Result:
    handle = (folder / "structlog.jsonl").open("w")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=handle),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger("bench").bind(user_id=1)

    def call() -> None:
        log.info("order placed", **FIELDS)

    def filtered() -> None:
        log.debug("order placed", **FIELDS)

    FILTERED["structlog"] = _burst(filtered, events, burst, _nothing)
    result = Result("-", "structlog JSON -> file", burst=_burst(call, events, burst, _nothing))
    result.sustained, result.cpu = _sustained(call, events)
    result.drain = 1e9 / result.sustained
    structlog.reset_defaults()
    handle.close()
    return result


def bench_loguru(folder: Path, events: int, burst: int) -> Result | None:
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - loguru is a dev dependency
        return None
    logger.remove()
    sink = logger.add(
        folder / "loguru.log",
        format="{time} {level} {name} {message} {extra}",
        enqueue=False,
        catch=False,
    )
    log = logger.bind(user_id=1)

    def call() -> None:
        log.info("order placed", **FIELDS)

    result = Result("-", "loguru -> file", burst=_burst(call, events, burst, _nothing))
    result.sustained, result.cpu = _sustained(call, events)
    result.drain = 1e9 / result.sustained
    logger.remove(sink)
    return result


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    url = f"sqlite:///{folder / 'bench.db'}"
    migrate.upgrade(url)
    yield url


def _prepare(url: str) -> int:
    engine = create_tradelog_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM service_logs"))
    with session_factory(engine)() as session:
        found = session.execute(text("SELECT id FROM users WHERE email = 'bench@example.com'"))
        user_id = found.scalar()
        if user_id is None:
            user_id = create_user(session, email="bench@example.com", name="Bench").id
            session.commit()
    engine.dispose()
    return int(user_id)


def _count(url: str) -> int:
    engine = create_tradelog_engine(url)
    with engine.connect() as connection:
        total = connection.execute(text("SELECT count(*) FROM service_logs")).scalar_one()
    engine.dispose()
    return int(total)


def bench_tradelog(backend: str, url: str, folder: Path, events: int, burst: int) -> Result:
    user_id = _prepare(url)
    log_dir = folder / f"logs-{backend}"
    runtime = tradelog.configure(database_url=url, log_dir=log_dir, console=False)
    log = tradelog.get_logger("bench", user_id=user_id).bind()

    def call() -> None:
        log.info("order placed", **FIELDS)

    def filtered() -> None:
        log.debug("order placed", **FIELDS)

    FILTERED["tradelog"] = _burst(filtered, events, burst, _nothing)
    result = Result(backend, "tradelog -> service_logs + files")
    result.burst = _burst(call, events, burst, lambda: runtime.flush(60))
    runtime.flush(60)
    result.sustained, result.cpu = _sustained(call, events)
    assert runtime.flush(120), "tradelog did not drain"
    stats = runtime.stats()
    runtime.shutdown()
    assert stats["dropped"] == 0

    result.drain = bench_tradelog_drain(backend, url, folder, events)
    return result


def bench_tradelog_drain(
    backend: str, url: str, folder: Path, events: int, *, log_writer: str = "thread"
) -> float:
    """Rows/s of the writer alone: queue ``events`` with the writer stopped, then start it and
    time it until everything is in ``service_logs`` and the files (console off). With
    ``log_writer="process"`` the helper process is started (and ready) before the clock."""
    user_id = _prepare(url)
    settings = Settings.from_env(
        database_url=url,
        log_dir=folder / f"drain-{backend}-{log_writer}",
        console=False,
        queue_size=events + 1,
        log_writer=log_writer,
    )
    drained = Runtime(settings).start(writer=False)
    log = tradelog.get_logger("bench", user_id=user_id).bind()
    for _ in range(events):
        log.info("order placed", **FIELDS)
    if isinstance(drained.writer, ProcessLogWriter):
        assert drained.writer.start_helper(), "the helper process did not start"
    start = time.perf_counter()
    drained.writer.start()
    assert drained.flush(600), "tradelog did not drain"
    rate = events / (time.perf_counter() - start)
    drained.shutdown()
    structlog.reset_defaults()
    assert _count(url) == events
    return rate


@dataclass
class DrainParts:
    """Microseconds per row of each stage of tradelog's writer, each timed alone on one
    thread over the same queued records (see :func:`drain_parts`)."""

    build: float
    """``RowBuilder.build``: redaction, cleaning, the row and the file line's JSON."""
    files: float
    """Appending the lines to the per-user files, a batch at a time."""
    insert: float
    """The inserter (SQLite: multi-row ``VALUES``; PostgreSQL: ``COPY``) with its batch claim."""

    @property
    def serial_rate(self) -> float:
        """Rows/s if the stages ran one after another (as they do where they hold the GIL)."""
        return 1e6 / (self.build + self.files + self.insert)


def drain_parts(
    url: str, folder: Path, events: int, fields: dict[str, Any] | None = None
) -> DrainParts:
    """Time the writer's three stages over ``events`` queued records (each with ``fields``,
    default :data:`FIELDS`), batch after batch as the writer goes, each stage on its own
    clock: where a drained row's time goes, and the rate one process reaches when they cannot
    overlap."""
    user_id = _prepare(url)
    settings = Settings.from_env(
        database_url=url, log_dir=folder / "parts", console=False, queue_size=events + 1
    )
    runtime = Runtime(settings).start(writer=False)
    try:
        log = tradelog.get_logger("bench", user_id=user_id).bind()
        for _ in range(events):
            log.info("order placed", **(FIELDS if fields is None else fields))
        writer = runtime.writer
        records = [item for item in writer.queue if type(item) is tuple]
        writer.queue.clear()
        builder = RowBuilder(writer.redactor, settings.zone)
        inserter = writer.database.inserter
        size = settings.batch_size
        build = files = insert = 0.0
        # Batch after batch, as the writer goes, each stage timed on its own.
        for offset in range(0, len(records), size):
            start = time.perf_counter()
            prepared = [builder.build(record) for record in records[offset : offset + size]]
            middle = time.perf_counter()
            groups: dict[Any, list[str]] = {}
            for item in prepared:
                groups.setdefault(item.file_key, []).append(item.line)
            writer.files.write(groups)
            written = time.perf_counter()
            inserter.insert([item.row for item in prepared if item.row is not None])
            end = time.perf_counter()
            build, files, insert = (
                build + middle - start,
                files + written - middle,
                insert + end - written,
            )
    finally:
        runtime.shutdown()
        structlog.reset_defaults()
    count = len(records)
    return DrainParts(build / count * 1e6, files / count * 1e6, insert / count * 1e6)


def _raw_rows(user_id: int, events: int) -> list[tuple[Any, ...]]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    context = '{"symbol":"NIFTY","qty":50,"price":123.5,"order_id":"abc-123"}'
    return [(user_id, "INFO", "bench", "order placed", context, stamp) for _ in range(events)]


COLUMNS = "user_id, level, module, message, context, timestamp"


def bench_raw(backend: str, url: str, events: int, batch_size: int) -> list[Result]:
    """The driver alone, rows already built, one transaction per batch of ``batch_size``."""
    results = []
    if backend == "sqlite":
        path = make_url(url).database
        assert path is not None
        variants: list[tuple[str, Callable[[Any, list[tuple[Any, ...]]], None]]] = [
            ("raw sqlite3 executemany", _sqlite_executemany),
            ("raw sqlite3 multi-row VALUES", _sqlite_values),
        ]
        for name, insert in variants:
            rows = _raw_rows(_prepare(url), events)
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            start = time.perf_counter()
            for offset in range(0, events, batch_size):
                insert(connection, rows[offset : offset + batch_size])
            elapsed = time.perf_counter() - start
            connection.close()
            assert _count(url) == events
            results.append(Result(backend, name, drain=events / elapsed))
        return results
    import psycopg

    rows = _raw_rows(_prepare(url), events)
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        start = time.perf_counter()
        for offset in range(0, events, batch_size):
            with (
                connection.cursor() as cursor,
                cursor.copy(f"COPY service_logs ({COLUMNS}) FROM STDIN") as copy,
            ):
                for row in rows[offset : offset + batch_size]:
                    copy.write_row(row)
        elapsed = time.perf_counter() - start
    assert _count(url) == events
    return [Result(backend, "raw psycopg COPY", drain=events / elapsed)]


def _sqlite_executemany(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    connection.execute("BEGIN")
    connection.executemany(f"INSERT INTO service_logs ({COLUMNS}) VALUES (?,?,?,?,?,?)", rows)
    connection.execute("COMMIT")


def _sqlite_values(connection: Any, rows: list[tuple[Any, ...]]) -> None:
    values = ",".join(["(?,?,?,?,?,?)"] * len(rows))
    connection.execute(
        f"INSERT INTO service_logs ({COLUMNS}) VALUES {values}", list(chain.from_iterable(rows))
    )


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(results: list[Result]) -> None:
    header = (
        f"{'backend':<11} {'contender':<34} {'burst ns/call':>14} {'sustained ns/call':>18} "
        f"{'CPU ns/call':>12} {'drain rows/s':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.backend:<11} {r.name:<34} {_fmt(r.burst):>14} {_fmt(r.sustained):>18} "
            f"{_fmt(r.cpu):>12} {_fmt(r.drain):>13}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TRADELOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    batch_size = Settings.from_env().batch_size
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tradelog-bench-") as raw_folder:
        folder = Path(raw_folder)
        results.append(bench_stdlib(folder, args.events, args.burst))
        results.append(bench_structlog(folder, args.events, args.burst))
        loguru_result = bench_loguru(folder, args.events, args.burst)
        if loguru_result is not None:
            results.append(loguru_result)
        databases: list[tuple[str, Any]] = [("sqlite", sqlite_database(folder))]
        if not args.no_postgres:
            databases.append(("postgresql", postgres_database(args.pg_url, "bench")))
        for backend, database in databases:
            with database as url:
                results.append(bench_tradelog(backend, url, folder, args.events, args.burst))
                results.extend(bench_raw(backend, url, args.events, batch_size))
    print(
        f"events per contender: {args.events:,}; burst size {args.burst:,}; batch size {batch_size}"
    )
    print_table(results)
    print(
        "filtered call (below the minimum level): "
        + ", ".join(f"{name} {value:,.0f} ns" for name, value in FILTERED.items())
    )
    structlog_burst = next(r.burst for r in results if r.name.startswith("structlog"))
    for backend in ("sqlite", "postgresql"):
        ours = next(
            (r for r in results if r.backend == backend and r.name.startswith("trade")), None
        )
        raws = [r for r in results if r.backend == backend and r.name.startswith("raw")]
        if ours is None or not raws or ours.burst is None or structlog_burst is None:
            continue
        print(
            f"{backend}: caller cost {ours.burst / structlog_burst:.2f}x structlog JSON-to-file "
            "(target <= 1.3x); drain "
            + ", ".join(f"{(ours.drain or 0) / (r.drain or 1):.2f}x {r.name}" for r in raws)
            + " (target >= 0.7x)"
        )


if __name__ == "__main__":
    main()
