"""The fast bulk path into ``service_logs``, per driver: :class:`Inserter`.

The writer has its own engine and connection (never the host's). Rows go in with the fastest
path the driver has: one multi-row ``INSERT`` on SQLite, ``COPY ... FROM STDIN`` on PostgreSQL.
Each batch also claims its id in ``tradelog_write_batches`` in the same transaction
(:mod:`tradelog._logs.batch`): a batch whose id is already there was committed before (its
acknowledgement was lost, or a replay was killed before it saved its place) and is skipped.
A failure is translated into one of two exceptions, told apart by their cause:
:class:`RowsRejected` (the rows' fault: SQLSTATE classes 22 and 23, SQLite integrity and data
errors) and :class:`DatabaseUnavailable` (anything else: down, unreachable, locked, table
missing). What to do about each is :mod:`~tradelog._logs.db_sink`'s business.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Final

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from tradelog._db.engine import mask_url
from tradelog._logs.batch import Batch, new_batch_id
from tradelog._logs.rows import DbRow

__all__ = [
    "DatabaseUnavailable",
    "Inserter",
    "PostgresInserter",
    "RowsRejected",
    "SqliteInserter",
    "describe",
    "make_inserter",
]

_COLUMNS: Final = "user_id, level, module, message, context, timestamp"
_BATCHES: Final = "tradelog_write_batches"
_USER_QUERY_CHUNK: Final = 500
_CLAIMS_PER_STATEMENT: Final = 400
"""Batch ids claimed by one statement of :meth:`Inserter.insert_together` (two bound
parameters each on SQLite, under the oldest SQLite's limit of 999)."""
_SAFE_ID: Final = re.compile(r"[0-9a-f.~]{1,96}")


class RowsRejected(Exception):
    """The database refused something in the rows given (not the connection's fault)."""


class DatabaseUnavailable(Exception):
    """The database cannot take rows now; try again later."""


class Inserter:
    """Bulk inserts over one long-lived raw connection of a private engine.

    Each call is one transaction: the id of each of its batches claimed in
    ``tradelog_write_batches``, then the rows in one statement (a multi-row ``INSERT``, split
    only at SQLite's bound-parameter limit, or a ``COPY``), then the commit, so the driver needs
    the GIL back only a few times per call, however many rows it carries.
    """

    backend = "generic"

    def __init__(self, engine: Engine, *, lock_timeout: float) -> None:
        self.engine = engine
        self.lock_timeout = lock_timeout
        self._raw: PoolProxiedConnection | None = None

    def insert(self, rows: Sequence[DbRow], *, batch_id: str | None = None) -> bool:
        """Insert ``rows`` and claim ``batch_id`` (default: a new id) in one transaction;
        returns False, inserting nothing, when the id was claimed before (the batch is in).
        Raises :class:`RowsRejected` / :class:`DatabaseUnavailable` with nothing inserted -
        except when the connection fails during the commit, when it may be in: the id decides
        on the next try.
        """
        batch = Batch(batch_id or new_batch_id(), rows if isinstance(rows, list) else [*rows])
        return self.insert_together([batch])

    def insert_together(self, batches: Sequence[Batch]) -> bool:
        """Insert several batches in one transaction: every id claimed, then all the rows in
        as few statements as the driver allows, then one commit.

        Returns False, inserting nothing, when any of the ids was claimed before (or appears
        twice): the caller then writes the batches one by one with :meth:`insert`, and each
        id decides for its own batch. Raises like :meth:`insert`; a :class:`RowsRejected`
        means that some row of some batch was refused and nothing was inserted.
        """
        connection = self._connection()
        try:
            return self._bulk(connection, batches)
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
        """Close the connection (the engine is its owner's to dispose)."""
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None

    def abandon(self) -> object:
        """Forget the connection inherited through ``fork`` without touching it; returns it,
        for the caller to keep referenced (closing it would end the parent's session)."""
        raw, self._raw = self._raw, None
        return raw

    # -- per driver ------------------------------------------------------------------------

    def _bulk(self, connection: Any, batches: Sequence[Batch]) -> bool:
        """One transaction: every batch's id claimed, then the rows; False (nothing written)
        when an id was claimed before."""
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
                raise DatabaseUnavailable(describe(exc)) from exc
            try:
                self._prepare_connection(raw.driver_connection)
            except Exception as exc:
                with contextlib.suppress(Exception):
                    raw.invalidate()
                raise DatabaseUnavailable(describe(exc)) from exc
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
        message = describe(exc)
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

    def _bulk(self, connection: Any, batches: Sequence[Batch]) -> bool:
        stamp = _utc_text()
        connection.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(batches), _CLAIMS_PER_STATEMENT):
                part = batches[start : start + _CLAIMS_PER_STATEMENT]
                marks = ", ".join(["(?, ?)"] * len(part))
                claimed = connection.execute(
                    f"INSERT OR IGNORE INTO {_BATCHES} (batch_id, committed_at) VALUES {marks}",
                    [value for batch in part for value in (batch.batch_id, stamp)],
                ).rowcount
                if claimed != len(part):
                    connection.execute("ROLLBACK")
                    return False
            self._insert_rows(connection, [row for batch in batches for row in batch.rows])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(Exception):
                    connection.execute("ROLLBACK")
            raise
        return True

    def _insert_rows(self, connection: Any, rows: Sequence[DbRow]) -> None:
        step = self._MAX_ROWS
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            connection.execute(self._statement(len(chunk)), list(chain.from_iterable(chunk)))

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

    def _bulk(self, connection: Any, batches: Sequence[Batch]) -> bool:
        for batch in batches:
            if not _SAFE_ID.fullmatch(batch.batch_id):
                raise ValueError(f"unexpected batch id {batch.batch_id[:100]!r}")
        with connection.cursor() as cursor:
            try:
                for start in range(0, len(batches), _CLAIMS_PER_STATEMENT):
                    part = batches[start : start + _CLAIMS_PER_STATEMENT]
                    values = ", ".join(f"('{batch.batch_id}')" for batch in part)
                    claim = (
                        f"INSERT INTO {_BATCHES} (batch_id) VALUES {values} ON CONFLICT DO NOTHING"
                    )
                    if start == 0:  # one round trip (simple query protocol): begin, claim
                        cursor.execute(f"BEGIN; {claim}")
                        cursor.nextset()
                    else:
                        cursor.execute(claim)
                    if cursor.rowcount != len(part):
                        cursor.execute("ROLLBACK")
                        return False
                with cursor.copy(self._COPY) as copy:
                    write = copy.write_row
                    for batch in batches:
                        for row in batch.rows:
                            write(row)
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
        return True

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


def make_inserter(engine: Engine, *, lock_timeout: float) -> Inserter:
    """The inserter for ``engine``'s backend (PostgreSQL or SQLite)."""
    backend = engine.dialect.name
    if backend == "sqlite":
        return SqliteInserter(engine, lock_timeout=lock_timeout)
    if backend == "postgresql":
        return PostgresInserter(engine, lock_timeout=lock_timeout)
    raise ValueError(f"tradelog cannot write logs to a {backend} database ({mask_url(engine.url)})")


def _utc_text() -> str:
    """Now, as SQLite stores ``UTCDateTime`` values."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def describe(exc: BaseException) -> str:
    """A one-line reason, with any database URL password masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
