"""notify()/anotify(): rows written, per-channel outcomes, outbox transactions and dedupe."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._db.models import Notification, NotificationDelivery
from tradelog._notify.dispatch import NotifyResult, dispatch
from tradelog._notify.preferences import update_preferences
from tradelog.exceptions import NotFound


def configure(db: MigratedDatabase, user_id: int, **changes: object) -> None:
    with db.session() as session:
        update_preferences(session, user_id, user_id, **changes)
        session.commit()


@pytest.fixture
def env_db(db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[MigratedDatabase]:
    """The test database as TRADELOG_DATABASE_URL, for notify() without a session."""
    monkeypatch.setenv("TRADELOG_DATABASE_URL", db.url)
    yield db
    tradelog.shutdown()


BOTH = {
    "telegram_chat_id": "4242",
    "telegram_enabled": True,
    "email_address": "alice@example.com",
    "email_enabled": True,
}


def test_notify_queues_every_enabled_channel(
    env_db: MigratedDatabase, users: dict[str, int]
) -> None:
    """With Telegram and email on, notify() writes the notification and two pending deliveries."""
    configure(env_db, users["alice"], **BOTH)
    result = tradelog.notify(
        users["alice"], "trading", "info", "Order filled", "RELIANCE x10 @ 2900"
    )
    assert result.created
    assert not result.duplicate
    assert [(c.channel, c.status) for c in result.channels] == [
        ("telegram", "queued"),
        ("email", "queued"),
        ("in_app", "recorded"),
    ]
    rows = env_db.rows(
        "SELECT channel, status, attempts, user_id FROM notification_deliveries ORDER BY id"
    )
    assert rows == [
        {"channel": "telegram", "status": "pending", "attempts": 0, "user_id": users["alice"]},
        {"channel": "email", "status": "pending", "attempts": 0, "user_id": users["alice"]},
    ]
    note = env_db.rows("SELECT * FROM notifications")[0]
    assert note["in_app_delivered"] in (True, 1)
    assert note["telegram_sent"] in (False, 0)
    assert "notification" in str(result)


def test_a_call_restricts_its_channels(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """``notify(..., channels=("in_app",))`` records in the inbox and queues nothing, although
    Telegram and email are on; ``channels=("email",)`` queues only email."""
    configure(env_db, users["alice"], **BOTH)
    summary = tradelog.notify(
        users["alice"],
        "trading",
        "info",
        "Pre-market summary",
        "3 orders re-placed",
        channels=("in_app",),
    )
    assert [(c.channel, c.status) for c in summary.channels] == [("in_app", "recorded")]
    assert env_db.scalar("SELECT count(*) FROM notification_deliveries") == 0
    mail = tradelog.notify(users["alice"], "trading", "info", "Fill", "x", channels=["email"])
    assert [c.channel for c in mail.channels] == ["email", "in_app"]
    assert env_db.rows("SELECT channel FROM notification_deliveries") == [{"channel": "email"}]
    with pytest.raises(ValueError, match="invalid channel 'sms'"):
        tradelog.notify(users["alice"], "trading", "info", "x", "y", channels=("sms",))
    assert env_db.scalar("SELECT count(*) FROM notifications") == 2


def test_in_app_only_by_default(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """Spec defaults: Telegram and email off, so only the inbox records."""
    result = tradelog.notify(users["bob"], "service", "warning", "Service restarted", "")
    assert [(c.channel, c.status) for c in result.channels] == [("in_app", "recorded")]
    assert env_db.scalar("SELECT count(*) FROM notification_deliveries") == 0
    assert env_db.scalar("SELECT count(*) FROM notifications") == 1


def test_preferences_changed_elsewhere_apply_to_the_next_call(
    env_db: MigratedDatabase, users: dict[str, int]
) -> None:
    """notify() keeps no copy of preferences: a change committed by another connection (another
    process, the CLI) between two calls decides the second call."""
    alice = users["alice"]

    def channels(result: NotifyResult) -> list[str]:
        return [c.channel for c in result.channels]

    assert channels(tradelog.notify(alice, "trading", "info", "one", "x")) == ["in_app"]
    configure(env_db, alice, **BOTH)
    assert channels(tradelog.notify(alice, "trading", "info", "two", "x")) == [
        "telegram",
        "email",
        "in_app",
    ]
    configure(env_db, alice, email_enabled=False, notify_trading_events=False)
    assert not tradelog.notify(alice, "trading", "info", "three", "x").created
    assert channels(tradelog.notify(alice, "system", "info", "four", "x")) == ["telegram", "in_app"]


def test_type_switched_off_creates_nothing(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """A type toggle off means no notification at all, in-app included."""
    configure(env_db, users["alice"], notify_trading_events=False, **BOTH)
    result = tradelog.notify(users["alice"], "trading", "critical", "Fill", "x")
    assert not result.created
    assert result.notification_id is None
    assert "trading notifications are turned off" in (result.reason or "")
    assert result.describe() == ["not created: trading notifications are turned off"]
    assert env_db.scalar("SELECT count(*) FROM notifications") == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "trade"}, "expected one of: service, trading, system, error"),
        ({"level": "fatal"}, "expected one of: info, warning, error, critical"),
        ({"title": "  "}, "title must be a non-empty string"),
        ({"message": None}, "message must be a string"),
        ({"dedupe_key": "k" * 129}, "dedupe_key"),
    ],
)
def test_invalid_arguments(
    env_db: MigratedDatabase, users: dict[str, int], kwargs: dict[str, object], message: str
) -> None:
    """Bad arguments are ValueErrors listing the valid values; nothing is written."""
    call: dict[str, object] = {
        "type": "system",
        "level": "info",
        "title": "t",
        "message": "m",
    } | kwargs
    with pytest.raises(ValueError, match=message):
        tradelog.notify(users["alice"], **call)  # type: ignore[arg-type]
    assert env_db.scalar("SELECT count(*) FROM notifications") == 0


def test_unknown_user(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """A user id that does not exist is NotFound."""
    with pytest.raises(NotFound):
        tradelog.notify(987654, "system", "info", "t", "m")


def test_long_message_kept_in_full(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Text over 1,024 characters: ``message`` holds a shortened copy, ``full_message`` all."""
    text = "\n".join(f"line {i} " + "x" * 80 for i in range(100))
    with db.session() as session:
        result = dispatch(session, users["alice"], "system", "info", "T" * 300, text + "\x00")
        session.commit()
        note = session.get(Notification, result.notification_id)
    assert note is not None
    assert len(note.message) == 1024
    assert note.message.endswith("\u2026")
    assert note.full_message == text
    assert note.text == text
    assert len(note.title) == 255


