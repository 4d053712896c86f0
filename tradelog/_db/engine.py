"""Engines and sessions for the toolkit's own connections.

tradelog never borrows the host application's session or connection: every writer builds its own
engine here. SQLite gets WAL, foreign keys, a busy timeout and ``synchronous=NORMAL``; PostgreSQL
URLs are routed to psycopg 3. A SQLite database file that does not exist yet is created here,
owner-only (``0600``) whatever the umask; SQLite gives its ``-wal`` and ``-shm`` files the same
mode.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tradelog._files import open_private
from tradelog.exceptions import ConfigurationError, MissingExtraError, StorageError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "STATEMENT_TIMEOUT_MS",
    "Engines",
    "check_connection",
    "create_tradelog_engine",
    "mask_url",
    "normalize_url",
    "session_factory",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000
STATEMENT_TIMEOUT_MS = 5_000
"""Milliseconds one PostgreSQL statement of tradelog's own may run (``statement_timeout``)."""


def mask_url(url: str | URL) -> str:
    """Render ``url`` with its password hidden (``***``)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pick tradelog's driver for its dialect (psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_savepoint(connection: Any, _name: str) -> None:
    # pysqlite begins a transaction lazily, right before the first INSERT/UPDATE/DELETE, and not
    # before SAVEPOINT: a savepoint opened first would run outside any transaction and its RELEASE
    # would commit, surviving a later rollback. Begin explicitly first. IMMEDIATE takes the write
    # lock now (waiting up to the busy timeout), since a savepoint is opened to write.
    dbapi_connection = connection.connection.driver_connection
    if not dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _create_sqlite_file(parsed: URL) -> None:
    """Create a missing SQLite database file owner-only (SQLite would use the umask)."""
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or parsed.query.get("uri"):
        return
    try:
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    except OSError:
        return  # a missing folder or no permission: SQLite reports it on connect


def create_tradelog_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` configured the way tradelog needs it.

    Raises :class:`MissingExtraError` when the PostgreSQL driver is not installed and
    :class:`ConfigurationError` for a malformed URL.
    """
    parsed = normalize_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        _create_sqlite_file(parsed)
        options.pop("pool_pre_ping")
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    options.update(kwargs)
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"unsupported database URL {mask_url(parsed)}: {exc}") from exc
    except ModuleNotFoundError as exc:
        if "psycopg" in str(exc):
            raise MissingExtraError("postgres", "psycopg") from exc
        raise
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "savepoint", _sqlite_savepoint)
    return engine


def check_connection(engine: Engine) -> None:
    """Open one connection, or raise :class:`StorageError` naming the (masked) URL."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (OperationalError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
        raise StorageError(f"cannot reach database {mask_url(engine.url)}: {reason}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine`` that keeps objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


class Engines:
    """The engines one runtime owns, created on first use and disposed together.

    * :meth:`app` - a pooled engine for the calls a host makes on its own threads
      (notifications, heartbeats, task rows, error rows, inbox reads);
    * :meth:`background` - the delivery worker's and retention's, so a busy worker never
      takes connections from the host-facing pool;
    * :meth:`log_writer` - one connection for the log writer, with a connect timeout.

    Never the host's engine: tradelog's transactions and the host's never mix.
    """

    def __init__(self, url: str, *, writer_timeout: float = 5.0) -> None:
        self.url = url
        self.writer_timeout = writer_timeout
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self.inherited: list[object] = []
        """Engines inherited through ``fork``: kept referenced, never closed, in the child."""

    def _get(self, role: str, **options: Any) -> Engine:
        with self._lock:
            engine = self._engines.get(role)
            if engine is None:
                engine = self._engines[role] = create_tradelog_engine(self.url, **options)
            return engine

    def app(self) -> Engine:
        """The engine for the host-facing calls."""
        return self._get("app")

    def background(self) -> Engine:
        """The engine of the background jobs (delivery worker, retention)."""
        return self._get("background")

    def log_writer(self) -> Engine:
        """A one-connection engine for the log writer (connects within ``writer_timeout``)."""
        backend = normalize_url(self.url).get_backend_name()
        timeout = self.writer_timeout
        if backend == "sqlite":
            args: dict[str, Any] = {"timeout": timeout, "check_same_thread": False}
        else:
            args = {
                "connect_timeout": max(1, round(timeout)),
                "application_name": "tradelog-writer",
            }
        return self._get("log_writer", connect_args=args, pool_size=1, max_overflow=0)

    def dispose(self) -> None:
        """Close every pooled connection of every engine created so far."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.dispose()

    def after_fork(self) -> None:
        """In a forked child: keep the parent's engines referenced but unused; new ones are
        created on first use (closing the inherited connections would end the parent's)."""
        self._lock = threading.Lock()
        self.inherited.extend(self._engines.values())
        self._engines = {}
