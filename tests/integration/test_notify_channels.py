"""Channel edge cases against the real servers: error translation, TLS modes, the backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import (
    FakeBotApi,
    delay,
    drop_connection,
    migrate_to_chat,
    raw_response,
    unauthorized,
)
from tests.support.smtp_server import SmtpServer
from tradelog._notify import outbox
from tradelog._notify.channels.base import OutgoingMessage, RecipientBlocked
from tradelog._notify.channels.email import EmailChannel
from tradelog._notify.channels.telegram import TelegramChannel, bot_id
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog._notify.retry import RetryPolicy
from tradelog.config import Settings
from tradelog.exceptions import (
    ConfigurationError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

IST = ZoneInfo("Asia/Kolkata")


def message(address: str = "42", **changes: object) -> OutgoingMessage:
    base: dict[str, object] = {
        "address": address,
        "title": "Order filled",
        "text": "INFY x5 @ 1500",
        "level": "info",
        "type_": "trading",
        "created_at": datetime(2026, 5, 14, 4, 0, tzinfo=UTC),
        "tz": IST,
    }
    base.update(changes)
    return OutgoingMessage(**base)  # type: ignore[arg-type]


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as fake:
        yield fake


def send(channel: TelegramChannel | EmailChannel, outgoing: OutgoingMessage) -> object:
    async def main() -> object:
        try:
            return await channel.send(outgoing)
        finally:
            await channel.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("script", "kind", "text"),
    [
        (migrate_to_chat(-1009876), PermanentDeliveryError, "moved to -1009876"),
        (drop_connection(), RetryableDeliveryError, "network error"),
        (raw_response(502, b"<html>Bad gateway</html>"), RetryableDeliveryError, "network"),
    ],
)
def test_telegram_error_translation(
    api: FakeBotApi, script: object, kind: type[Exception], text: str
) -> None:
    """Bot API failures become the right delivery error with a useful message."""
    api.script(chat_id="42", responses=[script])  # type: ignore[list-item]
    channel = TelegramChannel(api.token, api_url=api.api_url)
    with pytest.raises(kind, match=text) as caught:
        send(channel, message())
    assert not isinstance(caught.value, RecipientBlocked)


def test_telegram_timeout_is_retryable(api: FakeBotApi) -> None:
    """A reply slower than the timeout is retryable (the message may still have arrived)."""
    api.script(chat_id="42", responses=[delay(1.5)])
    channel = TelegramChannel(api.token, api_url=api.api_url, timeout=0.3)
    with pytest.raises(RetryableDeliveryError, match="timed out"):
        send(channel, message())


def test_telegram_bad_token(api: FakeBotApi) -> None:
    """A rejected token is permanent and the token never appears in the reason."""
    api.script(method="getMe", responses=[unauthorized()])
    channel = TelegramChannel(api.token, api_url=api.api_url)
    with pytest.raises(PermanentDeliveryError) as caught:
        send(channel, message())
    assert api.token.split(":")[1] not in str(caught.value)


def test_telegram_check_and_bot_id(api: FakeBotApi) -> None:
    """check() returns the bot's username; bot_id keeps only the public part of a token."""
    channel = TelegramChannel(api.token, api_url=api.api_url)

    async def main() -> str:
        try:
            return await channel.check()
        finally:
            await channel.aclose()

    assert asyncio.run(main()).startswith("fake_")
    assert bot_id("123:secret") == "123"
    with pytest.raises(ConfigurationError, match="TRADELOG_TELEGRAM_BOT_TOKEN"):
        bot_id("no-colon")


@pytest.mark.parametrize("security", ["tls", "none"])
def test_email_security_modes(security: str) -> None:
    """Implicit TLS and plain SMTP both deliver (with AUTH)."""
    with SmtpServer(security=security, auth_required=True) as smtp:  # type: ignore[arg-type]
        channel = EmailChannel(
            host=smtp.host,
            port=smtp.port,
            security=security,
            username=smtp.username,
            password=smtp.password,
            sender="alerts@tradelog.example",
            tls_context=smtp.client_ssl_context(),
        )
        send(channel, message("ops@example.com"))
        [received] = smtp.messages
    assert received.tls is (security == "tls")
    assert received.login == smtp.username


def test_email_connection_refused_is_retryable() -> None:
    """Nobody listening: retryable, with the cause named."""
    with SmtpServer(security="none") as smtp:
        port = smtp.port
    channel = EmailChannel(host="127.0.0.1", port=port, security="none", sender="a@b.example")
    with pytest.raises(RetryableDeliveryError, match="email"):
        send(channel, message("ops@example.com"))


def test_email_reconnects_after_server_closed_idle_connection() -> None:
    """A reused connection the server dropped is reopened once, transparently."""
    with SmtpServer(security="none") as smtp:
        channel = EmailChannel(
            host=smtp.host, port=smtp.port, security="none", sender="a@b.example", timeout=5
        )

        async def main() -> None:
            await channel.send(message("one@example.com"))
            smtp.stop()
            smtp.start()
            channel.port = smtp.port
            await channel.send(message("two@example.com"))
            await channel.aclose()

        asyncio.run(main())
        assert [m.rcpt_tos for m in smtp.messages][-1] == ("two@example.com",)
    assert channel.connections_opened == 2


def test_email_settings_validation() -> None:
    """from_settings names the missing variable; unknown security modes are refused."""
    with pytest.raises(ConfigurationError, match="TRADELOG_SMTP_HOST"):
        EmailChannel.from_settings(Settings())
    with pytest.raises(ConfigurationError, match="TRADELOG_SMTP_FROM"):
        EmailChannel.from_settings(Settings(smtp_host="mail.example"))
    with pytest.raises(ConfigurationError, match="TRADELOG_SMTP_SECURITY"):
        EmailChannel(host="x", security="ssl", sender="a@b.example")
    channel = EmailChannel.from_settings(
        Settings(smtp_host="mail.example", smtp_username="bot@example.com", smtp_password="pw")
    )
    assert channel.sender == "bot@example.com"


def test_retry_policy_delays() -> None:
    """Backoff doubles within equal jitter and is capped; retry_after wins when given."""
    import random

    policy = RetryPolicy(max_attempts=5, base_delay=2.0, max_delay=10.0)
    rng = random.Random(7)
    for attempts, (low, high) in {1: (1, 2), 2: (2, 4), 3: (4, 8), 6: (5, 10)}.items():
        assert low <= policy.delay(attempts, None, rng) <= high
    assert 30 <= policy.delay(1, 30.0, rng) <= 33


def test_backlog_summary(db: MigratedDatabase, users: dict[str, int]) -> None:
    """backlog_summary counts due, deferred, stuck and failed rows and lists recent failures."""
    alice = users["alice"]
    with db.session() as session:
        update_preferences(
            session,
            alice,
            alice,
            telegram_chat_id="42",
            telegram_enabled=True,
            email_address="a@example.com",
            email_enabled=True,
            quiet_hours_start="22:00",
            quiet_hours_end="07:00",
        )
        now = datetime.now(UTC)
        local = now.astimezone(IST)
        # The due one is sent at the last noon IST (outside quiet hours whatever the time of
        # day the test runs); the later one at the next 23:00 IST, inside the window.
        noon = local.replace(hour=12, minute=0, second=0, microsecond=0)
        noon -= timedelta(days=1) if noon > local else timedelta(0)
        late = local.replace(hour=23, minute=0, second=0, microsecond=0)
        late += timedelta(days=1) if late <= local else timedelta(0)
        quiet_now = late.astimezone(UTC)
        dispatch(session, alice, "trading", "info", "due", "x", now=noon.astimezone(UTC))
        dispatch(session, alice, "trading", "info", "later", "x", now=quiet_now)
        session.commit()
    claimed = outbox.claim(db.engine, "w", limit=1, lease=0.0)
    outbox.mark_failed(db.engine, [claimed[0].id], "w", error="bot was blocked")
    outbox.claim(db.engine, "w2", limit=1, lease=0.0)
    with db.session() as session:
        summary = outbox.backlog_summary(session, now=now + timedelta(seconds=1))
    assert summary["failed"] == 1
    assert summary["failed_24h"] == 1
    assert summary["stuck"] == 1
    assert summary["deferred"] == 2
    assert summary["pending"] == 2
    assert summary["recent_failures"][0]["error"] == "bot was blocked"
    assert summary["by_channel"]["telegram"]["failed"] == 1
    with db.session() as session:
        assert outbox.requeue_failed(session, user_id=alice) == 1
        session.commit()
    assert db.scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'failed'") == 0


@pytest.mark.parametrize(("module", "extra"), [("telegram", "telegram"), ("aiosmtplib", "email")])
def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, module: str, extra: str) -> None:
    """Without the optional package the channel raises MissingExtraError naming the extra."""
    import sys

    from tradelog.exceptions import MissingExtraError

    def build() -> object:
        if module == "telegram":
            return TelegramChannel("1:x", api_url="http://127.0.0.1:9")
        return EmailChannel(host="127.0.0.1", sender="a@b.example")

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as caught:
        build()
    assert caught.value.extra == extra
    assert f"tradelog[{extra}]" in str(caught.value)
