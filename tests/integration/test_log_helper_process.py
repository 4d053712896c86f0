"""``log_writer=process``: the writer's work in a helper process, and what happens when that
process is killed, cannot start, or outlives its parent."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import everything_written, file_records, running
from tradelog._logs.process_writer import ProcessLogWriter
from tradelog._logs.stats import read_writer_stats
from tradelog.exceptions import ConfigurationError

pytestmark = pytest.mark.slow  # starts processes

_PROCESS_MECHANICS = pytest.mark.parametrize("backend", ["sqlite"])
"""Tests of the processes and pipes, not of a database: on SQLite only (rows, files, the
console and a killed helper are checked on both databases)."""


def _writer(runtime: tradelog.Runtime) -> ProcessLogWriter:
    writer = runtime.writer
    assert isinstance(writer, ProcessLogWriter)
    return writer


def _counts(db: MigratedDatabase, user_id: int) -> tuple[int, int]:
    """(rows, distinct seq values) of ``user_id``."""
    rows = db.rows(f"SELECT message FROM service_logs WHERE user_id = {int(user_id)}")
    return len(rows), len({row["message"] for row in rows})


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_rows_files_and_console_come_from_the_helper(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Rows and lines are what thread mode writes: scrubbed, exactly once, and the console
    line is written by the helper to the same stderr."""
    alice = users["alice"]
    with running(db.url, tmp_path, log_writer="process", console=True) as runtime:
        writer = _writer(runtime)
        helper = writer.link.pid
        assert helper is not None
        assert helper != os.getpid()
        assert _alive(helper)
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(2_000):
            log.info(f"order {seq}", qty=seq, password="hunter2-secret")
        assert runtime.flush(30)
        stats = runtime.stats()
        assert stats["log_writer"] == "process"
        assert stats["helper_pid"] == helper
        assert stats["written"] == 2_000
        assert stats["file_lines"] == 2_000
        assert stats["enqueued"] == 2_000
        assert stats["database"] == "ok"
    assert _counts(db, alice) == (2_000, 2_000)
    published = read_writer_stats(tmp_path)  # what `tradelog status` shows: one writer
    assert [(data["pid"], data["written"]) for data in published] == [(os.getpid(), 2_000)]
    lines = file_records(tmp_path, alice)
    assert sorted(line["message"] for line in lines) == sorted(f"order {n}" for n in range(2_000))
    assert "hunter2-secret" not in everything_written(tmp_path)
    rows = db.rows("SELECT context FROM service_logs")
    assert all("hunter2-secret" not in str(row["context"]) for row in rows)
    err = capfd.readouterr().err
    assert "order 1999" in err
    assert "hunter2-secret" not in err
    deadline = time.monotonic() + 5
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(helper), "the helper outlived shutdown()"


