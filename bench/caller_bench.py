"""Caller cost and sustained throughput of tradelog at its DEFAULT settings, next to structlog.

    python bench/caller_bench.py [--quick] [--no-postgres] [--pg-url URL] [--threads 1,4,8]
                                 [--drain-runs 5]

tradelog runs with its defaults - console on - and, as under systemd or docker, ``stderr`` a
pipe (every measurement runs in a child process whose stderr the parent reads and discards).
structlog is configured the usual production way: ``merge_contextvars``, ``add_log_level``,
``TimeStamper(iso, utc)``, ``JSONRenderer`` and a ``WriteLogger`` on a file. Each contender
and each case runs in a fresh child process, one after the other. Printed in one run:

1. **caller cost**: p50 / p99 / mean wall time of one call for a ~100 B event (two keys), a
   4 MB message and a 10,000-key event, and of a call filtered out by the level (``debug``
   below ``INFO``). tradelog's writer runs meanwhile (it is not paused), so the figures include
   its share of the GIL, as in production.
2. **memory**: RSS of the process after 10,000 events of 10,000 distinct shapes (50 keys each),
   flushed.
3. **sustained throughput**: 1, 4 and 8 threads log as fast as they can (the same ~100 B event),
   then flush: events/s from the first call until everything is in the file (structlog), or in
   ``service_logs`` and the per-user files (tradelog on SQLite and PostgreSQL).
4. **writer-only drain** against the raw driver's bulk path (sqlite3 ``executemany``, psycopg
   ``COPY``), from ``bench/logging_bench.py``: the median of ``--drain-runs`` rounds (5), the
   contenders' order rotated every round.
5. **the GIL convoy**: tradelog's inserter alone, and beside one thread running Python without
   pause, a batch per transaction and a spool replay's group of batches.
6. the raw driver's own rate (and, on PostgreSQL, the server reading the rows from a file
   itself, with and without the keyword-search indexes) against structlog's 1-thread rate:
   what one connection can take.
7. **the writer's stages** timed alone over the same queued records (build, files, insert):
   where a drained row's time goes, and the drain one process reaches when they do not overlap.
8. section 3's PostgreSQL runs again after ``tradelog db search-index off`` (the trigram
   indexes cost every insert; keyword searches then read the user's rows).

``os.getloadavg()`` is printed before and after: on a shared machine the figures are only
comparable within one run. ``--quick`` runs smaller counts (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("thread", "process")
"""``log_writer``: the default (the writer's threads in the callers' process), and the helper
process (``TRADELOG_LOG_WRITER=process``)."""
_CONTENDER = {"thread": "tradelog", "process": "tradelog-process"}

SMALL = {"symbol": "NIFTY", "qty": 50}
"""With the message and the bound user_id: a ~100 byte event."""


# --------------------------------------------------------------------------- child side


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _setup(contender: str, url: str, folder: Path) -> tuple[Any, Any]:
    """A logger bound to the bench user, and a function that waits until all is written."""
    if contender == "structlog":
        import logging

        import structlog

        handle = (folder / f"structlog-{os.getpid()}.jsonl").open("w")
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

        def done() -> bool:
            handle.flush()
            return True

        return structlog.get_logger("bench").bind(user_id=1), done
    import tradelog

    mode = "process" if contender == "tradelog-process" else "thread"
    runtime = tradelog.configure(
        database_url=url, log_dir=folder / f"logs-{os.getpid()}", log_writer=mode
    )
    user_id = int(os.environ["BENCH_USER_ID"])
    log = tradelog.get_logger("bench").bind(user_id=user_id)  # bound the same way as structlog
    return log, lambda: runtime.flush(600)


def _percentiles(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50": samples[len(samples) // 2] * 1e6,
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6,
        "mean": statistics.fmean(samples) * 1e6,
    }


def _time_calls(call: Any, count: int) -> list[float]:
    clock = time.perf_counter
    samples = []
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


def child_caller(contender: str, url: str, folder: Path, quick: bool) -> dict[str, Any]:
    log, done = _setup(contender, url, folder)
    done()
    time.sleep(1.0)  # steady state: tradelog's threads have finished starting up
    big = "x" * (4 * 1024 * 1024)
    wide = {f"key_{i}": i for i in range(10_000)}
    result: dict[str, Any] = {}
    small_count = 5_000 if quick else 40_000
    result["filtered"] = _percentiles(
        _time_calls(lambda: log.debug("order placed", **SMALL), small_count)
    )
    result["100 B"] = _percentiles(
        _time_calls(lambda: log.info("order placed", **SMALL), small_count)
    )
    done()
    result["4 MB"] = _percentiles(_time_calls(lambda: log.info(big), 5 if quick else 20))
    done()
    result["10,000 keys"] = _percentiles(
        _time_calls(lambda: log.info("wide", **wide), 10 if quick else 50)
    )
    assert done()
    return result


def child_memory(contender: str, url: str, folder: Path, quick: bool) -> dict[str, Any]:
    log, done = _setup(contender, url, folder)
    before = _rss_mib()
    count = 2_000 if quick else 10_000
    after = []
    for run in range(3):  # three rounds of new shapes: what is kept must not keep growing
        for shape in range(count):
            log.info("wide", **{f"r{run}s{shape}_{i}": i for i in range(50)})
        assert done()
        after.append(_rss_mib())
    return {"events": count, "before": before, "after": after}


def child_throughput(
    contender: str, url: str, folder: Path, threads: int, total: int
) -> dict[str, Any]:
    log, done = _setup(contender, url, folder)
    each = total // threads
    ready = threading.Barrier(threads + 1)

    def work() -> None:
        ready.wait()
        for _ in range(each):
            log.info("order placed", **SMALL)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    calls = time.perf_counter() - start
    assert done()
    elapsed = time.perf_counter() - start
    return {"events": each * threads, "calls_s": calls, "elapsed": elapsed}


# --------------------------------------------------------------------------- parent side


def _run_child(*args: str, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    done = subprocess.run(
        command,
        capture_output=True,  # stderr a pipe, as under systemd/docker (read, discarded)
        env={**os.environ, **env},
        timeout=3600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace")[-3000:])
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument("--events", type=int, default=None, help="per throughput run")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TRADELOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--drain-runs", type=int, default=5, help="rounds of the writer-only drain (section 4)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, contender, url, folder, *rest = args.child
        if kind == "caller":
            out = child_caller(contender, url, Path(folder), rest[0] == "1")
        elif kind == "memory":
            out = child_memory(contender, url, Path(folder), rest[0] == "1")
        else:
            out = child_throughput(contender, url, Path(folder), int(rest[0]), int(rest[1]))
        print(json.dumps(out))
        return

    sys.path.insert(0, str(HERE))
    import logging_bench as lb

    from tradelog._logs.db_sink import REPLAY_GROUP
    from tradelog.config import Settings

    quick = "1" if args.quick else "0"
    total = args.events or (20_000 if args.quick else 40_000)
    threads = [int(t) for t in args.threads.split(",")]
    print(f"start: {_load()}")
    with tempfile.TemporaryDirectory(prefix="tradelog-caller-bench-") as raw_folder:
        folder = Path(raw_folder)
        databases: list[tuple[str, Any]] = [("sqlite", lb.sqlite_database(folder))]
        if not args.no_postgres:
            databases.append(("postgresql", lb.postgres_database(args.pg_url, "caller")))
        urls: dict[str, str] = {}
        contexts = []
        for backend, database in databases:
            urls[backend] = database.__enter__()
            contexts.append(database)
        try:
            env = {"BENCH_USER_ID": str(lb._prepare(urls["sqlite"]))}
            caller = {
                name: _run_child("caller", name, urls["sqlite"], raw_folder, quick, env=env)
                for name in ("structlog", "tradelog", "tradelog-process")
            }
            memory = {
                name: _run_child("memory", name, urls["sqlite"], raw_folder, quick, env=env)
                for name in ("structlog", "tradelog")
            }
            rates: dict[tuple[str, int], float] = {}
            for count in threads:
                out = _run_child(
                    "throughput", "structlog", "-", raw_folder, str(count), str(total), env=env
                )
                rates[("structlog", count)] = out["events"] / out["elapsed"]
                for backend, url in urls.items():
                    for mode in MODES:
                        env = {"BENCH_USER_ID": str(lb._prepare(url))}
                        out = _run_child(
                            "throughput",
                            _CONTENDER[mode],
                            url,
                            raw_folder,
                            str(count),
                            str(total),
                            env=env,
                        )
                        assert lb._count(url) == out["events"], "rows missing"
                        rates[(f"{backend} {mode}", count)] = out["events"] / out["elapsed"]
            drains: list[tuple[str, float, Any]] = []
            spreads: dict[str, list[float]] = {}
            parts: dict[str, Any] = {}
            convoy: dict[str, dict[str, float]] = {}
            unindexed: dict[tuple[str, int], float] = {}
            ceilings: dict[str, dict[str, float]] = {}
            batch_size = Settings.from_env().batch_size
            runs = 3 if args.quick else args.drain_runs
            for backend, url in urls.items():
                drains.extend(_drains(lb, backend, url, folder, total, batch_size, runs, spreads))
                parts[backend] = lb.drain_parts(url, folder, total)
                convoy[backend] = _convoy(lb, url, batch_size)
                ceilings[backend] = {
                    str(size): lb.bench_raw(backend, url, total, size)[0].drain or 0.0
                    for size in (batch_size, batch_size * REPLAY_GROUP)
                }
                if backend == "postgresql":
                    server = _server_copy(lb, url, max(total, 100_000))
                    if server is not None:
                        ceilings[backend]["server-side"] = server
            if "postgresql" in urls:
                # Last, as it changes the schema: the same runs without the trigram indexes.
                unindexed = _without_search_index(
                    lb, urls["postgresql"], raw_folder, threads, total
                )
                server = _server_copy(lb, urls["postgresql"], max(total, 100_000))
                if server is not None:
                    ceilings["postgresql"]["server-side, search index off"] = server
        finally:
            for database in reversed(contexts):
                database.__exit__(None, None, None)
    columns = [f"{backend} {mode}" for backend in urls for mode in MODES]
    _print(caller, memory, (rates, threads, columns), (drains, spreads, runs), total)
    _print_convoy(convoy, batch_size)
    _print_ceilings(ceilings, rates[("structlog", 1)])
    _print_parts(parts, drains, total)
    if unindexed:
        _print_unindexed(unindexed, rates, threads, total)
    print(f"end: {_load()}")


def _without_search_index(
    lb: Any, url: str, folder: str, threads: list[int], total: int
) -> dict[tuple[str, int], float]:
    """Section 8: ``tradelog db search-index off``, then section 3's PostgreSQL runs again."""
    from tradelog._db import search_index
    from tradelog._db.engine import create_tradelog_engine

    engine = create_tradelog_engine(url)
    with engine.begin() as connection:
        search_index.drop(connection)
    engine.dispose()
    rates: dict[tuple[str, int], float] = {}
    for count in threads:
        for mode in MODES:
            env = {"BENCH_USER_ID": str(lb._prepare(url))}
            out = _run_child(
                "throughput", _CONTENDER[mode], url, folder, str(count), str(total), env=env
            )
            assert lb._count(url) == out["events"], "rows missing"
            rates[(mode, count)] = out["events"] / out["elapsed"]
    return rates


