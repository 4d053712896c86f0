"""Every synchronous call that touches the database returns, or raises a tradelog exception,
within its bound: against a black hole, an unmigrated database and a database held under a lock.
Notifications and telemetry made while the database cannot take them are spooled and replayed.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import tradelog
from tests.support.blackhole import black_hole
from tests.support.db import MigratedDatabase
from tests.support.tcp_proxy import TcpProxy
from tradelog import audit, errors, health, ml, notifications, trading_config
from tradelog import users as users_api
from tradelog._cli import main as cli_main
from tradelog._db.engine import DbBounds, create_tradelog_engine
from tradelog._db.watchdog import watchdog
from tradelog.exceptions import StorageError, TradelogError

BOUND = 5.0
"""Seconds any one call may take here: the connect bound (libpq's minimum, 2 s) plus margin."""

CLI_BOUND = 8.0
"""A CLI command: the connect bound plus parsing and lazy imports on a loaded machine
(measured 2.1-2.4 s idle, 5.0 s during the full suite)."""

SessionCall = Callable[[Session], object]

_SESSION_CALLS: list[tuple[str, SessionCall]] = [
    ("notifications.list_notifications", lambda s: notifications.list_notifications(s, 1)),
    ("notifications.unread_count", lambda s: notifications.unread_count(s, 1)),
    ("notifications.mark_read", lambda s: notifications.mark_read(s, 1, 1)),
    ("notifications.mark_all_read", lambda s: notifications.mark_all_read(s, 1)),
    ("notifications.get_preferences", lambda s: notifications.get_preferences(s, 1)),
    (
        "notifications.update_preferences",
        lambda s: notifications.update_preferences(s, 1, 1, email_enabled=False),
    ),
    ("errors.list_errors", lambda s: errors.list_errors(s, 1)),
    ("errors.get_error", lambda s: errors.get_error(s, 1, 1)),
    ("errors.resolve", lambda s: errors.resolve(s, 1, 1)),
    ("errors.error_groups", lambda s: errors.error_groups(s, 1)),
    ("trading_config.get_config", lambda s: trading_config.get_config(s, 1, 1)),
    ("trading_config.update_config", lambda s: trading_config.update_config(s, 1, 1)),
    ("ml.list_models", lambda s: ml.list_models(s, 1)),
    ("ml.list_jobs", lambda s: ml.list_jobs(s, 1)),
    ("audit.list_audit", lambda s: audit.list_audit(s, 1)),
    (
        "audit.record_audit",
        lambda s: audit.record_audit(s, user_id=1, action="x", resource_type="y"),
    ),
    ("users.list_users", lambda s: users_api.list_users(s, 1)),
    ("users.ensure_user", lambda s: users_api.ensure_user(7, session=s)),
    (
        "health.service_overview",
        lambda s: health.service_overview(s, 1, datetime.now(UTC), 60),
    ),
    (
        "notify(session=...)",
        lambda s: tradelog.notify(1, "system", "info", "t", "m", session=s),
    ),
]


def _timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def _on_a_thread(
    body: Callable[[], tuple[float, BaseException | None]], what: str, within: float = 30.0
) -> tuple[float, BaseException | None]:
    """What ``body`` returns, run on a daemon thread: a call that never returns fails the test
    after ``within`` seconds instead of hanging it."""
    outcome: list[tuple[float, BaseException | None]] = []
    worker = threading.Thread(target=lambda: outcome.append(body()), daemon=True)
    worker.start()
    worker.join(within)
    assert outcome, f"{what} was still waiting after {within:.0f} s"
    return outcome[0]


def _concurrently(
    calls: dict[str, Callable[[], object]], workers: int
) -> dict[str, tuple[float, BaseException | None]]:
    """Run each call on its own thread (``workers`` at a time), each timed where it runs."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(_timed, call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def _in_a_session(runtime: tradelog.Runtime, call: SessionCall) -> Callable[[], object]:
    def run() -> object:
        with runtime.session() as session:
            return call(session)

    return run


SESSION_WORKERS = 10
"""Session calls waiting at once: fewer than the runtime's pool holds (5 + 10 overflow), so each
call opens its own connection and none is turned away by the pool's wait instead."""


def _configure(url: str, log_dir: Path, **options: Any) -> tradelog.Runtime:
    return tradelog.configure(
        database_url=url,
        log_dir=log_dir,
        console=False,
        worker=False,
        schema_check="off",
        db_connect_timeout=1,
        db_statement_timeout=1,
        db_write_timeout=1,
        telemetry_wait=0.2,
        **options,
    )


@pytest.mark.slow
def test_black_hole_every_sync_api_is_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a port that accepts and never answers: telemetry returns at once, notify()
    spools, every session API and CLI command raises StorageError (masked URL) in < 5 s."""
    with black_hole() as port:
        url = f"postgresql+psycopg://tl:hunter2pw@127.0.0.1:{port}/tradelog"
        runtime = _configure(url, tmp_path)

        def task() -> None:
            with tradelog.track_task(1, "sell_monitor"):
                pass

        telemetry = {
            "heartbeat": lambda: tradelog.heartbeat(1),
            "mark_running": lambda: tradelog.mark_running(1),
            "track_task": task,
            "mark_stopped": lambda: tradelog.mark_stopped(1),
        }
        for name, call in telemetry.items():
            seconds, exc = _timed(call)
            assert exc is None, f"{name} raised {exc!r}"
            assert seconds < 0.2 + 0.5, f"{name} took {seconds:.2f} s"

        # Each call waits out its own bound; the waits overlap (threads) instead of adding up.
        # The CLI commands run one after the other on a thread of their own: on Python 3.11 a
        # cached_property (the command's engine) holds one lock for every instance of a class.
        monkeypatch.setenv("TRADELOG_DATABASE_URL", url)
        monkeypatch.setenv("TRADELOG_DB_CONNECT_TIMEOUT", "1")
        monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path))
        commands = (["errors", "list"], ["notify", "list"], ["users", "list"], ["status"], ["logs"])
        cli_took: list[tuple[list[str], int | None, float, BaseException | None]] = []

        def run_commands() -> None:
            for argv in commands:
                codes: list[int] = []
                seconds, exc = _timed(partial(lambda a, c: c.append(cli_main(a)), argv, codes))
                cli_took.append((argv, codes[0] if codes else None, seconds, exc))

        cli = threading.Thread(target=run_commands, name="cli-commands", daemon=True)
        cli.start()

        seconds, exc = _timed(lambda: tradelog.notify(1, "system", "info", "t", "m"))
        assert exc is None
        assert seconds < BOUND
        result = tradelog.notify(1, "system", "info", "t2", "m2")
        assert result.spooled
        assert not result.created
        assert result.notification_id is None

        outcomes = _concurrently(
            {name: _in_a_session(runtime, call) for name, call in _SESSION_CALLS},
            SESSION_WORKERS,
        )
        took: dict[str, float] = {}
        for name, (seconds, exc) in outcomes.items():
            took[name] = seconds
            assert seconds < BOUND, f"{name} took {seconds:.1f} s"
            assert exc is None or isinstance(exc, TradelogError), f"{name} raised {exc!r}"
            assert "pooled connection is busy" not in str(exc), f"{name}: {exc}"
        with runtime.session() as session, pytest.raises(StorageError) as raised:
            notifications.unread_count(session, 1)
        assert "hunter2pw" not in str(raised.value)
        assert "***" in str(raised.value)

        cli.join(len(commands) * CLI_BOUND)
        assert [argv for argv, *_ in cli_took] == list(commands)
        for argv, code, seconds, exc in cli_took:
            assert exc is None, f"{argv} raised {exc!r}"
            assert code == 3, f"{argv} exited {code}"
            assert seconds < CLI_BOUND, f"{argv} took {seconds:.1f} s"
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert "hunter2pw" not in err

        seconds, exc = _timed(lambda: tradelog.shutdown(2))
        assert exc is None
        assert seconds < 2 + 1
    print(f"slowest session call: {max(took.values()):.2f} s ({max(took, key=took.__getitem__)})")
    spools = sorted(p.name for p in (tmp_path / "_runtime").glob("*-unwritten-*.jsonl"))
    assert any(name.startswith("health-unwritten-") for name in spools)
    assert any(name.startswith("notify-unwritten-") for name in spools)
    for path in (tmp_path / "_runtime").glob("*-unwritten-*.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("backend", ["postgresql"])
def test_an_established_connection_that_stops_answering_is_cut(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Behind a proxy that black-holes the open connections (bytes accepted, nothing answers:
    no server-side timeout or keepalive can see it), a session call on a pooled connection
    raises StorageError within its bound (the ping cut after the connect bound, a new
    connection refused after libpq's 2 s), and so does the next one; once the network is back,
    calls work again."""
    alice = users["alice"]
    with TcpProxy.for_url(db.url) as proxy:
        runtime = _configure(proxy.url(db.url), tmp_path)  # bounds: 1 s + 1 s
        with runtime.session() as session:
            assert notifications.unread_count(session, alice) == 0  # the connection is open
        proxy.set_mode("black_hole")
        for _ in range(2):

            def call() -> tuple[float, BaseException | None]:
                with runtime.session() as session:
                    return _timed(lambda: notifications.unread_count(session, alice))

            seconds, exc = _on_a_thread(call, "the call")
            assert isinstance(exc, StorageError), repr(exc)
            # the pool's ping of the idle connection is cut after 1 s, its replacement gives
            # up connecting after 2 s (libpq's minimum), plus margin
            assert seconds < 1.0 + 2.0 + 1.5, f"took {seconds:.2f} s"
        proxy.set_mode("pass")  # (resets the connections it held)

        # A statement on a connection the session already holds (no ping first).
        def in_transaction() -> tuple[float, BaseException | None]:
            with runtime.session() as session:
                assert notifications.unread_count(session, alice) == 0
                proxy.set_mode("black_hole")
                return _timed(lambda: notifications.unread_count(session, alice))

        seconds, exc = _on_a_thread(in_transaction, "the statement")
        assert isinstance(exc, StorageError), repr(exc)
        assert seconds < 2.0 + 1.5, f"statement took {seconds:.2f} s"  # statement + connect
        proxy.set_mode("pass")
        with runtime.session() as session:
            assert notifications.unread_count(session, alice) == 0
        runtime.shutdown(2)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_the_client_side_bound_spares_a_transaction_that_lifts_its_limit(
    db: MigratedDatabase,
) -> None:
    """The watchdog cuts a statement still waiting at statement + connect seconds (here 0.5 s)
    even when the server would wait longer, and leaves alone a transaction that set
    ``statement_timeout = 0`` for itself (a migration, converting to partitions) until it
    ends."""
    engine = create_tradelog_engine(db.url, bounds=DbBounds(connect=0.3, statement=0.2))
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SELECT pg_sleep(1.0)"))  # past 0.5 s: left alone
        cut = watchdog.cut
        started = time.monotonic()
        with engine.connect() as connection:
            connection.execute(text("SET LOCAL statement_timeout = 10000"))  # the server waits
            with pytest.raises(StorageError):
                connection.execute(text("SELECT pg_sleep(3.0)"))
        assert time.monotonic() - started < 0.5 + 1.0
        assert watchdog.cut == cut + 1
        with engine.begin() as connection:  # the pool replaced the cut connection
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_shutdown_keeps_its_bound_with_errors_waiting_and_the_database_away(
    tmp_path: Path,
) -> None:
    """shutdown(timeout) returns within its timeout while captured errors and log rows cannot
    reach the database (a refused port); both stay on disk for the next writer."""
    _configure("postgresql://tradelog@127.0.0.1:9/nowhere", tmp_path)
    tradelog.get_logger("bounds", user_id=1).info("while the database is away")
    for _ in range(3):
        try:
            raise ValueError("while the database is away")
        except ValueError as exc:
            tradelog.capture_exception(exc)
    seconds, exc = _timed(lambda: tradelog.shutdown(1.0))
    assert exc is None
    assert seconds < 1.0 + 0.5, f"shutdown(1.0) took {seconds:.2f} s"
    assert list((tmp_path / "_runtime").glob("errors-unwritten-*.jsonl"))
    assert list((tmp_path / "_spool").glob("spool-*"))


def test_unmigrated_database_says_run_db_upgrade(empty_url: str, tmp_path: Path) -> None:
    """On a database without tradelog's tables every session API and notify() raise
    StorageError saying to run `tradelog db upgrade`; heartbeat() returns False, no raise."""
    runtime = _configure(empty_url, tmp_path)
    with pytest.raises(StorageError, match="tradelog db upgrade"):
        tradelog.notify(1, "system", "info", "t", "m")
    for name, call in _SESSION_CALLS:
        with runtime.session() as session:
            seconds, exc = _timed(lambda c=call, s=session: c(s))  # type: ignore[misc]
        assert seconds < BOUND, f"{name} took {seconds:.1f} s"
        assert exc is None or isinstance(exc, TradelogError), f"{name} raised {exc!r}"
        if isinstance(exc, StorageError):
            assert "tradelog db upgrade" in str(exc), f"{name}: {exc}"
    assert tradelog.heartbeat(1) is False


@contextmanager
def _locked(db: MigratedDatabase, table: str) -> Iterator[None]:
    """Hold ``table`` (PostgreSQL) or the whole SQLite database under a write lock."""
    if db.backend == "sqlite":
        path = db.engine.url.database
        assert path
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_engine(db.url)
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            transaction.rollback()
    engine.dispose()


def _wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_notify_spools_while_locked_and_replays_in_order(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """notify() while the database cannot take the write: spooled (0600, one line each) within
    the statement bound, then replayed in order with the dedupe key honoured; session=
    raises StorageError."""
    alice = users["alice"]
    runtime = _configure(db.url, tmp_path)
    with _locked(db, "notifications"):
        started = time.monotonic()
        first = tradelog.notify(alice, "trading", "info", "A", "first", dedupe_key="fill-1")
        second = tradelog.notify(alice, "trading", "info", "B", "second")
        again = tradelog.notify(alice, "trading", "info", "A again", "dup", dedupe_key="fill-1")
        took = time.monotonic() - started
        assert first.spooled
        assert second.spooled
        assert again.spooled
        assert took < 1 + BOUND
        with runtime.session() as session, pytest.raises(StorageError):
            tradelog.notify(alice, "trading", "info", "C", "in a session", session=session)
        spools = list((tmp_path / "_runtime").glob("notify-unwritten-*.jsonl"))
        assert spools
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in spools)
        assert sum(len(p.read_text().splitlines()) for p in spools) == 3
    # replayed is counted after the spool files are gone: wait for the count
    assert _wait_for(lambda: runtime.notifications.replayed == 3, 15)
    assert not list((tmp_path / "_runtime").glob("notify-unwritten-*.jsonl"))
    rows = db.rows(
        "SELECT title, dedupe_key FROM notifications WHERE user_id = :u ORDER BY id", u=alice
    )
    assert [(r["title"], r["dedupe_key"]) for r in rows] == [("A", "fill-1"), ("B", None)]
    direct = tradelog.notify(alice, "trading", "info", "D", "after")
    assert direct.created
    assert not direct.spooled


def test_telemetry_never_waits_on_a_locked_database(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Heartbeats and task rows while the status table is locked: each call returns within the
    telemetry wait; afterwards every task row and the latest heartbeat are in the database."""
    alice = users["alice"]
    runtime = _configure(db.url, tmp_path)
    assert tradelog.heartbeat(alice) is True  # the normal path is still synchronous
    slowest = 0.0
    with _locked(db, "service_status"):
        for run in range(5):
            started = time.monotonic()
            tradelog.heartbeat(alice)
            with tradelog.track_task(alice, "sell_monitor") as task:
                task["run"] = run
            slowest = max(slowest, time.monotonic() - started)
        last = datetime.now(UTC)
        tradelog.heartbeat(alice)
        assert runtime.flush(0.5) is False  # not in the database yet: flush says so
    assert slowest < 2 * 0.2 + 0.5, f"slowest {slowest:.2f} s"
    assert runtime.flush(15) is True
    runs = db.rows(
        "SELECT details FROM service_task_execution WHERE user_id = :u ORDER BY id", u=alice
    )
    assert len(runs) == 5
    beat = db.scalar("SELECT last_heartbeat FROM service_status WHERE user_id = :u", u=alice)
    if isinstance(beat, str):
        beat = datetime.fromisoformat(beat)
    assert isinstance(beat, datetime)
    assert beat.replace(tzinfo=UTC) >= last.replace(microsecond=0) - timedelta(seconds=1)
    assert not list((tmp_path / "_runtime").glob("health-unwritten-*.jsonl"))


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_long_statement_is_cut_at_the_statement_bound(
    db: MigratedDatabase, tmp_path: Path
) -> None:
    """PostgreSQL: every connection of the runtime's engine runs under statement_timeout; a
    statement longer than the bound raises StorageError after about that long."""
    runtime = _configure(db.url, tmp_path)
    with runtime.session() as session:
        assert session.execute(text("SHOW statement_timeout")).scalar() == "1s"
        started = time.monotonic()
        with pytest.raises(StorageError, match="statement timeout"):
            session.execute(text("SELECT pg_sleep(10)"))
    assert time.monotonic() - started < 1 + 1.5