def test_outbox_rollback_sends_nothing_commit_queues(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """With session=, a rolled-back transaction leaves no trace; a committed one is queued."""
    configure(db, users["alice"], **BOTH)
    with db.session() as session:
        result = tradelog.notify(users["alice"], "trading", "info", "Fill", "x", session=session)
        assert result.created
        session.rollback()
    assert db.scalar("SELECT count(*) FROM notifications") == 0
    assert db.scalar("SELECT count(*) FROM notification_deliveries") == 0
    with db.session() as session:
        tradelog.notify(users["alice"], "trading", "info", "Fill", "x", session=session)
        session.commit()
    assert db.scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'pending'") == 2


def test_quiet_hours_defer_with_user_timezone(db: MigratedDatabase, users: dict[str, int]) -> None:
    """At 23:30 IST with 22:00-07:00 quiet hours, Telegram and email wait until 07:00 IST."""
    configure(db, users["alice"], quiet_hours_start="22:00", quiet_hours_end="07:00", **BOTH)
    now = datetime(2026, 5, 13, 18, 0, tzinfo=UTC)  # 23:30 IST
    with db.session() as session:
        result = dispatch(session, users["alice"], "trading", "warning", "Fill", "x", now=now)
        session.commit()
    release = datetime(2026, 5, 14, 1, 30, tzinfo=UTC)  # 07:00 IST
    telegram = result.channel("telegram")
    assert telegram is not None
    assert telegram.status == "deferred"
    assert telegram.not_before == release
    assert telegram.describe().startswith(
        "telegram: deferred until 2026-05-14 07:00:00 IST (2026-05-14 01:30 UTC)"
    )
    with db.session() as session:
        rows = session.execute(select(NotificationDelivery)).scalars().all()
    assert {(r.channel, r.status, r.next_attempt_at, r.not_before) for r in rows} == {
        ("telegram", "pending", release, release),
        ("email", "pending", release, release),
    }


def test_quiet_hours_critical_bypasses(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Critical notifications go out during quiet hours."""
    configure(db, users["alice"], quiet_hours_start="22:00", quiet_hours_end="07:00", **BOTH)
    now = datetime(2026, 5, 13, 18, 0, tzinfo=UTC)
    with db.session() as session:
        result = dispatch(session, users["alice"], "error", "critical", "Crash", "x", now=now)
        session.commit()
    assert {c.status for c in result.channels} == {"queued", "recorded"}


@pytest.mark.parametrize(
    ("mode", "telegram_status", "silent"),
    [("silent", "queued", True), ("drop", "suppressed", False)],
)
def test_quiet_hours_modes(
    db: MigratedDatabase, users: dict[str, int], mode: str, telegram_status: str, silent: bool
) -> None:
    """silent sends now without sound; drop suppresses with the reason recorded."""
    configure(
        db,
        users["alice"],
        quiet_hours_start="22:00",
        quiet_hours_end="07:00",
        quiet_hours_mode=mode,
        **BOTH,
    )
    now = datetime(2026, 5, 13, 18, 0, tzinfo=UTC)
    with db.session() as session:
        result = dispatch(session, users["alice"], "trading", "info", "Fill", "x", now=now)
        session.commit()
    telegram = result.channel("telegram")
    assert telegram is not None
    assert telegram.status == telegram_status
    row = db.rows(
        "SELECT status, silent, last_error FROM notification_deliveries WHERE channel = 'telegram'"
    )[0]
    assert bool(row["silent"]) is silent
    if mode == "drop":
        assert row["status"] == "suppressed"
        assert row["last_error"] == "quiet hours"


def test_missing_address_fails_at_once(
    db: MigratedDatabase, users: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Telegram on without a chat id (set behind the validator's back) fails with the reason,
    as a row and a log line."""
    db.execute(
        "INSERT INTO user_notification_preferences (user_id, telegram_enabled) VALUES (:u, :t)",
        u=users["bob"],
        t=True,
    )
    with caplog.at_level(logging.WARNING, logger="tradelog.notify"), db.session() as session:
        result = dispatch(session, users["bob"], "system", "info", "Hi", "x")
        session.commit()
    [line] = [r for r in caplog.records if r.name == "tradelog.notify"]
    assert "missing telegram_chat_id" in line.getMessage()
    assert getattr(line, "user_id", None) == users["bob"]
    telegram = result.channel("telegram")
    assert telegram is not None
    assert (telegram.status, telegram.reason) == ("failed", "missing telegram_chat_id")
    row = db.rows("SELECT status, last_error FROM notification_deliveries")[0]
    assert row == {"status": "failed", "last_error": "missing telegram_chat_id"}


def test_dedupe_key_returns_the_first(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """The same key for the same user is a duplicate; another user may use the same key."""
    configure(env_db, users["alice"], **BOTH)
    first = tradelog.notify(users["alice"], "trading", "info", "Fill", "x", dedupe_key="fill:42")
    second = tradelog.notify(users["alice"], "trading", "info", "Fill", "x", dedupe_key="fill:42")
    other = tradelog.notify(users["bob"], "trading", "info", "Fill", "x", dedupe_key="fill:42")
    assert second.duplicate
    assert not second.created
    assert second.notification_id == first.notification_id
    assert {c.status for c in second.channels} == {"duplicate"}
    assert other.created
    assert env_db.scalar("SELECT count(*) FROM notifications") == 2
    assert env_db.scalar("SELECT count(*) FROM notification_deliveries") == 2


def test_dedupe_enforced_by_database(db: MigratedDatabase, users: dict[str, int]) -> None:
    """A raw duplicate insert violates the (user_id, dedupe_key) unique index."""
    from sqlalchemy.exc import IntegrityError

    sql = (
        "INSERT INTO notifications (user_id, type, level, title, message, dedupe_key) "
        "VALUES (:u, 'system', 'info', 't', 'm', 'k')"
    )
    db.execute(sql, u=users["alice"])
    with pytest.raises(IntegrityError):
        db.execute(sql, u=users["alice"])


def test_dedupe_under_concurrency(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Ten producers racing one dedupe key make one notification; the rest see a duplicate."""
    configure(db, users["alice"], **BOTH)
    barrier = threading.Barrier(10)
    results: list[object] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with db.session() as session:
                barrier.wait()
                result = dispatch(
                    session, users["alice"], "trading", "info", "Fill", "x", dedupe_key="order:7"
                )
                session.commit()
                results.append(result)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    created = [r for r in results if r.created]  # type: ignore[attr-defined]
    assert len(created) == 1
    assert len({r.notification_id for r in results}) == 1  # type: ignore[attr-defined]
    assert db.scalar("SELECT count(*) FROM notifications") == 1
    assert db.scalar("SELECT count(*) FROM notification_deliveries") == 2


def test_anotify(env_db: MigratedDatabase, users: dict[str, int]) -> None:
    """anotify() works without a session and inside a caller's session."""

    configure(env_db, users["alice"], **BOTH)

    async def main() -> None:
        first = await tradelog.anotify(users["alice"], "system", "info", "Async", "x")
        assert first.created
        with env_db.session() as session:
            second = await tradelog.anotify(
                users["alice"],
                "system",
                "info",
                "Async 2",
                "y",
                session=session,
                channels=("telegram",),
            )
            session.commit()
        assert [c.channel for c in second.channels] == ["telegram", "in_app"]

    asyncio.run(main())
    assert env_db.scalar("SELECT count(*) FROM notifications") == 2
    assert env_db.scalar("SELECT count(*) FROM notification_deliveries") == 3


def test_public_reexport() -> None:
    """tradelog.notify and tradelog.anotify are the notifications module's functions."""
    assert tradelog.notify is tradelog.notifications.notify
    assert tradelog.anotify is tradelog.notifications.anotify


def async_url(url: str) -> str:
    """The same database through an asyncio driver (aiosqlite, psycopg's async mode)."""
    parsed = make_url(url)
    driver = "sqlite+aiosqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def test_anotify_with_async_session(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """anotify(session=AsyncSession) writes in the caller's transaction: rollback sends nothing,
    commit queues the deliveries and wakes local workers; dedupe works across the two."""
    configure(db, users["alice"], **BOTH)
    woken: list[int] = []
    runtime = tradelog.configure(database_url=db.url, log_dir=tmp_path, console=False)
    runtime.wakeups.subscribe(lambda: woken.append(1))

    async def main() -> None:
        engine = create_async_engine(async_url(db.url))
        try:
            async with AsyncSession(engine) as session:
                dropped = await tradelog.anotify(
                    users["alice"], "trading", "info", "Rolled back", "x", session=session
                )
                assert dropped.created
                await session.rollback()
            assert woken == []
            async with AsyncSession(engine) as session:
                kept = await tradelog.anotify(
                    users["alice"],
                    "trading",
                    "info",
                    "Kept",
                    "y",
                    session=session,
                    dedupe_key="fill-9",
                )
                again = await tradelog.anotify(
                    users["alice"],
                    "trading",
                    "info",
                    "Kept",
                    "y",
                    session=session,
                    dedupe_key="fill-9",
                )
                assert again.duplicate
                assert again.notification_id == kept.notification_id
                assert woken == []
                await session.commit()
            assert woken == [1]
        finally:
            await engine.dispose()

    asyncio.run(main())
    assert [r["title"] for r in db.rows("SELECT title FROM notifications")] == ["Kept"]
    rows = db.rows("SELECT channel, status FROM notification_deliveries ORDER BY channel")
    assert [(r["channel"], r["status"]) for r in rows] == [
        ("email", "pending"),
        ("telegram", "pending"),
    ]
