"""Migrated databases for tests: a template per backend, cloned for every test."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine

PG_ADMIN_URL = os.environ.get(
    "TRADELOG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_counter = itertools.count()


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
            return connection.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: object) -> list[dict[str, object]]:
        """Run ``sql`` and return every row as a dict."""
        with self.engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(text(sql), params)]

    def execute(self, sql: str, **params: object) -> None:
        """Run ``sql`` in its own committed transaction."""
        with self.engine.begin() as connection:
            connection.execute(text(sql), params)


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)


def pg_database_url(name: str) -> str:
    """The URL of database ``name`` on the test PostgreSQL server."""
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


class PostgresTemplate:
    """A migrated template database; :meth:`clone` makes a per-test copy (CREATE ... TEMPLATE)."""

    def __init__(self) -> None:
        self.admin = _admin_engine()
        self.name = f"tradelog_tpl_{worker_id()}_{os.getpid()}"
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{self.name}"'))
        migrate.upgrade(pg_database_url(self.name))

    @contextmanager
    def clone(self) -> Iterator[str]:
        name = f"tradelog_t_{worker_id()}_{os.getpid()}_{next(_counter)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"'))
        try:
            yield pg_database_url(name)
        finally:
            with self.admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def empty(self) -> Iterator[str]:
        """An empty (unmigrated) database, for migration tests."""
        return self._empty()

    @contextmanager
    def _empty(self) -> Iterator[str]:
        name = f"tradelog_e_{worker_id()}_{os.getpid()}_{next(_counter)}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield pg_database_url(name)
        finally:
            with self.admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
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
