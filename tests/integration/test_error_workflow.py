"""Listing, grouping, resolving and purging errors, scoped to the acting user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tests.support.db import MigratedDatabase
from tradelog._access import Actor
from tradelog._db.models import ErrorLog
from tradelog._errors.workflow import (
    error_groups,
    get_error,
    list_errors,
    purge_resolved,
    resolve,
    resolved_cutoff,
)
from tradelog.exceptions import ConflictError, NotFound, PermissionDenied

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
FP_A = "a" * 64
FP_B = "b" * 64


def _add(session: Session, user_id: int, **fields: Any) -> ErrorLog:
    values: dict[str, Any] = {
        "error_type": "ValueError",
        "error_message": "bad qty",
        "traceback": "Traceback ...",
        "occurred_at": T0,
        "fingerprint": FP_A,
    }
    values.update(fields)
    row = ErrorLog(user_id=user_id, **values)
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def seeded(db: MigratedDatabase, users: dict[str, int]) -> dict[str, int]:
    """Errors for alice (3 of FP_A, 1 of FP_B) and bob (1 of FP_A), one minute apart."""
    with db.session() as session:
        ids = {
            "a1": _add(session, users["alice"], occurred_at=T0).id,
            "a2": _add(session, users["alice"], occurred_at=T0 + timedelta(minutes=1)).id,
            "a3": _add(
                session,
                users["alice"],
                occurred_at=T0 + timedelta(minutes=2),
                error_message="bad qty -5",
            ).id,
            "b1": _add(
                session,
                users["alice"],
                occurred_at=T0 + timedelta(minutes=3),
                error_type="KeyError",
                error_message="'ltp'",
                fingerprint=FP_B,
            ).id,
            "bob": _add(session, users["bob"], occurred_at=T0 + timedelta(minutes=4)).id,
        }
        session.commit()
    return ids


def test_users_see_their_own_errors_admins_see_all(
    db: MigratedDatabase, users: dict[str, int], seeded: dict[str, int]
) -> None:
    """Scoping by the acting user; a user asking for another's errors is refused."""
    with db.session() as session:
        mine = list_errors(session, users["alice"]).items
        assert [e.id for e in mine] == [seeded["b1"], seeded["a3"], seeded["a2"], seeded["a1"]]
        everyone = list_errors(session, users["admin"]).items
        assert len(everyone) == 5
        assert [e.id for e in list_errors(session, users["admin"], user_id=users["bob"]).items] == [
            seeded["bob"]
        ]
        with pytest.raises(PermissionDenied):
            list_errors(session, users["alice"], user_id=users["bob"])
        assert get_error(session, users["bob"], seeded["bob"]).user_id == users["bob"]
        with pytest.raises(NotFound):
            get_error(session, users["bob"], seeded["a1"])
        with pytest.raises(NotFound):
            get_error(session, users["admin"], 99999)


def test_filters_by_type_fingerprint_time_and_state(
    db: MigratedDatabase, users: dict[str, int], seeded: dict[str, int]
) -> None:
    """Type, fingerprint, [since, until) and resolved filters combine."""
    admin = Actor(users["admin"], is_admin=True)
    with db.session() as session:
        assert [e.id for e in list_errors(session, admin, error_type="KeyError").items] == [
            seeded["b1"]
        ]
        assert len(list_errors(session, admin, fingerprint=FP_A).items) == 4
        window = list_errors(
            session, admin, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
        ).items
        assert [e.id for e in window] == [seeded["a3"], seeded["a2"]]
        resolve(session, seeded["a1"], admin, "fixed")
        session.commit()
        assert [e.id for e in list_errors(session, admin, resolved=True).items] == [seeded["a1"]]
        assert len(list_errors(session, admin, resolved=False).items) == 4


