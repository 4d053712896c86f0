"""Error capture into the database: rows, owners, counters, dedupe, notifications, spills."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._db.engine import create_tradelog_engine
from tradelog._errors.alerts import ErrorAlerts
from tradelog._errors.pipeline import ErrorCapture
from tradelog._errors.record import ErrorRecord
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups
from tradelog.config import Settings
from tradelog.users import SYSTEM_USER_EMAIL


def _settings(db: MigratedDatabase, tmp_path: Path, **options: Any) -> Settings:
    return Settings(database_url=db.url, log_dir=tmp_path / "logs", console=False, **options)


def _alerting(settings: Settings, engine: Engine, **options: Any) -> ErrorCapture:
    """A capture that sends its ``error`` notifications through the real notification service
    (as the runtime wires it)."""
    alerts = ErrorAlerts(
        settings.error_notify_window, send=NotificationService(engine, Wakeups()).notify
    )
    return ErrorCapture(settings, engine, notifier=alerts, **options)


@pytest.fixture
def capture(db: MigratedDatabase, tmp_path: Path) -> Iterator[ErrorCapture]:
    """An error capture on the test database (notifications through the real notify API)."""
    errors = _alerting(_settings(db, tmp_path), db.engine)
    yield errors
    errors.close()


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def _errors(db: MigratedDatabase) -> list[dict[str, Any]]:
    return db.rows("SELECT * FROM error_logs ORDER BY id")


def _without_snapshot(context: dict[str, Any] | None) -> dict[str, Any]:
    """A row's context without the account snapshot (tested on its own)."""
    return {k: v for k, v in (context or {}).items() if k != "snapshot"}


def _status(db: MigratedDatabase, user_id: int) -> dict[str, Any]:
    rows = db.rows("SELECT * FROM service_status WHERE user_id = :u", u=user_id)
    assert len(rows) == 1
    return rows[0]


