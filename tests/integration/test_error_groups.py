"""Error groups and who is told: new and regressed groups, regression by occurrence time,
operators and owners, ignoring and reopening, the account snapshot on error rows."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db.models import ErrorLog, User
from tradelog._errors.alerts import ErrorAlerts
from tradelog._errors.groups import LATE_NOTE
from tradelog._errors.record import ErrorRecord, build_record
from tradelog._errors.store import ErrorStore
from tradelog._errors.workflow import error_groups, ignore_group, reopen_group, resolve
from tradelog._logs.redact import Redactor
from tradelog._notify.preferences import update_preferences
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups
from tradelog.exceptions import ConflictError, PermissionDenied
from tradelog.testing import FrozenClock
from tradelog.trading_config import update_config
from tradelog.users import create_user

T0 = datetime(2026, 3, 2, 4, 20, tzinfo=UTC)  # 09:50 IST


class BrokerDown(Exception):
    """What the broker adapter raises."""


def _raise(message: str) -> BaseException:
    try:
        raise BrokerDown(message)
    except BrokerDown as exc:
        return exc


def _other() -> BaseException:
    try:
        raise KeyError("ltp")
    except KeyError as exc:
        return exc


def record(
    at: datetime, user_id: int | None, message: str = "feed lost", **context: Any
) -> ErrorRecord:
    return build_record(
        _raise(message),
        occurred_at=at,
        redactor=Redactor(),
        user_id=user_id,
        context=context or None,
    )


def store(
    db: MigratedDatabase, clock: FrozenClock, *, window: float = 3600, **options: Any
) -> ErrorStore:
    """An error store alerting through the real notification service, as the runtime wires it."""
    alerts = ErrorAlerts(
        window,
        send=NotificationService(db.engine, Wakeups()).notify,
        operators=options.pop("operators", ()),
    )
    return ErrorStore(db.engine, notifier=alerts, clock=clock, **options)


def notes(db: MigratedDatabase, user_id: int) -> list[dict[str, Any]]:
    return db.rows(
        "SELECT level, title, message FROM notifications WHERE user_id = :u ORDER BY id",
        u=user_id,
    )


def group(db: MigratedDatabase) -> dict[str, Any]:
    [row] = db.rows("SELECT * FROM error_groups")
    return row


def test_a_regression_is_decided_by_occurrence_time_not_arrival(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Resolved at 10:00: a 09:55 occurrence arriving afterwards is part of what was resolved;
    10:07 and 10:05 occurrences (arriving in that order) reopen the group once, dated 10:05;
    a 09:40 straggler after the regression changes nothing. Operators are alerted for the new
    group and once for the regression."""
    clock = FrozenClock(T0)
    errors = store(db, clock)
    alice, admin = users["alice"], users["admin"]
    [first] = errors.write([record(T0, alice)])
    assert first.change == "new"
    resolution = T0 + timedelta(minutes=10)
    with db.session() as session:
        resolve(session, first.record.fingerprint, admin, "broker fixed", now=resolution)
        session.commit()
    assert (group(db)["status"], group(db)["substatus"]) == ("resolved", None)

    clock.set(T0 + timedelta(minutes=20))
    [late] = errors.write([record(T0 + timedelta(minutes=5), alice)])
    assert late.change == "late"
    assert group(db)["status"] == "resolved"
    [row] = db.rows(
        "SELECT resolved, resolved_at, resolution_notes FROM error_logs WHERE id = :i",
        i=late.error_id,
    )
    assert row["resolved"] in (True, 1)
    assert row["resolution_notes"] == LATE_NOTE

    [later] = errors.write([record(T0 + timedelta(minutes=17), alice)])
    [earlier] = errors.write([record(T0 + timedelta(minutes=15), alice)])
    assert (later.change, earlier.change) == ("regressed", "ongoing")
    [straggler] = errors.write([record(T0 - timedelta(minutes=10), alice)])
    assert straggler.change == "late"
    state = group(db)
    assert (state["status"], state["substatus"], state["times_seen"]) == (
        "unresolved",
        "regressed",
        5,
    )
    with db.session() as session:
        [shown] = error_groups(session, admin, now=T0 + timedelta(minutes=30))
    assert (shown.status, shown.substatus, shown.count, shown.unresolved) == (
        "unresolved",
        "regressed",
        5,
        2,
    )
    assert [n["title"] for n in notes(db, admin)] == [
        "New error: BrokerDown",
        "Regressed: BrokerDown",
    ]
    assert "regressed after its resolution" in str(notes(db, admin)[1]["message"])
    with db.session() as session:
        [aged] = error_groups(session, admin, now=T0 + timedelta(days=8))
    assert aged.substatus == "ongoing"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_concurrent_writers_regress_and_alert_once(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Four processes' stores storing post-resolution occurrences at once: one regression,
    one alert per operator."""
    clock = FrozenClock(T0)
    [first] = store(db, clock).write([record(T0, users["bob"])])
    with db.session() as session:
        resolve(session, first.record.fingerprint, users["admin"], now=T0 + timedelta(minutes=1))
        session.commit()
    writers = [store(db, clock) for _ in range(4)]
    changes: list[str | None] = []
    start = threading.Barrier(4)

    def write(index: int) -> None:
        start.wait()
        [item] = writers[index].write(
            [record(T0 + timedelta(minutes=2, seconds=index), users["bob"])]
        )
        changes.append(item.change)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(c or "" for c in changes) == ["ongoing", "ongoing", "ongoing", "regressed"]
    assert [n["title"] for n in notes(db, users["admin"])] == [
        "New error: BrokerDown",
        "Regressed: BrokerDown",
    ]


def test_operators_get_the_detail_owners_a_sentence(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Active admins and the configured ops users are operators; an inactive admin and the
    system user never are. An error without a user goes to operators only; an owner who is an
    operator gets the operator's version only."""
    with db.session() as session:
        ops = create_user(session, email="ops@example.com", name="Ops").id
        retired = create_user(session, email="old@example.com", name="Old", role="admin")
        retired.is_active = False
        update_preferences(session, users["alice"], users["alice"], timezone="Europe/London")
        session.commit()
    clock = FrozenClock(T0)
    errors = store(db, clock, operators=(ops,))
    errors.write([record(T0, users["alice"], task="sell_monitor", source="task")])
    errors.write([build_record(_other(), occurred_at=T0, redactor=Redactor(), user_id=None)])
    errors.write([record(T0, users["admin"], "admin's own")])
    for operator in (users["admin"], ops):
        assert [n["title"] for n in notes(db, operator)] == [
            "New error: BrokerDown",
            "New error: KeyError",
        ]
    detail = str(notes(db, ops)[0]["message"])
    assert "BrokerDown: feed lost" in detail
    assert f"user {users['alice']} (alice@example.com)" in detail
    assert "task sell_monitor" in detail
    assert "no user (system)" in str(notes(db, ops)[1]["message"])
    assert notes(db, retired.id) == []
    owner = notes(db, users["alice"])
    assert owner == [
        {
            "level": "error",
            "title": "sell_monitor failed",
            "message": "Your sell_monitor run failed at 04:20 GMT; the operators have been told.",
        }
    ]
    system = db.scalar("SELECT id FROM users WHERE email = 'system@tradelog.invalid'")
    assert notes(db, int(str(system))) == []


def test_owner_preferences_and_no_operators(db: MigratedDatabase, users: dict[str, int]) -> None:
    """The owner's ``notify_errors`` decides; without any operator the owner's sentence does
    not promise that anyone was told."""
    with db.session() as session:
        update_preferences(session, users["bob"], users["bob"], notify_errors=False)
        admin = session.get(User, users["admin"])
        assert admin is not None
        admin.is_active = False
        session.commit()
    errors = store(db, FrozenClock(T0))
    errors.write([record(T0, users["bob"])])
    errors.write([record(T0, users["alice"])])
    assert notes(db, users["bob"]) == []
    assert [n["message"] for n in notes(db, users["alice"])] == [
        "Something went wrong in your trading service at 09:50 IST; it has been recorded."
    ]


def test_ignored_groups_alert_nobody_and_reopen(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """An ignored group still counts occurrences but alerts nobody; reopening it (admins only,
    audited) lets the next occurrence alert again."""
    errors = store(db, FrozenClock(T0), window=0)
    [first] = errors.write([record(T0, users["alice"])])
    fingerprint = first.record.fingerprint
    with db.session() as session:
        with pytest.raises(PermissionDenied):
            ignore_group(session, fingerprint, users["alice"])
        ignore_group(session, fingerprint, users["admin"])
        session.commit()
        with pytest.raises(ConflictError, match="already ignored"):
            ignore_group(session, fingerprint, users["admin"])
    [quiet] = errors.write([record(T0 + timedelta(minutes=1), users["alice"])])
    assert quiet.change == "ignored"
    assert len(notes(db, users["admin"])) == 1
    assert len(notes(db, users["alice"])) == 1
    with db.session() as session:
        reopen_group(session, fingerprint, users["admin"])
        session.commit()
    [loud] = errors.write([record(T0 + timedelta(minutes=2), users["alice"])])
    assert loud.change == "ongoing"
    assert group(db)["times_seen"] == 3
    assert len(notes(db, users["admin"])) == 2
    audit = db.rows("SELECT action, resource_type, changes FROM audit_logs ORDER BY id")
    assert [(a["action"], a["resource_type"]) for a in audit] == [
        ("ignore", "error_group"),
        ("reopen", "error_group"),
    ]
    changes = audit[0]["changes"]
    changes = json.loads(changes) if isinstance(changes, str) else changes
    assert changes == {
        "status": {"before": "unresolved", "after": "ignored"},
        "substatus": {"before": "new", "after": None},
    }


def test_resolving_the_last_occurrence_resolves_the_group(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Resolving error by error: the group is resolved (and audited) with the last one."""
    errors = store(db, FrozenClock(T0))
    written = errors.write([record(T0, users["alice"]), record(T0, users["bob"])])
    with db.session() as session:
        resolve(session, written[0].error_id, users["admin"], now=T0 + timedelta(hours=1))
        session.commit()
        assert group(db)["status"] == "unresolved"
        resolve(session, written[1].error_id, users["admin"], "done", now=T0 + timedelta(hours=2))
        session.commit()
    state = group(db)
    assert state["status"] == "resolved"
    assert state["resolved_by"] == users["admin"]
    audit = db.rows("SELECT resource_type, changes FROM audit_logs ORDER BY id")
    assert [a["resource_type"] for a in audit] == ["error_log", "error_log", "error_group"]
    one = audit[0]["changes"]
    one = json.loads(one) if isinstance(one, str) else one
    assert set(one) == {"resolved", "resolved_at", "resolved_by"}


def test_error_rows_carry_a_scrubbed_bounded_snapshot(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """The owner's trading config and service status at the time, secrets scrubbed, a huge
    task schedule dropped; none for rows written long after they occurred, none when the
    setting is off."""
    alice, bob = users["alice"], users["bob"]
    with db.session() as session:
        update_config(
            session,
            alice,
            alice,
            rsi_period=14,
            task_schedule={"sell_monitor": "09:15", "broker_api_key": "kite-secret-123"},
        )
        update_config(session, bob, bob, task_schedule={f"job{i}": "x" * 200 for i in range(40)})
        session.commit()
    clock = FrozenClock(T0)
    errors = store(db, clock)
    errors.write([record(T0, alice), record(T0, bob)])
    errors.write([record(T0 - timedelta(hours=1), alice, "replayed")])
    store(db, clock, snapshots=False).write([record(T0, alice, "off")])
    with db.session() as session:
        rows = session.query(ErrorLog).order_by(ErrorLog.id).all()
        contexts = [row.context for row in rows]
    snapshot = contexts[0]["snapshot"]
    assert snapshot["trading_config"]["rsi_period"] == 14
    assert snapshot["trading_config"]["task_schedule"]["broker_api_key"] == "[REDACTED]"
    assert snapshot["service_status"] is None  # nothing recorded for her service yet
    assert "kite-secret-123" not in json.dumps(contexts)
    assert len(json.dumps(contexts[1]["snapshot"])) <= 4096
    assert contexts[1]["snapshot"]["trading_config"]["rsi_period"] == 10
    assert "omitted" in contexts[1]["snapshot"]["trading_config"]["task_schedule"]
    assert contexts[2] is None or "snapshot" not in contexts[2]
    assert contexts[3] is None or "snapshot" not in contexts[3]
    errors.write([record(T0, alice, "again")])
    with db.session() as session:
        latest = session.query(ErrorLog).order_by(ErrorLog.id.desc()).first()
        assert latest is not None
        assert latest.context["snapshot"]["service_status"]["error_count"] == 3


def test_cli_groups_ignore_and_reopen(
    db: MigratedDatabase, users: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    """``errors groups`` shows status and substatus; ``ignore``/``reopen`` take the short
    fingerprint and an admin; anyone else is refused."""
    now = datetime.now(UTC)
    [first] = store(db, FrozenClock(now)).write([record(now, users["alice"])])
    short = first.record.fingerprint[:12]
    base = ["--database-url", db.url, "errors"]
    assert main([*base, "groups"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["FINGERPRINT", "STATUS", "SUBSTATUS"]
    assert f"{short}  unresolved  new" in out
    assert main([*base, "ignore", short, "--as", str(users["alice"])]) == 4
    assert main([*base, "ignore", short, "--as", str(users["admin"])]) == 0
    assert main([*base, "ignore", short, "--as", str(users["admin"])]) == 6
    capsys.readouterr()
    assert main([*base, "groups", "--status", "ignored", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["substatus"]) == ("ignored", None)
    assert main([*base, "reopen", short, "--as", str(users["admin"])]) == 0
    assert main([*base, "groups", "--status", "ignored", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == []
