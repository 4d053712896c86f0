"""tradelog.testing, used the way a host application's own tests would use it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

import tradelog
from tradelog import testing
from tradelog.exceptions import PermanentDeliveryError, RetryableDeliveryError


@pytest.fixture
def channels(tmp_path: Path) -> Iterator[dict[str, testing.RecordingChannel]]:
    """tradelog on a throwaway SQLite database, sending through recording channels."""
    recording = {"telegram": testing.RecordingChannel(), "email": testing.RecordingChannel("email")}
    testing.configure_for_tests(tmp_path, channels=dict(recording))
    yield recording
    testing.reset()


def _user(email: str, **prefs: object) -> int:
    with tradelog.session() as session:
        user = tradelog.users.create_user(
            session, email=email, name=email.split("@", maxsplit=1)[0]
        )
        tradelog.notifications.update_preferences(session, user.id, user.id, **prefs)
        session.commit()
        return user.id


def test_recording_channels_receive_what_the_worker_sends(
    channels: dict[str, testing.RecordingChannel],
) -> None:
    """A notification goes through the outbox and the worker into the recording channels,
    rendered as Telegram HTML and as an e-mail; the delivery flags are set."""
    user = _user(
        "a@example.com",
        telegram_chat_id="4242",
        telegram_enabled=True,
        email_address="a@example.com",
        email_enabled=True,
    )
    result = tradelog.notify(user, "trading", "warning", "Stop loss hit", "TCS <b>below</b> 3,800")
    assert result.created
    assert testing.drain(10)
    [telegram] = channels["telegram"].messages("4242")
    assert telegram.channel == "telegram"
    assert "Stop loss hit" in telegram.text
    assert "&lt;b&gt;below&lt;/b&gt;" in telegram.text  # escaped, as the Bot API receives it
    [email] = channels["email"].messages("a@example.com")
    assert "Stop loss hit" in email.subject
    assert "TCS <b>below</b> 3,800" in email.text
    assert channels["telegram"].messages("someone else") == []
    with tradelog.session() as session:
        [note] = tradelog.notifications.list_notifications(session, user).items
        assert (note.telegram_sent, note.email_sent) == (True, True)


def test_a_recording_channel_can_fail(channels: dict[str, testing.RecordingChannel]) -> None:
    """``fail_with``: a retryable failure is retried, a permanent one fails the delivery."""
    user = _user("b@example.com", telegram_chat_id="77", telegram_enabled=True)
    channels["telegram"].fail_with(RetryableDeliveryError("busy", retry_after=0.05))
    tradelog.notify(user, "system", "info", "Retried", "x")
    assert testing.drain(10)
    assert [m.title for m in channels["telegram"].messages()] == ["Retried"]
    channels["telegram"].fail_with(PermanentDeliveryError("chat not found"))
    tradelog.notify(user, "system", "info", "Never", "y")
    assert testing.drain(10)
    assert [m.title for m in channels["telegram"].messages()] == ["Retried"]
    channels["telegram"].clear()
    assert channels["telegram"].messages() == []


def test_frozen_clock_moves_only_when_told() -> None:
    """A FrozenClock gives aware UTC times and only goes forward."""
    clock = testing.FrozenClock()
    start = clock()
    assert start.tzinfo is not None
    assert clock() == start
    assert clock.advance(90) == start + timedelta(seconds=90)
    clock.set(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))
    assert clock() == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="aware"):
        testing.FrozenClock(datetime(2026, 1, 1))


def test_the_runtime_takes_the_frozen_clock(tmp_path: Path) -> None:
    """configure_for_tests(clock=...) dates error rows and heartbeats with the frozen clock."""
    clock = testing.FrozenClock(datetime(2026, 2, 2, 4, 0, tzinfo=UTC))
    runtime = testing.configure_for_tests(tmp_path, clock=clock)
    try:
        user = _user("c@example.com")
        assert tradelog.heartbeat(user)
        try:
            raise ValueError("qty")
        except ValueError:
            assert tradelog.capture_exception(user_id=user)
        assert testing.drain(10)
        with runtime.session() as session:
            [error] = tradelog.errors.list_errors(session, user).items
            assert error.occurred_at == clock()
            [status] = tradelog.health.service_overview(session, user, clock(), 300)
            assert status["last_heartbeat"] == clock()
    finally:
        testing.reset()


def test_capture_logs_without_a_database() -> None:
    """Events from structlog and stdlib logging, scrubbed, with level, logger and context;
    nothing configured before or after."""
    log = tradelog.get_logger("orders", user_id=7)
    with testing.capture_logs() as events:
        log.info("order placed", symbol="TCS", api_key="sk-live-1234567890abcdef")
        log.debug("details", qty=10)
        with structlog.contextvars.bound_contextvars(user_id=8):
            logging.getLogger("legacy").warning("from stdlib")
    assert [(e["level"], e["logger"], e["event"]) for e in events] == [
        ("info", "orders", "order placed"),
        ("debug", "orders", "details"),
        ("warning", "legacy", "from stdlib"),
    ]
    assert events[0]["user_id"] == 7
    assert events[0]["api_key"] == "[REDACTED]"
    assert events[2]["user_id"] == 8
    assert tradelog.current() is None


def test_capture_logs_intercepts_a_configured_runtime(tmp_path: Path) -> None:
    """Inside the block even cached loggers of a configured runtime are captured and nothing is
    written; after it they log to the database again."""
    runtime = testing.configure_for_tests(tmp_path)
    try:
        user = _user("d@example.com")
        log = tradelog.get_logger("cached", user_id=user)
        log.info("before")
        with testing.capture_logs(level="WARNING") as events:
            log.info("filtered out")
            log.warning("captured")
        log.info("after")
        assert tradelog.flush(10)
        with runtime.session() as session:
            page = tradelog.logs.query_logs(session, user)
            assert [entry.message for entry in page.entries] == ["after", "before"]
        assert [e["event"] for e in events] == ["captured"]
    finally:
        testing.reset()