def test_captured_error_is_written_for_its_user(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A row with type, message, traceback, fingerprint and context; the user's counters move."""
    alice = users["alice"]
    assert capture.capture(_raise(ValueError("qty must be positive")), user_id=alice)
    assert capture.capture(
        _raise(KeyError("ltp")), user_id=alice, context={"symbol": "INFY", "secret": "s3"}
    )
    assert capture.flush(10)
    rows = _errors(db)
    assert [(r["user_id"], r["error_type"]) for r in rows] == [
        (alice, "ValueError"),
        (alice, "KeyError"),
    ]
    assert rows[0]["error_message"] == "qty must be positive"
    assert "Traceback (most recent call last)" in rows[0]["traceback"]
    assert len(rows[0]["fingerprint"]) == 64
    assert not rows[0]["resolved"]
    status = _status(db, alice)
    assert status["error_count"] == 2
    assert status["last_error"] == "KeyError: 'ltp'"
    with db.session() as session:
        from tradelog._db.models import ErrorLog

        row = session.get(ErrorLog, rows[1]["id"])
        assert row is not None
        assert _without_snapshot(row.context) == {"symbol": "INFY", "secret": "[REDACTED]"}
        assert row.occurred_at.tzinfo is not None
    assert capture.stats()["written"] == 2


def test_error_without_a_user_goes_to_the_system_user(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """No user context, or a user id that does not exist: kept under the system user."""
    capture.capture(_raise(RuntimeError("boot failed")))
    capture.capture(_raise(RuntimeError("ghost")), user_id=987654)
    assert capture.flush(10)
    system = db.scalar("SELECT id FROM users WHERE email = :e", e=SYSTEM_USER_EMAIL)
    rows = _errors(db)
    assert [r["user_id"] for r in rows] == [system, system]
    with db.session() as session:
        from tradelog._db.models import ErrorLog

        ghost = session.get(ErrorLog, rows[1]["id"])
        assert ghost is not None
        assert ghost.context == {"unknown_user_id": 987654}
    assert _status(db, int(str(system)))["error_count"] == 2


def test_user_id_bound_in_structlog_context_is_used(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``bind_contextvars(user_id=...)`` decides the owner and the context is recorded."""
    with structlog.contextvars.bound_contextvars(user_id=users["bob"], job="sell_monitor"):
        capture.capture(_raise(TimeoutError("broker slow")))
    assert capture.flush(10)
    [row] = _errors(db)
    assert row["user_id"] == users["bob"]
    assert "sell_monitor" in str(row["context"])


def test_log_observer_records_error_events_only(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Error-level events with an exception are recorded; warnings are not."""
    exc = _raise(ConnectionError("feed dropped"))
    event = {
        "event": "feed lost",
        "level": "error",
        "logger": "feeds",
        "user_id": users["alice"],
        "exchange": "NSE",
        "timestamp": "2026-01-01T00:00:00Z",
    }
    capture.observe((type(exc), exc, exc.__traceback__), event)
    other = _raise(ConnectionError("retrying"))
    capture.observe((type(other), other, other.__traceback__), {**event, "level": "warning"})
    capture.observe(True, {"level": "error"})  # no exception being handled: nothing
    assert capture.flush(10)
    [row] = _errors(db)
    assert row["user_id"] == users["alice"]
    assert row["error_message"] == "feed dropped"
    with db.session() as session:
        from tradelog._db.models import ErrorLog

        stored = session.get(ErrorLog, row["id"])
        assert stored is not None
        assert _without_snapshot(stored.context) == {
            "event": "feed lost",
            "level": "error",
            "logger": "feeds",
            "exchange": "NSE",
            "source": "log",
        }


def test_same_exception_is_recorded_once(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Logged, then captured again (e.g. re-raised to a hook): one row."""
    exc = _raise(ValueError("once"))
    capture.observe(exc, {"level": "error", "user_id": users["alice"]})
    assert not capture.capture(exc, uncaught=True, sync=True)
    assert capture.flush(10)
    assert len(_errors(db)) == 1
    assert capture.stats()["duplicates"] == 1


def test_uncaught_errors_are_written_synchronously(
    capture: ErrorCapture, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``sync=True`` writes before returning, after what was queued before it."""
    capture.capture(_raise(ValueError("queued first")), user_id=users["alice"])
    assert capture.capture(_raise(SystemError("crash")), user_id=users["alice"], sync=True)
    rows = _errors(db)
    assert [r["error_message"] for r in rows] == ["queued first", "crash"]


def _notes(db: MigratedDatabase, user_id: int) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT type, level, title, message FROM notifications WHERE user_id = :u ORDER BY id",
        u=user_id,
    )


def test_error_notifications_are_throttled_per_fingerprint(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Per fingerprint and window: one alert with the detail to the operators (the admin),
    one plain sentence to the owner; a thread's uncaught exception is an ``error``, not a
    ``critical``."""
    errors = _alerting(_settings(db, tmp_path, error_notify_window=3600), db.engine)
    try:

        def fail(n: int) -> None:
            raise ValueError(f"order {n} failed")

        for n in range(3):
            try:
                fail(n)
            except ValueError as exc:
                errors.capture(exc, user_id=users["alice"], context={"task": "sell_monitor"})
        errors.capture(
            _raise(KeyError("x")),
            user_id=users["alice"],
            uncaught=True,
            context={"source": "threading.excepthook"},
        )
        assert errors.flush(10)
    finally:
        errors.close()
    operator = _notes(db, users["admin"])
    assert [(n["type"], n["level"], n["title"]) for n in operator] == [
        ("error", "error", "New error: ValueError"),
        ("error", "error", "New error: KeyError"),
    ]
    first = str(operator[0]["message"])
    assert "ValueError: order 0 failed" in first
    assert "alice@example.com" in first
    assert "task sell_monitor" in first
    assert "tradelog errors show" in first
    owner = _notes(db, users["alice"])
    assert [(n["level"], n["title"]) for n in owner] == [
        ("error", "sell_monitor hit an error"),
        ("error", "Something went wrong"),
    ]
    for note in owner:
        assert "ValueError" not in str(note["message"])
        assert "KeyError" not in str(note["message"])
        assert str(note["message"]).endswith("the operators have been told.")
    assert " IST;" in str(owner[0]["message"])
    assert (
        db.scalar("SELECT error_count FROM service_status WHERE user_id = :u", u=users["alice"])
        == 4
    )


def test_throttle_is_shared_through_the_database(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Two processes (two captures) failing the same way still notify once per window."""
    settings = _settings(db, tmp_path, error_notify_window=3600)
    first = _alerting(settings, db.engine)
    second = _alerting(settings, db.engine)

    def fail() -> None:
        raise ValueError("same place")

    try:
        for errors in (first, second):
            try:
                fail()
            except ValueError as exc:
                errors.capture(exc, user_id=users["bob"])
            assert errors.flush(10)
    finally:
        first.close()
        second.close()
    assert db.scalar("SELECT count(*) FROM notifications WHERE user_id = :u", u=users["bob"]) == 1
    assert len(_notes(db, users["admin"])) == 1
    assert db.scalar("SELECT count(*) FROM error_logs WHERE user_id = :u", u=users["bob"]) == 2


def test_window_zero_notifies_every_error(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``error_notify_window=0`` turns the throttle off."""
    errors = _alerting(_settings(db, tmp_path, error_notify_window=0), db.engine)
    try:
        for _ in range(2):
            errors.capture(_raise(ValueError("again")), user_id=users["alice"])
        assert errors.flush(10)
    finally:
        errors.close()
    assert len(_notes(db, users["alice"])) == 2
    assert [n["title"] for n in _notes(db, users["admin"])] == [
        "New error: ValueError",
        "Error: ValueError",
    ]


def test_unwritable_errors_are_spilled_and_replayed(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """With the database unreachable rows go to a file; the next writer stores them."""
    settings = _settings(db, tmp_path)
    broken: Engine = create_tradelog_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    down = _alerting(settings, broken, retry_delays=(0.01,))
    down.capture(_raise(ValueError("while down")), user_id=users["alice"])
    down.capture(_raise(ValueError("crash while down")), user_id=users["alice"], sync=True)
    assert not down.flush(1)  # kept in a file, not in the database: flush says so
    assert down.stats()["spilled"] == 2
    spills = list((tmp_path / "logs" / "_runtime").glob("errors-unwritten-*.jsonl"))
    assert len(spills) == 1
    assert "while down" in spills[0].read_text()
    down.close(0.2)  # the spill cannot be stored while the database is away: do not wait
    broken.dispose()
    assert _errors(db) == []

    up = _alerting(settings, db.engine)
    try:
        up.capture(_raise(ValueError("after recovery")), user_id=users["alice"])
        assert up.flush(10)
    finally:
        up.close()
    messages = sorted(r["error_message"] for r in _errors(db))
    assert messages == ["after recovery", "crash while down", "while down"]
    assert not list((tmp_path / "logs" / "_runtime").glob("errors-unwritten-*"))
    assert _status(db, users["alice"])["error_count"] == 3


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_full_queue_spills_and_loses_nothing(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """While the writer is stuck, 300 errors into a queue of 5: none dropped, no caller
    blocked; once the database answers, flush() stores all 300, each once."""
    errors = ErrorCapture(_settings(db, tmp_path, queue_size=5), db.engine, notifier=None)
    blocker = sqlite3.connect(db.url.removeprefix("sqlite:///"))
    blocker.execute("BEGIN EXCLUSIVE")
    slowest = 0.0
    try:
        for n in range(300):
            started = time.monotonic()
            assert errors.capture(_raise(ValueError(f"storm {n}")), user_id=users["alice"])
            slowest = max(slowest, time.monotonic() - started)
        assert errors.stats()["dropped"] == 0
        assert errors.stats()["spilled"] >= 290
        assert not errors.flush(0.5)  # rows wait in the spill file: not in the database yet
    finally:
        blocker.rollback()
        blocker.close()
    assert slowest < 1.0
    assert errors.flush(30)
    errors.close()
    messages = [str(r["error_message"]) for r in _errors(db)]
    assert sorted(messages) == sorted(f"storm {n}" for n in range(300))
    assert not list((tmp_path / "logs" / "_runtime").glob("errors-unwritten-*"))


def test_a_batch_stored_before_is_not_stored_again(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """The same batch id twice (a retry after a lost commit acknowledgement, a replay killed
    before it deleted its file): one set of rows."""
    store = ErrorCapture(_settings(db, tmp_path), db.engine, notifier=None).store
    records = [
        ErrorRecord(
            user_id=user,
            error_type="ValueError",
            error_message=message,
            traceback=None,
            context=None,
            occurred_at=datetime.now(UTC),
            fingerprint="f" * 16,
            uncaught=False,
        )
        for user, message in ((users["alice"], "once"), (users["bob"], "twice?"))
    ]
    assert len(store.write(records, "batch-1")) == 2
    assert store.write(records, "batch-1") == []
    assert len(store.write(records, "batch-2")) == 2
    assert len(_errors(db)) == 4
    assert db.scalar("SELECT count(*) FROM tradelog_write_batches") == 2


@pytest.fixture
def configured(db: MigratedDatabase, tmp_path: Path) -> Iterator[tradelog.Runtime]:
    """tradelog configured on the test database."""
    yield tradelog.configure(_settings(db, tmp_path))
    tradelog.shutdown()


def test_capture_exception_uses_the_configured_runtime(
    configured: tradelog.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``capture_exception()`` records the exception being handled, with extra context."""
    assert not tradelog.capture_exception()  # nothing being handled
    try:
        raise ArithmeticError("pnl overflow")
    except ArithmeticError:
        assert tradelog.capture_exception(user_id=users["alice"], symbol="TCS")
    assert tradelog.flush(10)
    [row] = _errors(db)
    assert row["error_type"] == "ArithmeticError"
    assert "TCS" in str(row["context"])
    assert "capture_exception" in str(row["context"])


def test_guard_records_synchronously_and_reraises(
    configured: tradelog.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """``guard`` as a decorator and a context manager: the row exists when the error leaves."""

    @tradelog.guard
    def child_work() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        child_work()
    assert len(_errors(db)) == 1
    with pytest.raises(LookupError), tradelog.guard(user_id=users["bob"], job="rebalance"):
        raise LookupError("no such symbol")
    rows = _errors(db)
    assert [r["user_id"] for r in rows][1] == users["bob"]
    assert "rebalance" in str(rows[1]["context"])


async def _async_guarded() -> None:
    raise ValueError("async child")


def test_guard_wraps_coroutines(
    configured: tradelog.Runtime, db: MigratedDatabase, users: dict[str, int]
) -> None:
    """An async function wrapped by ``guard`` is recorded too."""
    import asyncio

    with pytest.raises(ValueError, match="async child"):
        asyncio.run(tradelog.guard(_async_guarded)())
    assert [r["error_message"] for r in _errors(db)] == ["async child"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_idle_writer_stores_spilled_rows_when_the_database_returns(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Rows spilled while the database was missing land once it is back, without new errors."""
    import shutil
    import time

    later = tmp_path / "later"
    errors = ErrorCapture(
        _settings(db, tmp_path),
        create_tradelog_engine(f"sqlite:///{later / 'tradelog.db'}"),
        notifier=None,
        retry_delays=(),
        replay_interval=0.05,
    )
    try:
        errors.capture(_raise(ValueError("while missing")), user_id=users["alice"])
        assert not errors.flush(0.5)  # in the spill file only
        assert errors.stats()["spilled"] == 1
        db.engine.dispose()
        staging = tmp_path / "staging"
        staging.mkdir()
        shutil.copyfile(db.url.removeprefix("sqlite:///"), staging / "tradelog.db")
        staging.rename(later)  # at once: no retry can open an empty file in between
        deadline = time.monotonic() + 10
        while errors.stats()["replayed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert errors.stats()["replayed"] == 1
    finally:
        errors.close()
        errors.engine.dispose()
    replayed = create_tradelog_engine(f"sqlite:///{later / 'tradelog.db'}")
    with replayed.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("SELECT error_message FROM error_logs")).scalars().all() == [
            "while missing"
        ]
    replayed.dispose()


def test_locals_are_recorded_only_when_enabled(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``capture_locals=True`` adds scrubbed locals of the innermost frames to the context."""

    def login(broker_password: str, attempt: int) -> None:
        raise PermissionError(f"attempt {attempt} refused")

    errors = ErrorCapture(_settings(db, tmp_path, capture_locals=True), db.engine, notifier=None)
    plain = ErrorCapture(_settings(db, tmp_path), db.engine, notifier=None)
    try:
        try:
            login("pw-secret-1", 2)
        except PermissionError as exc:
            errors.capture(exc, user_id=users["alice"])
        assert errors.flush(10)
        try:
            login("pw-secret-2", 3)
        except PermissionError as exc:
            plain.capture(exc, user_id=users["alice"])
        assert plain.flush(10)
    finally:
        errors.close()
        plain.close()
    with db.session() as session:
        from sqlalchemy import select

        from tradelog._db.models import ErrorLog

        with_locals, without = session.scalars(select(ErrorLog).order_by(ErrorLog.id)).all()
    innermost = with_locals.context["locals"][-1]
    assert innermost["locals"] == {"broker_password": "[REDACTED]", "attempt": "2"}
    assert "pw-secret" not in str(with_locals.context)
    assert "locals" not in _without_snapshot(without.context)


def test_concurrent_captures_never_lose_a_count(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Four writers (as four processes would have) increment ``error_count`` without losses."""
    import threading

    settings = _settings(db, tmp_path)
    captures = [ErrorCapture(settings, db.engine, notifier=None) for _ in range(4)]

    def hammer(errors: ErrorCapture) -> None:
        for n in range(25):
            errors.capture(_raise(ValueError(str(n))), user_id=users["bob"], sync=n % 5 == 0)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in captures]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for errors in captures:
        assert errors.flush(30)
        errors.close()
    assert db.scalar("SELECT count(*) FROM error_logs WHERE user_id = :u", u=users["bob"]) == 100
    assert _status(db, users["bob"])["error_count"] == 100
