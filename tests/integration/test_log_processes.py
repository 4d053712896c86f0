"""Several processes logging at once: every event exactly once in the database and the files."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import file_records, running

PROCESSES = 4
EVENTS = 10_000


def _log_events(index: int, users: list[int]) -> None:
    log = tradelog.get_logger("worker", process=index)
    for seq in range(EVENTS):
        log.info(f"p{index} e{seq}", user_id=users[seq % len(users)], seq=seq)


def _spawned(url: str, log_dir: str, index: int, users: list[int]) -> None:
    tradelog.configure(database_url=url, log_dir=log_dir, console=False)
    _log_events(index, users)
    # No explicit flush: the exit hooks write everything.


def _forked(index: int, users: list[int]) -> None:
    _log_events(index, users)


def _check(db: MigratedDatabase, log_dir: Path, users: list[int], extra: list[str]) -> None:
    expected = {f"p{i} e{s}" for i in range(PROCESSES) for s in range(EVENTS)} | set(extra)
    assert db.scalar("SELECT count(*) FROM service_logs") == len(expected)
    messages = [str(r["message"]) for r in db.rows("SELECT message FROM service_logs")]
    assert set(messages) == expected
    lines = [line["message"] for user in users for line in file_records(log_dir, user)]
    assert len(lines) == len(expected)
    assert set(lines) == expected
    duplicates = [m for m, n in Counter(lines).items() if n > 1]
    assert duplicates == []


def test_spawned_processes(db: MigratedDatabase, users: dict[str, int], tmp_path: Path) -> None:
    """Four spawned processes x 10,000 events: exactly 40,000 rows and 40,000 file lines."""
    ids = [users["alice"], users["bob"]]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_spawned, args=(db.url, str(tmp_path), i, ids))
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
        assert process.exitcode == 0
    _check(db, tmp_path, ids, [])


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_forked_processes_get_their_own_writer(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Forked children inherit the configuration, not the parent's queue: nothing twice."""
    ids = [users["alice"], users["bob"]]
    context = multiprocessing.get_context("fork")
    with running(db.url, tmp_path, flush_interval=60.0) as runtime:
        parent = tradelog.get_logger("parent", user_id=ids[0])
        parent.info("before fork, written")
        assert runtime.flush(10)
        parent.info("before fork, still queued")  # the writer sleeps: queued at fork time
        processes = [context.Process(target=_forked, args=(i, ids)) for i in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(180)
            assert process.exitcode == 0
        assert runtime.flush(30)
    _check(db, tmp_path, ids, ["before fork, written", "before fork, still queued"])
