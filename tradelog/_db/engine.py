"""Engines and sessions for the toolkit's own connections.

tradelog never borrows the host application's session or connection: every writer builds its own
engine here. SQLite gets WAL, foreign keys, a busy timeout and ``synchronous=NORMAL``; PostgreSQL
URLs are routed to psycopg 3. A SQLite database file that does not exist yet is created here,
owner-only (``0600``) whatever the umask; SQLite gives its ``-wal`` and ``-shm`` files the same
mode.

With a ``schema`` (``TRADELOG_DB_SCHEMA``, PostgreSQL only) every connection of the engine sets
``search_path`` to that schema alone when it opens, so each unqualified table name tradelog
uses - ORM models, raw SQL, ``COPY`` - is tradelog's table in its own schema and never a host
table of the same name elsewhere. The schema travels with the engine (:func:`schema_of`).

**Bounds.** An engine built with :class:`DbBounds` (the runtime's host-facing and background
engines, the CLI's) never waits on the database longer than its bounds and raises only
:class:`~tradelog.exceptions.StorageError`:

* connecting: ``connect_timeout`` (PostgreSQL; libpq counts whole seconds, at least 2) and
  ``pool_timeout`` (waiting for a pooled connection while all are busy), both
  ``DbBounds.connect``;
* each statement: PostgreSQL ``statement_timeout`` (set at connect) and, for a connection whose
  peer vanished mid-statement (a black hole), ``tcp_user_timeout`` plus TCP keepalives; SQLite's
  busy timeout (how long a statement waits for another writer's lock);
* each PostgreSQL statement, commit and rollback on the client side too: a call still waiting
  ``statement + connect`` seconds after it was sent (the pool's ping of an idle connection:
  ``connect``) has its socket shut down (:mod:`tradelog._db.watchdog`), for a path that accepts
  bytes but never answers;
* every driver error (``DBAPIError``) except an ``IntegrityError`` - which callers handle as a
  constraint outcome - is translated by a ``handle_error`` listener into ``StorageError`` naming
  the masked URL, the original kept as ``__cause__``; a missing table says to run
  ``tradelog db upgrade``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from tradelog._db.watchdog import bound_driver_calls
from tradelog._files import open_private
from tradelog.exceptions import ConfigurationError, MissingExtraError, StorageError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "STATEMENT_TIMEOUT_MS",
    "DbBounds",
    "Engines",
    "check_connection",
    "create_tradelog_engine",
    "mask_url",
    "normalize_url",
    "schema_missing",
    "schema_of",
    "session_factory",
    "storage_error",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000
STATEMENT_TIMEOUT_MS = 5_000
"""Milliseconds one PostgreSQL statement of tradelog's own may run (``statement_timeout``)."""
_SCHEMA_OPTION = "tradelog_schema"
"""The engine execution option that carries its schema (see :func:`schema_of`)."""


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


_SCHEMA_MISSING = ("no such table", "no such column", "has no column", "does not exist")
"""Fragments of SQLite's and PostgreSQL's messages for a table or column that is not there."""
_UNDEFINED_SQLSTATES = ("42P01", "42703")  # undefined_table, undefined_column


