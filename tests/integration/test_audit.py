"""The audit trail: request context, automatic rows for changes, filtered and paged reads, CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db.models import AuditLog
from tradelog._notify.preferences import update_preferences
from tradelog.audit import current_request, query_audit, record_audit, request_context
from tradelog.exceptions import PermissionDenied
from tradelog.trading_config import update_config

T0 = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)


def _add(db: MigratedDatabase, rows: list[dict[str, object]]) -> None:
    with db.session() as session:
        session.add_all(AuditLog(**row) for row in rows)
        session.commit()


def test_changes_inside_a_request_carry_its_ip_and_user_agent(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Config and preference changes made inside ``request_context`` are audited with the
    request's address and agent; outside it the columns stay empty."""
    alice = users["alice"]
    with db.session() as session:
        with request_context(ip_address="2001:db8::7", user_agent="Mozilla/5.0 (X11)"):
            assert current_request() is not None
            update_config(session, alice, alice, rsi_period=14)
            update_preferences(session, alice, alice, notify_trading_events=False)
        update_config(session, alice, alice, rsi_period=15)
        session.commit()
    assert current_request() is None
    rows = db.rows(
        "SELECT resource_type, ip_address, user_agent, changes FROM audit_logs ORDER BY id"
    )
    assert [(r["resource_type"], r["ip_address"], r["user_agent"]) for r in rows] == [
        ("user_trading_config", "2001:db8::7", "Mozilla/5.0 (X11)"),
        ("notification_preferences", "2001:db8::7", "Mozilla/5.0 (X11)"),
        ("user_trading_config", None, None),
    ]
    changes = [
        json.loads(r["changes"]) if isinstance(r["changes"], str) else r["changes"] for r in rows
    ]
    assert changes[1] == {"notify_trading_events": {"before": True, "after": False}}
    assert changes[2]["fields"] == {"rsi_period": {"before": 14, "after": 15}}


def test_request_context_is_per_task_bounded_and_overridable(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Concurrent asyncio tasks keep their own request; values are cut to the column sizes
    and stripped of control characters; explicit arguments win."""
    admin = users["admin"]

    async def serve(ip: str, agent: str, pause: float) -> None:
        with request_context(ip_address=ip, user_agent=agent):
            await asyncio.sleep(pause)
            with db.session() as session:
                record_audit(session, user_id=admin, action="login", resource_type="user")
                session.commit()

    async def main_() -> None:
        await asyncio.gather(
            serve("198.51.100.1", "first", 0.05), serve("198.51.100.2", "second\x00\n", 0)
        )

    asyncio.run(main_())
    with db.session() as session:
        with request_context(ip_address="x" * 100, user_agent="a" * 2000):
            record_audit(session, user_id=admin, action="logout", resource_type="user")
            record_audit(
                session,
                user_id=admin,
                action="logout",
                resource_type="user",
                ip_address="192.0.2.9",
            )
        session.commit()
    rows = db.rows("SELECT action, ip_address, user_agent FROM audit_logs ORDER BY id")
    assert {(r["ip_address"], r["user_agent"]) for r in rows[:2]} == {
        ("198.51.100.1", "first"),
        ("198.51.100.2", "second"),
    }
    assert rows[2]["ip_address"] == "x" * 45
    assert rows[2]["user_agent"] == "a" * 512
    assert rows[3]["ip_address"] == "192.0.2.9"


@pytest.fixture
def trail(db: MigratedDatabase, users: dict[str, int]) -> dict[str, int]:
    """Twelve rows: alice and the admin acting on configs, preferences and models."""
    rows: list[dict[str, object]] = []
    for i in range(12):
        actor = users["alice"] if i % 3 else users["admin"]
        rows.append(
            {
                "user_id": actor,
                "action": "activate" if i % 4 == 0 else "update",
                "resource_type": "ml_model" if i % 4 == 0 else "user_trading_config",
                "resource_id": i % 2,
                "timestamp": T0 + timedelta(minutes=i // 2),  # pairs share a timestamp
            }
        )
    _add(db, rows)
    return users


def test_filters_scoping_and_paging(db: MigratedDatabase, trail: dict[str, int]) -> None:
    """Filters combine; users read their own rows, admins all; pages never skip or repeat."""
    alice, admin = trail["alice"], trail["admin"]
    with db.session() as session:
        everything = query_audit(session, admin, limit=1000).items
        assert len(everything) == 12
        assert [r.timestamp for r in everything] == sorted(
            (r.timestamp for r in everything), reverse=True
        )
        own = query_audit(session, alice).items
        assert {r.user_id for r in own} == {alice}
        assert len(own) == 8
        with pytest.raises(PermissionDenied):
            query_audit(session, alice, user_id=admin)
        models = query_audit(session, admin, action="activate", resource_type="ml_model").items
        assert len(models) == 3
        assert {r.resource_id for r in query_audit(session, admin, resource_id=1).items} == {1}
        window = query_audit(
            session, admin, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
        ).items
        assert len(window) == 4
        seen: list[int] = []
        cursor = None
        while True:
            page = query_audit(session, admin, limit=5, cursor=cursor)
            seen.extend(r.id for r in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [r.id for r in everything]
        with pytest.raises(ValueError, match="cursor"):
            query_audit(session, admin, cursor="nonsense")


def test_cli(
    db: MigratedDatabase, trail: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """``tradelog audit`` prints the rows, filters them, pages and follows the acting user."""
    base = ["--database-url", db.url]
    assert main([*base, "audit", "--json", "--resource", "ml_model", "--limit", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [item["action"] for item in payload["items"]] == ["activate", "activate"]
    assert payload["next_cursor"]
    cursor = payload["next_cursor"]
    assert main([*base, "audit", "--json", "--resource", "ml_model", "--cursor", cursor]) == 0
    rest = json.loads(capsys.readouterr().out)
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    alice = str(trail["alice"])
    assert main([*base, "audit", "--as", alice, "--json"]) == 0
    assert {i["user"] for i in json.loads(capsys.readouterr().out)["items"]} == {trail["alice"]}
    assert main([*base, "audit", "--as", alice, "--user", str(trail["admin"])]) == 4
    assert main([*base, "audit", "--since", "whenever"]) == 2
    capsys.readouterr()
    assert main([*base, "audit", "--action", "activate"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["ID", "TIME", "USER", "ACTION"]
    assert len(out.splitlines()) == 4
