"""The host's accounts in tradelog: ensure_user(s), unknown ids registered or rejected, the
system user's identity, and ``tradelog users add | sync | list``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import dead_letters, running
from tradelog._cli import main
from tradelog.exceptions import ConflictError
from tradelog.users import (
    SYSTEM_USER_EMAIL,
    UserSpec,
    create_user,
    ensure_user,
    ensure_users,
    system_user_id,
)

PLACEHOLDER = "user-{}@unregistered.tradelog.invalid"


def _user(db: MigratedDatabase, user_id: int) -> dict[str, object]:
    rows = db.rows(
        "SELECT id, email, name, role, is_active, is_system FROM users WHERE id = :i", i=user_id
    )
    assert len(rows) == 1, rows
    row = rows[0]
    row["is_active"], row["is_system"] = bool(row["is_active"]), bool(row["is_system"])
    return row


def test_ensure_user_is_an_idempotent_upsert(db: MigratedDatabase) -> None:
    """The host's id is kept; a second call changes only what it names; a placeholder account
    becomes the real one."""
    with db.session() as session:
        first = ensure_user(42, email="asha@example.com", name="Asha", session=session)
        session.commit()
    assert first.id == 42
    assert _user(db, 42) == {
        "id": 42,
        "email": "asha@example.com",
        "name": "Asha",
        "role": "user",
        "is_active": True,
        "is_system": False,
    }
    with db.session() as session:
        ensure_user(42, session=session)  # nothing named: e-mail and name stay
        ensure_user(42, email="asha@example.com", name="Asha", session=session)
        session.commit()
    assert _user(db, 42)["email"] == "asha@example.com"
    with db.session() as session:
        ensure_user(42, name="Asha K", role="admin", session=session)
        ensure_user(7, session=session)
        session.commit()
    assert (_user(db, 42)["name"], _user(db, 42)["role"]) == ("Asha K", "admin")
    assert _user(db, 7)["email"] == PLACEHOLDER.format(7)
    with db.session() as session:
        ensure_user(7, email="ravi@example.com", name="Ravi", session=session)
        session.commit()
    assert (_user(db, 7)["email"], _user(db, 7)["name"]) == ("ravi@example.com", "Ravi")


def test_ensure_users_in_bulk(db: MigratedDatabase) -> None:
    """Many accounts in one transaction; the result says what happened to each id."""
    with db.session() as session:
        ensure_user(3, email="c@example.com", session=session)
        session.commit()
    with db.session() as session:
        result = ensure_users(
            [
                {"id": 1, "email": "a@example.com", "name": "A"},
                UserSpec(2, role="admin"),
                {"id": 3, "email": "c@example.com"},
                {"id": 4, "email": "d@example.com"},
            ],
            session=session,
        )
        session.commit()
    assert (result.created, result.updated, result.unchanged) == ([1, 2, 4], [], [3])
    assert db.scalar("SELECT count(*) FROM users WHERE id BETWEEN 1 AND 4") == 4


def test_bad_input_is_refused_before_anything_is_written(db: MigratedDatabase) -> None:
    """Ids, roles and e-mails are checked; an e-mail of another account is a conflict."""
    with db.session() as session:
        ensure_user(1, email="taken@example.com", session=session)
        session.commit()
    for bad in (0, -3, True, "7"):
        with pytest.raises(ValueError, match="positive integer"):
            UserSpec(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user ids go up to 2147483647"):
        UserSpec(2**31)
    with pytest.raises(ValueError, match="role"):
        UserSpec(5, role="root")
    with pytest.raises(ValueError, match="e-mail"):
        UserSpec(5, email="not an address")
    with db.session() as session, pytest.raises(ConflictError, match="already belongs to user 1"):
        ensure_users([{"id": 5}, {"id": 6, "email": "taken@example.com"}], session=session)
    assert db.scalar("SELECT count(*) FROM users WHERE id IN (5, 6)") == 0
    with db.session() as session:
        assert system_user_id(session) == 0  # never a host id: host ids are positive
        session.commit()


def test_ensure_user_through_the_runtime(db: MigratedDatabase, tmp_path: Path) -> None:
    """``tradelog.ensure_user`` / ``ensure_users`` without a session use tradelog's engine."""
    with running(db.url, tmp_path):
        row = tradelog.ensure_user(11, email="k@example.com", name="K")
        result = tradelog.ensure_users([{"id": 12}, {"id": 11, "name": "Kiran"}])
    assert (row.id, row.email) == (11, "k@example.com")
    assert (result.created, result.updated) == ([12], [11])
    assert _user(db, 11)["name"] == "Kiran"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_explicit_host_ids_never_break_tradelog(db: MigratedDatabase) -> None:
    """The host inserts its accounts with their own ids, leaving the sequence behind: the
    system user is found or created (CLI commands acting as it work), and after tradelog's own
    explicit inserts a sequence-numbered insert does not collide."""
    db.execute(
        "INSERT INTO users (id, email, name, password_hash, role) VALUES "
        "(1, 'one@example.com', 'One', 'x', 'admin'), (2, 'two@example.com', 'Two', 'x', 'user')"
    )
    assert main(["--database-url", db.url, "status"]) == 0
    with db.session() as session:
        system = system_user_id(session)
        session.commit()
    assert _user(db, system)["is_system"] is True
    with db.session() as session:
        ensure_user(40, session=session)
        session.commit()
    with db.session() as session:
        made = create_user(session, email="seq@example.com", name="Seq")  # takes the sequence
        session.commit()
    assert made.id == 41


