"""``tradelog db search-index``: the keyword-search indexes of ``service_logs`` off and on again,
with the schema check, keyword searches and inserts working either way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.db import MigratedDatabase, add_service_logs
from tradelog._cli import main
from tradelog._db import partitions
from tradelog._db.search_index import SEARCH_INDEXES
from tradelog.logs import query_logs

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _cli(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0
) -> Any:
    """Run ``tradelog db ARGS``: its JSON row, or (exit ``code`` other than 0) its stderr."""
    exit_code = main(["--json", "--database-url", db.url, "db", *args])
    captured = capsys.readouterr()
    assert exit_code == code, captured.err
    if code != 0:
        return captured.err
    return json.loads(captured.out.strip().splitlines()[-1])[0]


def _indexes(db: MigratedDatabase) -> set[str]:
    return {
        str(row["indexname"])
        for row in db.rows(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'service_logs'"
            " AND schemaname = current_schema()"
        )
    }


def _add(db: MigratedDatabase, user_id: int, messages: list[str]) -> None:
    add_service_logs(
        db,
        user_id,
        (
            (message, NOW - timedelta(minutes=n), {"order_id": f"ord-{n}"})
            for n, message in enumerate(messages)
        ),
    )


def _search(db: MigratedDatabase, user_id: int, keyword: str) -> list[str]:
    with db.session() as session:
        page = query_logs(session, user_id, limit=50, keyword=keyword)
    return [entry.message for entry in page.entries]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_off_and_on_again(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Off drops both indexes, the schema still checks, searches find the same rows by
    reading them, and rows still go in; on builds them back (and only what is missing)."""
    alice, bob = users["alice"], users["bob"]
    _add(db, alice, ["buy TATASTEEL", "sell INFY", "margin call TATASTEEL"])
    _add(db, bob, ["buy TATASTEEL"])
    found = _search(db, alice, "tatasteel")
    assert sorted(found) == ["buy TATASTEEL", "margin call TATASTEEL"]
    assert _search(db, alice, "ord-1") == ["sell INFY"]
    assert _cli(db, capsys, "search-index")["search_index"] == "on"

    off = _cli(db, capsys, "search-index", "off")
    assert off["search_index"] == "off"
    assert off["changed"] == ", ".join(SEARCH_INDEXES)
    assert not set(SEARCH_INDEXES) & _indexes(db)
    assert _cli(db, capsys, "check")["status"] == "schema matches the models"
    assert _search(db, alice, "tatasteel") == found
    assert _search(db, alice, "ord-1") == ["sell INFY"]
    _add(db, alice, ["after TATASTEEL"])
    assert len(_search(db, alice, "tatasteel")) == 3
    assert _cli(db, capsys, "search-index", "off")["changed"] == "-"

    db.execute(
        'CREATE INDEX "ix_service_logs_message_trgm" ON service_logs USING gin (message'
        " gin_trgm_ops)"
    )
    assert _cli(db, capsys, "search-index")["search_index"] == "partial"
    on = _cli(db, capsys, "search-index", "on")
    assert (on["search_index"], on["changed"]) == ("on", "ix_service_logs_context_trgm")
    assert set(SEARCH_INDEXES) <= _indexes(db)
    assert _cli(db, capsys, "check")["status"] == "schema matches the models"
    assert len(_search(db, alice, "tatasteel")) == 3


@pytest.mark.parametrize("backend", ["postgresql"])
def test_off_and_on_on_day_partitions(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """On a partitioned service_logs the indexes go from, and come back to, every partition."""
    _add(db, users["alice"], ["buy TATASTEEL"])
    with db.engine.begin() as connection:
        partitions.convert(connection, NOW.date(), ahead=2)
    partition = partitions.partition_name(NOW.date())

    def on_partition() -> int:
        return int(
            str(
                db.scalar(
                    "SELECT count(*) FROM pg_indexes WHERE tablename = :t"
                    " AND indexdef LIKE '%gin_trgm_ops%'",
                    t=partition,
                )
            )
        )

    assert on_partition() == 2
    assert _cli(db, capsys, "search-index", "off")["search_index"] == "off"
    assert on_partition() == 0
    assert _cli(db, capsys, "search-index", "on")["search_index"] == "on"
    assert on_partition() == 2
    assert _search(db, users["alice"], "tatasteel") == ["buy TATASTEEL"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_has_none(db: MigratedDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite has no such indexes: the state says so, off changes nothing, on is refused."""
    assert _cli(db, capsys, "search-index")["search_index"] == "unavailable"
    assert _cli(db, capsys, "search-index", "off")["changed"] == "-"
    assert "need PostgreSQL" in _cli(db, capsys, "search-index", "on", code=2)
