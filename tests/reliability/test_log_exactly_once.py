"""4 producers x 10,000 events through network faults and a locked SQLite file: exactly 40,000
rows every time - none lost, none twice.

The faults come from :class:`tests.support.tcp_proxy.TcpProxy` between the writer and
PostgreSQL: connection resets, a black hole, a slow network, commits whose acknowledgement is
lost (the server committed, the client cannot know), and a stall during which the producers
finish and the process stops - the stuck batch is spooled and commits after all when the
network comes back, and the replay skips it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.tcp_proxy import TcpProxy
from tradelog._logs.rows import DbRow
from tradelog._logs.spool import Spool

# Untraced by coverage (no_cover): 40,000 events a case repeat paths the unit and integration
# tests cover; tracing them cost more CPU than the rest of the test.
pytestmark = [pytest.mark.slow, pytest.mark.no_cover]

PRODUCERS = 4
EVENTS = 10_000
TOTAL = PRODUCERS * EVENTS
REPO = Path(__file__).resolve().parents[2]


def _produce(user_id: int, *, during: Callable[[], None] | None = None) -> None:
    """Four threads log 10,000 events each; ``during`` runs once they are a quarter through."""
    quarter = threading.Barrier(PRODUCERS + 1)

    def producer(index: int) -> None:
        log = tradelog.get_logger("reliability")
        for event in range(EVENTS):
            if event == EVENTS // 4:
                quarter.wait(60)
            log.info(f"p{index} e{event}", user_id=user_id, n=event)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(PRODUCERS)]
    for thread in threads:
        thread.start()
    quarter.wait(60)
    if during is not None:
        during()
    for thread in threads:
        thread.join(120)


def _assert_exactly_once(db: MigratedDatabase) -> None:
    counts = db.rows(
        "SELECT count(*) AS rows, count(DISTINCT message) AS distinct_rows FROM service_logs"
    )[0]
    assert counts == {"rows": TOTAL, "distinct_rows": TOTAL}
    assert db.scalar("SELECT count(*) FROM service_logs WHERE message LIKE 'p3 e9999'") == 1


def _configure(url: str, log_dir: Path) -> tradelog.Runtime:
    return tradelog.configure(
        database_url=url,
        log_dir=log_dir,
        console=False,
        db_write_timeout=2.0,
        flush_interval=0.05,
        schema_check="off",
    )


def _fault(proxy: TcpProxy, mode: str, seconds: float, **options: Any) -> Callable[[], None]:
    def run() -> None:
        proxy.set_mode(mode, **options)
        time.sleep(seconds)
        proxy.set_mode("pass")

    return run


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(
    "fault",
    [
        ("pass", 0.0, {}),
        ("reset", 1.5, {}),
        ("black_hole", 2.0, {}),
        ("delay", 1.5, {"delay": 0.05}),
        ("ack_loss", 3.0, {"hold": 0.2, "times": 5, "after": b"COPY"}),
    ],
    ids=["pass", "reset", "black_hole", "delay", "ack_loss"],
)
def test_every_event_lands_once_through_a_network_fault(
    db: MigratedDatabase,
    users: dict[str, int],
    proxy: TcpProxy,
    tmp_path: Path,
    fault: tuple[str, float, dict[str, Any]],
) -> None:
    """Reset, black hole, delay, lost acknowledgements: 40,000 rows, no duplicate."""
    mode, seconds, options = fault
    runtime = _configure(proxy.url(db.url), tmp_path)
    _produce(users["alice"], during=_fault(proxy, mode, seconds, **options))
    assert runtime.flush(120)
    stats = runtime.stats()
    tradelog.shutdown()
    _assert_exactly_once(db)
    assert stats["dropped"] == 0
    if mode == "ack_loss":
        assert proxy.acks_lost >= 1
        # every lost acknowledgement hid a committed batch; its replay was recognised
        assert stats["duplicates"] > 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_event_lands_once_while_sqlite_is_locked(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Another connection holds SQLite's write lock for 3 s: 40,000 rows, no duplicate."""
    path = make_url(db.url).database
    assert path is not None
    runtime = tradelog.configure(
        database_url=db.url, log_dir=tmp_path, console=False, db_write_timeout=0.5
    )
    blocker = sqlite3.connect(path, isolation_level=None)

    def hold_the_lock() -> None:
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(3.0)
        blocker.execute("COMMIT")

    try:
        _produce(users["alice"], during=hold_the_lock)
    finally:
        blocker.close()
    assert runtime.flush(120)
    assert runtime.stats()["spooled"] > 0
    tradelog.shutdown()
    _assert_exactly_once(db)