def _print_unindexed(
    unindexed: dict[tuple[str, int], float],
    rates: dict[tuple[str, int], float],
    threads: list[int],
    total: int,
) -> None:
    print(
        f"\n8. PostgreSQL with the keyword-search indexes off (`tradelog db search-index off`):"
        f" section 3 again,\n   end-to-end events/s ({total:,} events, calls then flush)"
    )
    print(f"{'threads':>7} {'structlog':>10} {'thread':>18} {'process':>18}")
    for count in threads:
        base = rates[("structlog", count)]
        cells = " ".join(
            f"{unindexed[(mode, count)]:>10,.0f} ({unindexed[(mode, count)] / base:.2f}x)"
            for mode in MODES
        )
        print(f"{count:>7} {base:>10,.0f} {cells}")


def _drains(  # noqa: PLR0917 - a bench helper, called once per backend
    lb: Any,
    backend: str,
    url: str,
    folder: Path,
    total: int,
    batch_size: int,
    runs: int,
    spreads: dict[str, list[float]],
) -> list[tuple[str, float, Any]]:
    """Section 4: ``runs`` rounds of the raw driver and each log writer draining ``total``
    rows, in an order rotated every round (the machine's speed drifts within minutes, and a
    contender always run second would carry the drift); medians, and every run in
    ``spreads``."""
    contenders = ["raw", *MODES]
    found: dict[str, list[float]] = {name: [] for name in contenders}
    raw_name = ""
    for run in range(runs):
        shift = run % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            if name == "raw":
                result = lb.bench_raw(backend, url, total, batch_size)[0]
                raw_name = result.name
                found[name].append(result.drain)
            else:
                found[name].append(
                    lb.bench_tradelog_drain(backend, url, folder, total, log_writer=name)
                )
    raw = lb.Result(backend, raw_name, drain=statistics.median(found["raw"]))
    spreads[f"{backend} raw"] = found["raw"]
    out = []
    for mode in MODES:
        spreads[f"{backend} {mode}"] = found[mode]
        out.append((f"{backend} {mode}", statistics.median(found[mode]), raw))
    return out


