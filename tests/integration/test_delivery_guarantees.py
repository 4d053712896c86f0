"""Deliveries wait instead of failing or repeating: Telegram floods and outages, late answers,
one huge notification among many small ones, a worker in every configured process.

Every test runs against the local fake Bot API (real HTTP) or a real aiosmtpd server, on
SQLite and PostgreSQL, and asserts what arrived: how many messages were received, how many
twice, how many deliveries failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import tradelog
from tests.support.clock import FakeClock
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi, bad_request, delay, retry_after
from tests.support.smtp_server import SmtpServer
from tradelog._db.models import NotificationDelivery
from tradelog._notify.channels.base import Channel
from tradelog._notify.channels.email import EmailChannel
from tradelog._notify.channels.telegram import TelegramChannel, bot_id
from tradelog._notify.dispatch import FULL_TEXT_LIMIT, dispatch
from tradelog._notify.formatting import TELEGRAM_MAX_PARTS
from tradelog._notify.preferences import update_preferences
from tradelog._notify.ratelimit import DbRateLimiter, RateLimits
from tradelog._notify.retry import RetryPolicy
from tradelog._notify.worker import DeliveryWorker
from tradelog.config import Settings
from tradelog.users import create_user

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def make_users(db: MigratedDatabase, count: int, *, email: bool = False) -> list[int]:
    """``count`` users with Telegram (chat id ``1000 + i``) or email switched on."""
    ids = []
    with db.session() as session:
        for i in range(count):
            user = create_user(session, email=f"trader{i}@example.com", name=f"T{i}")
            changes: dict[str, object] = (
                {"email_address": f"trader{i}@example.com", "email_enabled": True}
                if email
                else {"telegram_chat_id": str(1000 + i), "telegram_enabled": True}
            )
            update_preferences(session, user.id, user.id, **changes)
            ids.append(user.id)
        session.commit()
    return ids


def notify_all(db: MigratedDatabase, user_ids: list[int], title: str = "Alert") -> None:
    with db.session() as session:
        for user_id in user_ids:
            dispatch(session, user_id, "trading", "warning", f"{title} {user_id}", f"u{user_id}")
        session.commit()


def telegram(api: FakeBotApi, db: MigratedDatabase, **limits: float) -> TelegramChannel:
    timeout = limits.pop("timeout", 10.0)
    limiter = DbRateLimiter(
        db.engine, bot_id(api.token), RateLimits(**{"chat_interval": 0.05, **limits})
    )
    return TelegramChannel(api.token, api_url=api.api_url, limiter=limiter, timeout=timeout)


def worker(db: MigratedDatabase, channels: dict[str, Channel], **options: object) -> DeliveryWorker:
    settings = Settings(database_url=db.url, **options.pop("settings", {}))  # type: ignore[arg-type]
    defaults: dict[str, object] = {"poll_interval": 0.02, "concurrency": 8, "name": "w"}
    return DeliveryWorker(db.engine, settings, channels=channels, **{**defaults, **options})  # type: ignore[arg-type]


def statuses(db: MigratedDatabase) -> Counter[str]:
    return Counter(str(r["status"]) for r in db.rows("SELECT status FROM notification_deliveries"))


def wait_until_settled(db: MigratedDatabase, total: int, timeout: float) -> None:
    """Until every delivery is sent or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = statuses(db)
        if done["sent"] + done["failed"] >= total:
            return
        time.sleep(0.05)
    waiting = db.rows(
        "SELECT id, status, attempts, next_attempt_at, claimed_by, last_error"
        " FROM notification_deliveries WHERE status NOT IN ('sent', 'failed')"
    )
    limits = db.rows("SELECT key, next_at FROM notification_rate_limits WHERE key LIKE 'breaker%'")
    raise AssertionError(f"not settled in {timeout}s: {statuses(db)}; {waiting}; {limits}")


def received(api: FakeBotApi) -> tuple[int, int]:
    """(distinct messages received, copies received more than once)."""
    copies = Counter((m.chat_id, m.text) for m in api.sent_messages())
    return len(copies), sum(count - 1 for count in copies.values())


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as api:
        yield api


# --------------------------------------------------------------------------- 429 flood