@dataclass(frozen=True, slots=True)
class DbBounds:
    """How long one database call may wait (seconds; see the module docstring)."""

    connect: float = 5.0
    """Opening a connection, or waiting for a pooled one (``TRADELOG_DB_CONNECT_TIMEOUT``)."""
    statement: float = 5.0
    """One statement, a lock wait included (``TRADELOG_DB_STATEMENT_TIMEOUT``)."""


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def listener(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    return listener


def schema_missing(exc: BaseException) -> bool:
    """Whether ``exc`` (or the driver error it wraps) says a tradelog table or column is
    missing: the database was never migrated, or is behind."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) in _UNDEFINED_SQLSTATES:
        return True
    text_ = str(original).lower()
    return "no such table" in text_ or "no such column" in text_ or "has no column" in text_


def storage_error(exc: BaseException, url: str | URL) -> StorageError:
    """The :class:`StorageError` a database failure of ``url`` becomes (masked URL, one line,
    "run ``tradelog db upgrade``" when the schema is missing)."""
    where = mask_url(url)
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    if schema_missing(exc):
        return StorageError(
            f"database {where} does not have tradelog's tables ({reason}): "
            "run `tradelog db upgrade`"
        )
    return StorageError(f"database {where}: {reason}")


def _translate_errors(url: URL) -> Any:
    """A ``handle_error`` listener raising :func:`storage_error` instead of a driver error."""

    def listener(context: ExceptionContext) -> None:
        if context.is_pre_ping:
            return  # the pool recycles the dead connection and tries a fresh one
        original = context.original_exception
        if isinstance(context.sqlalchemy_exception, sa_exc.IntegrityError):
            return
        if not isinstance(context.sqlalchemy_exception, sa_exc.DBAPIError):
            return
        raise storage_error(original, url)

    return listener


class _BoundedPool(QueuePool):
    """A queue pool whose wait for a free connection ends in :class:`StorageError`."""

    _tradelog_url = "the database"
    _sqla_logger_namespace = "sqlalchemy.pool.impl.QueuePool"  # log where QueuePool logs

    def _do_get(self) -> ConnectionPoolEntry:
        try:
            return super()._do_get()
        except sa_exc.TimeoutError as exc:
            raise StorageError(
                f"database {self._tradelog_url}: every pooled connection is busy "
                f"(waited {self._timeout:g} s)"
            ) from exc


def _bounded_options(parsed: URL, bounds: DbBounds) -> dict[str, Any]:
    """``create_engine`` options that bound every wait (see the module docstring)."""
    options: dict[str, Any] = {}
    memory = not parsed.database or parsed.database == ":memory:"
    if not memory:
        options["poolclass"] = _BoundedPool
        options["pool_timeout"] = bounds.connect
    if parsed.get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": bounds.statement}
        return options
    statement_ms = max(1, round(bounds.statement * 1000))
    args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(bounds.connect)),
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(bounds.connect)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": max(1, round((bounds.connect + bounds.statement) * 1000)),
    }
    if "options" not in parsed.query:
        args["options"] = f"-c statement_timeout={statement_ms}"
    options["connect_args"] = args
    return options


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


def _search_path(schema: str) -> Any:
    """A ``connect`` listener that points a new PostgreSQL connection at ``schema`` only."""
    statement = f'SET SESSION search_path TO "{schema}"'

    def listener(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit

    return listener


def schema_of(engine: Engine) -> str | None:
    """The schema ``engine`` keeps tradelog's tables in (None: the connection's default)."""
    found = engine.get_execution_options().get(_SCHEMA_OPTION)
    return str(found) if found else None


def create_tradelog_engine(
    url: str | URL,
    *,
    schema: str | None = None,
    bounds: DbBounds | None = None,
    **kwargs: Any,
) -> Engine:
    """Create an engine for ``url`` configured the way tradelog needs it.

    ``schema``: keep every tradelog table in this PostgreSQL schema; ``bounds``: time-bound
    every call and raise only :class:`StorageError` (both: see the module docstring). Raises
    :class:`MissingExtraError` when the PostgreSQL driver is not installed and
    :class:`ConfigurationError` for a malformed URL or a schema on SQLite.
    """
    parsed = normalize_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if schema:
            raise ConfigurationError(
                "TRADELOG_DB_SCHEMA needs PostgreSQL; an SQLite database is tradelog's alone"
            )
        _create_sqlite_file(parsed)
        options.pop("pool_pre_ping")
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    if bounds is not None:
        options.update(_bounded_options(parsed, bounds))
    if "connect_args" in kwargs and "connect_args" in options:
        kwargs = {**kwargs, "connect_args": {**options["connect_args"], **kwargs["connect_args"]}}
    options.update(kwargs)
    if schema:
        execution = dict(options.get("execution_options") or {})
        execution[_SCHEMA_OPTION] = schema
        options["execution_options"] = execution
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError as exc:
        raise ConfigurationError(f"unsupported database URL {mask_url(parsed)}: {exc}") from exc
    except ModuleNotFoundError as exc:
        if "psycopg" in str(exc):
            raise MissingExtraError("postgres", "psycopg") from exc
        raise
    if isinstance(engine.pool, _BoundedPool):
        engine.pool._tradelog_url = mask_url(parsed)
    if engine.dialect.name == "sqlite":
        busy = SQLITE_BUSY_TIMEOUT_MS if bounds is None else round(bounds.statement * 1000)
        event.listen(engine, "connect", _sqlite_pragmas(busy))
        event.listen(engine, "savepoint", _sqlite_savepoint)
    elif schema:
        event.listen(engine, "connect", _search_path(schema), insert=True)
    if bounds is not None:
        event.listen(engine, "handle_error", _translate_errors(parsed))
        if engine.dialect.name == "postgresql":
            bound_driver_calls(engine, bounds.statement + bounds.connect, bounds.connect)
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

    * :meth:`app` - a pooled, bounded engine for the calls a host makes on its own threads
      (notifications, heartbeats, task rows, error rows, inbox reads);
    * :meth:`background` - the delivery worker's and retention's, so a busy worker never
      takes connections from the host-facing pool;
    * :meth:`log_writer` - one connection for the log writer, with a connect timeout.

    Never the host's engine: tradelog's transactions and the host's never mix.
    """

    def __init__(
        self,
        url: str,
        *,
        writer_timeout: float = 5.0,
        schema: str | None = None,
        bounds: DbBounds | None = None,
    ) -> None:
        self.url = url
        self.writer_timeout = writer_timeout
        self.schema = schema
        self.bounds = bounds or DbBounds()
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self.inherited: list[object] = []
        """Engines inherited through ``fork``: kept referenced, never closed, in the child."""

    def _get(self, role: str, **options: Any) -> Engine:
        with self._lock:
            engine = self._engines.get(role)
            if engine is None:
                engine = self._engines[role] = create_tradelog_engine(
                    self.url, schema=self.schema, **options
                )
            return engine

    def app(self) -> Engine:
        """The engine for the host-facing calls (bounded: :class:`DbBounds`)."""
        return self._get("app", bounds=self.bounds)

    def background(self) -> Engine:
        """The engine of the background jobs (delivery worker, retention; bounded too)."""
        return self._get("background", bounds=self.bounds)

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