def _server_copy(lb: Any, url: str, count: int) -> float | None:
    """Rows/s of ``COPY service_logs FROM 'file'``: PostgreSQL reading built rows from a file
    itself, no client in the loop - what one server backend can take, whoever sends. None
    when the role may not read server files."""
    import psycopg
    from sqlalchemy.engine import make_url

    user_id = lb._prepare(url)
    handle, name = tempfile.mkstemp(prefix="tradelog-bench-", suffix=".tsv", dir="/tmp")
    try:
        with os.fdopen(handle, "w") as out:
            for i in range(count):
                stamp = f"2026-01-15 09:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}"
                out.write(f'{user_id}\tINFO\tbench\torder placed\t{{"qty":50}}\t{stamp}000\n')
        os.chmod(name, 0o644)  # the server reads it as its own OS user
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute("SET TIME ZONE 'UTC'")
            start = time.perf_counter()
            connection.execute(
                f"COPY service_logs (user_id, level, module, message, context, timestamp) "
                f"FROM '{name}'"
            )
            elapsed = time.perf_counter() - start
    except psycopg.Error:
        return None
    finally:
        os.unlink(name)
    lb._prepare(url)  # empty the table again
    return count / elapsed


def _spin(stop: threading.Event) -> None:
    """Run Python without pause until ``stop`` is set (never waits, so never lets go of
    the GIL on its own)."""
    count = 0
    while not stop.is_set():
        count += 1


