"""The log module filter: a case-insensitive substring, with the same rows on both backends.

One table of filters runs against a SQLite and a PostgreSQL database holding the same rows; each
filter must select exactly the expected modules on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.db import PostgresTemplate, SqliteTemplate
from tradelog._access import Actor
from tradelog._db.engine import create_tradelog_engine, session_factory
from tradelog._db.models import ServiceLog
from tradelog._logs.query import query_logs
from tradelog.users import create_user

MODULES = [
    "strategy.Alpha",
    "strategy.alpha_v2",
    "STRATEGY.Beta",
    "broker.kite.orders",
    "broker_x",
    "risk",
    "Réglage.Été",
    "100%.sure",
    r"path\to",
]

# filter -> the modules it selects (on every backend)
TABLE: list[tuple[str, set[str]]] = [
    ("alpha", {"strategy.Alpha", "strategy.alpha_v2"}),
    ("ALPHA", {"strategy.Alpha", "strategy.alpha_v2"}),
    ("strategy.", {"strategy.Alpha", "strategy.alpha_v2", "STRATEGY.Beta"}),
    ("STRATEGY.*", {"strategy.Alpha", "strategy.alpha_v2", "STRATEGY.Beta"}),
    ("Strategy.B", {"STRATEGY.Beta"}),
    ("broker.*.orders", {"broker.kite.orders"}),
    ("kite", {"broker.kite.orders"}),
    ("broker_", {"broker_x"}),  # "_" is literal, not LIKE's any-character
    ("r_x", {"broker_x"}),
    ("%", {"100%.sure"}),  # "%" is literal
    ("\\", {r"path\to"}),
    ("risk", {"risk"}),
    (
        "t",
        {
            "strategy.Alpha",
            "strategy.alpha_v2",
            "STRATEGY.Beta",
            "broker.kite.orders",
            r"path\to",
            "Réglage.Été",
        },
    ),
    ("réglage", {"Réglage.Été"}),  # "R" folds; "é" matches itself
    ("RÉGLAGE", set()),  # "É" is not folded on either backend
    ("été", set()),
    ("Été", {"Réglage.Été"}),
    ("nothing-like-this", set()),
]


@pytest.fixture
def both(
    sqlite_template: SqliteTemplate, pg_template: PostgresTemplate, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A SQLite and a PostgreSQL database with the same rows; their URLs by backend."""
    with sqlite_template.clone(tmp_path) as sqlite_url, pg_template.clone() as pg_url:
        urls = {"sqlite": sqlite_url, "postgresql": pg_url}
        for url in urls.values():
            engine = create_tradelog_engine(url)
            with session_factory(engine)() as session:
                user = create_user(session, email="ops@example.com", name="Ops", role="admin")
                start = datetime(2025, 1, 15, 3, 45, tzinfo=UTC)
                session.add_all(
                    ServiceLog(
                        user_id=user.id,
                        level="INFO",
                        module=module,
                        message=f"from {module}",
                        timestamp=start + timedelta(seconds=i),
                    )
                    for i, module in enumerate(MODULES)
                )
                session.commit()
            engine.dispose()
        yield urls


def _selected(url: str, fragment: str) -> set[str]:
    engine = create_tradelog_engine(url)
    try:
        with session_factory(engine)() as session:
            page = query_logs(session, Actor(0, is_admin=True), module=fragment, limit=100)
            return {entry.module for entry in page.entries}
    finally:
        engine.dispose()


def test_one_table_of_module_filters_gives_the_same_rows_on_both_backends(
    both: dict[str, str],
) -> None:
    """Every filter selects exactly its expected modules on SQLite and on PostgreSQL."""
    found = {
        backend: {fragment: _selected(url, fragment) for fragment, _ in TABLE}
        for backend, url in both.items()
    }
    expected = dict(TABLE)
    assert found["sqlite"] == found["postgresql"]
    assert found["sqlite"] == expected