def test_batches_the_callers_write_themselves_still_reach_the_console(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Callers that outrun the helper write batches themselves (rows to the spool, lines to
    the files): those batches' console lines are written by this process, every line once."""
    alice = users["alice"]
    with running(
        db.url, tmp_path, log_writer="process", console=True, queue_size=100, batch_size=50
    ) as runtime:
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(3_000):
            log.info(f"order {seq}", password="hunter2-secret")
        assert runtime.flush(60)
        stats = runtime.stats()
        assert stats["log_writer"] == "process"
        assert stats["overflowed"] > 0, "no caller wrote a batch itself: nothing was tested"
    assert _counts(db, alice) == (3_000, 3_000)
    shown = [json.loads(line)["message"] for line in capfd.readouterr().err.splitlines()]
    assert sorted(shown) == sorted(f"order {seq}" for seq in range(3_000))


def test_a_killed_helper_loses_nothing_and_writes_no_row_twice(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """SIGKILL the helper while events stream: this process writes what the helper had not
    acknowledged, under the same batch ids, and carries on in thread mode."""
    alice = users["alice"]
    with running(db.url, tmp_path, log_writer="process", batch_size=50) as runtime:
        writer = _writer(runtime)
        helper = writer.link.pid
        assert helper is not None
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(3_000):
            log.info(f"event {seq}")
            if seq == 1_500:
                os.kill(helper, signal.SIGKILL)
        assert runtime.flush(60)
        stats = runtime.stats()
        assert stats["log_writer"] == "thread (helper process gone)"
        assert stats["helper_pid"] is None
        assert "helper process" in str(stats["last_error"] or stats["recovered_error"])
    assert _counts(db, alice) == (3_000, 3_000)
    messages = {line["message"] for line in file_records(tmp_path, alice)}
    assert messages == {f"event {n}" for n in range(3_000)}


@_PROCESS_MECHANICS
def test_a_helper_that_cannot_start_leaves_the_writing_to_this_process(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreter that cannot run the helper (an embedded Python, a broken path): the
    writer says why in its counters and writes in this process instead."""
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    alice = users["alice"]
    with running(db.url, tmp_path, log_writer="process", console=False) as runtime:
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(500):
            log.info(f"event {seq}")
        assert runtime.flush(30)
        stats = runtime.stats()
        assert stats["log_writer"] == "thread (helper process gone)"
        assert "could not start" in str(stats["last_error"] or stats["recovered_error"])
    assert _counts(db, alice) == (500, 500)


@_PROCESS_MECHANICS
def test_the_helper_runs_the_parents_tradelog_whatever_the_working_directory_holds(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's working directory holds another ``tradelog`` (a checkout, a folder of that
    name): the helper still runs the package its parent imported, not that one."""
    shadow = tmp_path / "cwd" / "tradelog" / "_logs"
    shadow.mkdir(parents=True)
    (shadow.parent / "__init__.py").write_text("")
    (shadow / "__init__.py").write_text("")
    (shadow / "helper.py").write_text("raise SystemExit('the wrong tradelog')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    alice = users["alice"]
    with running(db.url, tmp_path / "logs", log_writer="process", console=False) as runtime:
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(500):
            log.info(f"event {seq}")
        assert runtime.flush(30)
        stats = runtime.stats()
        assert stats["log_writer"] == "process", stats["last_error"]
        assert stats["helper_pid"] is not None
    assert _counts(db, alice) == (500, 500)


@_PROCESS_MECHANICS
def test_the_helper_ends_when_its_parent_is_killed(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """The parent dies without a shutdown (SIGKILL): the helper sees its pipe close, writes
    every batch it had received and exits - no orphan process, no lost batch it held."""
    alice = users["alice"]
    script = textwrap.dedent(
        f"""
        import os, sys, tradelog
        runtime = tradelog.configure(
            database_url={db.url!r}, log_dir={str(tmp_path)!r}, log_writer="process",
            console=False,
        )
        log = tradelog.get_logger("child", user_id={alice})
        for seq in range(1_000):
            log.info(f"event {{seq}}")
        assert runtime.flush(30)
        print(runtime.writer.link.pid, flush=True)
        sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        helper = int(child.stdout.readline())
        assert _alive(helper)
        child.kill()
        child.wait(10)
        deadline = time.monotonic() + 15
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(helper), "the helper outlived its parent"
    finally:
        child.kill()
        child.wait(10)
    assert _counts(db, alice) == (1_000, 1_000)


def _forked_work(user_id: int) -> tuple[int, int | None]:
    log = tradelog.get_logger("forked", user_id=user_id)
    for seq in range(500):
        log.info(f"forked {seq}")
    writer = _writer(tradelog.current())
    return os.getpid(), writer.link.pid


@_PROCESS_MECHANICS
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_a_forked_child_gets_a_helper_of_its_own(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A ``fork`` pool worker lets go of its parent's helper (the pipe ends it inherited) and
    starts its own; both write everything, the parent's helper is untouched."""
    alice = users["alice"]
    with running(db.url, tmp_path, log_writer="process") as runtime:
        parent_helper = _writer(runtime).link.pid
        log = tradelog.get_logger("parent", user_id=alice)
        log.info("before the fork")
        with multiprocessing.get_context("fork").Pool(1) as pool:
            worker, worker_helper = pool.apply(_forked_work, (alice,))
        log.info("after the fork")
        assert runtime.flush(30)
        assert _writer(runtime).link.pid == parent_helper
        assert runtime.stats()["log_writer"] == "process"
    assert worker != os.getpid()
    assert worker_helper not in (None, parent_helper)
    assert worker_helper is not None
    # The pool's exit terminated the worker; its helper writes what it received, then ends.
    deadline = time.monotonic() + 15
    while _alive(worker_helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker_helper), "the worker's helper outlived it"
    rows, distinct = _counts(db, alice)
    assert (rows, distinct) == (502, 502)


def test_an_in_memory_database_cannot_be_shared_with_a_helper() -> None:
    with pytest.raises(ConfigurationError, match="LOG_WRITER"):
        tradelog.Settings(database_url="sqlite://", log_writer="process")
    with pytest.raises(ConfigurationError, match="LOG_WRITER"):
        tradelog.Settings(database_url="sqlite:///:memory:", log_writer="process")
    with pytest.raises(ConfigurationError, match="LOG_WRITER"):
        tradelog.Settings(log_writer="threads")


@_PROCESS_MECHANICS
def test_a_helper_that_stops_reading_cannot_hold_up_shutdown(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """SIGSTOP the helper: its pipe fills, the ship thread's send blocks, callers spill to the
    spool. shutdown() keeps its bound (the helper is killed as it runs out), writes here what
    the helper did not acknowledge, and the next writer has every row once."""
    alice = users["alice"]
    runtime = tradelog.configure(
        database_url=db.url,
        log_dir=tmp_path,
        log_writer="process",
        console=False,
        queue_size=1_000,
        flush_interval=0.05,
    )
    helper = _writer(runtime).link.pid
    assert helper is not None
    os.kill(helper, signal.SIGSTOP)
    try:
        log = tradelog.get_logger("strategy", user_id=alice)
        for seq in range(20_000):
            log.info(f"event {seq} " + "x" * 200)
        started = time.monotonic()
        tradelog.shutdown(3.0)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper, signal.SIGKILL)
    assert took < 3.0 + 2.0, f"shutdown(3) took {took:.1f} s"  # measured: 3.05-3.12 s
    later = tradelog.configure(database_url=db.url, log_dir=tmp_path, console=False)
    assert later.flush(60)  # replays what the first writer spooled
    tradelog.shutdown()
    assert _counts(db, alice) == (20_000, 20_000)
