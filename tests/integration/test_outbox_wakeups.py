"""Outbox claims in batches (one statement for up to N deliveries) and delivery workers woken
across processes by PostgreSQL ``LISTEN``/``NOTIFY`` (one message per committed batch), with
polling as the fallback and ``TRADELOG_LISTEN=off`` for transaction-pooling proxies."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tradelog._notify import outbox
from tradelog._notify.channels.telegram import TelegramChannel, bot_id
from tradelog._notify.dispatch import dispatch
from tradelog._notify.listen import DELIVERIES_CHANNEL, NOTIFICATIONS_CHANNEL
from tradelog._notify.outbox_listen import LISTENER_NAME
from tradelog._notify.preferences import update_preferences
from tradelog._notify.ratelimit import DbRateLimiter, RateLimits
from tradelog._notify.worker import DeliveryWorker
from tradelog.config import Settings
from tradelog.users import create_user
from tradelog.web._hub import LISTENER_NAME as WEB_LISTENER_NAME
from tradelog.web._hub import StreamHub


def traders(db: MigratedDatabase, count: int) -> list[int]:
    """``count`` users with Telegram switched on (chat id ``9000 + index``)."""
    ids = []
    with db.session() as session:
        for i in range(count):
            user = create_user(session, email=f"t{i}@example.com", name=f"T{i}")
            update_preferences(
                session, user.id, user.id, telegram_chat_id=str(9000 + i), telegram_enabled=True
            )
            ids.append(user.id)
        session.commit()
    return ids


def queue(db: MigratedDatabase, user_ids: list[int], *, rollback: bool = False, **kw: Any) -> None:
    """One transaction with one notification to each of ``user_ids``."""
    with db.session() as session:
        for user_id in user_ids:
            dispatch(session, user_id, "trading", "info", "Order filled", f"u{user_id}", **kw)
        if rollback:
            session.rollback()
        else:
            session.commit()


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as api:
        yield api


def telegram_worker(
    db: MigratedDatabase, api: FakeBotApi, *, poll_interval: float, listen: bool
) -> DeliveryWorker:
    """A worker sending to the fake Bot API that hears of new rows only by ``LISTEN`` or by
    polling (no in-process wake-up registry: it stands for a worker in another process)."""
    limiter = DbRateLimiter(db.engine, bot_id(api.token), RateLimits(chat_interval=0.05))
    channel = TelegramChannel(api.token, api_url=api.api_url, limiter=limiter)
    return DeliveryWorker(
        db.engine,
        Settings(database_url=db.url, listen=listen),
        channels={"telegram": channel},
        name="listening" if listen else "polling",
        poll_interval=poll_interval,
    )


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def listener_pids(db: MigratedDatabase) -> list[int]:
    rows = db.rows(
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name "
        "AND datname = current_database()",
        name=LISTENER_NAME,
    )
    return [int(str(r["pid"])) for r in rows]


def latency(db: MigratedDatabase, api: FakeBotApi, user_id: int, chat: str) -> float:
    """Seconds from a committed notify() (another engine, no wake-up registry) to the fake
    Bot API receiving the message."""
    before = len(api.sent_messages(chat))
    committed = time.monotonic()
    queue(db, [user_id])
    messages = api.wait_for_messages(before + 1, chat_id=chat, timeout=15)
    return messages[-1].processed_monotonic - committed


# -- batch claims ----------------------------------------------------------------------------


def test_one_statement_claims_a_batch(db: MigratedDatabase) -> None:
    """25 of 30 due deliveries are claimed by one UPDATE ... RETURNING, nothing else."""
    queue(db, traders(db, 30))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        claimed = outbox.claim(db.engine, "batch", limit=25, lease=30)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    sql = [s for s in statements if s.lstrip().split()[0].upper() not in {"BEGIN", "COMMIT"}]
    assert len(sql) == 1, sql
    assert sql[0].lstrip().upper().startswith("UPDATE NOTIFICATION_DELIVERIES")
    assert "RETURNING" in sql[0].upper()
    assert len(claimed) == 25
    held = db.rows(
        "SELECT status, claimed_by, count(*) AS n FROM notification_deliveries "
        "GROUP BY status, claimed_by ORDER BY status"
    )
    assert held == [
        {"status": "pending", "claimed_by": None, "n": 5},
        {"status": "sending", "claimed_by": "batch", "n": 25},
    ]


def test_concurrent_claimers_never_share_a_delivery(db: MigratedDatabase) -> None:
    """Four threads claiming batches of 7 from 300 due deliveries: each delivery is claimed by
    exactly one of them, and all are claimed."""
    queue(db, traders(db, 300))
    taken: dict[str, list[int]] = {f"c{n}": [] for n in range(4)}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer(name: str) -> None:
        try:
            start.wait()
            while batch := outbox.claim(db.engine, name, limit=7, lease=60):
                assert len(batch) <= 7
                taken[name].extend(item.id for item in batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(name,)) for name in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == len(set(every)) == 300
    owners = db.rows("SELECT id, claimed_by FROM notification_deliveries WHERE status = 'sending'")
    assert {r["id"]: r["claimed_by"] for r in owners} == {
        i: name for name, ids in taken.items() for i in ids
    }


# -- NOTIFY per committed batch ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_one_notify_per_committed_batch(db: MigratedDatabase) -> None:
    """A LISTEN connection hears one message on the deliveries channel per committed
    transaction that queued deliveries, however many: none for a rollback, none for in-app
    only, none from a rolled-back savepoint, and one per commit when they are separate."""
    users = traders(db, 100)
    dsn = db.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute(f'LISTEN "{DELIVERIES_CHANNEL}"')
        listening.execute(f'LISTEN "{NOTIFICATIONS_CHANNEL}"')

        def heard() -> dict[str, int]:
            counts = {DELIVERIES_CHANNEL: 0, NOTIFICATIONS_CHANNEL: 0}
            for message in listening.notifies(timeout=0.5):
                counts[message.channel] += 1
            return counts

        queue(db, users)  # 100 notifications, 100 deliveries, one commit
        assert heard() == {DELIVERIES_CHANNEL: 1, NOTIFICATIONS_CHANNEL: 100}

        queue(db, users[:10], rollback=True)
        assert heard() == {DELIVERIES_CHANNEL: 0, NOTIFICATIONS_CHANNEL: 0}

        queue(db, users[:10], channels=("in_app",))  # nothing for a worker to send
        assert heard() == {DELIVERIES_CHANNEL: 0, NOTIFICATIONS_CHANNEL: 10}

        with db.session() as session:
            savepoint = session.begin_nested()
            dispatch(session, users[0], "trading", "info", "gone", "rolled back")
            savepoint.rollback()
            dispatch(session, users[1], "trading", "info", "kept", "committed")
            dispatch(session, users[2], "trading", "info", "kept", "committed")
            session.commit()
        assert heard() == {DELIVERIES_CHANNEL: 1, NOTIFICATIONS_CHANNEL: 2}

        queue(db, users[:1])
        queue(db, users[1:2])
        assert heard() == {DELIVERIES_CHANNEL: 2, NOTIFICATIONS_CHANNEL: 2}

        with db.session() as session:
            failed = db.rows("SELECT id FROM notification_deliveries ORDER BY id LIMIT 3")
            db.execute(
                "UPDATE notification_deliveries SET status = 'failed' WHERE id <= :last",
                last=failed[-1]["id"],
            )
            assert outbox.requeue_failed(session) == 3
            session.commit()
        assert heard() == {DELIVERIES_CHANNEL: 1, NOTIFICATIONS_CHANNEL: 0}


# -- wake-ups --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_listening_worker_wakes_at_once_polling_worker_at_its_interval(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """A worker in another process (no shared wake-up registry) that listens delivers a
    committed notification within a fraction of a second, though it polls only every 30 s;
    with ``listen=False`` the same worker finds it at its next poll."""
    [quick, slow] = traders(db, 2)
    listening = telegram_worker(db, bot_api, poll_interval=30.0, listen=True)
    listening.start()
    try:
        wait_until(lambda: listening.listening)
        time.sleep(0.3)  # the look after connecting is over; the next poll is 30 s away
        heard = [latency(db, bot_api, quick, "9000") for _ in range(5)]
    finally:
        listening.stop()
    polling = telegram_worker(db, bot_api, poll_interval=1.0, listen=False)
    polling.start()
    try:
        time.sleep(0.3)
        polled = [latency(db, bot_api, slow, "9001") for _ in range(5)]
    finally:
        polling.stop()
    print(  # the figures the README quotes (pytest -s)
        f"\nwake-up latency: LISTEN p50 {statistics.median(heard) * 1000:.0f} ms "
        f"max {max(heard) * 1000:.0f} ms; polling every 1 s p50 "
        f"{statistics.median(polled) * 1000:.0f} ms max {max(polled) * 1000:.0f} ms"
    )
    assert max(heard) < 5.0  # a poll could not have found any of them (30 s apart)
    assert statistics.median(heard) < 1.0
    assert max(polled) < 1.0 + 4.0
    assert not polling.listening


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_lost_listening_connection_falls_back_and_listens_again(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """The listening connection is killed: what is committed meanwhile is still delivered long
    before the next poll (the worker looks when the connection drops and again when it is
    back), and the worker listens again on a new connection."""
    [user] = traders(db, 1)
    w = telegram_worker(db, bot_api, poll_interval=30.0, listen=True)
    w.start()
    try:
        wait_until(lambda: w.listening and len(listener_pids(db)) == 1)
        [first] = listener_pids(db)
        db.execute("SELECT pg_terminate_backend(:pid)", pid=first)
        queue(db, [user])
        bot_api.wait_for_messages(1, chat_id="9000", timeout=10.0)
        wait_until(lambda: w.listening and listener_pids(db) not in ([], [first]))
        time.sleep(0.3)
        assert latency(db, bot_api, user, "9000") < 10.0  # heard: the next poll is 30 s away
    finally:
        w.stop()
    # The worker closed its connection; the server's backend leaves pg_stat_activity a moment
    # later (seen still listed once under load).
    wait_until(lambda: listener_pids(db) == [], timeout=5.0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_listen_off_opens_no_listening_connection(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """``TRADELOG_LISTEN=off`` (for PgBouncer in transaction mode): the worker never issues
    LISTEN and still delivers, by polling."""
    settings = Settings.from_env({"TRADELOG_DATABASE_URL": db.url, "TRADELOG_LISTEN": "off"})
    assert settings.listen is False
    assert Settings.from_env({"TRADELOG_DATABASE_URL": db.url}).listen is True
    [user] = traders(db, 1)
    limiter = DbRateLimiter(db.engine, bot_id(bot_api.token), RateLimits(chat_interval=0.05))
    channel = TelegramChannel(bot_api.token, api_url=bot_api.api_url, limiter=limiter)
    w = DeliveryWorker(db.engine, settings, channels={"telegram": channel}, poll_interval=0.2)
    w.start()
    try:
        time.sleep(1.0)
        assert listener_pids(db) == []
        assert not w.listening
        queue(db, [user])
        bot_api.wait_for_messages(1, chat_id="9000", timeout=5)
        listens = db.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN%'"
        )
        assert listens == 0
    finally:
        w.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_live_streams_poll_without_listening_when_listen_is_off(db: MigratedDatabase) -> None:
    """The web inbox streams honour the same setting: no LISTEN connection, and a new
    notification still reaches the stream by polling."""
    [user] = traders(db, 1)
    hub = StreamHub(
        db.session,
        lambda: db.engine,
        serialize=lambda row: {"id": row.id},
        poll_interval=lambda: 0.2,
        listen=lambda: False,
    )

    async def stream() -> dict[str, Any] | None:
        subscription = hub.subscribe(user, 0)
        try:
            await asyncio.sleep(1.0)
            assert not hub.listening
            assert (
                db.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :name",
                    name=WEB_LISTENER_NAME,
                )
                == 0
            )
            await asyncio.to_thread(queue, db, [user])
            return await asyncio.wait_for(subscription.queue.get(), 5)
        finally:
            hub.unsubscribe(subscription)

    try:
        event = asyncio.run(stream())
    finally:
        hub.close()
    assert event is not None
    assert event["id"] == db.scalar("SELECT max(id) FROM notifications")