def _convoy(lb: Any, url: str, batch_size: int) -> dict[str, float]:
    """Section 5: rows/s of tradelog's inserter on one thread, alone and beside one thread
    running Python without pause (as a caller logging flat out does), a batch per
    transaction and :data:`REPLAY_GROUP` batches per transaction (as a spool replay)."""
    from tradelog._db.engine import Engines
    from tradelog._logs.batch import new_batch
    from tradelog._logs.db_sink import REPLAY_GROUP
    from tradelog._logs.inserters import make_inserter

    user_id = lb._prepare(url)
    engines = Engines(url, writer_timeout=10.0)
    inserter = make_inserter(engines.log_writer(), lock_timeout=10.0)
    row = (user_id, "INFO", "bench", "order placed", '{"symbol":"NIFTY","qty":50}')
    out: dict[str, float] = {}
    try:
        for busy in (False, True):
            for group in (1, REPLAY_GROUP):
                stop = threading.Event()

                spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
                if busy:
                    spinner.start()
                rows = 0
                start = time.perf_counter()
                while time.perf_counter() - start < 1.0:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
                    batches = [new_batch([(*row, stamp)] * batch_size) for _ in range(group)]
                    if group == 1:
                        inserter.insert(batches[0].rows, batch_id=batches[0].batch_id)
                    else:
                        assert inserter.insert_together(batches)
                    rows += batch_size * group
                elapsed = time.perf_counter() - start
                stop.set()
                if busy:
                    spinner.join()
                out[f"{'busy' if busy else 'alone'} {group}"] = rows / elapsed
    finally:
        inserter.close()
        engines.dispose()
    return out


