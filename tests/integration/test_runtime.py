"""The runtime: configuration paths, hooks for other subsystems, process lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import file_records, running
from tradelog._logs.stats import prune_writer_stats, read_writer_stats, stats_path
from tradelog._runtime import current
from tradelog.config import Settings


def test_configure_from_a_settings_object(db_url: str, tmp_path: Path) -> None:
    """An explicit Settings object is used as is, keywords override it."""
    settings = Settings(database_url=db_url, log_dir=tmp_path, console=False)
    runtime = tradelog.configure(settings, level="DEBUG")
    try:
        assert runtime.settings.level == "DEBUG"
        assert runtime.settings.log_dir == tmp_path
        assert "running" in repr(runtime)
        assert "log_dir=" in repr(runtime)
    finally:
        tradelog.shutdown()
    assert "closed" in repr(runtime)
    assert runtime.shutdown() is True  # idempotent


def test_shared_engine_for_other_subsystems(db: MigratedDatabase, tmp_path: Path) -> None:
    """The host-facing parts share one engine, created once, disposed at shutdown."""
    with running(db.url, tmp_path) as runtime:
        engine = runtime.engines.app()
        assert runtime.engines.app() is engine
        assert runtime.errors.engine is engine
        assert runtime.health.engine is engine
        assert runtime.notifications.engine is engine
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    assert runtime.engines._engines == {}


def test_shutdown_stops_every_part(db_url: str, tmp_path: Path) -> None:
    """With the worker on, the delivery worker and daily retention run; shutdown stops them,
    uninstalls the hooks and disposes the engines."""
    with running(db_url, tmp_path, worker=True) as runtime:
        assert runtime.worker is not None
        retention = runtime.retention
        assert retention is not None
        assert retention._thread is not None
        assert retention._thread.is_alive()
        assert sys.excepthook is runtime._hooks.sys_hook  # type: ignore[union-attr]
    assert runtime.worker is None
    assert runtime.retention is None
    assert not retention._thread.is_alive()
    assert runtime._hooks is None
    assert runtime.engines._engines == {}


def test_named_loggers_and_method_aliases(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """get_logger names default to the calling module; aliases and async variants work."""
    with running(db.url, tmp_path, level="DEBUG") as runtime:
        log = tradelog.get_logger(user_id=users["alice"])
        log.warn("warn alias")
        log.fatal("fatal alias")
        log.msg("msg alias")
        runtime.get_logger("explicit", user_id=users["alice"]).info("from the runtime")
        bound = log.bind(self="a key called self").new(user_id=users["alice"], fresh=True)
        bound.debug("new context")

        async def use_async() -> None:
            await log.ainfo("async info")
            await log.alog(logging.ERROR, "async log")
            try:
                raise KeyError("k")
            except KeyError:
                await log.aexception("async exception")

        asyncio.run(use_async())
        assert runtime.flush(10)
    rows = db.rows("SELECT level, module, message, context FROM service_logs ORDER BY id")
    assert [(r["level"], r["message"]) for r in rows] == [
        ("WARNING", "warn alias"),
        ("CRITICAL", "fatal alias"),
        ("INFO", "msg alias"),
        ("INFO", "from the runtime"),
        ("DEBUG", "new context"),
        ("INFO", "async info"),
        ("ERROR", "async log"),
        ("ERROR", "async exception"),
    ]
    assert rows[0]["module"] == __name__
    assert rows[3]["module"] == "explicit"
    context = rows[4]["context"]
    assert (json.loads(context) if isinstance(context, str) else context) == {"fresh": True}


def test_structlog_capture_logs_still_works(db_url: str, tmp_path: Path) -> None:
    """structlog's testing helper captures events from tradelog-configured loggers."""
    with running(db_url, tmp_path) as runtime:
        log = tradelog.get_logger("captured")
        log.info("before")
        with structlog.testing.capture_logs() as captured:
            log.info("inside", answer=42)
        log.info("after")
        assert runtime.flush(10)
    assert captured == [{"event": "inside", "answer": 42, "log_level": "info"}]
    assert [line["message"] for line in file_records(tmp_path)] == ["before", "after"]


