"""Several processes logging at once: every event exactly once in the database and the files."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import file_records, running
from tradelog._runtime import HANDLER_GRACE
from tradelog.config import Settings

pytestmark = pytest.mark.slow

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


POOL_TASKS = 6
POOL_EVENTS = 300


def _pool_task(task: int, user_id: int) -> int:
    log = tradelog.get_logger("pool", user_id=user_id)
    for seq in range(POOL_EVENTS):
        log.info(f"t{task} e{seq}")
    return task


def _expect_pool_events(db: MigratedDatabase, log_dir: Path, user_id: int) -> None:
    expected = sorted(f"t{t} e{s}" for t in range(POOL_TASKS) for s in range(POOL_EVENTS))
    rows = [str(r["message"]) for r in db.rows("SELECT message FROM service_logs")]
    assert sorted(rows) == expected
    assert sorted(line["message"] for line in file_records(log_dir, user_id)) == expected


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_ended_by_the_with_block_keep_their_events(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, method: str
) -> None:
    """Leaving ``with Pool(...)`` terminates the workers with SIGTERM: what they logged is
    written first."""
    context = multiprocessing.get_context(method)
    with running(db.url, tmp_path, flush_interval=60.0) as runtime:
        options: dict[str, Any] = {}
        if method != "fork":
            options = {"initializer": tradelog.configure, "initargs": (runtime.settings,)}
        with context.Pool(2, **options) as pool:
            tasks = [(task, users["alice"]) for task in range(POOL_TASKS)]
            assert pool.starmap(_pool_task, tasks) == list(range(POOL_TASKS))
        assert runtime.flush(30)
    _expect_pool_events(db, tmp_path, users["alice"])


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_workers_that_cannot_reach_the_database_leave_their_rows_to_the_parent(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, method: str
) -> None:
    """The database is locked while ``with Pool(...)`` ends the workers: they spool what they
    logged and die; the parent's next flush adopts their spools and replays every row."""
    context = multiprocessing.get_context(method)
    path = make_url(db.url).database
    assert path is not None
    with running(db.url, tmp_path, flush_interval=60.0, db_write_timeout=0.2) as runtime:
        options: dict[str, Any] = {}
        if method != "fork":
            options = {"initializer": tradelog.configure, "initargs": (runtime.settings,)}
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            # Locked before the workers log: a worker's writer may write a batch as soon as it
            # has one, before the pool ends.
            blocker.execute("BEGIN EXCLUSIVE")
            with context.Pool(2, **options) as pool:
                tasks = [(task, users["alice"]) for task in range(POOL_TASKS)]
                assert pool.starmap(_pool_task, tasks) == list(range(POOL_TASKS))
            assert list((tmp_path / "_spool").glob("spool-*.jsonl"))
            assert db.scalar("SELECT count(*) FROM service_logs") == 0
        finally:
            blocker.close()
        assert runtime.flush(30)
        assert not list((tmp_path / "_spool").glob("spool-*.jsonl"))
    _expect_pool_events(db, tmp_path, users["alice"])


def _log_then_wait(settings: Settings | None, user_id: int, ready: Any) -> None:
    if settings is not None:
        tradelog.configure(settings)
    for task in range(POOL_TASKS):
        _pool_task(task, user_id)
    ready.set()
    signal.pause()  # until terminated


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_terminated_process_writes_its_events_and_still_dies_of_sigterm(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, method: str
) -> None:
    """Process.terminate(): the child writes what it queued, then ends by the signal."""
    context = multiprocessing.get_context(method)
    with running(db.url, tmp_path, flush_interval=60.0) as runtime:
        ready = context.Event()
        settings = None if method == "fork" else runtime.settings
        child = context.Process(target=_log_then_wait, args=(settings, users["alice"], ready))
        child.start()
        assert ready.wait(60)
        child.terminate()
        child.join(60)
        assert child.exitcode == -signal.SIGTERM
    _expect_pool_events(db, tmp_path, users["alice"])


def _report_handler(settings: Settings) -> None:
    def own(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, own)
    tradelog.configure(settings)
    kept = signal.getsignal(signal.SIGTERM) is own
    tradelog.shutdown()
    raise SystemExit(0 if kept else 7)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_childs_own_sigterm_handler_is_left_alone(db_url: str, tmp_path: Path) -> None:
    """tradelog only takes SIGTERM over when the child left it at the default."""
    settings = Settings.from_env(database_url=db_url, log_dir=tmp_path, console=False)
    child = multiprocessing.get_context("spawn").Process(target=_report_handler, args=(settings,))
    child.start()
    child.join(60)
    assert child.exitcode == 0


def _stuck_in_c(url: str, log_dir: str, user_id: int, ready: Any, address: Any) -> None:
    """A multiprocessing child that logs, then blocks its main thread in C code that no signal
    interrupts (a mutex it already holds): Python can never run a handler there."""
    import ctypes

    tradelog.configure(database_url=url, log_dir=log_dir, console=False, flush_interval=60.0)
    log = tradelog.get_logger("stuck", user_id=user_id)
    for seq in range(STUCK_EVENTS):
        log.info(f"s e{seq}")
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER
    libc = ctypes.CDLL(None)
    libc.pthread_mutex_lock(mutex)
    address.value = ctypes.addressof(mutex)
    ready.set()
    libc.pthread_mutex_lock(mutex)  # never returns


STUCK_EVENTS = 500


def _wait_until_blocked_on(pid: int, address: int) -> None:
    """Until the main thread of ``pid`` waits in the kernel on the futex at ``address`` (Linux
    shows a thread's system call and its arguments in /proc): a signal sent before that would
    be handled in Python code, which is not what is being tested."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()
            if int(fields[1], 16) == address:
                return
        time.sleep(0.01)
    raise AssertionError("the child never blocked on its mutex")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_sigterm_to_a_child_stuck_in_c_code_still_writes_and_ends_it(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, method: str
) -> None:
    """``SIGTERM`` reaches a multiprocessing child whose main thread never runs Python code
    again (as a pool worker that got it a moment before blocking on its queue's lock, which
    hung ``Pool.terminate`` for good): the signal watch writes what the child logged and ends
    it (exit status 143) within the handler's grace plus the shutdown's bound."""
    context = multiprocessing.get_context(method)
    ready = context.Event()
    address = context.Value("Q", 0, lock=False)
    child = context.Process(
        target=_stuck_in_c, args=(db.url, str(tmp_path), users["alice"], ready, address)
    )
    child.start()
    assert ready.wait(60)
    assert child.pid is not None
    _wait_until_blocked_on(child.pid, address.value)
    os.kill(child.pid, signal.SIGTERM)
    started = time.monotonic()
    child.join(HANDLER_GRACE + 30)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 128 + signal.SIGTERM
    assert time.monotonic() - started < HANDLER_GRACE + 20
    messages = sorted(str(r["message"]) for r in db.rows("SELECT message FROM service_logs"))
    assert messages == sorted(f"s e{seq}" for seq in range(STUCK_EVENTS))
