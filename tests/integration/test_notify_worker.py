"""The delivery worker against a local fake Telegram Bot API and a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.support.clock import FakeClock
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import (
    FakeBotApi,
    bad_request,
    forbidden,
    retry_after,
    server_error,
)
from tests.support.smtp_server import SmtpServer
from tradelog._db.models import Notification, NotificationDelivery
from tradelog._notify import outbox
from tradelog._notify.channels.base import Channel
from tradelog._notify.channels.email import EmailChannel
from tradelog._notify.channels.telegram import TelegramChannel, bot_id
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog._notify.ratelimit import DbRateLimiter, RateLimits
from tradelog._notify.retry import RetryPolicy
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups
from tradelog._notify.worker import DeliveryWorker
from tradelog.config import Settings

CHAT = "4242"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as api:
        yield api


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer(security="starttls", auth_required=True) as server:
        yield server


def telegram(api: FakeBotApi, db: MigratedDatabase, **kwargs: object) -> TelegramChannel:
    """A Telegram channel on the fake; limits scaled down so retries do not wait a second."""
    limiter = DbRateLimiter(db.engine, bot_id(api.token), RateLimits(chat_interval=0.05))
    return TelegramChannel(api.token, api_url=api.api_url, limiter=limiter, **kwargs)  # type: ignore[arg-type]


def email(server: SmtpServer) -> EmailChannel:
    return EmailChannel(
        host=server.host,
        port=server.port,
        security=server.security,
        username=server.username,
        password=server.password,
        sender="alerts@tradelog.example",
        timeout=10,
        tls_context=server.client_ssl_context(),
        local_hostname="localhost",
    )


def worker(db: MigratedDatabase, channels: dict[str, Channel], **kwargs: object) -> DeliveryWorker:
    options: dict[str, object] = {"retry": FAST_RETRY, "poll_interval": 0.05, "name": "w1"}
    options.update(kwargs)
    return DeliveryWorker(
        db.engine,
        Settings(database_url=db.url, max_delivery_attempts=3, channel_pause=0.5),
        channels=channels,
        **options,  # type: ignore[arg-type]
    )


def prefs(db: MigratedDatabase, user_id: int, **changes: object) -> None:
    with db.session() as session:
        update_preferences(session, user_id, user_id, **changes)
        session.commit()


def send(
    db: MigratedDatabase,
    user_id: int,
    title: str = "Order filled",
    message: str = "RELIANCE <b>x10</b> @ 2900 & more",
    *,
    level: str = "info",
    now: datetime | None = None,
) -> int:
    with db.session() as session:
        result = dispatch(session, user_id, "trading", level, title, message, now=now)
        session.commit()
    assert result.notification_id is not None
    return result.notification_id


def deliveries(db: MigratedDatabase) -> list[NotificationDelivery]:
    with db.session() as session:
        return list(
            session.execute(
                select(NotificationDelivery).order_by(NotificationDelivery.id)
            ).scalars()
        )


def run(w: DeliveryWorker) -> int:
    return asyncio.run(w.run_once())


@pytest.fixture
def tg_user(db: MigratedDatabase, users: dict[str, int]) -> int:
    prefs(db, users["alice"], telegram_chat_id=CHAT, telegram_enabled=True)
    return users["alice"]


def test_telegram_sent_and_flag_set(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """A queued Telegram delivery arrives once, HTML-escaped, and the flags become true."""
    note = send(db, tg_user)
    assert run(worker(db, {"telegram": telegram(bot_api, db)})) == 1
    [message] = bot_api.sent_messages(CHAT)
    assert message.parse_mode == "HTML"
    assert "RELIANCE &lt;b&gt;x10&lt;/b&gt; @ 2900 &amp; more" in (message.text or "")
    assert "<b>Order filled</b>" in (message.text or "")
    assert not message.disable_notification
    [row] = deliveries(db)
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
    assert row.sent_at is not None
    with db.session() as session:
        stored = session.get(Notification, note)
        assert stored is not None
        assert stored.telegram_sent is True
        assert stored.email_sent is False


def test_long_message_split_in_order(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """A 10,000-character text goes out as ordered parts holding the full text."""
    lines = [f"{i:04d} " + "y" * 95 for i in range(100)]
    send(db, tg_user, message="\n".join(lines))
    w = worker(db, {"telegram": telegram(bot_api, db)})
    run(w)
    parts = bot_api.sent_messages(CHAT)
    assert len(parts) == 3
    texts = [p.text or "" for p in parts]
    assert [f"({i}/3)" in t for i, t in enumerate(texts, 1)] == [True, True, True]
    joined = "\n".join(texts)
    positions = [joined.index(line) for line in lines]
    assert positions == sorted(positions)
    [row] = deliveries(db)
    assert (row.status, row.parts_sent) == ("sent", 3)


def test_chat_not_found_fails_permanently(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int, caplog: pytest.LogCaptureFixture
) -> None:
    """400 chat not found: failed after one attempt, reason recorded and logged."""
    bot_api.script(chat_id=CHAT, responses=[bad_request("Bad Request: chat not found")])
    send(db, tg_user)
    with caplog.at_level(logging.WARNING, logger="tradelog.notify"):
        run(worker(db, {"telegram": telegram(bot_api, db)}))
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "chat not found" in (row.last_error or "").lower()
    assert any("failed permanently" in r.getMessage() for r in caplog.records)
    assert bot_api.sent_messages() == []


def test_blocked_bot_tells_user_in_app(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """403: the delivery fails and one in-app notice (no external delivery) explains it."""
    bot_api.script(chat_id=CHAT, responses=[forbidden(), forbidden()])
    send(db, tg_user)
    send(db, tg_user, title="Second")
    run(worker(db, {"telegram": telegram(bot_api, db)}))
    assert [r.status for r in deliveries(db)] == ["failed", "failed"]
    assert all("blocked" in (r.last_error or "") for r in deliveries(db))
    notices = db.rows(
        "SELECT type, level, title, message FROM notifications WHERE title LIKE 'Telegram%'"
    )
    assert len(notices) == 1
    assert notices[0]["type"] == "system"
    assert CHAT in str(notices[0]["message"])
    assert len(deliveries(db)) == 2


def test_retry_after_is_a_wait_not_an_attempt(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """429 with retry_after=1: the delivery waits a second without spending an attempt
    (however often Telegram says so), then goes out."""
    bot_api.script(chat_id=CHAT, responses=[retry_after(1)] * 5)
    send(db, tg_user)
    clock = FakeClock()
    w = worker(db, {"telegram": telegram(bot_api, db)}, clock=clock)
    for _ in range(5):
        asked = clock()
        run(w)
        [row] = deliveries(db)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.next_attempt_at >= asked + timedelta(seconds=1)
        assert "flood control" in (row.last_error or "").lower()
        clock.advance(1.2)
    run(w)
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(bot_api.sent_messages(CHAT)) == 1
    assert w.stats["waited"] == 5


def test_server_errors_of_one_delivery_spend_its_attempts(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """5xx answers to one delivery only: the channel pauses after three in a row, but its probe
    (getMe) succeeds, so the failures are the delivery's own: it fails after max_attempts."""
    bot_api.script(chat_id=CHAT, responses=[server_error(502)] * 6)
    send(db, tg_user)
    clock = FakeClock()
    w = worker(db, {"telegram": telegram(bot_api, db)}, clock=clock)
    for _ in range(10):
        run(w)
        clock.advance(1.0)
        if deliveries(db)[0].status == "failed":
            break
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("failed", 3)
    assert (row.last_error or "").startswith("gave up after 3 attempts")
    assert len(bot_api.requests_for("getMe")) >= 2  # start-up, then the probe that reopened it


