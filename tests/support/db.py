"""Migrated databases for tests: a template per backend, cloned for every test."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, TextClause, bindparam, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tradelog._db import migrate
from tradelog._db.base import UTCDateTime
from tradelog._db.engine import create_tradelog_engine
from tradelog._db.models import ServiceLog

PG_ADMIN_URL = os.environ.get(
    "TRADELOG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_counter = itertools.count()


def _sql(sql: str, params: dict[str, object]) -> TextClause:
    """``sql`` with its datetime parameters bound as tradelog binds them (UTC; on SQLite the
    text tradelog stores, not the sqlite3 module's default adapter, deprecated in Python 3.12)."""
    times = [
        bindparam(name, type_=UTCDateTime())
        for name, v in params.items()
        if isinstance(v, datetime)
    ]
    return text(sql).bindparams(*times) if times else text(sql)


def worker_id() -> str:
    """The pytest-xdist worker name (``gw0`` ...) or ``main``."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@dataclass
class MigratedDatabase:
    """A freshly migrated database that belongs to one test."""

    backend: str
    url: str
    engine: Engine

    def session(self) -> Session:
        """A new session on this database (the caller closes it)."""
        return sessionmaker(self.engine, expire_on_commit=False)()

    def scalar(self, sql: str, **params: object) -> object:
        """Run ``sql`` and return the first column of the first row."""
        with self.engine.connect() as connection:
            return connection.execute(_sql(sql, params), params).scalar()

    def rows(self, sql: str, **params: object) -> list[dict[str, object]]:
        """Run ``sql`` and return every row as a dict."""
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(_sql(sql, params), params)]

    def execute(self, sql: str, **params: object) -> None:
        """Run ``sql`` in its own committed transaction."""
        with self.engine.begin() as connection:
            connection.execute(_sql(sql, params), params)


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)


def pg_database_url(name: str) -> str:
    """The URL of database ``name`` on the test PostgreSQL server."""
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


# What makes two databases the same schema: relations and their columns (types, nullability,
# defaults), constraints, triggers, functions, rules, extensions, schemas and the database's own
# settings. A test that changed any of them leaves a database that is dropped, not reused.
_SCHEMA_FINGERPRINT = """
SELECT md5(coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM (
  SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || coalesce((
      SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                        || a.attnotnull::text || coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
                        ',' ORDER BY a.attnum)
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') AS x
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  UNION ALL SELECT 'schema:' || nspname FROM pg_namespace
  UNION ALL SELECT 'constraint:' || conname || pg_get_constraintdef(oid) FROM pg_constraint
    WHERE connamespace NOT IN (SELECT oid FROM pg_namespace
                               WHERE nspname IN ('pg_catalog', 'information_schema'))
  UNION ALL SELECT 'trigger:' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'function:' || p.oid::regprocedure::text FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL SELECT 'rule:' || rulename FROM pg_rules WHERE schemaname <> 'pg_catalog'
  UNION ALL SELECT 'extension:' || extname FROM pg_extension
  UNION ALL SELECT 'setting:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS parts), ''))
"""


class _Reusable:
    """A cloned database kept for the next test: emptied (rows deleted, sequences restarted)
    instead of dropped and created again, which costs PostgreSQL a copy of the template
    through its write-ahead log and a checkpoint-sized amount of I/O per test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.janitor = psycopg.connect(_driver_url(url), autocommit=True)
        self.fingerprint = self._fingerprint()
        tables = [
            r[0]
            for r in self.janitor.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        # Tables with rows in a fresh clone (the revision table) are kept as they are; their
        # rows are part of the fingerprint, so a test that changed them gets a new database.
        self.kept = [t for t in tables if self._has_rows(t)]
        emptied = [t for t in tables if t not in self.kept]
        sequences = [
            r[0]
            for r in self.janitor.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
            )
        ]
        self.fingerprint += self._kept_rows()
        self.emptied = emptied
        self.fresh_sizes = self._sizes()
        self.sequences = [str(s) for s in sequences]
        # One query naming every table that has rows and every sequence that was used.
        checks = [f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in emptied] + [
            f"SELECT 'seq:{q}' FROM pg_sequences WHERE schemaname = current_schema() "
            f"AND sequencename = '{q}' AND last_value IS NOT NULL"
            for q in self.sequences
        ]
        self.used_query = " UNION ALL ".join(checks) if checks else "SELECT 1 WHERE false"

    def _sizes(self) -> dict[str, int]:
        return {
            str(name): int(size)
            for name, size in self.janitor.execute(
                "SELECT tablename, pg_total_relation_size(format('%I', tablename)::regclass) "
                "FROM pg_tables WHERE schemaname = current_schema()"
            )
        }

    def _empty_all(self) -> None:
        """Delete every row; a table that grew (a test that inserted thousands of rows) is
        truncated instead, so its indexes are as small as in a fresh clone: the planner's
        choices depend on their size. Only tables with rows and sequences that were used are
        touched (one query finds them): most tests write to a few tables."""
        sizes = self._sizes()
        grown = [
            t for t in self.emptied if sizes.get(t, 0) > self.fresh_sizes.get(t, 0) + (256 << 10)
        ]
        used = {str(r[0]) for r in self.janitor.execute(self.used_query)}
        small = [t for t in self.emptied if t not in grown and t in used]
        sequences = [s for s in self.sequences if f"seq:{s}" in used]
        if not (grown or small or sequences):
            return
        statements = "BEGIN; SET LOCAL session_replication_role = replica; "
        if grown:
            statements += "TRUNCATE " + ", ".join(f'"{t}"' for t in grown) + "; "
        statements += "".join(f'DELETE FROM "{t}"; ' for t in small)
        statements += "".join(f'ALTER SEQUENCE "{s}" RESTART; ' for s in sequences)
        self.janitor.execute(statements + "COMMIT;")

    def _has_rows(self, table: str) -> bool:
        return self.janitor.execute(f'SELECT EXISTS (SELECT 1 FROM "{table}")').fetchone() == (
            True,
        )

    def _fingerprint(self) -> str:
        row = self.janitor.execute(_SCHEMA_FINGERPRINT).fetchone()
        return str(row[0]) if row else ""

    def _kept_rows(self) -> str:
        return "".join(
            str(
                self.janitor.execute(
                    "SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                    f'FROM "{t}" t'
                ).fetchone()
            )
            for t in self.kept
        )

    def reset(self) -> bool:
        """Empty the database for the next test; False when it cannot be reused (its schema
        or kept rows changed, or anything failed)."""
        try:
            # Connections a test left open (a thread, a leaked engine) go first: they may hold
            # locks, LISTEN registrations or session settings.
            self.janitor.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if self._fingerprint() + self._kept_rows() != self.fingerprint:
                return False
            self._empty_all()
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.janitor.close()


def _driver_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresTemplate:
    """A migrated template database; :meth:`clone` lends a test a database made from it.

    Databases are cloned (CREATE ... TEMPLATE) once and then reused: after each test the
    database is emptied and checked against the template's schema fingerprint; one whose
    schema a test changed (a migration test, partitioning) is dropped and a new clone made.
    """

    def __init__(self) -> None:
        self.admin = _admin_engine()
        self.name = f"tradelog_tpl_{worker_id()}_{os.getpid()}"
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{self.name}"'))
        migrate.upgrade(pg_database_url(self.name))
        self._spare: list[tuple[str, _Reusable]] = []

    def _create_clone(self) -> str:
        name = f"tradelog_t_{worker_id()}_{os.getpid()}_{next(_counter)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"'))
        return name

    def _drop(self, name: str) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    @contextmanager
    def clone(self) -> Iterator[str]:
        """A migrated database private to the caller until the ``with`` block ends."""
        if self._spare:
            name, reusable = self._spare.pop()
        else:
            name = self._create_clone()
            reusable = _Reusable(pg_database_url(name))
        try:
            yield pg_database_url(name)
        finally:
            if reusable.reset():
                self._spare.append((name, reusable))
            else:
                reusable.close()
                self._drop(name)

    @contextmanager
    def empty(self) -> Iterator[str]:
        """An empty (unmigrated) database, for migration tests."""
        name = f"tradelog_e_{worker_id()}_{os.getpid()}_{next(_counter)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield pg_database_url(name)
        finally:
            self._drop(name)

    def close(self) -> None:
        for name, reusable in self._spare:
            reusable.close()
            self._drop(name)
        self._spare.clear()
        self._drop(self.name)
        self.admin.dispose()


class SqliteTemplate:
    """A migrated SQLite file copied for every test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "template.db"
        engine = create_tradelog_engine(f"sqlite:///{self.path}")
        migrate.upgrade(engine)
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        engine.dispose()

    @contextmanager
    def clone(self, directory: Path) -> Iterator[str]:
        target = directory / "tradelog.db"
        shutil.copyfile(self.path, target)
        yield f"sqlite:///{target}"


def add_service_logs(
    db: MigratedDatabase,
    user_id: int,
    entries: Iterable[tuple[str, datetime, dict[str, Any] | None]],
) -> None:
    """Insert ``service_logs`` rows of ``user_id`` (level INFO, module ``t``), one per
    ``(message, timestamp, context)``; a context of None is left unset (SQL NULL)."""
    with db.session() as session:
        session.add_all(
            ServiceLog(
                user_id=user_id,
                level="INFO",
                module="t",
                message=message,
                timestamp=timestamp,
                **({} if context is None else {"context": context}),
            )
            for message, timestamp, context in entries
        )
        session.commit()
