"""Section 3's one-thread PostgreSQL run with the helper process writing over several connections.

    python bench/two_connection_bench.py [--pg-url URL] [--rounds 5] [--connections 2]
                                         [--events 40000]

``caller_bench.py`` section 6 shows that one connection cannot take section 3's rows at 0.7x
structlog's one-thread rate: the server alone, copying them from files, is slower than that.
This is the experiment for more connections. It copies the ``tradelog`` package into a temporary
folder and changes the copy's helper process (``log_writer=process``) so that each of its
transactions of several batches is split over ``--connections`` connections at once, each part
claiming its own batches' ids as the inserter always does. Nothing else changes. tradelog does
not ship this: it gives up the one-connection order that the spool and the hand-over rely on.

Contenders, each in a fresh child process, in an order rotated every round: structlog
(JSON to a file, as in ``caller_bench.py``), tradelog's default writer (``thread``), the
helper process as shipped (``process``), and the changed copy (``process, N connections``).
Every child logs one event and flushes before its clock starts (the helper is then running),
then one thread logs ``--events`` times section 3's event as fast as it can, then flushes.

For each run it also reads, from ``/proc``, the CPU seconds used during that window: by the
whole machine, by the caller's process, by its helper process, and by the PostgreSQL server's
processes (only when the server runs on this machine). The table sets them beside what the
machine's cores hold in the window the 0.7x target allows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import caller_bench as cb  # noqa: E402 - bench/ is on the path only now
import logging_bench as lb  # noqa: E402

CONTENDERS: Final = ("structlog", "thread", "process", "split")
TARGET: Final = 0.7

_ANCHOR: Final = (
    "    inserter = make_inserter(engines.log_writer(), lock_timeout=settings.db_write_timeout)\n"
)
_SPLIT: Final = """\
    # The experiment's change (bench/two_connection_bench.py): more connections, each with
    # its own one-connection engine, and every transaction of several batches split over them.
    import atexit
    import concurrent.futures

    _connections = {connections}
    _more = [
        make_inserter(
            Engines(
                settings.database_url,
                writer_timeout=settings.db_write_timeout,
                schema=settings.db_schema,
                bounds=DbBounds(settings.db_connect_timeout, settings.db_statement_timeout),
            ).log_writer(),
            lock_timeout=settings.db_write_timeout,
        )
        for _ in range(_connections - 1)
    ]
    _pool = concurrent.futures.ThreadPoolExecutor(len(_more))
    _first = inserter.insert_together
    _splits = [0, 0]

    def _split(batches):
        _splits[1] += 1
        groups = [list(batches[start::_connections]) for start in range(_connections)]
        groups = [group for group in groups if group]
        if len(groups) < 2:
            return _first(batches)
        _splits[0] += 1
        others = [
            _pool.submit(more.insert_together, group) for more, group in zip(_more, groups[1:])
        ]
        written = _first(groups[0])
        return all([other.result() for other in others]) and written

    def _report():
        with open(os.environ["TRADELOG_BENCH_SPLITS"], "a") as report:
            report.write(f"{{_splits[0]}} {{_splits[1]}}\\n")

    atexit.register(_report)
    inserter.insert_together = _split