def test_bad_format_arguments_keep_the_event(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``log.info("%d", "x")`` keeps the message and the arguments instead of raising."""
    with running(db.url, tmp_path) as runtime:
        log = tradelog.get_logger("fmt", user_id=users["alice"])
        log.info("qty %d of %s", "many", "NIFTY")
        log.info("%(name)s filled", {"name": "NIFTY"})
        assert runtime.flush(10)
    rows = db.rows("SELECT message, context FROM service_logs ORDER BY id")
    assert rows[0]["message"] == "qty %d of %s"
    context = rows[0]["context"]
    assert (json.loads(context) if isinstance(context, str) else context) == {
        "positional_args": ["many", "NIFTY"]
    }
    assert rows[1]["message"] == "NIFTY filled"


def test_a_directly_forked_child_writes_its_own_events(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """os.fork(): the child gets its own writer; shutting down before _exit writes its rows."""
    with running(db.url, tmp_path) as runtime:
        log = tradelog.get_logger("forked", user_id=users["alice"])
        log.info("parent before")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                child = tradelog._runtime.current()
                assert child is runtime
                log.info("from the child")
                code = 0 if tradelog.shutdown(10) else 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        log.info("parent after")
        assert runtime.flush(10)
    messages = [r["message"] for r in db.rows("SELECT message FROM service_logs ORDER BY id")]
    assert sorted(messages) == ["from the child", "parent after", "parent before"]
    assert current() is None


def test_read_writer_stats_tolerates_strangers(tmp_path: Path) -> None:
    """Broken, stale, foreign and dead writers' files are read without failing."""
    folder = tmp_path / "_runtime"
    folder.mkdir()
    now = datetime.now(UTC)
    (folder / "writer-1.json").write_text("not json")
    (folder / "writer-2.json").write_text("[1, 2]")
    stale = {
        "pid": os.getpid(),
        "running": True,
        "updated_at": (now - timedelta(hours=1)).isoformat(),
        "host": socket.gethostname(),
    }
    (folder / "writer-3.json").write_text(json.dumps(stale))
    foreign = {"pid": 1, "running": True, "updated_at": now.isoformat(), "host": "elsewhere"}
    (folder / "writer-4.json").write_text(json.dumps(foreign))
    dead = {
        "pid": 2**22 + 7,
        "running": True,
        "updated_at": now.isoformat(),
        "host": socket.gethostname(),
    }
    (folder / "writer-5.json").write_text(json.dumps(dead))
    bad_time = {"pid": os.getpid(), "running": True, "updated_at": "yesterday"}
    (folder / "writer-6.json").write_text(json.dumps(bad_time))
    found = {item["pid"]: item["alive"] for item in read_writer_stats(tmp_path)}
    assert found == {os.getpid(): False, 1: True, 2**22 + 7: False}
    assert read_writer_stats(tmp_path / "nowhere") == []
    assert stats_path(tmp_path, 9).name == "writer-9.json"
    # Writers gone for more than a week are forgotten.
    assert prune_writer_stats(tmp_path, now=now + timedelta(days=8)) == 2
    assert sorted(p.name for p in folder.glob("writer-*.json")) == [
        "writer-1.json",
        "writer-2.json",
        "writer-4.json",
        "writer-6.json",
    ]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_internal_errors_are_counted_not_raised(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A processor that fails inside the chain is counted once on stderr, never raised."""

    def broken(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        raise RuntimeError("processor bug")

    with running(db.url, tmp_path) as runtime:
        processors = structlog.get_config()["processors"]
        processors.insert(0, broken)
        try:
            tradelog.get_logger("x").info("lost to a bug")
            tradelog.get_logger("x").info("again")
        finally:
            processors.remove(broken)
        assert runtime.stats()["internal_errors"] >= 2


def _blocked_signals(native_id: int) -> int:
    """The signal mask of one of this process's threads, from ``/proc`` (a bit per signal)."""
    for line in Path(f"/proc/self/task/{native_id}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_every_tradelog_thread_keeps_termination_signals_off(db_url: str, tmp_path: Path) -> None:
    """A termination signal must reach the main thread: one delivered to a tradelog thread
    would let the host's handler run inside a block where records are neither queued nor
    held (tests/reliability/test_log_signals.py shows the loss that caused)."""
    import signal
    import threading

    runtime = tradelog.configure(
        database_url=db_url, log_dir=tmp_path / "logs", console=True, worker="on"
    )
    try:
        tradelog.get_logger("t").info("hello", user_id=None)
        assert runtime.flush(30)
        ours = [t for t in threading.enumerate() if t.name.startswith("tradelog")]
        assert len(ours) >= 5, [t.name for t in ours]  # writer, console, health, status, worker
        term = 1 << (signal.SIGTERM - 1)
        for thread in ours:
            if thread.native_id is None or not thread.is_alive():
                continue  # not started yet, or gone: no signal can reach it
            try:
                mask = _blocked_signals(thread.native_id)
            except FileNotFoundError:
                continue  # ended between the two looks
            assert mask & term, f"{thread.name} takes SIGTERM"
        main = threading.main_thread().native_id
        assert main is not None
        assert not _blocked_signals(main) & term
    finally:
        tradelog.shutdown()
