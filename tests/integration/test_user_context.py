"""The bound user follows the work: ``tradelog.bind_user`` is seen by log events, task tracking,
heartbeats and the crash hooks (threads, asyncio tasks)."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from pathlib import Path

import pytest
import structlog

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import running

UNHANDLED_THREAD = "ignore::pytest.PytestUnhandledThreadExceptionWarning"


def _system(db: MigratedDatabase) -> int:
    return int(db.scalar("SELECT id FROM users WHERE is_system"))  # type: ignore[call-overload]


def test_log_events_see_the_bound_user(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """structlog and stdlib events inside ``bind_user`` (block, sync and async decorator) carry
    the user; the binding ends with the block."""
    alice, bob = users["alice"], users["bob"]

    @tradelog.bind_user(bob)
    def for_bob() -> None:
        tradelog.get_logger("dec").info("sync decorated")

    @tradelog.bind_user(bob)
    async def for_bob_async() -> None:
        tradelog.get_logger("dec").info("async decorated")

    with running(db.url, tmp_path) as runtime:
        with tradelog.bind_user(alice) as bound:
            assert bound == alice
            tradelog.get_logger("strategy").info("structlog inside")
            logging.getLogger("legacy").warning("stdlib inside")
        tradelog.get_logger("strategy").info("outside: system file only")
        for_bob()
        asyncio.run(for_bob_async())
        assert structlog.contextvars.get_contextvars() == {}
        assert runtime.flush(10)
    rows = db.rows("SELECT user_id, message FROM service_logs ORDER BY id")
    assert [(r["user_id"], r["message"]) for r in rows] == [
        (alice, "structlog inside"),
        (alice, "stdlib inside"),
        (bob, "sync decorated"),
        (bob, "async decorated"),
    ]


def test_tasks_and_heartbeats_default_to_the_bound_user(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``track_task(name)`` and ``heartbeat()`` take the user bound where they run (each
    decorated call looks again); with none bound they belong to the system user."""
    alice, bob = users["alice"], users["bob"]

    @tradelog.track_task("sell_monitor")
    def monitor() -> None:
        pass

    @tradelog.track_task("quotes")
    async def quotes() -> None:
        pass

    with running(db.url, tmp_path):
        with tradelog.bind_user(alice):
            monitor()
            assert tradelog.heartbeat()
            assert tradelog.mark_running()
            with tradelog.track_task("inline") as run:
                assert run.user_id == alice
        with structlog.contextvars.bound_contextvars(user_id=bob):
            monitor()
            asyncio.run(quotes())
            assert tradelog.heartbeat()
        monitor()  # nothing bound
        assert tradelog.heartbeat()
    system = _system(db)
    tasks = db.rows("SELECT user_id, task_name FROM service_task_execution ORDER BY id")
    assert [(t["user_id"], t["task_name"]) for t in tasks] == [
        (alice, "sell_monitor"),
        (alice, "inline"),
        (bob, "sell_monitor"),
        (bob, "quotes"),
        (system, "sell_monitor"),
    ]
    beats = db.rows("SELECT user_id, service_running FROM service_status ORDER BY user_id")
    assert {b["user_id"] for b in beats} == {alice, bob, system}
    with pytest.raises(ValueError, match="positive integer"):
        tradelog.bind_user(0)
    with pytest.raises(TypeError):
        tradelog.track_task(7)  # type: ignore[call-overload]


@pytest.mark.filterwarnings(UNHANDLED_THREAD)
def test_a_thread_crash_belongs_to_the_bound_user(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A thread that dies inside ``bind_user`` - block or decorator - is recorded under that
    user by ``threading.excepthook``, though the binding is gone when the hook runs; the
    innermost binding wins."""
    alice, bob = users["alice"], users["bob"]

    def in_block() -> None:
        with tradelog.bind_user(alice):
            raise ZeroDivisionError("alice's worker")

    @tradelog.bind_user(alice)
    def nested() -> None:
        with tradelog.bind_user(bob):
            raise KeyError("bob's inner work")

    with running(db.url, tmp_path):
        for target in (in_block, nested):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        assert tradelog.flush(10)
    rows = db.rows("SELECT user_id, error_type, context FROM error_logs ORDER BY id")
    assert [(r["user_id"], r["error_type"]) for r in rows] == [
        (alice, "ZeroDivisionError"),
        (bob, "KeyError"),
    ]
    assert all("threading.excepthook" in str(r["context"]) for r in rows)


def test_an_asyncio_task_crash_belongs_to_the_bound_user(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A task whose exception is never retrieved, raised inside ``bind_user`` in the task:
    the loop's exception handler records it under that user (Python 3.11 and later)."""
    alice = users["alice"]

    async def poll() -> None:
        async with tradelog.bind_user(alice):
            raise KeyError("quote feed")

    async def main() -> None:
        task = asyncio.create_task(poll(), name="quote-poller")
        await asyncio.sleep(0.05)
        del task
        gc.collect()

    with running(db.url, tmp_path):
        asyncio.run(main())
        assert tradelog.flush(10)
    rows = db.rows("SELECT user_id, error_type, context FROM error_logs")
    assert [(r["user_id"], r["error_type"]) for r in rows] == [(alice, "KeyError")]
    assert "quote-poller" in str(rows[0]["context"])


@pytest.mark.skipif(sys.version_info < (3, 12), reason="a task's context is readable from 3.12")
def test_an_asyncio_task_started_inside_bind_user_belongs_to_that_user(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:  # pragma: no cover - runs on Python 3.12+
    """A task created inside ``bind_user`` keeps the binding in its context; its unretrieved
    crash is recorded under that user through ``Task.get_context()``."""
    bob = users["bob"]

    async def poll() -> None:
        raise KeyError("quote feed")

    async def main() -> None:
        with tradelog.bind_user(bob):
            task = asyncio.create_task(poll())
        await asyncio.sleep(0.05)
        del task
        gc.collect()

    with running(db.url, tmp_path):
        asyncio.run(main())
        assert tradelog.flush(10)
    assert db.scalar("SELECT user_id FROM error_logs") == bob
