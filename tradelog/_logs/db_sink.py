"""Getting rows into ``service_logs``: the fast bulk path per driver, and what to do when it fails.

The writer has its own engine and connection (never the host's). Rows go in with the fastest
path the driver has: ``executemany`` on SQLite, ``COPY ... FROM STDIN`` on PostgreSQL.

Failures are told apart by their cause:

* **the rows** (a ``user_id`` with no user, a value a column refuses; SQLSTATE classes 22 and 23,
  SQLite integrity and data errors): the batch is split in halves until the bad rows are
  alone; every good row lands and each bad one goes to the dead-letter file with the reason.
  Rows whose user does not exist (yet) are held back for a couple of seconds first, since a host
  may log about a user it has not committed yet.
* **the database** (down, unreachable, locked beyond the lock timeout, table missing, anything
  else): the rows are appended to the spool, further batches follow them there so the order is
  kept, and the database is retried with exponential backoff; once it answers the spool is
  replayed in order.

:class:`DatabaseSink` never raises.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from tradelog._db.engine import create_tradelog_engine, mask_url, normalize_url
from tradelog._logs.rows import DbRow
from tradelog._logs.spool import DeadLetterFile, Spool, SpoolChunk, adopt_orphans
from tradelog._logs.stats import WriterStats

__all__ = [
    "DatabaseSink",
    "DatabaseUnavailable",
    "Inserter",
    "RowsRejected",
    "make_inserter",
]

_COLUMNS: Final = "user_id, level, module, message, context, timestamp"
_BACKOFF_START: Final = 0.05
_BACKOFF_MAX: Final = 5.0
_PARK_SECONDS: Final = 2.0
"""How long rows of an unknown user wait for that user to appear before being dead-lettered."""
_PARK_RECHECK: Final = 0.25
_ORPHAN_SCAN_SECONDS: Final = 30.0
_USER_QUERY_CHUNK: Final = 500


def _nothing() -> None:
    return None


class RowsRejected(Exception):
    """The database refused something in the rows given (not the connection's fault)."""


class DatabaseUnavailable(Exception):
    """The database cannot take rows now; try again later."""


class Inserter:
    """Bulk inserts over one long-lived raw connection of a private engine.

    The connection runs in autocommit mode and each batch is one statement (a multi-row
    ``INSERT`` or a ``COPY``), so a batch is atomic and costs one round trip, and the driver
    needs the GIL back only once per batch.
    """

    backend = "generic"

    def __init__(self, engine: Engine, *, lock_timeout: float) -> None:
        self.engine = engine
        self.lock_timeout = lock_timeout
        self._raw: PoolProxiedConnection | None = None

    def insert(self, rows: Sequence[DbRow], *, on_sent: Callable[[], None] = _nothing) -> None:
        """Insert ``rows`` in one transaction, or raise :class:`RowsRejected` /
        :class:`DatabaseUnavailable` with nothing inserted.

        ``on_sent`` is called once the rows are handed to the driver, just before the part of
        the call that runs without the GIL (the insert itself, the wait for the server).
        """
        connection = self._connection()
        try:
            self._bulk(connection, rows, on_sent)
        except Exception as exc:
            self._recover(connection, exc)
            raise self._translate(exc) from exc

    def existing_users(self, ids: set[int]) -> set[int]:
        """Which of ``ids`` are users (raises :class:`DatabaseUnavailable`)."""
        connection = self._connection()
        found: set[int] = set()
        ordered = sorted(ids)
        try:
            for start in range(0, len(ordered), _USER_QUERY_CHUNK):
                found.update(self._users(connection, ordered[start : start + _USER_QUERY_CHUNK]))
        except Exception as exc:
            self._recover(connection, exc)
            translated = self._translate(exc)
            if isinstance(translated, RowsRejected):
                return found
            raise translated from exc
        return found

    def close(self) -> None:
        """Close the connection and dispose of the engine."""
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None
        with contextlib.suppress(Exception):
            self.engine.dispose()

    def abandon(self) -> None:
        """Forget the connection inherited through ``fork`` without touching it."""
        _graveyard.append((self.engine, self._raw))
        self._raw = None

    # -- per driver ------------------------------------------------------------------------

    def _bulk(self, connection: Any, rows: Sequence[DbRow], on_sent: Callable[[], None]) -> None:
        raise NotImplementedError

    def _users(self, connection: Any, ids: list[int]) -> set[int]:
        raise NotImplementedError

    def _prepare_connection(self, connection: Any) -> None:
        """Session settings for a new connection."""

    def _rejected(self, exc: BaseException) -> bool:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            try:
                raw = self.engine.raw_connection()
            except Exception as exc:
                raise DatabaseUnavailable(_describe(exc)) from exc
            try:
                self._prepare_connection(raw.driver_connection)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    raw.invalidate()
                raise DatabaseUnavailable(_describe(exc)) from exc
            self._raw = raw
        return self._raw.driver_connection

    def _recover(self, connection: Any, exc: BaseException) -> None:
        """Roll back; drop the connection unless the failure was the rows' fault."""
        try:
            connection.rollback()
        except Exception:
            self._drop()
            return
        if not self._rejected(exc):
            self._drop()

    def _drop(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.invalidate()
            self._raw = None

    def _translate(self, exc: BaseException) -> Exception:
        message = _describe(exc)
        if self._rejected(exc):
            return RowsRejected(message)
        return DatabaseUnavailable(message)


class SqliteInserter(Inserter):
    """Multi-row ``INSERT ... VALUES (...), (...)`` statements in one transaction.

    One statement per batch (split only at SQLite's bound-parameter limit) is executed in a
    single ``sqlite3_step`` with the GIL released, where ``executemany`` takes the GIL back
    after every row - which, next to a busy Python thread, costs far more than the insert.
    A busy database waits ``lock_timeout`` at most.
    """

    backend = "sqlite"
    _MAX_ROWS: Final = (32766 if sqlite3.sqlite_version_info >= (3, 32) else 999) // 6

    def __init__(self, engine: Engine, *, lock_timeout: float) -> None:
        super().__init__(engine, lock_timeout=lock_timeout)
        self._statements: dict[int, str] = {}

    def _prepare_connection(self, connection: Any) -> None:
        connection.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
        connection.isolation_level = None  # autocommit: one statement, one transaction

    def _bulk(self, connection: Any, rows: Sequence[DbRow], on_sent: Callable[[], None]) -> None:
        step = self._MAX_ROWS
        on_sent()  # binding keeps the GIL until sqlite3_step lets go of it
        if len(rows) <= step:
            connection.execute(self._statement(len(rows)), list(chain.from_iterable(rows)))
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                connection.execute(self._statement(len(chunk)), list(chain.from_iterable(chunk)))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * count)
            statement = f"INSERT INTO service_logs ({_COLUMNS}) VALUES {values}"
            if len(self._statements) >= 256:
                self._statements.clear()
            self._statements[count] = statement
        return statement

    def _users(self, connection: Any, ids: list[int]) -> set[int]:
        marks = ", ".join("?" for _ in ids)
        cursor = connection.execute(f"SELECT id FROM users WHERE id IN ({marks})", ids)
        return {int(row[0]) for row in cursor.fetchall()}

    def _rejected(self, exc: BaseException) -> bool:
        return isinstance(
            exc,
            sqlite3.IntegrityError
            | sqlite3.DataError
            | ValueError
            | TypeError
            | OverflowError
            | UnicodeError,
        )


class PostgresInserter(Inserter):
    """``COPY service_logs (...) FROM STDIN`` with ``write_row``, timestamps sent as UTC."""

    backend = "postgresql"
    _COPY: Final = f"COPY service_logs ({_COLUMNS}) FROM STDIN"

    def _prepare_connection(self, connection: Any) -> None:
        connection.execute("SET TIME ZONE 'UTC'")
        if self.lock_timeout > 0:
            connection.execute(f"SET lock_timeout = {int(self.lock_timeout * 1000)}")
        connection.commit()
        connection.autocommit = True  # each COPY is one transaction, one round trip

    def _bulk(self, connection: Any, rows: Sequence[DbRow], on_sent: Callable[[], None]) -> None:
        with connection.cursor() as cursor, cursor.copy(self._COPY) as copy:
            write = copy.write_row
            for row in rows:
                write(row)
            on_sent()  # what remains is sending the tail and waiting for the server

    def _users(self, connection: Any, ids: list[int]) -> set[int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM users WHERE id = ANY(%s)", (ids,))
            return {int(row[0]) for row in cursor.fetchall()}

    def _rejected(self, exc: BaseException) -> bool:
        import psycopg  # noqa: PLC0415 - only loaded for PostgreSQL URLs

        if isinstance(exc, ValueError | TypeError | OverflowError | UnicodeError):
            return True
        if not isinstance(exc, psycopg.Error):
            return False
        state = exc.sqlstate
        if state is None:
            return isinstance(exc, psycopg.DataError)
        return state.startswith(("22", "23"))


_graveyard: list[object] = []
"""Connections inherited through ``fork``: kept referenced so the child never closes them."""


def make_inserter(url: str, *, lock_timeout: float) -> Inserter:
    """An inserter with a private engine for ``url`` (PostgreSQL or SQLite)."""
    backend = normalize_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_tradelog_engine(
            url,
            connect_args={"timeout": lock_timeout, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        return SqliteInserter(engine, lock_timeout=lock_timeout)
    if backend == "postgresql":
        engine = create_tradelog_engine(
            url,
            connect_args={
                "connect_timeout": max(1, round(lock_timeout)),
                "application_name": "tradelog-writer",
            },
            pool_size=1,
            max_overflow=0,
        )
        return PostgresInserter(engine, lock_timeout=lock_timeout)
    raise ValueError(f"tradelog cannot write logs to a {backend} database ({mask_url(url)})")


def _describe(exc: BaseException) -> str:
    """A one-line reason, with any database URL password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


class _Interrupted(Exception):
    """The database went away part-way through; ``remaining`` rows were not written."""

    def __init__(self, remaining: list[DbRow], reason: str) -> None:
        super().__init__(reason)
        self.remaining = remaining
        self.reason = reason


class DatabaseSink:
    """Deliver batches: insert, or spool and replay, or dead-letter; never raises.

    Used by one thread only (the writer's database thread), except :meth:`spool_rows`, which
    any thread may call.
    """

    def __init__(
        self,
        inserter: Inserter,
        spool: Spool,
        dead_letter: DeadLetterFile,
        stats: WriterStats,
        *,
        batch_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inserter = inserter
        self.spool = spool
        self.dead_letter = dead_letter
        self.stats = stats
        self.batch_size = batch_size
        self._clock = clock
        self._known_users: set[int] = set()
        self._down = False
        self._delay = _BACKOFF_START
        self._next_attempt = 0.0
        self._parked: list[tuple[float, DbRow]] = []
        self._unspooled: list[DbRow] = []
        self._next_park_check = 0.0
        self._orphans: list[Spool] = []
        self._next_orphan_scan = 0.0

    # -- state -----------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Everything handed over so far (and every adopted orphan spool) is in the database
        or the dead-letter file."""
        return (
            self.spool.pending == 0
            and not self._parked
            and not self._unspooled
            and not self._orphans
        )

    def look_for_orphans(self) -> None:
        """Adopt the spools of processes that are gone at the next :meth:`maintain` (a flush
        asks for this, so what a terminated child left in its spool is replayed by it)."""
        self._next_orphan_scan = 0.0

    @property
    def available(self) -> bool:
        return not self._down

    def wait_hint(self, now: float | None = None) -> float | None:
        """Seconds until there is work to retry (None: nothing scheduled)."""
        moment = self._clock() if now is None else now
        hints = []
        if self.spool.pending or self._orphans:
            hints.append(max(0.0, self._next_attempt - moment) if self._down else 0.0)
        if self._parked:
            hints.append(max(0.0, self._next_park_check - moment))
        return min(hints) if hints else None

    # -- delivery --------------------------------------------------------------------------

    def deliver(self, rows: list[DbRow], *, on_sent: Callable[[], None] = _nothing) -> None:
        """Insert ``rows`` now, or spool them behind earlier ones.

        ``on_sent`` is called when the first insert has handed the rows to the driver (see
        :meth:`Inserter.insert`), or right away when they are spooled.
        """
        if not rows:
            on_sent()
            return
        if self._down or self.spool.pending:
            on_sent()
            self.spool_rows(rows)
            return
        try:
            self._write(rows, park=True, on_sent=on_sent)
        except _Interrupted as stop:
            self._went_down(stop.reason)
            # Nothing was pending when the insert began, so whatever was spooled while it
            # waited (the file thread gives up on a stuck insert, callers spill) is newer.
            self._spool_first(self.spool, stop.remaining)

    def spool_rows(self, rows: Sequence[DbRow]) -> None:
        """Append rows to the spool (thread-safe); nothing is lost if that fails loudly."""
        try:
            self.spool.append(rows)
        except OSError as exc:  # pragma: no cover - a full disk: keep the rows in memory
            self.stats.last_error = f"spool: {exc}"
            self._unspooled.extend(rows)
            return
        with self.stats.lock:
            self.stats.spooled += len(rows)

    def _spool_first(self, spool: Spool, rows: Sequence[DbRow]) -> None:
        """Put rows back at the front of ``spool`` (older than everything pending in it)."""
        try:
            spool.prepend(rows)
        except OSError as exc:  # pragma: no cover - a full disk: keep the rows in memory
            self.stats.last_error = f"spool: {exc}"
            self._unspooled.extend(rows)
            return
        if spool is self.spool:
            with self.stats.lock:
                self.stats.spooled += len(rows)

    def maintain(self, *, budget: int = 20, now: float | None = None) -> bool:
        """Retry the database, replay up to ``budget`` spooled batches, settle parked rows.

        Returns True when more replay work is ready right away.
        """
        moment = self._clock() if now is None else now
        if self._unspooled:  # pragma: no cover - only after the spool could not be written
            rows, self._unspooled = self._unspooled, []
            self.spool_rows(rows)
        if self._parked and moment >= self._next_park_check:
            self._settle_parked(moment)
        if self._down and moment < self._next_attempt:
            return False
        for _ in range(budget):
            source = self.spool if self.spool.pending else self._next_orphan(moment)
            if source is None:
                return False
            if not self._replay_chunk(source):
                return False
        return bool(self.spool.pending or self._orphans)

    def finish(self, deadline: float) -> None:
        """At shutdown: replay while the database answers and time remains, then leave
        whatever is still waiting (parked rows included) in the spool for a later writer."""
        while True:
            now = self._clock()
            if now >= deadline:
                break
            more = self.maintain(budget=1, now=now)
            if not (self.spool.pending or self._parked or self._unspooled):
                break
            if more:
                continue
            hint = self.wait_hint()
            if hint is None:
                break
            time.sleep(max(0.001, min(hint, deadline - self._clock())))
        if self._parked:
            rows = [row for _, row in self._parked]
            self._parked = []
            self.spool_rows(rows)
        for orphan in self._orphans:
            orphan.close()
        self._orphans = []

    # -- internals -------------------------------------------------------------------------

    def _write(
        self, rows: list[DbRow], *, park: bool, on_sent: Callable[[], None] = _nothing
    ) -> None:
        """Insert ``rows`` (users checked first), bisecting around rejected rows.

        Raises :class:`_Interrupted` with the rows not yet written when the database fails.
        """
        rows = self._check_users(rows, park=park)
        pending: list[list[DbRow]] = [rows] if rows else []
        while pending:
            chunk = pending.pop()
            try:
                self.inserter.insert(chunk, on_sent=on_sent)
            except RowsRejected as exc:
                if len(chunk) == 1:
                    self._dead(chunk, str(exc))
                    continue
                middle = len(chunk) // 2
                pending.append(chunk[middle:])
                pending.append(chunk[:middle])
                continue
            except DatabaseUnavailable as exc:
                remaining = [row for part in reversed(pending) for row in part]
                raise _Interrupted(chunk + remaining, str(exc)) from exc
            self._came_up()
            self.stats.written += len(chunk)
            self.stats.batches += 1

    def _check_users(self, rows: list[DbRow], *, park: bool) -> list[DbRow]:
        unknown = {row[0] for row in rows} - self._known_users
        if not unknown:
            return rows
        try:
            found = self.inserter.existing_users(unknown)
        except DatabaseUnavailable as exc:
            raise _Interrupted(rows, str(exc)) from exc
        self._known_users.update(found)
        missing = unknown - found
        if not missing:
            return rows
        keep = [row for row in rows if row[0] not in missing]
        held = [row for row in rows if row[0] in missing]
        if park:
            moment = self._clock()
            if not self._parked:
                self._next_park_check = moment + _PARK_RECHECK
            self._parked.extend((moment + _PARK_SECONDS, row) for row in held)
        else:
            for row in held:
                self._dead([row], f"no user with id {row[0]}")
        return keep

    def _settle_parked(self, now: float) -> None:
        """Insert parked rows whose user now exists; dead-letter those whose wait is over."""
        parked = self._parked
        self._parked = []
        self._next_park_check = now + _PARK_RECHECK
        if self._down and now < self._next_attempt:
            self._parked = parked
            return
        ids = {row[0] for _, row in parked}
        try:
            found = self.inserter.existing_users(ids)
        except DatabaseUnavailable as exc:
            self._went_down(str(exc))
            self._parked = parked
            return
        self._known_users.update(found)
        ready = [row for _, row in parked if row[0] in found]
        for due, row in parked:
            if row[0] in found:
                continue
            if now >= due:
                self._dead([row], f"no user with id {row[0]}")
            else:
                self._parked.append((due, row))
        if ready:
            if self.spool.pending:
                self.spool_rows(ready)
            else:
                self.deliver(ready)

    def _replay_chunk(self, source: Spool) -> bool:
        chunk: SpoolChunk = source.read(self.batch_size)
        if chunk.lines == 0:
            if source is not self.spool:
                self._retire_orphan(source)
            return source is not self.spool
        if chunk.corrupt:
            self.dead_letter.write((None, "unreadable spool line", line) for line in chunk.corrupt)
            with self.stats.lock:
                self.stats.dead_lettered += len(chunk.corrupt)
        try:
            self._write(chunk.rows, park=False)
        except _Interrupted as stop:
            self._went_down(stop.reason)
            done = len(chunk.rows) - len(stop.remaining)
            if done == 0:
                return False
            # Part of the chunk landed: the rest goes back in front of what follows it.
            source.commit(chunk)
            self.stats.replayed += done
            self._spool_first(source, stop.remaining)
            return False
        source.commit(chunk)
        self.stats.replayed += len(chunk.rows)
        return True

    def _next_orphan(self, now: float) -> Spool | None:
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + _ORPHAN_SCAN_SECONDS
            self._orphans.extend(adopt_orphans(self.spool.directory, self.spool))
        return self._orphans[0] if self._orphans else None

    def _retire_orphan(self, orphan: Spool) -> None:
        orphan.close()
        with contextlib.suppress(ValueError):
            self._orphans.remove(orphan)

    def _dead(self, rows: list[DbRow], reason: str) -> None:
        try:
            self.dead_letter.write((row, reason, None) for row in rows)
        except OSError as exc:  # pragma: no cover - cannot even write the dead-letter file
            self.stats.last_error = f"dead letter: {exc}"
        with self.stats.lock:
            self.stats.dead_lettered += len(rows)

    def _went_down(self, reason: str) -> None:
        now = self._clock()
        if self._down:
            self._delay = min(self._delay * 2, _BACKOFF_MAX)
        else:
            self._down = True
            self._delay = _BACKOFF_START
        self._next_attempt = now + self._delay * random.uniform(0.8, 1.2)
        self.stats.database = "unavailable"
        self.stats.last_error = reason

    def _came_up(self) -> None:
        if self._down or self.stats.database != "ok":
            self._down = False
            self._delay = _BACKOFF_START
            self.stats.database = "ok"