_STALL_CHILD = """
import sys, threading
import tradelog
url, log_dir, user_id, producers, events = sys.argv[1:6]
tradelog.configure(database_url=url, log_dir=log_dir, console=False, db_write_timeout=2.0,
                   flush_interval=0.05, schema_check="off")
log = tradelog.get_logger("reliability")
def produce(index):
    for event in range(int(events)):
        log.info(f"p{index} e{event}", user_id=int(user_id), n=event)
threads = [threading.Thread(target=produce, args=(i,)) for i in range(int(producers))]
for t in threads: t.start()
for t in threads: t.join()
print("stopped", tradelog.shutdown(3.0), flush=True)
"""


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("stall", ["before_commit", "after_commit"])
def test_a_stall_while_the_producers_exit_loses_nothing_and_duplicates_nothing(
    db: MigratedDatabase, users: dict[str, int], proxy: TcpProxy, tmp_path: Path, stall: str
) -> None:
    """The network stalls mid-run (``before_commit``: everything held; ``after_commit``: the
    COMMIT of a batch reaches the server, its answer never comes back); the producers finish
    and the process stops with an insert stuck: what that insert holds is spooled. The next
    writer replays the spool - skipping the batch that did commit: 40,000 rows."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _STALL_CHILD,
            proxy.url(db.url),
            str(tmp_path),
            str(users["alice"]),
            str(PRODUCERS),
            str(EVENTS),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while db.scalar("SELECT count(*) FROM service_logs") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if stall == "before_commit":
        proxy.set_mode("stall")
    else:
        proxy.set_mode("ack_loss", hold=60.0, times=1, after=b"COPY")
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "stopped False" in out  # the stuck insert was given up on
    assert list((tmp_path / "_spool").glob("spool-*.jsonl"))
    proxy.set_mode("pass")  # the held bytes flow: the stuck COPY may commit now
    time.sleep(1.0)
    runtime = _configure(db.url, tmp_path)  # adopts the child's spool
    assert runtime.flush(120)
    stats = runtime.stats()
    tradelog.shutdown()
    _assert_exactly_once(db)
    if stall == "after_commit":
        assert proxy.acks_lost == 1
        assert stats["duplicates"] > 0  # the stuck batch had committed: skipped


_REPLAY_CHILD = """
import sys
import tradelog
url, log_dir = sys.argv[1:3]
runtime = tradelog.configure(database_url=url, log_dir=log_dir, console=False, schema_check="off")
runtime.flush(120)  # adopts the orphan spool and replays it
"""


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_replay_killed_with_sigkill_duplicates_nothing(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A process replaying a 40,000-row spool is killed with SIGKILL part-way (between an
    insert and its saved offset, or anywhere else); the next writer replays the rest: exactly
    40,000 rows."""
    spool = Spool(tmp_path / "_spool")
    for start in range(0, TOTAL, 500):
        rows: list[DbRow] = [
            (users["alice"], "INFO", "replay", f"p0 e{n}", None, "2026-01-01 00:00:00.000000")
            for n in range(start, start + 500)
        ]
        spool.append(rows)
    spool.close()  # rows pending: the file stays, an orphan for the next writer
    child = subprocess.Popen(
        [sys.executable, "-c", _REPLAY_CHILD, db.url, str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        landed = int(str(db.scalar("SELECT count(*) FROM service_logs")))
        if landed >= TOTAL // 4:
            break
        time.sleep(0.005)
    child.kill()
    child.wait(30)
    assert 0 < landed < TOTAL  # killed during the replay
    runtime = _configure(db.url, tmp_path)
    assert runtime.flush(120)
    tradelog.shutdown()
    counts = db.rows(
        "SELECT count(*) AS rows, count(DISTINCT message) AS distinct_rows FROM service_logs"
    )[0]
    assert counts == {"rows": TOTAL, "distinct_rows": TOTAL}
