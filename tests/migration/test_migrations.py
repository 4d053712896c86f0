"""Migrations: upgrade, downgrade and agreement with the models on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from tradelog._db import migrate
from tradelog._db.engine import DbBounds, create_tradelog_engine

REPO = Path(__file__).resolve().parents[2]
PHASE1_TABLES = {
    "service_status",
    "service_task_execution",
    "service_logs",
    "error_logs",
    "user_trading_config",
    "ml_training_jobs",
    "ml_models",
    "user_notification_preferences",
    "notifications",
    "audit_logs",
}


def _tables(url: str) -> set[str]:
    engine = create_tradelog_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {migrate.VERSION_TABLE}
    finally:
        engine.dispose()


def test_upgrade_downgrade_cycle(empty_url: str) -> None:
    """Empty → head → 0001 → base → head leaves exactly the expected tables each time."""
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()
    assert PHASE1_TABLES | {"users", "orders", "activity"} <= _tables(empty_url)
    migrate.downgrade(empty_url, "0001_initial")
    assert migrate.current(empty_url) == "0001_initial"
    assert _tables(empty_url) == {"users", "orders", "activity"}
    migrate.downgrade(empty_url, "base")
    assert migrate.current(empty_url) is None
    assert _tables(empty_url) == set()
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url) == migrate.head()


def _one_millisecond(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 1")
    dbapi_connection.commit()


@pytest.mark.parametrize("backend", ["postgresql"])
def test_migrations_are_not_cut_by_a_bounded_engines_statement_timeout(empty_url: str) -> None:
    """``tradelog db upgrade`` runs through the CLI's bounded engine (5 s per statement by
    default), but a migration may build an index over millions of rows: it lifts the limit
    for its own transaction. Shown with a 1 ms statement bound, which every CREATE exceeds."""
    engine = create_tradelog_engine(empty_url, bounds=DbBounds(connect=5.0, statement=5.0))
    # 1 ms on every connection once the driver's own first-connect queries are done (they ran
    # under the same bound before, and were sometimes cut on a busy machine).
    event.listen(engine, "connect", _one_millisecond)
    try:
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        migrate.downgrade(engine, "0001_initial")
        assert migrate.current(engine) == "0001_initial"
    finally:
        engine.dispose()


def test_models_match_migrations(empty_url: str) -> None:
    """Autogenerate finds no difference between the migrated schema and the models."""
    migrate.upgrade(empty_url)
    assert migrate.check(empty_url) == []


def test_phase1_revision_alone(empty_url: str) -> None:
    """``0002_phase1`` can be targeted by name and revises ``0001_initial``."""
    migrate.upgrade(empty_url, "0002_phase1")
    assert migrate.current(empty_url) == "0002_phase1"
    engine = create_tradelog_engine(empty_url)
    try:
        columns = {c["name"] for c in inspect(engine).get_columns("orders")}
        fks = inspect(engine).get_foreign_keys("activity")
    finally:
        engine.dispose()
    assert {"order_id", "broker_order_id"} <= columns
    assert fks[0]["referred_table"] == "users"
    assert fks[0]["options"].get("ondelete") == "SET NULL"


@pytest.mark.slow
def test_alembic_cli_uses_env_url(tmp_path: Path) -> None:
    """``alembic upgrade head`` with alembic.ini takes TRADELOG_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {**os.environ, "TRADELOG_DATABASE_URL": url}
    alembic = Path(sys.executable).with_name("alembic")
    for args in (["upgrade", "head"], ["downgrade", "0001_initial"], ["upgrade", "head"]):
        result = subprocess.run(
            [str(alembic), *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    assert migrate.current(url) == migrate.head()
    assert migrate.check(url) == []


def test_error_groups_are_backfilled(empty_url: str) -> None:
    """Upgrading a database with errors makes one group per fingerprint: unresolved while any
    occurrence is, else resolved at the latest resolution."""
    migrate.upgrade(empty_url, "0004_notification_outbox")
    engine = create_tradelog_engine(empty_url)
    try:
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO users (email, name, password_hash, role, is_active) "
                "VALUES ('a@example.com', 'A', '!', 'user', true)"
            )
            rows = [
                ("aaa", False, None, "2026-01-05 04:00:00+00:00"),
                ("aaa", True, "2026-01-06 04:00:00+00:00", "2026-01-05 05:00:00+00:00"),
                ("bbb", True, "2026-01-07 04:00:00+00:00", "2026-01-04 04:00:00+00:00"),
                ("bbb", True, "2026-01-08 04:00:00+00:00", "2026-01-05 04:00:00+00:00"),
            ]
            for fingerprint, resolved, resolved_at, occurred_at in rows:
                c.execute(
                    text(
                        "INSERT INTO error_logs (user_id, error_type, error_message, resolved,"
                        " resolved_at, occurred_at, fingerprint) VALUES (1, 'ValueError', 'x',"
                        " :resolved, :resolved_at, :occurred_at, :fingerprint)"
                    ),
                    {
                        "resolved": resolved,
                        "resolved_at": resolved_at,
                        "occurred_at": occurred_at,
                        "fingerprint": fingerprint,
                    },
                )
        migrate.upgrade(empty_url)
        with engine.connect() as c:
            groups = [
                tuple(r)
                for r in c.execute(
                    text(
                        "SELECT fingerprint, status, substatus, times_seen FROM error_groups"
                        " ORDER BY fingerprint"
                    )
                )
            ]
        assert groups == [("aaa", "unresolved", "ongoing", 2), ("bbb", "resolved", None, 2)]
        migrate.downgrade(empty_url, "0004_notification_outbox")
        assert "error_groups" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    """The start-up check reads the newest revision from the scripts' own lines; Alembic's
    reading of the same scripts agrees."""
    assert migrate.head() == migrate._alembic_head()


def test_scripts_it_cannot_read_are_left_to_alembic() -> None:
    """Only one straight line of plainly written scripts is read without Alembic; anything
    else (a merge, a branch, a missing parent, a name written twice) is left to Alembic."""

    def script(revision: str, parent: str, extra: str = "") -> str:
        return f'"""{revision}"""\nrevision: str = "{revision}"\ndown_revision = {parent}\n{extra}'

    head = migrate.straight_line_head
    assert head([script("a", "None"), script("b", "'a'")]) == "b"
    assert head([script("a", "None"), script("b", '("a", "c")')]) is None  # a merge
    assert head([script("a", "None"), script("b", '"a"'), script("c", '"a"')]) is None  # a branch
    assert head([script("b", '"a"')]) is None  # its parent is missing
    assert head([script("a", '""')]) is None
    assert head([script("a", "None", 'SQL = """\nrevision = "z"\n"""\n')]) is None
    assert head([script("a", "None"), script("a", "None")]) is None


@pytest.mark.slow
def test_a_process_that_logs_never_loads_alembic(tmp_path: Path) -> None:
    """Importing tradelog, configuring it on a migrated database and logging need no Alembic."""
    url = f"sqlite:///{tmp_path / 'tradelog.db'}"
    migrate.upgrade(url)
    script = (
        "import sys, tradelog\n"
        f"tradelog.configure(database_url={url!r}, log_dir={str(tmp_path)!r}, console=False)\n"
        "tradelog.get_logger('svc', user_id=None).info('hello')\n"
        "assert tradelog.shutdown()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
