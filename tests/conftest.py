"""Shared fixtures: a migrated database per test on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

# python-telegram-bot 22 warns on every RetryAfter unless timedelta mode is chosen; the suite turns
# warnings into errors, so choose it (tradelog accepts both int and timedelta retry_after values).
os.environ.setdefault("PTB_TIMEDELTA", "true")

from tests.support import spawns
from tests.support.db import MigratedDatabase, PostgresTemplate, SqliteTemplate
from tradelog import _runtime
from tradelog._db.engine import create_tradelog_engine
from tradelog.users import create_user

BACKENDS = ["sqlite", "postgresql"]


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Across xdist workers, each worker's share of the run starts with its share of the tests
    marked slow, so that no long test starts near the end and leaves the other workers idle.

    xdist's ``worksteal`` hands each worker a contiguous slice of the collection and later moves
    tests from the end of one worker's queue to an idle one; the order is built to match: one
    group per worker, its slow tests first, then its run of the other tests in their own order.
    Every worker computes the same order, as xdist requires.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2 or getattr(config.option, "dist", "no") != "worksteal":
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    rest = [item for item in items if not item.get_closest_marker("slow")]
    share = -(-len(rest) // workers)
    items[:] = [
        item
        for worker in range(workers)
        for item in (*slow[worker::workers], *rest[worker * share : (worker + 1) * share])
    ]


@pytest.fixture(autouse=True)
def _quick_tests_start_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test not marked ``slow`` may not start another interpreter or program (see
    :mod:`tests.support.spawns`): ``make test-fast`` leaves out the slow tests only."""
    spawns.watch()
    spawns.started.clear()
    yield
    if spawns.started and request.node.get_closest_marker("slow") is None:
        pytest.fail(f"started {spawns.started[0]!r}: mark the test slow", pytrace=False)


@pytest.fixture(autouse=True)
def _isolated_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends without tradelog configured: no ``TRADELOG_*`` variable from
    the shell, structlog at its defaults, the process hooks, root logger, ``Logger.callHandlers``
    and ``SIGTERM`` disposition as they were."""
    for name in list(os.environ):
        if name.startswith("TRADELOG_"):
            monkeypatch.delenv(name)
    # A heartbeat or task row returns True once it is in the database; the default wait
    # (0.5 s) is what a service should spend, not what a loaded test machine always needs.
    # Tests of the wait itself pass telemetry_wait explicitly.
    monkeypatch.setenv("TRADELOG_TELEMETRY_WAIT", "10")
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    call_handlers = logging.Logger.callHandlers
    sigterm = signal.getsignal(signal.SIGTERM)
    sigint = signal.getsignal(signal.SIGINT)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    yield
    _runtime.reset()
    sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign]
    if signal.getsignal(signal.SIGTERM) is not sigterm:
        signal.signal(signal.SIGTERM, sigterm)
    # Processes a test starts inherit an ignored SIGINT and the signal mask: put them back too.
    if signal.getsignal(signal.SIGINT) is not sigint:
        signal.signal(signal.SIGINT, sigint)
    if signal.pthread_sigmask(signal.SIG_BLOCK, ()) != mask:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """One migrated SQLite file per test session."""
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PostgresTemplate]:
    """One migrated PostgreSQL template database per test session (and xdist worker)."""
    template = PostgresTemplate()
    yield template
    template.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend under test."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a freshly migrated database of the current backend, private to this test."""
    if backend == "sqlite":
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        with template.clone(tmp_path) as url:
            yield url
    else:
        pg: PostgresTemplate = request.getfixturevalue("pg_template")
        with pg.clone() as url:
            yield url


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, unmigrated database of the current backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        pg: PostgresTemplate = request.getfixturevalue("pg_template")
        with pg.empty() as url:
            yield url


@pytest.fixture
def db(db_url: str, backend: str) -> Iterator[MigratedDatabase]:
    """The per-test database with an engine and SQL helpers."""
    engine = create_tradelog_engine(db_url)
    yield MigratedDatabase(backend, db_url, engine)
    engine.dispose()


@pytest.fixture
def users(db: MigratedDatabase) -> dict[str, int]:
    """Three users: ``admin``, ``alice`` and ``bob``; returns their ids by name."""
    with db.session() as session:
        ids = {
            "admin": create_user(session, email="admin@example.com", name="Admin", role="admin").id,
            "alice": create_user(session, email="alice@example.com", name="Alice").id,
            "bob": create_user(session, email="bob@example.com", name="Bob").id,
        }
        session.commit()
    return ids
