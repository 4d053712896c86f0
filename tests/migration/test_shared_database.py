"""tradelog in a database it shares with its host: its own version table, its own schema, and
the host's tables and Alembic history left exactly as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

import tradelog
from tests.support.db import PostgresTemplate
from tests.support.logs import running
from tradelog._cli import main
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine
from tradelog.exceptions import ConfigurationError

REPO = Path(__file__).resolve().parents[2]
HOST_REVISION = "9f3e1c2ab7d4"


def _host_engine(url: str) -> Engine:
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def _make_host_schema(url: str) -> None:
    """The host's own tables and Alembic history, in the database's default schema."""
    engine = _host_engine(url)
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    with engine.begin() as c:
        c.execute(text(f"CREATE TABLE users (id {serial} PRIMARY KEY, login VARCHAR(40))"))
        c.execute(text("CREATE TABLE orders (id INTEGER PRIMARY KEY, note VARCHAR(40))"))
        c.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        c.execute(text("INSERT INTO users (id, login) VALUES (1, 'host-one'), (2, 'host-two')"))
        c.execute(text("INSERT INTO orders (id, note) VALUES (10, 'host order')"))
        c.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": HOST_REVISION})
    engine.dispose()


def _host_state(url: str, schema: str | None = None) -> dict[str, object]:
    engine = _host_engine(url)
    prefix = f"{schema}." if schema else ""
    with engine.connect() as c:
        state = {
            "users": c.execute(text(f"SELECT id, login FROM {prefix}users ORDER BY id")).all(),
            "users_columns": sorted(
                col["name"] for col in inspect(c).get_columns("users", schema=schema)
            ),
            "orders": c.execute(text(f"SELECT id, note FROM {prefix}orders")).all(),
            "alembic_version": c.execute(
                text(f"SELECT version_num FROM {prefix}alembic_version")
            ).all(),
        }
    engine.dispose()
    return state


@pytest.fixture
def pg_empty(pg_template: PostgresTemplate) -> object:
    with pg_template.empty() as url:
        yield url


def test_own_schema_leaves_the_host_schema_alone(pg_empty: str) -> None:
    """A host database with its own users, orders and alembic_version at a foreign revision:
    with TRADELOG_DB_SCHEMA tradelog upgrades in its own schema; the host's tables, rows and
    revision are exactly as before."""
    _make_host_schema(pg_empty)
    before = _host_state(pg_empty)
    migrate.upgrade(pg_empty, schema="tradelog")
    assert _host_state(pg_empty) == before
    assert migrate.current(pg_empty, schema="tradelog") == migrate.head()
    assert migrate.current(pg_empty) is None  # the host's revision is never read as tradelog's
    assert migrate.check(pg_empty, schema="tradelog") == []
    engine = _host_engine(pg_empty)
    tables = set(inspect(engine).get_table_names(schema="tradelog"))
    engine.dispose()
    assert {"users", "service_logs", "error_logs", migrate.VERSION_TABLE} <= tables
    assert "alembic_version" not in tables
    migrate.upgrade(pg_empty, schema="tradelog")  # idempotent
    assert _host_state(pg_empty) == before


@pytest.mark.slow
def test_runtime_and_cli_honour_the_schema(pg_empty: str, tmp_path: Path) -> None:
    """configure(db_schema=...) writes rows into tradelog's schema; ``tradelog db upgrade /
    current / check`` honour TRADELOG_DB_SCHEMA (options after the command too)."""
    _make_host_schema(pg_empty)
    before = _host_state(pg_empty)
    env = {**os.environ, "TRADELOG_DB_SCHEMA": "tl"}
    for args in (["db", "upgrade"], ["db", "check"], ["db", "current", "--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "tradelog", *args, "--database-url", pg_empty],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["revision"] == migrate.head()
    with running(pg_empty, tmp_path, db_schema="tl") as runtime:
        tradelog.ensure_user(1, email="one@example.com", name="One")
        tradelog.get_logger("strategy", user_id=1).info("in tradelog's own schema")
        assert runtime.flush(10)
    engine = _host_engine(pg_empty)
    with engine.connect() as c:
        rows = c.execute(text("SELECT user_id, message FROM tl.service_logs")).all()
        emails = c.execute(text("SELECT email FROM tl.users WHERE id = 1")).scalars().all()
    engine.dispose()
    assert rows == [(1, "in tradelog's own schema")]
    assert emails == ["one@example.com"]
    assert _host_state(pg_empty) == before


@pytest.mark.slow
def test_alembic_cli_honours_the_schema(pg_empty: str) -> None:
    """``alembic upgrade head`` with alembic.ini takes TRADELOG_DATABASE_URL and
    TRADELOG_DB_SCHEMA."""
    _make_host_schema(pg_empty)
    before = _host_state(pg_empty)
    env = {**os.environ, "TRADELOG_DATABASE_URL": pg_empty, "TRADELOG_DB_SCHEMA": "tl_alembic"}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.current(pg_empty, schema="tl_alembic") == migrate.head()
    assert _host_state(pg_empty) == before


def test_tables_of_the_host_with_tradelog_names_are_refused(empty_url: str) -> None:
    """Without a schema of its own, a database whose ``users`` is the host's is refused before
    anything is created, with the setting that fixes it."""
    _make_host_schema(empty_url)
    before = _host_state(empty_url)
    with pytest.raises(ConfigurationError, match="TRADELOG_DB_SCHEMA") as raised:
        migrate.upgrade(empty_url)
    assert "orders, users" in str(raised.value)
    assert _host_state(empty_url) == before
    engine = _host_engine(empty_url)
    assert migrate.VERSION_TABLE not in inspect(engine).get_table_names()
    engine.dispose()


def test_a_foreign_revision_is_not_tradelogs(empty_url: str) -> None:
    """The host's alembic_version at its own revision beside tradelog's tables: tradelog
    upgrades with its own version table; the host's revision is untouched and never reported
    as tradelog's; ``db check`` ignores the host's tables."""
    engine = _host_engine(empty_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE accounts (id INTEGER PRIMARY KEY, login VARCHAR(40))"))
        c.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        c.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": HOST_REVISION})
    assert migrate.current(empty_url) is None
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    assert migrate.check(empty_url) == []
    with engine.connect() as c:
        host = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert "accounts" in inspect(c).get_table_names()
    engine.dispose()
    assert host == [HOST_REVISION]


def _legacy_install(url: str, revision: str = "0004_notification_outbox") -> None:
    """A database migrated before tradelog had its own version table."""
    migrate.upgrade(url, revision)
    engine = create_tradelog_engine(url)
    with engine.begin() as c:
        c.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        c.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        c.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
    engine.dispose()


def test_an_existing_install_moves_to_its_own_version_table(empty_url: str) -> None:
    """tradelog's revision in alembic_version (older installs): read as tradelog's, then moved
    to tradelog_alembic_version by the next upgrade; alembic_version is dropped when empty."""
    _legacy_install(empty_url)
    assert migrate.current(empty_url) == "0004_notification_outbox"
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    engine = create_tradelog_engine(empty_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert "alembic_version" not in tables
    assert migrate.VERSION_TABLE in tables


def test_an_existing_install_sharing_alembic_version_keeps_the_host_row(
    empty_url: str,
) -> None:
    """When alembic_version also holds a host revision, only tradelog's row moves."""
    _legacy_install(empty_url)
    engine = create_tradelog_engine(empty_url)
    with engine.begin() as c:
        c.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": HOST_REVISION})
    migrate.upgrade(empty_url)
    with engine.connect() as c:
        left = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    engine.dispose()
    assert left == [HOST_REVISION]
    assert migrate.current(empty_url) == migrate.head()


