"""The in-app inbox: listing, paging, unread counts, marking read, and who may do what."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.db import MigratedDatabase
from tradelog._access import Actor
from tradelog._notify.dispatch import dispatch
from tradelog._notify.inbox import list_notifications, mark_all_read, mark_read, unread_count
from tradelog.exceptions import NotFound, PermissionDenied

BASE = datetime(2026, 5, 14, 3, 45, tzinfo=UTC)


def fill(db: MigratedDatabase, user_id: int, count: int, *, type_: str = "trading") -> list[int]:
    ids = []
    with db.session() as session:
        for i in range(count):
            level = "error" if i % 3 == 0 else "info"
            result = dispatch(
                session, user_id, type_, level, f"n{i}", "m", now=BASE + timedelta(seconds=i)
            )
            assert result.notification_id is not None
            ids.append(result.notification_id)
        session.commit()
    return ids


def test_list_filters_and_pages(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Newest first, filters apply, and keyset pages cover every row exactly once."""
    ids = fill(db, users["alice"], 25)
    fill(db, users["bob"], 5)
    seen: list[int] = []
    cursor = None
    with db.session() as session:
        while True:
            page = list_notifications(session, users["alice"], limit=10, cursor=cursor)
            seen += [n.id for n in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        errors = list_notifications(session, users["alice"], level="error", limit=100).items
        service = list_notifications(session, users["alice"], type_="service").items
        recent = list_notifications(
            session, users["alice"], since=BASE + timedelta(seconds=20)
        ).items
    assert seen == list(reversed(ids))
    assert len(errors) == 9
    assert {n.level for n in errors} == {"error"}
    assert service == []
    assert [n.title for n in recent] == ["n24", "n23", "n22", "n21", "n20"]


def test_list_scoping(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Users see only their own; naming another user is refused; admins see all."""
    fill(db, users["alice"], 2)
    fill(db, users["bob"], 3)
    with db.session() as session:
        assert len(list_notifications(session, users["bob"]).items) == 3
        with pytest.raises(PermissionDenied):
            list_notifications(session, users["bob"], user_id=users["alice"])
        assert len(list_notifications(session, users["admin"]).items) == 5
        admin_view = list_notifications(session, users["admin"], user_id=users["alice"])
        assert len(admin_view.items) == 2
        with pytest.raises(ValueError, match="invalid cursor"):
            list_notifications(session, users["bob"], cursor="!!!")
        with pytest.raises(ValueError, match="notification type"):
            list_notifications(session, users["bob"], type_="orders")


def test_mark_read_and_counts(db: MigratedDatabase, users: dict[str, int]) -> None:
    """mark_read sets read_at once; another user's id is a permission error; unknown is NotFound."""
    ids = fill(db, users["alice"], 4)
    first = datetime(2026, 5, 14, 4, 0, tzinfo=UTC)
    with db.session() as session:
        assert unread_count(session, users["alice"]) == 4
        row = mark_read(session, users["alice"], ids[0], now=first)
        assert row.read is True
        assert row.read_at == first
        again = mark_read(session, users["alice"], ids[0], now=first + timedelta(hours=1))
        assert again.read_at == first
        with pytest.raises(PermissionDenied):
            mark_read(session, users["bob"], ids[1])
        with pytest.raises(PermissionDenied):
            mark_read(session, Actor(users["admin"], is_admin=True), ids[1])
        with pytest.raises(NotFound):
            mark_read(session, users["alice"], 999_999)
        session.commit()
        assert unread_count(session, users["alice"]) == 3
        assert unread_count(session, users["admin"], user_id=users["alice"]) == 3
        with pytest.raises(PermissionDenied):
            unread_count(session, users["bob"], user_id=users["alice"])
        unread = list_notifications(session, users["alice"], unread_only=True).items
        assert len(unread) == 3
    rows = db.rows("SELECT read_at FROM notifications WHERE id = :i", i=ids[1])
    assert rows[0]["read_at"] is None


def test_mark_all_read_touches_only_unread(db: MigratedDatabase, users: dict[str, int]) -> None:
    """mark_all_read changes only the actor's unread rows and returns how many."""
    ids = fill(db, users["alice"], 5)
    fill(db, users["bob"], 2)
    early = datetime(2026, 5, 14, 4, 0, tzinfo=UTC)
    later = early + timedelta(hours=2)
    with db.session() as session:
        mark_read(session, users["alice"], ids[0], now=early)
        assert mark_all_read(session, users["alice"], now=later) == 4
        assert mark_all_read(session, users["alice"], now=later) == 0
        session.commit()
        assert unread_count(session, users["alice"]) == 0
        assert unread_count(session, users["bob"]) == 2
    rows = db.rows("SELECT id, read_at FROM notifications WHERE user_id = :u", u=users["alice"])
    stamps = {r["id"]: r["read_at"] for r in rows}
    first = stamps[ids[0]]
    assert first is not None
    assert str(first).startswith("2026-05-14 04:00")


_FILL_POSTGRES = (
    "INSERT INTO notifications (user_id, type, level, title, message, read, created_at) "
    "SELECT :u, 'trading', 'info', 'fill', 'm', (g % 4 <> 0), "
    "now() - g * interval '1 second' FROM generate_series(1, 100000) AS g"
)
_FILL_SQLITE = (
    "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100000) "
    "INSERT INTO notifications (user_id, type, level, title, message, read, created_at) "
    "SELECT :u, 'trading', 'info', 'fill', 'm', (n % 4 <> 0), "
    "strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || n || ' seconds') || '+00:00' FROM g"
)


@pytest.mark.slow
def test_unread_count_fast_at_100k(db: MigratedDatabase, users: dict[str, int]) -> None:
    """100,000 notifications per user: the unread count uses the composite index and is fast."""
    postgres = db.backend == "postgresql"
    for user in ("alice", "bob"):
        db.execute(_FILL_POSTGRES if postgres else _FILL_SQLITE, u=users[user])
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE notifications" if postgres else "ANALYZE")
    explain = "EXPLAIN" if postgres else "EXPLAIN QUERY PLAN"
    plan = "\n".join(
        str(list(r.values())[-1])
        for r in db.rows(
            f"{explain} SELECT count(*) FROM notifications WHERE user_id = :u AND read = :f",
            u=users["alice"],
            f=False,
        )
    )
    assert "ix_notifications_user_read_created" in plan
    with db.session() as session:
        assert unread_count(session, users["alice"]) == 25_000
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            unread_count(session, users["alice"])
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        changed = mark_all_read(session, users["alice"])
        mark_all_seconds = time.perf_counter() - started
        session.commit()
    best = min(timings)
    print(
        f"{db.backend}: unread_count at 100k rows: best {best * 1000:.2f} ms, "
        f"mark_all_read {changed} rows in {mark_all_seconds * 1000:.0f} ms"
    )
    assert changed == 25_000
    assert best < 0.05