"""


def _split_copy(folder: Path, connections: int) -> Path:
    """A copy of the ``tradelog`` package under ``folder`` whose helper splits transactions
    over ``connections`` connections; returns the folder to put first on ``PYTHONPATH``."""
    target = folder / "split"
    shutil.copytree(
        ROOT / "tradelog", target / "tradelog", ignore=shutil.ignore_patterns("__pycache__")
    )
    helper = target / "tradelog" / "_logs" / "helper.py"
    source = helper.read_text()
    assert source.count(_ANCHOR) == 1, "the helper's inserter line changed: update _ANCHOR"
    helper.write_text(source.replace(_ANCHOR, _ANCHOR + _SPLIT.format(connections=connections)))
    return target


# --------------------------------------------------------------------------- child side


def _machine_busy() -> float:
    """CPU seconds the machine has spent not idle (all cores, every process), from boot."""
    with open("/proc/stat") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _pid_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu() -> float:
    """CPU seconds of every process named ``postgres`` on this machine."""
    found = (cb._process_cpu(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return sum(cpu for cpu in found if cpu is not None)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(contender: str, url: str, folder: Path, events: int, server_here: bool) -> dict[str, Any]:
    """One run: warm up, then ``events`` calls from one thread and a flush, with the CPU each
    part of the system used in that window."""
    helper: int | None = None
    if contender == "structlog":
        log, done = cb._setup("structlog", url, folder)
    else:
        import tradelog

        mode = "thread" if contender == "thread" else "process"
        runtime = tradelog.configure(
            database_url=url, log_dir=folder / f"logs-{os.getpid()}", log_writer=mode
        )
        log = tradelog.get_logger("bench").bind(user_id=int(os.environ["BENCH_USER_ID"]))

        def done() -> bool:
            return runtime.flush(600)

        link = getattr(runtime.writer, "link", None)
        log.info("warm up", **cb.SMALL)
        assert done()
        helper = link.pid if link is not None else None
        if contender != "thread":
            assert helper is not None, "the helper process is not running"
    log.info("warm up", **cb.SMALL)
    assert done()
    before = (_machine_busy(), _own_cpu(), _pid_cpu(helper) if helper else 0.0)
    server_before = _server_cpu() if server_here else 0.0
    start = time.perf_counter()
    for _ in range(events):
        log.info("order placed", **cb.SMALL)
    assert done()
    elapsed = time.perf_counter() - start
    after = (_machine_busy(), _own_cpu(), _pid_cpu(helper) if helper else 0.0)
    server_after = _server_cpu() if server_here else 0.0
    return {
        "rate": events / elapsed,
        "elapsed": elapsed,
        "machine": after[0] - before[0],
        "caller": after[1] - before[1],
        "helper": after[2] - before[2],
        "server": server_after - server_before if server_here else None,
    }


# --------------------------------------------------------------------------- parent side


def _run(
    contender: str, url: str, folder: str, args: argparse.Namespace, split: Path
) -> dict[str, Any]:
    env = {**os.environ, "BENCH_USER_ID": str(lb._prepare(url))}
    if contender == "split":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(split), env.get("PYTHONPATH")]))
        env["TRADELOG_BENCH_SPLITS"] = str(Path(folder) / "splits")
    command = [sys.executable, __file__, "--child", contender, url, folder, str(args.events)]
    done = subprocess.run(command, capture_output=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode(errors="replace")[-3000:])
    out = dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))
    if contender != "structlog":
        assert lb._count(url) == args.events + 2, "rows missing"
    if contender == "split":  # the change ran: transactions were split over the connections
        report = Path(folder) / "splits"
        out["splits"] = report.read_text().split()
        report.unlink()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "TRADELOG_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--rounds", type=cb._positive, default=5)
    parser.add_argument("--connections", type=cb._positive, default=2)
    parser.add_argument("--events", type=cb._positive, default=40_000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, url, folder, events = args.child
        here = cb._server_is_here(url)
        print(json.dumps(child(contender, url, Path(folder), int(events), here)))
        return
    if args.connections < 2:
        parser.error("--connections: at least 2")
    print(f"start: {cb._load()}")
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    with (
        tempfile.TemporaryDirectory(prefix="tradelog-two-connections-") as folder,
        lb.postgres_database(args.pg_url, "split") as url,
    ):
        split = _split_copy(Path(folder), args.connections)
        for number in range(args.rounds):
            shift = number * len(CONTENDERS) // args.rounds % len(CONTENDERS)
            for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
                found[name].append(_run(name, url, folder, args, split))
    _print(found, args)
    print(f"end: {cb._load()}")


def _print(found: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    base = statistics.median(run["rate"] for run in found["structlog"])
    window = args.events / (TARGET * base)
    labels = {
        "structlog": "structlog -> file",
        "thread": "tradelog, thread writer (default)",
        "process": "tradelog, helper process",
        "split": f"tradelog, helper process, {args.connections} connections",
    }
    print(
        f"\nOne thread, {args.events:,} events then flush, PostgreSQL; medians of"
        f" {args.rounds} rounds (each run's ratio in brackets).\nCPU seconds used in each run's"
        f" window: the 0.7x target's window is {window:.3f} s, which {cores} cores hold"
        f" {cores * window:.2f} CPU seconds of.\n"
    )
    head = f"{'':44} {'events/s':>9} {'x structlog':>11}  {'machine':>7} {'caller':>6}"
    print(f"{head} {'helper':>6} {'server':>6}  runs")
    for name in CONTENDERS:
        runs = found[name]

        def median(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = [run[key] for run in runs if run[key] is not None]
            return f"{statistics.median(values):.2f}" if values else "-"

        rate = statistics.median(run["rate"] for run in runs)
        each = ", ".join(f"{run['rate'] / base:.2f}" for run in runs)
        helper = median("helper") if name in ("process", "split") else "-"
        print(
            f"{labels[name]:44} {rate:9,.0f} {rate / base:10.2f}x  {median('machine'):>7}"
            f" {median('caller'):>6} {helper:>6} {median('server'):>6}  [{each}]"
        )
    splits = ", ".join(f"{run['splits'][0]} of {run['splits'][1]}" for run in found["split"])
    print(f"\nTransactions the changed helper split over its connections, per run: {splits}.")


if __name__ == "__main__":
    main()