def test_retry_after_answers_are_waits_not_attempts(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """The issue's case: eight 429 answers with retry_after=1 used to fail 5 of 5 deliveries
    for good; now every one waits and arrives once, on its first counted attempt."""
    users = make_users(db, 5)
    bot_api.script(method="sendMessage", responses=[retry_after(1)] * 8)
    notify_all(db, users)
    w = worker(db, {"telegram": telegram(bot_api, db)}, settings={"max_delivery_attempts": 3})
    w.start()
    try:
        wait_until_settled(db, 5, timeout=30)
    finally:
        w.stop()
    assert bot_api.pending_scripts() == 0
    assert received(bot_api) == (5, 0)
    assert statuses(db) == {"sent": 5}
    assert {r["attempts"] for r in db.rows("SELECT attempts FROM notification_deliveries")} == {1}


def test_flood_of_429_from_a_strict_api_loses_and_repeats_nothing(
    db: MigratedDatabase,
) -> None:
    """A Bot API allowing 5 messages a second, a sender configured for 50: many 429s, yet all
    30 deliveries arrive exactly once and none fails."""
    users = make_users(db, 30)
    with FakeBotApi(enforce_limits=True, global_per_second=5) as api:
        notify_all(db, users)
        w = worker(
            db,
            {"telegram": telegram(api, db, messages_per_second=50)},
            settings={"max_delivery_attempts": 2},
        )
        w.start()
        try:
            wait_until_settled(db, 30, timeout=60)
        finally:
            w.stop()
        assert api.limit_violations > 0  # the flood happened
        assert received(api) == (30, 0)
    assert statuses(db) == {"sent": 30}
    assert {r["attempts"] for r in db.rows("SELECT attempts FROM notification_deliveries")} == {1}


# --------------------------------------------------------------------------- outage


def test_45_second_outage_pauses_the_channel_and_sends_the_backlog_on_recovery(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """40 alerts during 45 s of 502s (clock time, run 50 times faster): the channel pauses
    after three failures, is probed, and within seconds of recovery all 40 arrive once; only
    the two failures before the pause cost an attempt."""
    users = make_users(db, 40)
    clock = FakeClock()
    bot_api.start_outage()
    notify_all(db, users)
    w = worker(
        db,
        {"telegram": telegram(bot_api, db)},
        clock=clock,
        lease=3600.0,
        settings={"channel_pause": 1.0, "channel_pause_max": 2.0},
    )
    started = clock()
    fast = threading.Event()
    fast.set()
    stop = threading.Event()

    def pump() -> None:
        # A step moves the clock by at most 5 ms of real time (x50): when the machine is busy
        # and this thread runs late, the clock runs late with it instead of jumping past the
        # worker's pauses before the worker has had a turn to probe.
        last = time.monotonic()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.monotonic()
            clock.advance(min(now - last, 0.005) * (50.0 if fast.is_set() else 1.0))
            last = now

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    w.start()
    try:
        while clock() - started < timedelta(seconds=45):
            time.sleep(0.01)
        failed_during_outage = statuses(db)["failed"]
        fast.clear()
        bot_api.end_outage()
        recovered = clock()
        try:
            wait_until_settled(db, 40, timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"clock {clock()} ({clock().timestamp()}): {exc}") from None
    finally:
        w.stop()
        stop.set()
        pumper.join()
    with db.session() as session:
        rows = list(session.scalars(select(NotificationDelivery)))
    assert failed_during_outage == 0
    assert received(bot_api) == (40, 0)
    assert statuses(db) == {"sent": 40}
    assert sum(r.attempts - 1 for r in rows) <= 2
    last_sent = max(r.sent_at for r in rows if r.sent_at is not None)
    assert last_sent - recovered < timedelta(seconds=10)
    refused = [r for r in bot_api.requests if r.status == 502]
    assert 5 <= len(refused) < 40  # probed through the outage, not retried per alert


# --------------------------------------------------------------------------- late answers


@pytest.mark.parametrize(("timeout", "copies"), [(0.8, 2), (5.0, 1)])
def test_late_bot_api_answers(
    db: MigratedDatabase, bot_api: FakeBotApi, timeout: float, copies: int
) -> None:
    """The Bot API accepts each of 5 messages but answers after 2 s. With a client timeout
    shorter than that, each is retried and arrives twice (the at-least-once window the
    README states); with the timeout longer than the answer, once. Nothing fails."""
    users = make_users(db, 5)
    for i in range(5):
        bot_api.script(chat_id=1000 + i, method="sendMessage", responses=[delay(2.0)])
    notify_all(db, users)
    w = worker(db, {"telegram": telegram(bot_api, db, timeout=timeout)})
    w.start()
    try:
        wait_until_settled(db, 5, timeout=30)
        time.sleep(2.2)  # the late answers of abandoned requests land too
    finally:
        w.stop()
    assert received(bot_api) == (5, 5 * (copies - 1))
    assert statuses(db) == {"sent": 5}


@pytest.mark.parametrize(("timeout", "copies"), [(0.8, 2), (5.0, 1)])
def test_late_smtp_answer(db: MigratedDatabase, timeout: float, copies: int) -> None:
    """An SMTP server that accepts a message but answers 250 after 2 s: with a shorter
    timeout the retry is a second copy carrying the same Message-ID (mail systems drop
    it); with a longer one, a single copy. Nothing fails."""
    [user] = make_users(db, 1, email=True)
    clock = FakeClock()
    with SmtpServer(security="none") as smtp:
        smtp.delay_next_data(2.0)
        channel = EmailChannel(
            host=smtp.host,
            port=smtp.port,
            security="none",
            sender="alerts@tradelog.example",
            timeout=timeout,
        )
        notify_all(db, [user])
        w = worker(db, {"email": channel}, clock=clock, retry=RetryPolicy(max_attempts=3))
        for _ in range(5):
            asyncio.run(w.run_once())
            if statuses(db)["sent"]:
                break
            clock.advance(30)
        time.sleep(2.1)
        messages = smtp.messages
    assert len(messages) == copies
    assert len({m.message["Message-ID"] for m in messages}) == 1
    assert str(messages[0].message["Message-ID"]).startswith("<tradelog.")
    assert statuses(db) == {"sent": 1}


# --------------------------------------------------------------------------- size


def test_one_megabyte_notification_beside_other_users(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """One user's 1 MB notification and 20 other users' alerts: the others do not wait
    behind it (each arrives before the big one's last part, whose parts are paced per chat);
    the big one is kept to 64 KiB with a marker and sent as at most 20 parts, each with
    (i/n) and the footer, once each, in order. Nothing fails."""
    big_user, *others = make_users(db, 21)
    text = "\n\n".join(
        f"RELIANCE block {i}\n" + "entry 2950.00 stop 2900.00\n" * 4 for i in range(9000)
    )
    assert len(text) > 1_000_000
    started = time.monotonic()
    with db.session() as session:
        dispatch(session, big_user, "trading", "info", "Day report", text)
        session.commit()
    notify_seconds = time.monotonic() - started
    notify_all(db, others)
    w = worker(db, {"telegram": telegram(bot_api, db, chat_interval=0.1)})
    started = time.monotonic()
    w.start()
    try:
        bot_api.wait_for_messages(20 + 1, timeout=30)
        others_done = time.monotonic() - started
        wait_until_settled(db, 21, timeout=60)
    finally:
        w.stop()
    assert notify_seconds < 2.0
    assert others_done < 30.0  # a hang guard; the ordering below is the claim
    stored = db.scalar("SELECT full_message FROM notifications WHERE user_id = :u", u=big_user)
    assert isinstance(stored, str)
    assert stored.startswith(text[:FULL_TEXT_LIMIT])
    assert "more characters not kept]" in stored
    big_chat = 1000  # make_users: the first user's chat
    parts = bot_api.sent_messages(big_chat)
    assert 1 < len(parts) <= TELEGRAM_MAX_PARTS
    total = len(parts)
    for number, part in enumerate(parts, start=1):
        head, body, *_ = (part.text or "").split("\n\n", 2)
        assert head.endswith(f"Day report</b> ({number}/{total})")
        assert body.startswith("RELIANCE block")  # parts break between blocks
        assert (part.text or "").endswith(" IST</i>")  # every part has the footer
    assert received(bot_api) == (20 + total, 0)
    assert statuses(db) == {"sent": 21}
    others_last = max(
        request.received_monotonic
        for request in bot_api.sent_messages()
        if request.chat_id != str(big_chat)
    )
    assert others_last < parts[-1].received_monotonic, "the others waited behind the big one"


# --------------------------------------------------------------------------- messages


def test_unparsable_entities_are_sent_once_as_plain_text(
    db: MigratedDatabase, bot_api: FakeBotApi
) -> None:
    """Telegram refusing a part's HTML ("can't parse entities") gets it once more as plain
    text: one message arrives, no parse mode, the same words."""
    [user] = make_users(db, 1)
    bot_api.script(
        chat_id=1000, responses=[bad_request("Bad Request: can't parse entities: byte 12")]
    )
    with db.session() as session:
        dispatch(session, user, "trading", "info", "Fill <x>", "BUY 10 & more")
        session.commit()
    asyncio.run(worker(db, {"telegram": telegram(bot_api, db)}).run_once())
    [message] = bot_api.sent_messages(1000)
    assert message.parse_mode is None
    assert "Fill <x>" in (message.text or "")
    assert "BUY 10 & more" in (message.text or "")
    assert statuses(db) == {"sent": 1}


# --------------------------------------------------------------------------- worker by default


def _script(db_url: str, log_dir: Path, api: FakeBotApi, user_id: int, worker: str) -> str:
    return (
        "import tradelog\n"
        f"tradelog.configure(database_url={db_url!r}, log_dir={str(log_dir)!r}, console=False,"
        f" telegram_bot_token={api.token!r}, telegram_api_url={api.api_url!r}"
        + ("" if worker == "default" else f", worker={worker!r}")
        + ")\n"
        f"tradelog.notify({user_id}, 'trading', 'info', 'Exit fill', 'sent at exit')\n"
    )


@pytest.mark.parametrize(("mode", "delivered"), [("default", 1), ("false", 0)])
def test_a_configured_process_sends_by_default_even_right_before_it_exits(
    db: MigratedDatabase, bot_api: FakeBotApi, tmp_path: Path, mode: str, delivered: int
) -> None:
    """A script that configures a bot token, notifies and exits at once: with the default
    TRADELOG_WORKER=auto the message is delivered in the moment given at exit; with
    worker=false nothing is sent and the delivery stays pending for a worker. The moment is
    60 s here, not the default 5 s: on a loaded 2-core machine importing python-telegram-bot
    and connecting took longer than 5 s (the delivery then stays pending, as documented); the
    worker stops as soon as nothing is due, so the run is no longer."""
    [user] = make_users(db, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOG_")}
    env["TRADELOG_WORKER_EXIT_TIMEOUT"] = "60"
    result = subprocess.run(
        [sys.executable, "-c", _script(db.url, tmp_path, bot_api, user, mode)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Python 3.12+ starts no thread at exit: the worker's must all be running before then.
    assert "Traceback" not in result.stderr, result.stderr
    assert len(bot_api.sent_messages(1000)) == delivered, result.stderr
    assert statuses(db) == ({"sent": 1} if delivered else {"pending": 1})


def test_bot_token_never_reaches_the_hosts_handlers_at_debug(
    db: MigratedDatabase, bot_api: FakeBotApi, tmp_path: Path
) -> None:
    """The host logs everything at DEBUG (root, httpx, httpcore, telegram) to its own handler
    while tradelog sends, fails and retries over Telegram: no record shows the token's secret,
    though httpx's request lines and python-telegram-bot's URL lines are there."""
    [user] = make_users(db, 1)
    secret = bot_api.token.split(":", 1)[1]
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    host = Collect(level=logging.DEBUG)
    host.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(host)
    saved = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "telegram")}
    try:
        for name in saved:
            logging.getLogger(name).setLevel(logging.DEBUG)
        runtime = tradelog.configure(
            database_url=db.url,
            log_dir=tmp_path,
            console=False,
            telegram_bot_token=bot_api.token,
            telegram_api_url=bot_api.api_url,
            telegram_timeout=0.5,
        )
        root.setLevel(logging.DEBUG)
        assert runtime.worker is not None  # TRADELOG_WORKER=auto with a token configured
        bot_api.script(chat_id=1000, responses=[delay(1.0), bad_request("Bad Request: nope")])
        tradelog.notify(user, "trading", "info", "Late", "one")
        tradelog.notify(user, "trading", "info", "Refused", "two")
        tradelog.notify(user, "trading", "info", "Fine", "three")
        wait_until_settled(db, 3, timeout=30)
        tradelog.shutdown()
    finally:
        root.removeHandler(host)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    text = "\n".join(records)
    assert "HTTP Request: POST" in text
    assert "Set Bot API URL" in text
    assert f"{bot_id(bot_api.token)}:withheld" in text
    assert secret not in text