def test_configure_says_when_the_schema_is_missing_or_behind(
    empty_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configure() on an unmigrated database prints one line naming ``tradelog db upgrade``;
    behind the newest revision likewise; schema_check="raise" raises instead."""
    with running(empty_url, tmp_path):
        pass
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "has no tradelog schema" in err[0]
    assert "tradelog db upgrade" in err[0]
    with pytest.raises(ConfigurationError, match="tradelog db upgrade"):
        tradelog.configure(database_url=empty_url, log_dir=tmp_path, schema_check="raise")
    assert tradelog.current() is None
    migrate.upgrade(empty_url, "0004_notification_outbox")
    with running(empty_url, tmp_path):
        pass
    err = capsys.readouterr().err
    assert "behind" in err
    assert "tradelog db upgrade" in err
    migrate.upgrade(empty_url)
    with running(empty_url, tmp_path):
        pass
    assert capsys.readouterr().err == ""
    with running(empty_url, tmp_path, schema_check="off"):
        pass


def test_configure_with_an_unreachable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable database is a warning at start-up (rows spool), an error with raise."""
    url = "postgresql://trader:hidden-pw@127.0.0.1:1/nowhere"
    with running(url, tmp_path, db_write_timeout=1.0):
        pass
    err = capsys.readouterr().err
    assert "cannot compare database" in err
    assert "hidden-pw" not in err
    with pytest.raises(tradelog.StorageError):
        tradelog.configure(
            database_url=url, log_dir=tmp_path, schema_check="raise", db_write_timeout=1.0
        )


def test_global_options_after_the_command(tmp_path: Path) -> None:
    """``--database-url`` and ``--json`` work before or after the command and its action."""
    url = f"sqlite:///{tmp_path / 'after.db'}"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert main(["db", "--database-url", url, "current"]) == 0
    assert (
        main(["--database-url", "sqlite:///elsewhere.db", "db", "check", "--database-url", url])
        == 0
    )
