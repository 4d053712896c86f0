"""The reads users make use the indexes of revision 0008 on PostgreSQL: the statements the
query functions send are captured and explained, and their results checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.support.db import MigratedDatabase
from tradelog.logs import query_logs
from tradelog.notifications import list_notifications

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@contextmanager
def captured(db: MigratedDatabase) -> Iterator[list[tuple[str, Any]]]:
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        sent.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def plan_of(db: MigratedDatabase, sent: list[tuple[str, Any]], table: str) -> str:
    """EXPLAIN of the captured statement reading ``table``, with its parameters."""
    statement, params = next(item for item in sent if f"FROM {table}" in item[0])
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + statement, params)
        return "\n".join(str(row[0]) for row in cursor.fetchall())
    finally:
        raw.close()


def bulk(db: MigratedDatabase, sql: str, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``, then do what autovacuum does on a live database: merge the GIN
    indexes' pending lists (rows inserted after the index was built) and analyze."""
    with db.engine.begin() as connection:
        connection.execute(text(sql), rows)
        connection.execute(
            text(
                "SELECT gin_clean_pending_list(i.indexrelid) FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
                " WHERE a.amname = 'gin'"
            )
        )
        connection.execute(text("ANALYZE"))


def test_keyword_search_uses_the_trigram_indexes(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A rare keyword in the message or in the context is found through the trigram indexes,
    and the rows are the ones holding it."""
    alice, bob = users["alice"], users["bob"]
    rows = [
        {
            "u": alice if n % 2 else bob,
            "m": f"price tick RELIANCE {n}",
            "c": json.dumps({"symbol": "RELIANCE", "qty": n}),
            "t": NOW - timedelta(seconds=n),
        }
        for n in range(20000)
    ]
    rows[11]["m"] = "broker rejected order ZKQW-WJXV: margin"
    rows[13]["c"] = json.dumps({"order_id": "XJVQ-QKZW"})
    rows[12]["m"] = "broker rejected order ZKQW-WJXV: bob's copy"
    bulk(
        db,
        "INSERT INTO service_logs (user_id, level, module, message, context, timestamp)"
        " VALUES (:u, 'INFO', 'broker', :m, CAST(:c AS json), :t)",
        rows,
    )
    for keyword, index, expected in (
        (
            "ZKQW-WJXV",
            "ix_service_logs_message_trgm",
            ["broker rejected order ZKQW-WJXV: margin"],
        ),
        ("XJVQ-QKZW", "ix_service_logs_context_trgm", ["price tick RELIANCE 13"]),
    ):
        with db.session() as session, captured(db) as sent:
            page = query_logs(session, alice, keyword=keyword, limit=50)
        assert [entry.message for entry in page.entries] == expected
        plan = plan_of(db, sent, "service_logs")
        assert index in plan, plan


def test_inbox_page_reads_the_user_created_index(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """The inbox page (read and unread together, newest first) walks
    ``ix_notifications_user_created_id`` instead of sorting every notification of the user."""
    alice, bob = users["alice"], users["bob"]
    rows = [
        {
            "u": alice if n % 3 else bob,
            "r": n % 5 != 0,
            "t": NOW - timedelta(minutes=n),
            "title": f"n{n}",
        }
        for n in range(6000)
    ]
    bulk(
        db,
        "INSERT INTO notifications (user_id, type, level, title, message, read, created_at,"
        " telegram_sent, email_sent, in_app_delivered)"
        " VALUES (:u, 'trading', 'info', :title, 'm', :r, :t, false, false, true)",
        rows,
    )
    with db.session() as session, captured(db) as sent:
        page = list_notifications(session, alice, limit=20)
    expected = [row["title"] for row in rows if row["u"] == alice][:20]
    assert [item.title for item in page.items] == expected
    plan = plan_of(db, sent, "notifications")
    assert "ix_notifications_user_created_id" in plan
    assert "Sort" not in plan
