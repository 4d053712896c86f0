"""Caller cost and sustained throughput of tradelog at its DEFAULT settings, next to structlog.

    python bench/caller_bench.py [--quick] [--no-postgres] [--pg-url URL] [--threads 1,4,8]
                                 [--rounds 3] [--drain-runs 5]

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
   ``service_logs`` and the per-user files (tradelog on SQLite and PostgreSQL). The median of
   ``--rounds`` rounds (3), the contenders' order rotated every round; every run is printed.
4. **writer-only drain** against the raw driver's bulk path (sqlite3 ``executemany``, psycopg
   ``COPY``), from ``bench/logging_bench.py``: the median of ``--drain-runs`` rounds (5), the
   contenders' order rotated every round.
5. **the GIL convoy**: tradelog's inserter alone, and beside one thread running Python without
   pause, a batch per transaction and a spool replay's group of batches.
6. the raw driver's own rate (and, on PostgreSQL, the server reading the rows from files
   itself on one, two and four connections, with and without the keyword-search indexes, and the
   CPU its processes used) against structlog's 1-thread rate: what the database can take
   whoever sends, and how much of the two cores the 0.7x target leaves to the client.
7. **the writer's stages** timed alone over the same queued records (build, files, insert):
   where a drained row's time goes, and the drain one process reaches when they do not overlap.
8. section 3's PostgreSQL runs again (with structlog in every round) after
   ``tradelog db search-index off`` (the trigram indexes cost every insert; keyword searches
   then read the user's rows).

``os.getloadavg()`` is printed before and after: on a shared machine the figures are only
comparable within one run. ``--quick`` runs smaller counts (about a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


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
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=None,
        help="rounds of the end-to-end runs (sections 3 and 8; default 3, 1 with --quick);"
        " medians are printed",
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
    rounds = args.rounds or (1 if args.quick else 3)
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
            contenders = ["structlog", *(f"{backend} {mode}" for backend in urls for mode in MODES)]
            runs = _rounds(
                contenders,
                threads,
                rounds,
                lambda name, count: _throughput(
                    lb, name, urls, raw_folder, count=count, total=total
                ),
            )
            rates = {key: statistics.median(values) for key, values in runs.items()}
            drains: list[tuple[str, float, Any]] = []
            spreads: dict[str, list[float]] = {}
            parts: dict[str, Any] = {}
            small_parts: Any = None
            convoy: dict[str, dict[str, float]] = {}
            unindexed: dict[tuple[str, int], list[float]] = {}
            ceilings: dict[str, dict[str, float]] = {}
            servers: list[tuple[str, ServerCopy]] = []
            batch_size = Settings.from_env().batch_size
            drain_runs = 3 if args.quick else args.drain_runs
            for backend, url in urls.items():
                drains.extend(
                    _drains(lb, backend, url, folder, total, batch_size, drain_runs, spreads)
                )
                parts[backend] = lb.drain_parts(url, folder, total)
                if backend == "postgresql":  # section 6's budget: section 3's own event
                    small_parts = lb.drain_parts(url, folder, total, SMALL)
                convoy[backend] = _convoy(lb, url, batch_size)
                ceilings[backend] = {
                    str(size): lb.bench_raw(backend, url, total, size)[0].drain or 0.0
                    for size in (batch_size, batch_size * REPLAY_GROUP)
                }
                if backend == "postgresql":
                    servers.extend(_server_copies(lb, url, total, ""))
            if "postgresql" in urls:
                # Last, as it changes the schema: the same runs without the trigram indexes.
                unindexed = _without_search_index(
                    lb, urls["postgresql"], raw_folder, threads, (total, rounds)
                )
                servers.extend(_server_copies(lb, urls["postgresql"], total, ", search index off"))
        finally:
            for database in reversed(contexts):
                database.__exit__(None, None, None)
    columns = [f"{backend} {mode}" for backend in urls for mode in MODES]
    _print(caller, memory, (runs, threads, columns), (drains, spreads, drain_runs), total)
    _print_convoy(convoy, batch_size)
    least = None
    if small_parts is not None:
        # The client's least work per row: the call itself (its p50 wall time), building the
        # row and its file line, for section 3's event.
        least = caller["tradelog"]["100 B"]["p50"] + small_parts.build + small_parts.files
    base = 1 if 1 in threads else threads[0]
    _print_ceilings(ceilings, servers, (base, rates[("structlog", base)], least), total)
    _print_parts(parts, drains, total)
    if unindexed:
        _print_unindexed(unindexed, threads, total)
    print(f"end: {_load()}")


def _throughput(
    lb: Any, name: str, urls: dict[str, str], folder: str, *, count: int, total: int
) -> float:
    """Events/s of one section-3 run in a fresh child: ``structlog``, or ``"BACKEND MODE"``
    (tradelog on that database with that ``log_writer``), its table emptied first."""
    if name == "structlog":
        out = _run_child("throughput", "structlog", "-", folder, str(count), str(total), env={})
        return float(out["events"] / out["elapsed"])
    backend, mode = name.split()
    url = urls[backend]
    env = {"BENCH_USER_ID": str(lb._prepare(url))}
    out = _run_child("throughput", _CONTENDER[mode], url, folder, str(count), str(total), env=env)
    assert lb._count(url) == out["events"], "rows missing"
    return float(out["events"] / out["elapsed"])


def _rounds(
    contenders: list[str],
    threads: list[int],
    rounds: int,
    run: Callable[[str, int], float],
) -> dict[tuple[str, int], list[float]]:
    """Every contender at every thread count, ``rounds`` times, the contenders' order
    rotated every round (the machine's speed drifts within minutes): every run's rate."""
    found: dict[tuple[str, int], list[float]] = {}
    for count in threads:
        for number in range(rounds):
            shift = number * len(contenders) // rounds % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                found.setdefault((name, count), []).append(run(name, count))
    return found


def _without_search_index(
    lb: Any, url: str, folder: str, threads: list[int], sizes: tuple[int, int]
) -> dict[tuple[str, int], list[float]]:
    """Section 8: ``tradelog db search-index off``, then section 3's PostgreSQL runs again,
    with structlog in every round."""
    from tradelog._db import search_index
    from tradelog._db.engine import create_tradelog_engine

    total, rounds = sizes
    engine = create_tradelog_engine(url)
    with engine.begin() as connection:
        search_index.drop(connection)
    engine.dispose()
    urls = {"postgresql": url}
    contenders = ["structlog", *(f"postgresql {mode}" for mode in MODES)]
    return _rounds(
        contenders,
        threads,
        rounds,
        lambda name, count: _throughput(lb, name, urls, folder, count=count, total=total),
    )


def _print_unindexed(
    unindexed: dict[tuple[str, int], list[float]], threads: list[int], total: int
) -> None:
    rounds = len(unindexed[("structlog", threads[0])])
    print(
        f"\n8. PostgreSQL with the keyword-search indexes off (`tradelog db search-index off`):"
        f" section 3 again,\n   end-to-end events/s ({total:,} events, calls then flush),"
        f" median of {rounds} round(s), structlog in every round"
    )
    print(f"{'threads':>7} {'structlog':>10} {'thread':>18} {'process':>18}")
    for count in threads:
        base = statistics.median(unindexed[("structlog", count)])
        cells = " ".join(
            f"{rate:>10,.0f} ({rate / base:.2f}x)"
            for rate in (
                statistics.median(unindexed[(f"postgresql {mode}", count)]) for mode in MODES
            )
        )
        print(f"{count:>7} {base:>10,.0f} {cells}")
    _print_runs(unindexed, threads)


def _print_runs(runs: dict[tuple[str, int], list[float]], threads: list[int]) -> None:
    """Every run behind the medians, thousands of events/s."""
    print("   every run, thousands of events/s:")
    names = list(dict.fromkeys(name for name, _count in runs))
    for count in threads:
        cells = "  ".join(
            f"{name} [{', '.join(f'{rate / 1000:.0f}' for rate in runs[(name, count)])}]"
            for name in names
        )
        print(f"   {count} thread{'s' if count > 1 else ''}: {cells}")


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


@dataclasses.dataclass
class ServerCopy:
    """PostgreSQL reading built rows from files itself (see :func:`_server_copy`)."""

    connections: int
    rate: float
    """Rows/s, from the first ``COPY`` started to the last one done."""
    cpu_per_row: float | None
    """CPU seconds the copying server processes used, per row (None: not on this machine)."""


_LOCAL_HOSTS: Final = frozenset({"", "localhost", "127.0.0.1", "::1"})


def _server_is_here(url: str) -> bool:
    """Whether the server of ``url`` runs on this machine (a loopback address or a socket), so
    that its processes can be found in ``/proc``."""
    from sqlalchemy.engine import make_url

    host = make_url(url).host or ""
    return host in _LOCAL_HOSTS or host.startswith("/")


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of the PostgreSQL process ``pid`` on this machine, or None
    (not readable, or not a PostgreSQL process: a server in a container has other pids)."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            if not handle.read().startswith("postgres"):
                return None
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_copy(lb: Any, url: str, count: int, connections: int = 1) -> ServerCopy | None:
    """``COPY service_logs FROM 'file'`` on ``connections`` connections at once, ``count``
    rows split between them: PostgreSQL reading the rows section 3 writes from files itself,
    no client in the loop - what the server can take, whoever sends. The CPU is that of the
    server processes doing the copies (read from ``/proc`` when the server runs here). None
    when the role may not read server files."""
    import psycopg
    from sqlalchemy.engine import make_url

    user_id = lb._prepare(url)
    context = json.dumps(SMALL, separators=(",", ":"))
    names: list[str] = []
    opened: list[Any] = []
    try:
        share = count // connections
        for _ in range(connections):
            handle, name = tempfile.mkstemp(prefix="tradelog-bench-", suffix=".tsv", dir="/tmp")
            names.append(name)
            with os.fdopen(handle, "w") as out:
                for i in range(share):
                    stamp = (
                        f"2026-01-15 09:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}"
                    )
                    out.write(f"{user_id}\tINFO\tbench\torder placed\t{context}\t{stamp}000\n")
            os.chmod(name, 0o644)  # the server reads it as its own OS user
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        for _ in range(connections):
            connection = psycopg.connect(plain, autocommit=True)
            opened.append(connection)
            connection.execute("SET TIME ZONE 'UTC'")
        here = _server_is_here(url)
        pids = [connection.info.backend_pid for connection in opened]
        failed: list[BaseException] = []

        def copy(connection: Any, name: str) -> None:
            try:
                connection.execute(
                    f"COPY service_logs (user_id, level, module, message, context, timestamp) "
                    f"FROM '{name}'"
                )
            except Exception as exc:
                failed.append(exc)

        workers = [
            threading.Thread(target=copy, args=pair) for pair in zip(opened, names, strict=True)
        ]
        before = [_process_cpu(pid) if here else None for pid in pids]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
        after = [_process_cpu(pid) if here else None for pid in pids]
        if failed:
            return None
    except psycopg.Error:
        return None
    finally:
        for connection in opened:
            connection.close()
        for name in names:
            os.unlink(name)
    lb._prepare(url)  # empty the table again
    rows = share * connections
    cpu: float | None = None
    if None not in before and None not in after:
        cpu = sum(
            a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None
        )
    return ServerCopy(connections, rows / elapsed, None if cpu is None else cpu / rows)


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
    throughput: tuple[dict[tuple[str, int], list[float]], list[int], list[str]],
    drained: tuple[list[tuple[str, float, Any]], dict[str, list[float]], int],
    total: int,
) -> None:
    runs, threads, backends = throughput
    rates = {key: statistics.median(values) for key, values in runs.items()}
    drains, spreads, drain_runs = drained
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
    round_count = len(runs[("structlog", threads[0])])
    print(
        f"\n3. sustained end-to-end events/s ({total:,} events, calls then flush), median of"
        f" {round_count} round(s), the contenders' order rotated every round"
    )
    print(f"{'threads':>7} {'structlog':>10} " + " ".join(f"{b:>18}" for b in backends))
    print("   (thread: the default log_writer; process: log_writer=process)")
    for count in threads:
        base = rates[("structlog", count)]
        cells = " ".join(
            f"{rates[(b, count)]:>10,.0f} ({rates[(b, count)] / base:.2f}x)" for b in backends
        )
        print(f"{count:>7} {base:>10,.0f} {cells}")
    print("   target: >= 0.7x structlog JSON-to-file")
    _print_runs(runs, threads)
    print(
        f"\n4. writer-only drain, rows/s ({total:,} rows queued, then the writer started;"
        f" process: the helper started before the clock);\n   median of {drain_runs} rounds, the"
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


def _server_copies(lb: Any, url: str, total: int, label: str) -> list[tuple[str, ServerCopy]]:
    """Section 6's server-side rows: one connection, then two and four at once (``label``
    follows each row's name)."""
    found = []
    for connections in (1, 2, 4):
        copied = _server_copy(lb, url, max(total, 100_000), connections)
        if copied is not None:
            plural = "s" if connections > 1 else ""
            found.append((f"server-side, {connections} connection{plural}{label}", copied))
    return found


def _print_ceilings(
    ceilings: dict[str, dict[str, float]],
    servers: list[tuple[str, ServerCopy]],
    rates: tuple[int, float, float | None],
    total: int,
) -> None:
    """Section 6: the raw driver's own rate against structlog's, at two batch sizes, and
    (PostgreSQL) the server reading the rows from files itself, with the CPU that took, and
    the CPU the 0.7x target leaves: ``rates`` is a thread count, structlog's rate at it and
    the client's least work per row in µs (the call, the row built, the file line), when
    measured."""
    base, structlog_rate, least = rates
    print(
        "\n6. the raw driver alone on one connection, rows already built, against structlog's "
        f"{base}-thread end-to-end rate\n   (server-side: COPY FROM files the server reads itself, "
        "no client in the loop; cpu: the copying\n   server processes' CPU seconds for "
        f"{total:,} rows)"
    )
    for backend, sizes in ceilings.items():
        for size, rate in sizes.items():
            print(
                f"{backend:<11} {f'{size} rows a batch':<44} {rate:>9,.0f}/s = "
                f"{rate / structlog_rate:.2f}x"
            )
    for name, copied in servers:
        cpu = "" if copied.cpu_per_row is None else f"   cpu {copied.cpu_per_row * total:.2f} s"
        print(
            f"{'postgresql':<11} {name:<44} {copied.rate:>9,.0f}/s = "
            f"{copied.rate / structlog_rate:.2f}x{cpu}"
        )
    if not servers:
        return
    window = total / (0.7 * structlog_rate)
    cores = os.cpu_count() or 1
    print(
        f"   0.7x structlog's {base}-thread rate: {total:,} rows within {window:.2f} s, "
        f"{cores * window:.2f} CPU seconds on {cores} cores for everything"
    )
    if least is None:
        return
    client = least * total / 1e6
    print(
        f"   the client's least work (the call, section 1's p50; build and files, as section 7"
        " times them, of section 3's event):"
        f" {client:.2f} CPU seconds"
    )
    for name, copied in servers:
        if copied.cpu_per_row is None or "off" in name:
            continue
        need = copied.cpu_per_row * total + client
        print(
            f"   with the {name}: {need:.2f} CPU seconds at least ="
            f" {need / (cores * window):.0%} of what {cores} cores give in that time"
        )


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
