"""Engines: SQLite pragmas, PostgreSQL driver choice, unreachable databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from tests.support.db import MigratedDatabase
from tradelog._access import Actor, require_admin, resolve_actor, scoped
from tradelog._db.engine import check_connection, create_tradelog_engine, normalize_url
from tradelog._db.models import ServiceLog, User
from tradelog.exceptions import ConfigurationError, NotFound, PermissionDenied, StorageError
from tradelog.users import SYSTEM_USER_EMAIL, create_user, ensure_system_user


def test_sqlite_pragmas(tmp_path: Path) -> None:
    """File databases run in WAL mode with foreign keys, a busy timeout and synchronous=NORMAL."""
    engine = create_tradelog_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
        assert c.execute(text("PRAGMA synchronous")).scalar() == 1
    engine.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    """Plain postgresql:// URLs are routed to psycopg 3."""
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ConfigurationError):
        normalize_url("::nonsense::")


def test_unreachable_database_masks_password() -> None:
    """StorageError names the URL with the password hidden."""
    engine = create_tradelog_engine("postgresql://trader:topsecret@127.0.0.1:1/nowhere")
    with pytest.raises(StorageError) as info:
        check_connection(engine)
    assert "topsecret" not in str(info.value)
    assert "trader:***@127.0.0.1:1/nowhere" in str(info.value)
    engine.dispose()


def test_unknown_dialect_is_configuration_error() -> None:
    """A URL for a dialect SQLAlchemy does not know is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        create_tradelog_engine("nosuchdb://x/y")


def test_system_user_created_once(db: MigratedDatabase) -> None:
    """ensure_system_user is idempotent and creates an inactive admin."""
    with db.session() as session:
        first = ensure_system_user(session)
        second = ensure_system_user(session)
        session.commit()
        user = session.get(User, first)
    assert first == second
    assert user is not None
    assert (user.email, user.is_active, user.is_admin) == (SYSTEM_USER_EMAIL, False, True)


def test_create_user_validates_role(db: MigratedDatabase) -> None:
    """Only admin and user are roles."""
    with db.session() as session, pytest.raises(ValueError, match="role"):
        create_user(session, email="x@example.com", name="X", role="root")


def test_scoping(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Users see their own rows, admins everyone's; asking for another user's rows is refused."""
    with db.session() as session:
        for name in ("alice", "bob"):
            session.add(ServiceLog(user_id=users[name], level="INFO", module="m", message=name))
        session.commit()
        alice = resolve_actor(session, users["alice"])
        admin = resolve_actor(session, users["admin"])
        query = select(ServiceLog.message)
        assert session.scalars(scoped(query, ServiceLog.user_id, alice)).all() == ["alice"]
        assert sorted(session.scalars(scoped(query, ServiceLog.user_id, admin)).all()) == [
            "alice",
            "bob",
        ]
        assert session.scalars(scoped(query, ServiceLog.user_id, admin, users["bob"])).all() == [
            "bob"
        ]
        with pytest.raises(PermissionDenied):
            scoped(query, ServiceLog.user_id, alice, users["bob"])
        with pytest.raises(PermissionDenied):
            require_admin(alice, "resolve errors")
        require_admin(admin, "resolve errors")
        assert resolve_actor(session, Actor(5, True)) == Actor(5, True)
        user = session.get(User, users["bob"])
        assert user is not None
        assert resolve_actor(session, user) == Actor(users["bob"], False)
        with pytest.raises(NotFound):
            resolve_actor(session, 424242)


def test_savepoint_first_write_rolls_back(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A savepoint opened before any other write still belongs to the outer transaction."""
    with db.session() as session:
        with session.begin_nested():
            session.add(ServiceLog(user_id=users["alice"], level="INFO", module="m", message="sp"))
        session.rollback()
    assert db.scalar("SELECT count(*) FROM service_logs") == 0
    with db.session() as session:
        with session.begin_nested():
            session.add(ServiceLog(user_id=users["alice"], level="INFO", module="m", message="sp"))
        session.commit()
    assert db.scalar("SELECT count(*) FROM service_logs") == 1
