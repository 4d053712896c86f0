"""Error capture and service health through ``tradelog.configure`` (the runtime)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog import _runtime as runtime
from tradelog._errors.hooks import SysExceptHook


@pytest.fixture
def configured(db: MigratedDatabase, tmp_path: Path) -> Iterator[runtime.Runtime]:
    """A runtime on the test database, shut down afterwards."""
    rt = runtime.configure(database_url=db.url, log_dir=tmp_path / "logs", console=False)
    yield rt
    runtime.shutdown()


def _errors(db: MigratedDatabase) -> list[dict[str, Any]]:
    return db.rows("SELECT user_id, error_type, error_message FROM error_logs ORDER BY id")


def test_logged_exceptions_become_error_rows(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``log.exception`` and ``log.error(exc_info=...)`` in its three forms record errors;
    a warning with an exception does not."""
    log = tradelog.get_logger("orders", user_id=users["alice"])
    try:
        raise KeyError("ltp")
    except KeyError:
        log.exception("quote lookup failed", symbol="INFY")
    error = ValueError("qty")
    log.error("rejected", exc_info=error)
    try:
        raise TimeoutError("broker")
    except TimeoutError:
        log.error("slow", exc_info=sys.exc_info())
        log.error("slow again", exc_info=True)  # the same exception: recorded once
    try:
        raise ConnectionError("retrying")
    except ConnectionError:
        log.warning("will retry", exc_info=True)
    assert tradelog._runtime.flush(10)
    assert _errors(db) == [
        {"user_id": users["alice"], "error_type": "KeyError", "error_message": "'ltp'"},
        {"user_id": users["alice"], "error_type": "ValueError", "error_message": "qty"},
        {"user_id": users["alice"], "error_type": "TimeoutError", "error_message": "broker"},
    ]
    assert (
        db.scalar("SELECT error_count FROM service_status WHERE user_id = :u", u=users["alice"])
        == 3
    )


def test_logged_then_reraised_to_the_hook_is_recorded_once(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """An exception logged, re-raised and reaching ``sys.excepthook`` gives one row."""
    log = tradelog.get_logger("orders", user_id=users["bob"])
    assert isinstance(sys.excepthook, SysExceptHook)
    seen: list[str] = []
    sys.excepthook.previous = lambda kind, value, tb: seen.append(str(value))
    try:
        try:
            raise RuntimeError("order book corrupt")
        except RuntimeError:
            log.exception("giving up")
            raise
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    assert seen == ["order book corrupt"]
    assert _errors(db) == [
        {
            "user_id": users["bob"],
            "error_type": "RuntimeError",
            "error_message": "order book corrupt",
        }
    ]


def test_shutdown_and_reconfigure_restore_the_hooks(db: MigratedDatabase, tmp_path: Path) -> None:
    """Hooks are installed once per runtime and the originals come back at shutdown."""
    before = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    options = {"database_url": db.url, "log_dir": tmp_path / "logs", "console": False}
    runtime.configure(**options)
    first = sys.excepthook
    runtime.configure(**options)
    second = sys.excepthook
    assert isinstance(second, SysExceptHook)
    assert second is not first
    assert second.previous is before[0]
    runtime.shutdown()
    assert (sys.excepthook, threading.excepthook, sys.unraisablehook) == before


def test_public_api_uses_the_runtime(
    configured: runtime.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``tradelog.capture_exception``, ``heartbeat``, ``mark_running`` and ``track_task``."""
    assert runtime.require() is configured
    try:
        raise ArithmeticError("pnl")
    except ArithmeticError:
        assert tradelog.capture_exception(user_id=users["alice"], book="equity")
    assert tradelog.mark_running(users["alice"])
    assert tradelog.heartbeat(users["alice"])
    with tradelog.track_task(users["alice"], "sell_monitor") as task:
        task["orders"] = 2
    assert tradelog.mark_stopped(users["alice"])
    assert runtime.flush(10)
    assert [r["error_type"] for r in _errors(db)] == ["ArithmeticError"]
    assert db.scalar("SELECT status FROM service_task_execution") == "success"
    assert db.scalar(
        "SELECT service_running FROM service_status WHERE user_id = :u", u=users["alice"]
    ) in (0, False)