def test_cursor_pages_through_everything_once(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Pages follow (occurred_at, id) descending, even with equal timestamps."""
    with db.session() as session:
        created = [
            _add(session, users["alice"], occurred_at=T0 + timedelta(seconds=i // 2)).id
            for i in range(7)
        ]
        session.commit()
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = list_errors(session, users["alice"], limit=3, cursor=cursor)
            seen.extend(e.id for e in page.items)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 3
        assert sorted(seen) == sorted(created)
        assert len(seen) == len(set(seen))
        with pytest.raises(ValueError, match="invalid cursor"):
            list_errors(session, users["alice"], cursor="not-a-cursor")


def test_groups_count_occurrences(
    db: MigratedDatabase, users: dict[str, int], seeded: dict[str, int]
) -> None:
    """One group per fingerprint with counts, users, first/last seen and a recent message."""
    with db.session() as session:
        resolve(session, seeded["a1"], users["admin"], "first one fixed")
        session.commit()
        groups = error_groups(session, users["admin"])
        assert [(g.fingerprint, g.count, g.users, g.unresolved) for g in groups] == [
            (FP_A, 4, 2, 3),
            (FP_B, 1, 1, 1),
        ]
        first = groups[0]
        assert first.error_type == "ValueError"
        assert first.first_seen == T0
        assert first.last_seen == T0 + timedelta(minutes=4)
        assert first.sample_message == "bad qty"
        alice = error_groups(session, users["alice"])
        assert [(g.fingerprint, g.count, g.sample_message) for g in alice] == [
            (FP_B, 1, "'ltp'"),
            (FP_A, 3, "bad qty -5"),
        ]
        assert error_groups(session, users["alice"], resolved=True)[0].count == 1


def test_group_samples_follow_the_filters(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Each group's sample is its newest occurrence among the rows the filters keep (own rows
    for a user, ``until``), also for rows without a fingerprint (grouped by type), all from
    one grouping statement."""
    alice, bob = users["alice"], users["bob"]
    rows = [
        (alice, "KeyError", None, "alice key 1", 1),
        (alice, "KeyError", None, "alice key 2", 2),
        (bob, "KeyError", None, "bob key", 3),
        (alice, "ValueError", None, "alice value", 4),
        (alice, "ValueError", FP_A, "alice fp 1", 5),
        (bob, "ValueError", FP_A, "bob fp", 6),
        (alice, "ValueError", FP_A, "alice fp late", 9),
    ]
    with db.session() as session:
        session.add_all(
            ErrorLog(
                user_id=user,
                error_type=kind,
                error_message=message,
                fingerprint=print_,
                occurred_at=T0 + timedelta(minutes=minute),
            )
            for user, kind, print_, message, minute in rows
        )
        session.commit()
        statements: list[str] = []

        def sent(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(db.engine, "before_cursor_execute", sent)
        try:
            everyone = error_groups(session, users["admin"], until=T0 + timedelta(minutes=8))
        finally:
            event.remove(db.engine, "before_cursor_execute", sent)
        assert [(g.fingerprint, g.error_type, g.sample_message) for g in everyone] == [
            (FP_A, "ValueError", "bob fp"),
            (None, "ValueError", "alice value"),
            (None, "KeyError", "bob key"),
        ]
        assert sum("FROM error_logs" in sql for sql in statements) == 1
        mine = error_groups(session, alice)
        assert [(g.fingerprint, g.error_type, g.sample_message) for g in mine] == [
            (FP_A, "ValueError", "alice fp late"),
            (None, "ValueError", "alice value"),
            (None, "KeyError", "alice key 2"),
        ]


def test_only_admins_resolve_and_only_once(
    db: MigratedDatabase, users: dict[str, int], seeded: dict[str, int]
) -> None:
    """Resolution sets the four columns, is audited, and a second attempt conflicts."""
    with db.session() as session:
        with pytest.raises(PermissionDenied):
            resolve(session, seeded["a1"], users["alice"], "mine anyway")
        at = T0 + timedelta(days=1)
        assert resolve(session, seeded["a1"], users["admin"], "  broker fixed it  ", now=at) == [
            seeded["a1"]
        ]
        session.commit()
        row = session.get(ErrorLog, seeded["a1"])
        assert row is not None
        session.refresh(row)
        assert row.resolved
        assert row.resolved_at == at
        assert row.resolved_by == users["admin"]
        assert row.resolution_notes == "broker fixed it"
        with pytest.raises(ConflictError, match="already resolved"):
            resolve(session, seeded["a1"], users["admin"], "again")
        with pytest.raises(NotFound):
            resolve(session, 424242, users["admin"])
    audit = db.rows("SELECT user_id, action, resource_type, resource_id FROM audit_logs")
    assert audit == [
        {
            "user_id": users["admin"],
            "action": "resolve",
            "resource_type": "error_log",
            "resource_id": seeded["a1"],
        }
    ]
    assert db.scalar("SELECT resolution_notes FROM error_logs WHERE id = :i", i=seeded["a1"]) == (
        "broker fixed it"
    )


def test_resolve_by_fingerprint(
    db: MigratedDatabase, users: dict[str, int], seeded: dict[str, int]
) -> None:
    """A fingerprint resolves every unresolved occurrence, across users; then conflicts."""
    with db.session() as session:
        resolve(session, seeded["a1"], users["admin"])
        ids = resolve(session, FP_A, users["admin"], "deploy 42")
        session.commit()
        assert ids == sorted([seeded["a2"], seeded["a3"], seeded["bob"]])
        with pytest.raises(ConflictError):
            resolve(session, FP_A, users["admin"])
        with pytest.raises(NotFound):
            resolve(session, "f" * 64, users["admin"])
        with pytest.raises(TypeError):
            resolve(session, True, users["admin"])
    assert db.scalar("SELECT count(*) FROM error_logs WHERE resolved = :r", r=False) == 1


def test_purge_keeps_unresolved_and_recently_resolved(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Resolved over 90 days ago: gone. Resolved recently, or never resolved: kept."""
    now = T0 + timedelta(days=400)
    with db.session() as session:
        ancient_unresolved = _add(session, users["alice"], occurred_at=T0).id
        old = [
            _add(session, users["alice"], resolved=True, resolved_at=now - timedelta(days=91)).id
            for _ in range(5)
        ]
        edge = _add(session, users["bob"], resolved=True, resolved_at=now - timedelta(days=90)).id
        recent = _add(session, users["bob"], resolved=True, resolved_at=now - timedelta(days=3)).id
        session.commit()
        assert purge_resolved(session, now, days=90, batch_size=2) == len(old)
        left = sorted(session.scalars(select(ErrorLog.id)))
    assert left == sorted([ancient_unresolved, edge, recent])
    assert resolved_cutoff(now, 90) == now - timedelta(days=90)
    with pytest.raises(ValueError, match="days"):
        resolved_cutoff(now, 0)