@pytest.mark.parametrize("backend", ["postgresql"])
def test_system_user_when_the_host_holds_id_zero_and_the_sequence_is_behind(
    db: MigratedDatabase,
) -> None:
    """Id 0 taken by a host row and ids 1-3 inserted explicitly: the system user takes the
    sequence's next id once it has been moved past them - no collision is taken for a race."""
    db.execute(
        "INSERT INTO users (id, email, name, password_hash) VALUES "
        "(0, 'zero@example.com', 'Z', 'x'), (1, 'a@example.com', 'A', 'x'), "
        "(2, 'b@example.com', 'B', 'x'), (3, 'c@example.com', 'C', 'x')"
    )
    with db.session() as session:
        system = system_user_id(session)
        session.commit()
    assert system == 4
    assert _user(db, system)["is_system"] is True


def test_system_user_is_created_once_under_concurrency(db: MigratedDatabase) -> None:
    """Several threads asking for the system user at once get the same single row."""
    found: list[int] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        with db.session() as session:
            found.append(system_user_id(session))
            session.commit()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(found) == 4
    assert len(set(found)) == 1
    assert db.scalar("SELECT count(*) FROM users WHERE is_system") == 1
    assert found[0] == 0


def test_a_host_account_with_the_system_email_is_not_the_system_user(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host user created with system@tradelog.invalid and role user: unowned errors stay
    with the real (flagged, admin) system user; that host user reads none of them, and the
    CLI's default actor is the system admin, not them."""
    with db.session() as session:
        impostor = create_user(session, email=SYSTEM_USER_EMAIL, name="host", role="user").id
        session.commit()
    with running(db.url, tmp_path):
        try:
            raise RuntimeError("nobody's error")
        except RuntimeError as exc:
            tradelog.capture_exception(exc)
        assert tradelog.flush(10)
    owner = db.scalar("SELECT user_id FROM error_logs")
    assert owner != impostor
    assert _user(db, int(owner))["is_system"] is True  # type: ignore[call-overload]
    assert _user(db, int(owner))["role"] == "admin"  # type: ignore[call-overload]
    capsys.readouterr()
    assert main(["--json", "--database-url", db.url, "errors", "list"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 1
    assert main(["--json", "--database-url", db.url, "errors", "list", "--as", str(impostor)]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


def test_a_demoted_system_user_is_not_trusted(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flagged row with its role changed to user is refused, not used as the admin."""
    with db.session() as session:
        system = system_user_id(session)
        session.commit()
    db.execute("UPDATE users SET role = 'user' WHERE id = :i", i=system)
    with db.session() as session, pytest.raises(ConflictError, match="not admin"):
        system_user_id(session)
    capsys.readouterr()
    assert main(["--database-url", db.url, "status"]) == 6
    assert "is_system" in capsys.readouterr().err


def test_unknown_users_are_registered_once_with_one_warning(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default a log event, heartbeat, task, error and notification for ids never seen
    land, each id is a placeholder account, and each id is named once on the console."""
    with running(db.url, tmp_path, console=True) as runtime:
        log = tradelog.get_logger("strategy")
        for _ in range(3):
            log.info("fill", user_id=901)
        assert tradelog.heartbeat(902)
        with tradelog.track_task(903, "sell_monitor"):
            pass
        try:
            raise ValueError("broker said no")
        except ValueError as exc:
            tradelog.capture_exception(exc, user_id=904)
        tradelog.notify(905, "trading", "info", "Filled", "ok")
        assert runtime.flush(20)
        stats = runtime.stats()
    assert db.scalar("SELECT count(*) FROM service_logs WHERE user_id = 901") == 3
    assert db.scalar("SELECT count(*) FROM service_status WHERE user_id = 902") == 1
    assert db.scalar("SELECT count(*) FROM service_task_execution WHERE user_id = 903") == 1
    assert db.scalar("SELECT count(*) FROM error_logs WHERE user_id = 904") == 1
    assert db.scalar("SELECT count(*) FROM notifications WHERE user_id = 905") == 1
    for user_id in range(901, 906):
        assert _user(db, user_id)["email"] == PLACEHOLDER.format(user_id)
        assert _user(db, user_id)["role"] == "user"
    err = capsys.readouterr().err
    for user_id in range(901, 906):
        assert err.count(f"user {user_id} was not known to tradelog") == 1, err
    assert stats["dead_lettered"] == 0
    assert stats["rejected_users"] == 0


def test_unknown_users_rejected(
    db: MigratedDatabase,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With reject: the log row is dead-lettered, the heartbeat and task are refused, the
    error stays with the system user naming the id, the notification raises NotFound - each
    counted, and ``tradelog status`` shows the count."""
    with running(db.url, tmp_path, unknown_users="reject", console=True) as runtime:
        tradelog.get_logger("strategy").info("fill", user_id=911)
        assert not tradelog.heartbeat(912)
        assert not tradelog.heartbeat(912)
        with tradelog.track_task(913, "sell_monitor"):
            pass
        try:
            raise ValueError("broker said no")
        except ValueError as exc:
            tradelog.capture_exception(exc, user_id=914)
        with pytest.raises(tradelog.NotFound):
            tradelog.notify(915, "trading", "info", "Filled", "ok")
        assert not runtime.flush(20)  # the row of user 911 is a dead letter
        assert runtime.flush(5)
        stats = runtime.stats()
    assert db.scalar("SELECT count(*) FROM users WHERE id BETWEEN 911 AND 915") == 0
    assert [d["reason"] for d in dead_letters(tmp_path)] == ["no user with id 911"]
    assert db.scalar("SELECT count(*) FROM service_task_execution") == 0
    context = db.scalar("SELECT context FROM error_logs")
    assert (json.loads(context) if isinstance(context, str) else context)["unknown_user_id"] == 914
    assert stats["rejected_users"] == 6
    assert capsys.readouterr().err.count("user 912") == 1  # named once, whatever the calls
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(tmp_path))
    code = main(["--database-url", db.url, "status", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 1  # the refused log row is in the dead-letter file
    assert shown["rejected_users"] == 6
    assert shown["backlog"]["dead_letters"] == 1
    assert main(["--database-url", db.url, "status"]) == 1
    out = capsys.readouterr().out
    assert "6 writes refused for unknown users" in out
    assert "1 log rows in the dead-letter files" in out


def test_cli_users_add_sync_list(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``users add`` upserts one account, ``sync`` a whole file (all or nothing), ``list``
    shows kinds; a non-admin may not add and sees only themselves."""
    url = ["--database-url", db.url]
    assert main([*url, "users", "add", "21", "--email", "u21@example.com", "--name", "U"]) == 0
    assert main([*url, "users", "add", "21", "--email", "u21@example.com", "--name", "U"]) == 0
    assert "unchanged" in capsys.readouterr().out
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "id,email,name,role\n21,u21@example.com,U two,user\n22,,Placeholder,\n23,a@x.com,,admin\n"
    )
    assert main([*url, "--json", "users", "sync", str(accounts)]) == 0
    assert json.loads(capsys.readouterr().out) == [{"created": 2, "updated": 1, "unchanged": 0}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 30}\n{"id": "x"}\nnot json\n{"id": 31, "role": "root"}\n')
    assert main([*url, "users", "sync", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err
    assert "line 3" in err
    assert "line 4" in err
    assert db.scalar("SELECT count(*) FROM users WHERE id IN (30, 31)") == 0
    assert main([*url, "--json", "users", "list"]) == 0
    kinds = {row["id"]: row["kind"] for row in json.loads(capsys.readouterr().out)}
    assert kinds[21] == "account"
    assert kinds[22] == "placeholder"
    assert "system" in kinds.values()
    assert main([*url, "users", "add", "40", "--as", "21"]) == 4
    assert main([*url, "users", "add", str(2**40)]) == 2  # beyond users.id: usage, not storage
    assert "user ids go up to 2147483647" in capsys.readouterr().err
    assert main([*url, "--json", "users", "list", "--as", "21"]) == 0
    assert [row["id"] for row in json.loads(capsys.readouterr().out)] == [21]


def test_migration_flags_the_earlier_system_user_only(empty_url: str) -> None:
    """0005 flags the inactive admin that earlier versions created as the system user, and
    not a host account that uses the same e-mail."""
    from tradelog._db import migrate
    from tradelog._db.engine import create_tradelog_engine

    for earlier, role in ((5, "admin"), (6, "user")):
        url = empty_url
        if earlier == 6:
            migrate.downgrade(url, "base")
        migrate.upgrade(url, "0004_notification_outbox")
        engine = create_tradelog_engine(url)
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO users (id, email, name, password_hash, role, is_active) "
                    "VALUES (:i, 'system@tradelog.invalid', 'system', '!', :r, false)"
                ),
                {"i": earlier, "r": role},
            )
        migrate.upgrade(url)
        with engine.connect() as c:
            flagged = c.execute(text("SELECT id FROM users WHERE is_system")).scalars().all()
        with Session(engine) as session:
            if role == "admin":
                assert flagged == [5]
                assert system_user_id(session) == 5
                with pytest.raises(ConflictError, match="system user"):
                    ensure_user(5, session=session)
            else:
                assert flagged == []
                assert system_user_id(session) == 0  # a new one; the host's row stays theirs
                session.commit()
        engine.dispose()