def _print(
    caller: dict[str, dict[str, Any]],
    memory: dict[str, dict[str, Any]],
    throughput: tuple[dict[tuple[str, int], float], list[int], list[str]],
    drained: tuple[list[tuple[str, float, Any]], dict[str, list[float]], int],
    total: int,
) -> None:
    rates, threads, backends = throughput
    drains, spreads, runs = drained
    print("\n1. caller cost, µs per call (tradelog: defaults, console on, stderr a pipe; SQLite;")
    print("   last column: the same with log_writer=process)")
    print(
        f"{'event':<13} {'structlog p50/p99/mean':>26} {'tradelog p50/p99/mean':>26} "
        f"{'p50 ratio':>9} {'process p50/p99':>17}"
    )
    for case in ("100 B", "4 MB", "10,000 keys", "filtered"):
        ours, theirs = caller["tradelog"][case], caller["structlog"][case]
        helper = caller["tradelog-process"][case]
        print(
            f"{case:<13} {theirs['p50']:>8.1f} {theirs['p99']:>8.1f} {theirs['mean']:>8.1f} "
            f"{ours['p50']:>8.1f} {ours['p99']:>8.1f} {ours['mean']:>8.1f} "
            f"{ours['p50'] / theirs['p50']:>6.2f}x {helper['p50']:>8.1f} {helper['p99']:>8.1f}"
        )
    print("   targets: 100 B <= 1.3x structlog; filtered <= 1.0x (ratio of p50)")
    print("\n2. RSS (MiB) before and after each of 3 rounds of distinct wide events (50 keys,")
    print("   every shape new; flushed after each round)")
    for name, out in memory.items():  # log_writer=thread
        rounds = " -> ".join(f"{value:.1f}" for value in out["after"])
        print(f"{name:<10} {out['events']:,} events per round: {out['before']:.1f} -> {rounds}")
    print(f"\n3. sustained end-to-end events/s ({total:,} events, calls then flush)")
    print(f"{'threads':>7} {'structlog':>10} " + " ".join(f"{b:>18}" for b in backends))
    print("   (thread: the default log_writer; process: log_writer=process)")
    for count in threads:
        base = rates[("structlog", count)]
        cells = " ".join(
            f"{rates[(b, count)]:>10,.0f} ({rates[(b, count)] / base:.2f}x)" for b in backends
        )
        print(f"{count:>7} {base:>10,.0f} {cells}")
    print("   target: >= 0.7x structlog JSON-to-file")
    print(
        f"\n4. writer-only drain, rows/s ({total:,} rows queued, then the writer started;"
        f" process: the helper started before the clock);\n   median of {runs} rounds, the"
        " contenders' order rotated every round, every run in brackets"
    )
    for backend, ours, raw in drains:
        mine = ", ".join(f"{value / 1000:.0f}k" for value in spreads[backend])
        print(
            f"{backend:<19} tradelog {ours:>9,.0f} [{mine}]   {ours / raw.drain:.2f}x "
            "(target >= 0.7x)"
        )
    for name in dict.fromkeys(backend.split()[0] for backend, _ours, _raw in drains):
        raw = next(raw for backend, _ours, raw in drains if backend.startswith(name))
        theirs = ", ".join(f"{value / 1000:.0f}k" for value in spreads[f"{name} raw"])
        print(f"{name:<19} {raw.name} {raw.drain:>9,.0f} [{theirs}]")


def _print_convoy(convoy: dict[str, dict[str, float]], batch_size: int) -> None:
    """Section 5: why one process's writer falls behind while a caller logs flat out."""
    from tradelog._logs.db_sink import REPLAY_GROUP

    print(
        f"\n5. tradelog's inserter on one thread, rows/s: alone, and beside one thread running "
        f"Python without pause\n   (a caller logging flat out); {batch_size} rows a "
        f"transaction, and {REPLAY_GROUP} x {batch_size} (a spool replay)"
    )
    for backend, out in convoy.items():
        cells = "  ".join(
            f"{label} {out[f'{label} {group}']:>10,.0f}"
            for group in (1, REPLAY_GROUP)
            for label in ("alone", "busy")
        )
        print(f"{backend:<11} {cells}")
    print(
        "   each driver call lets go of the GIL; taking it back from a thread that never\n"
        "   waits takes up to the switch interval (5 ms): the calls per row set the pace"
    )


def _print_ceilings(ceilings: dict[str, dict[str, float]], structlog_rate: float) -> None:
    """Section 6: the raw driver's own rate against structlog's, at two batch sizes, and
    (PostgreSQL) the server reading the rows from a file itself."""
    print(
        "\n6. the raw driver alone on one connection, rows already built, against structlog's "
        "1-thread end-to-end rate\n   (server-side: COPY FROM a file the server reads itself, "
        "no client in the loop)"
    )
    for backend, sizes in ceilings.items():
        for size, rate in sizes.items():
            label = f"{size} rows a batch" if size.isdigit() else size
            print(f"{backend:<11} {label:<31} {rate:>9,.0f}/s = {rate / structlog_rate:.2f}x")


def _print_parts(parts: dict[str, Any], drains: list[tuple[str, float, Any]], total: int) -> None:
    """Section 7: the writer's stages timed alone, and the one-process bound they give."""
    print(
        f"\n7. the writer's stages, each alone on one thread over {total:,} queued records "
        "(µs per row), and the drain they allow when they run one after another"
    )
    raw = {backend.split()[0]: result for backend, _ours, result in drains}
    for backend, part in parts.items():
        bound = part.serial_rate
        print(
            f"{backend:<11} build {part.build:5.2f}  files {part.files:5.2f}  "
            f"insert {part.insert:5.2f}  -> {bound:>9,.0f} rows/s = "
            f"{bound / raw[backend].drain:.2f}x {raw[backend].name}"
        )


if __name__ == "__main__":
    main()