def test_transient_error_then_success(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """One 502 then success: sent on the second attempt."""
    bot_api.script(chat_id=CHAT, responses=[server_error(502)])
    send(db, tg_user)
    clock = FakeClock()
    w = worker(db, {"telegram": telegram(bot_api, db)}, clock=clock)
    run(w)
    assert deliveries(db)[0].status == "pending"
    clock.advance(0.1)
    run(w)
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("sent", 2)


def test_silent_quiet_hours(
    db: MigratedDatabase, bot_api: FakeBotApi, users: dict[str, int]
) -> None:
    """Quiet hours in silent mode: sent at once with disable_notification."""
    now = datetime.now(UTC)
    prefs(
        db,
        users["bob"],
        telegram_chat_id="77",
        telegram_enabled=True,
        quiet_hours_start=(now - timedelta(hours=1)).time().replace(microsecond=0),
        quiet_hours_end=(now + timedelta(hours=1)).time().replace(microsecond=0),
        quiet_hours_mode="silent",
        timezone="UTC",
    )
    send(db, users["bob"], now=now)
    run(worker(db, {"telegram": telegram(bot_api, db)}))
    [message] = bot_api.sent_messages("77")
    assert message.disable_notification


def test_deferred_released_as_one_digest(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """Three messages deferred by quiet hours go out as one digest once the window ended."""
    prefs(db, tg_user, quiet_hours_start="22:00", quiet_hours_end="07:00")
    night = datetime(2025, 1, 1, 17, 30, tzinfo=UTC)  # 23:00 IST
    ids = [
        send(db, tg_user, title=f"Fill {i}", level=level, now=night + timedelta(minutes=i))
        for i, level in enumerate(["info", "warning", "error"])
    ]
    rows = deliveries(db)
    assert {r.not_before for r in rows} == {datetime(2025, 1, 2, 1, 30, tzinfo=UTC)}
    run(worker(db, {"telegram": telegram(bot_api, db)}))
    [message] = bot_api.sent_messages(CHAT)
    text = message.text or ""
    assert "3 notifications during quiet hours" in text
    assert text.index("Fill 0") < text.index("Fill 1") < text.index("Fill 2")
    assert "23:00 IST" in text
    rows = deliveries(db)
    carrier = rows[0]
    assert [r.status for r in rows] == ["sent", "digested", "digested"]
    assert [r.digest_id for r in rows[1:]] == [carrier.id, carrier.id]
    sent = db.rows("SELECT id FROM notifications WHERE telegram_sent = :t ORDER BY id", t=True)
    assert [r["id"] for r in sent] == ids


def quiet_now(
    db: MigratedDatabase,
    user_id: int,
    *,
    ends_in: timedelta,
    now: datetime | None = None,
    **more: object,
) -> None:
    """Quiet hours (UTC wall clock) from an hour before ``now`` until ``ends_in`` after it."""
    now = now or datetime.now(UTC)
    prefs(
        db,
        user_id,
        quiet_hours_start=(now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        quiet_hours_end=(now + ends_in).time().replace(second=0, microsecond=0),
        timezone="UTC",
        **more,
    )


def test_changed_quiet_hours_retime_held_deliveries(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """Held deliveries follow the user's new quiet hours: a later end holds them longer;
    clearing quiet hours releases them now, as one digest."""
    # One reading of the clock for both windows: the minute may turn between the two calls.
    now = datetime.now(UTC)
    quiet_now(db, tg_user, ends_in=timedelta(hours=2), now=now)
    send(db, tg_user, title="One")
    send(db, tg_user, title="Two")
    first_end = {r.not_before for r in deliveries(db)}
    assert len(first_end) == 1
    quiet_now(db, tg_user, ends_in=timedelta(hours=3), now=now)
    [later] = {r.not_before for r in deliveries(db)}
    assert later is not None
    assert later - next(iter(first_end)) == timedelta(hours=1)
    w = worker(db, {"telegram": telegram(bot_api, db)})
    assert run(w) == 0
    prefs(db, tg_user, quiet_hours_start=None, quiet_hours_end=None)
    assert run(w) == 2
    [message] = bot_api.sent_messages(CHAT)
    assert "2 notifications during quiet hours" in (message.text or "")
    assert [r.status for r in deliveries(db)] == ["sent", "digested"]


def test_switching_to_silent_releases_held_deliveries_quietly(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """Deferred, then the mode becomes silent while still in quiet hours: sent now, no sound."""
    quiet_now(db, tg_user, ends_in=timedelta(hours=2))
    send(db, tg_user)
    prefs(db, tg_user, quiet_hours_mode="silent")
    assert run(worker(db, {"telegram": telegram(bot_api, db)})) == 1
    [message] = bot_api.sent_messages(CHAT)
    assert message.disable_notification


def test_preferences_read_at_delivery(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """Switching Telegram off after queueing suppresses the delivery; a new chat id is used."""
    send(db, tg_user)
    prefs(db, tg_user, telegram_enabled=False)
    w = worker(db, {"telegram": telegram(bot_api, db)})
    run(w)
    assert [(r.status, r.last_error) for r in deliveries(db)] == [
        ("suppressed", "telegram was switched off before delivery")
    ]
    prefs(db, tg_user, telegram_enabled=True)
    send(db, tg_user)
    prefs(db, tg_user, telegram_chat_id="5555")
    run(w)
    assert len(bot_api.sent_messages("5555")) == 1
    assert bot_api.sent_messages(CHAT) == []


def test_unconfigured_channel_waits_while_young(db: MigratedDatabase, tg_user: int) -> None:
    """Without Telegram a worker leaves fresh Telegram deliveries pending (visible as due)."""
    send(db, tg_user)
    assert run(worker(db, {})) == 0
    assert [r.status for r in deliveries(db)] == ["pending"]
    with db.session() as session:
        summary = outbox.backlog_summary(session)
    assert (summary["pending"], summary["due"], summary["overdue"]) == (1, 1, 0)
    assert summary["by_channel"] == {"telegram": {"pending": 1}}


def test_unserved_channel_fails_with_reason(
    db: MigratedDatabase, tg_user: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Due for longer than the timeout and no Telegram worker anywhere: failed, logged, visible."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    send(db, tg_user, now=hour_ago)
    with db.session() as session:
        before = outbox.backlog_summary(session)
    assert before["overdue"] == 1
    assert before["by_channel"] == {"telegram": {"pending": 1, "overdue": 1}}
    w = worker(db, {}, unserved_timeout=900)
    with caplog.at_level(logging.WARNING, logger="tradelog.notify"):
        assert run(w) == 1
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("failed", 0)
    assert "TRADELOG_TELEGRAM_BOT_TOKEN is not set" in (row.last_error or "")
    assert "15 min" in (row.last_error or "")
    assert w.stats["failed"] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [getattr(r, "delivery_id", None) for r in errors] == [row.id]
    assert any("does not send telegram" in r.getMessage() for r in caplog.records)
    with db.session() as session:
        after = outbox.backlog_summary(session)
    assert (after["pending"], after["overdue"], after["failed"]) == (0, 0, 1)
    assert "TRADELOG_TELEGRAM_BOT_TOKEN" in after["recent_failures"][0]["error"]


def test_busy_channel_is_not_swept(
    db: MigratedDatabase, tg_user: int, users: dict[str, int]
) -> None:
    """A Telegram worker claimed within the timeout: old deliveries are a queue, not unserved."""
    prefs(db, users["bob"], telegram_chat_id="77", telegram_enabled=True)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    send(db, tg_user, now=hour_ago)
    send(db, users["bob"], now=hour_ago)
    [claimed] = outbox.claim(db.engine, "telegram-worker", limit=1, lease=60)
    assert run(worker(db, {}, unserved_timeout=900)) == 0
    statuses = {r.id: r.status for r in deliveries(db)}
    assert statuses.pop(claimed.id) == "sending"
    assert list(statuses.values()) == ["pending"]
    assert run(worker(db, {}, unserved_timeout=0)) == 0
    db.execute("UPDATE notification_deliveries SET claimed_at = :t", t=hour_ago)
    assert run(worker(db, {}, unserved_timeout=0)) == 0
    assert [r.status for r in deliveries(db)].count("failed") == 0
    assert run(worker(db, {}, unserved_timeout=900)) == 1
    assert sorted(r.status for r in deliveries(db)) == ["failed", "sending"]


def test_expired_lease_is_reclaimed(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int
) -> None:
    """A claim whose worker died is taken over after its lease; the dead worker records nothing."""
    send(db, tg_user)
    clock = FakeClock()
    [claimed] = outbox.claim(db.engine, "crashed", limit=10, lease=30, now=clock())
    assert outbox.claim(db.engine, "other", limit=10, lease=30, now=clock()) == []
    clock.advance(29)
    assert run(worker(db, {"telegram": telegram(bot_api, db)}, clock=clock)) == 0
    clock.advance(1.5)
    run(worker(db, {"telegram": telegram(bot_api, db)}, clock=clock))
    assert len(bot_api.sent_messages(CHAT)) == 1
    assert outbox.mark_sent(db.engine, claimed.id, [], "crashed", channel="telegram") == 0
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("sent", 2)


def test_background_thread_wakes_on_notify(
    db: MigratedDatabase, bot_api: FakeBotApi, tg_user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A started worker delivers a committed notify() promptly and stops cleanly: the
    notification service rings the wake-up registry the worker subscribed to."""
    wakeups = Wakeups()
    w = worker(db, {"telegram": telegram(bot_api, db)}, poll_interval=30.0, wakeups=wakeups)
    w.start()
    try:
        time.sleep(0.2)
        NotificationService(db.engine, wakeups).notify(tg_user, "system", "info", "Wake up", "now")
        bot_api.wait_for_messages(1, chat_id=CHAT, timeout=5)
    finally:
        w.stop()
    assert [r.status for r in deliveries(db)] == ["sent"]


# -- email ---------------------------------------------------------------------------------


@pytest.fixture
def mail_user(db: MigratedDatabase, users: dict[str, int]) -> int:
    prefs(db, users["bob"], email_address="bob@example.com", email_enabled=True)
    return users["bob"]


def test_email_starttls_auth_multipart(
    db: MigratedDatabase, smtp: SmtpServer, mail_user: int
) -> None:
    """Email goes over STARTTLS with AUTH, multipart text + HTML, flag set."""
    note = send(db, mail_user, level="warning")
    run(worker(db, {"email": email(smtp)}))
    [received] = smtp.messages
    assert received.tls
    assert received.login == smtp.username
    assert received.rcpt_tos == ("bob@example.com",)
    assert received.mail_from == "alerts@tradelog.example"
    assert received.subject == "[WARNING] Order filled"
    assert "RELIANCE <b>x10</b> @ 2900 & more" in (received.text_body() or "")
    assert "RELIANCE &lt;b&gt;x10&lt;/b&gt; @ 2900 &amp; more" in (received.html_body() or "")
    with db.session() as session:
        stored = session.get(Notification, note)
        assert stored is not None
        assert stored.email_sent is True


def test_email_subject_cannot_inject_headers(
    db: MigratedDatabase, smtp: SmtpServer, mail_user: int
) -> None:
    """CR/LF in a title stays inside the subject: no extra header, no extra recipient."""
    send(db, mail_user, title="Hi\r\nBcc: evil@attacker.example\r\n\r\nbody")
    run(worker(db, {"email": email(smtp)}))
    [received] = smtp.messages
    assert received.rcpt_tos == ("bob@example.com",)
    assert received.message["Bcc"] is None
    assert "\n" not in (received.subject or "")
    assert received.subject == "[INFO] Hi Bcc: evil@attacker.example body"


def test_email_recipient_refused_is_permanent(
    db: MigratedDatabase, smtp: SmtpServer, mail_user: int
) -> None:
    """550 on RCPT: failed at once with the server's answer."""
    smtp.fail_recipient("bob@example.com", 550, "5.1.1 No such user")
    send(db, mail_user)
    run(worker(db, {"email": email(smtp)}))
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "550" in (row.last_error or "")


def test_email_4xx_is_retried(db: MigratedDatabase, smtp: SmtpServer, mail_user: int) -> None:
    """451 after DATA: retried, then delivered on the same reused connection."""
    smtp.fail_next_data(451, "4.3.0 Try again later")
    send(db, mail_user)
    slower = RetryPolicy(max_attempts=3, base_delay=60, max_delay=60)
    clock = FakeClock()
    w = worker(db, {"email": email(smtp)}, retry=slower, clock=clock)
    run(w)
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "451" in (row.last_error or "")
    assert run(w) == 0
    clock.advance(61)
    run(w)
    assert [r.status for r in deliveries(db)] == ["sent"]
    assert len(smtp.messages) == 1


def test_email_bad_password_is_permanent(
    db: MigratedDatabase, smtp: SmtpServer, mail_user: int
) -> None:
    """Wrong SMTP credentials fail the delivery with a clear reason (no password in it)."""
    channel = EmailChannel(
        host=smtp.host,
        port=smtp.port,
        security="starttls",
        username=smtp.username,
        password="wrong-secret-value",
        sender="alerts@tradelog.example",
        tls_context=smtp.client_ssl_context(),
    )
    send(db, mail_user)
    run(worker(db, {"email": channel}))
    [row] = deliveries(db)
    assert row.status == "failed"
    assert "authentication failed" in (row.last_error or "")
    assert "wrong-secret-value" not in (row.last_error or "")


def test_email_burst_reuses_one_connection(
    db: MigratedDatabase, smtp: SmtpServer, users: dict[str, int]
) -> None:
    """Twenty emails to different users travel over one SMTP connection."""
    from tradelog.users import create_user

    with db.session() as session:
        ids = [create_user(session, email=f"u{i}@example.com", name=f"U{i}").id for i in range(20)]
        session.commit()
    for user_id in ids:
        prefs(db, user_id, email_address=f"u{user_id}@example.com", email_enabled=True)
        send(db, user_id)
    channel = email(smtp)
    run(worker(db, {"email": channel}, concurrency=8))
    assert len(smtp.messages) == 20
    assert smtp.connections == 1
    assert channel.connections_opened == 1
    assert {r.status for r in deliveries(db)} == {"sent"}


def test_email_server_that_never_answers_times_out_and_retries(
    db: MigratedDatabase, mail_user: int
) -> None:
    """A server that accepts the connection and stays silent: the send times out after the
    configured timeout, the delivery is retried later (not failed, not hung)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.listen()
        port = silent.getsockname()[1]
        channel = EmailChannel(
            host="127.0.0.1",
            port=port,
            security="none",
            sender="alerts@tradelog.example",
            timeout=0.3,
        )
        send(db, mail_user)
        started = time.monotonic()
        run(worker(db, {"email": channel}, retry=RetryPolicy(max_attempts=3, base_delay=60)))
        elapsed = time.monotonic() - started
    [row] = deliveries(db)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "timed out" in (row.last_error or "")
    assert elapsed < 5
