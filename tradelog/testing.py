"""Helpers for your own tests: tradelog on a throwaway database, recording channels, a frozen
clock, and captured log events.

A pytest fixture in a host application::

    import pytest
    import tradelog
    from tradelog import testing

    @pytest.fixture
    def sent(tmp_path):
        channels = testing.recording_channels()
        testing.configure_for_tests(tmp_path, channels=channels)
        yield channels
        testing.reset()

    def test_fill_is_announced(sent):
        with tradelog.session() as s:
            user = tradelog.users.create_user(s, email="a@example.com", name="A")
            tradelog.notifications.update_preferences(
                s, user.id, user.id, telegram_chat_id="42", telegram_enabled=True
            )
            s.commit()
        tradelog.notify(user.id, "trading", "info", "Filled", "TCS x10 @ 3,890")
        assert testing.drain()
        [message] = sent["telegram"].messages("42")
        assert "Filled" in message.text

* :func:`configure_for_tests` - tradelog configured on a migrated SQLite file under a temporary
  folder (console off, a short flush interval; with ``channels`` the delivery worker runs and
  sends through them instead of Telegram and SMTP);
* :class:`RecordingChannel` / :func:`recording_channels` - channels that keep what would have
  been sent, rendered the way the real channel renders it, per chat or address; they can be
  told to fail;
* :class:`FrozenClock` - a clock that moves only when told (``configure_for_tests(clock=...)``
  hands it to error capture, service health and the delivery worker);
* :func:`capture_logs` - the events logged in a block, scrubbed the way tradelog scrubs them,
  without any database or file;
* :func:`drain` - wait until everything logged is written and every due delivery is sent;
* :func:`reset` - shut tradelog down and undo what it changed in the process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, or_, select
from structlog.contextvars import merge_contextvars

from tradelog._db.models import NotificationDelivery
from tradelog._logs.levels import level_name, level_number
from tradelog._logs.loggers import TradelogBoundLogger, output_factory
from tradelog._logs.redact import RedactProcessor
from tradelog._notify.channels.base import Channel, OutgoingMessage, Progress, SendReceipt
from tradelog._notify.formatting import email_bodies, email_subject, telegram_messages
from tradelog._runtime import (
    Runtime,
    configure,
    current,
    flush,
    live_processors,
    replace_processors,
    reset,
)
from tradelog.db import upgrade
from tradelog.exceptions import DeliveryError

__all__ = [
    "FrozenClock",
    "RecordingChannel",
    "SentMessage",
    "capture_logs",
    "configure_for_tests",
    "drain",
    "recording_channels",
    "reset",
]


# --------------------------------------------------------------------------- clock


class FrozenClock:
    """A clock (a callable returning an aware UTC ``datetime``) that moves only when told.

    ``FrozenClock()`` starts at 2026-01-05 03:45 UTC (09:15 IST, a Monday's market open).
    """

    def __init__(self, start: datetime | None = None) -> None:
        moment = start or datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
        self._now = self._checked(moment)
        self._lock = threading.Lock()

    @staticmethod
    def _checked(moment: datetime) -> datetime:
        if moment.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime (for example with tzinfo=UTC)")
        return moment.astimezone(UTC)

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta = 0.0) -> datetime:
        """Move forward by ``seconds`` (or a ``timedelta``); returns the new time."""
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if step < timedelta(0):
            raise ValueError("a FrozenClock only moves forward")
        with self._lock:
            self._now += step
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (aware)."""
        checked = self._checked(moment)
        with self._lock:
            self._now = checked


# --------------------------------------------------------------------------- channels


@dataclass(frozen=True)
class SentMessage:
    """One message a :class:`RecordingChannel` accepted, rendered as its channel renders it.

    ``parts`` are the Telegram messages (HTML) of a Telegram send, or one e-mail's plain-text
    body; ``subject`` is the e-mail subject (empty for Telegram).
    """

    channel: str
    address: str
    title: str
    level: str
    type: str
    silent: bool
    parts: tuple[str, ...]
    subject: str = ""

    @property
    def text(self) -> str:
        """Every part, one after the other."""
        return "\n".join(self.parts)


@dataclass
class _Failure:
    error: DeliveryError
    remaining: int


class RecordingChannel:
    """A :class:`~tradelog.notifications.Channel` that keeps what it is asked to send.

    ``name`` is ``"telegram"`` or ``"email"`` (what the message is rendered as).
    :meth:`fail_with` makes the next sends raise, to test retries and failures.
    """

    def __init__(self, name: str = "telegram", *, sender: str = "tradelog@example.com") -> None:
        if name not in ("telegram", "email"):
            raise ValueError(f"a recording channel records telegram or email, not {name!r}")
        self.name = name
        self.sender = sender
        self.sent: list[SentMessage] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()

    def messages(self, address: str | None = None) -> list[SentMessage]:
        """What was sent (to ``address`` only, when given), oldest first."""
        with self._lock:
            return [m for m in self.sent if address is None or m.address == address]

    def fail_with(self, error: DeliveryError, *, times: int = 1) -> None:
        """Raise ``error`` from the next ``times`` sends (a ``RetryableDeliveryError`` is
        retried by the worker, a ``PermanentDeliveryError`` fails the delivery)."""
        with self._lock:
            self._failures.append(_Failure(error, times))

    def clear(self) -> None:
        """Forget what was sent."""
        with self._lock:
            self.sent.clear()

    def _render(self, message: OutgoingMessage) -> SentMessage:
        args = (message.title, message.text, message.level, message.type_, message.created_at)
        if self.name == "telegram":
            parts = tuple(part.html for part in telegram_messages(*args, message.tz))
            subject = ""
        else:
            plain, _html = email_bodies(*args, message.tz)
            parts, subject = (plain,), email_subject(message.title, message.level)
        return SentMessage(
            channel=self.name,
            address=message.address,
            title=message.title,
            level=message.level,
            type=message.type_,
            silent=message.silent,
            parts=parts,
            subject=subject,
        )

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        """Record ``message`` (or raise the failure :meth:`fail_with` asked for)."""
        with self._lock:
            if self._failures:
                failure = self._failures[0]
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.pop(0)
                raise failure.error
        rendered = self._render(message)
        with self._lock:
            self.sent.append(rendered)
        return SendReceipt(parts=len(rendered.parts))

    async def aclose(self) -> None:
        """Nothing to close."""


def recording_channels() -> dict[str, Channel]:
    """A recording Telegram channel and a recording e-mail channel, by name."""
    return {"telegram": RecordingChannel("telegram"), "email": RecordingChannel("email")}


# --------------------------------------------------------------------------- configuration


def configure_for_tests(
    folder: Path | str,
    *,
    clock: Any = None,
    channels: dict[str, Channel] | None = None,
    **options: Any,
) -> Runtime:
    """Configure tradelog on ``folder/tradelog.db`` (SQLite, migrated now) with its files under
    ``folder/logs``, console off and a short flush interval. With ``channels`` the delivery
    worker runs in this process and sends through them. ``options`` are further
    :class:`~tradelog.config.Settings` fields. Undo it with :func:`reset`."""
    base = Path(folder)
    base.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{base / 'tradelog.db'}"
    upgrade(url)
    settings: dict[str, Any] = {
        "database_url": url,
        "log_dir": base / "logs",
        "console": False,
        "flush_interval": 0.01,
        "worker_poll_interval": 0.05,
        "worker": channels is not None,
    }
    settings.update(options)
    extra: dict[str, Any] = {"channels": channels}
    if clock is not None:
        extra["clock"] = clock
    return configure(**extra, **settings)


def drain(timeout: float = 10.0) -> bool:
    """Wait until everything logged so far is written and every delivery is sent or settled,
    retries included (deliveries held back by quiet hours do not count). True when that
    happened in time."""
    deadline = time.monotonic() + timeout
    if not flush(timeout):
        return False
    runtime = current()
    if runtime is None:
        return True
    held = NotificationDelivery.not_before > runtime.clock()
    due = select(func.count()).where(
        or_(
            NotificationDelivery.status == "sending",
            (NotificationDelivery.status == "pending") & ~func.coalesce(held, False),
        )
    )
    while True:
        with runtime.session() as session:
            if not session.scalar(due):
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


# --------------------------------------------------------------------------- captured logs


class _Capture:
    """The processor that records an event (scrubbed) instead of queueing it."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.redactor = RedactProcessor()

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> Any:
        entry = dict(event_dict)
        entry.setdefault("event", "")
        entry["level"] = level_name(method_name).lower()
        entry["logger"] = getattr(logger, "name", None)
        self.events.append(self.redactor.process(entry))
        raise structlog.DropEvent


class _CaptureHandler(logging.Handler):
    def __init__(self, capture: _Capture, level: int) -> None:
        super().__init__(level)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        event: dict[str, Any] = {"event": record.getMessage()}
        event.update(structlog.contextvars.get_contextvars())
        with contextlib.suppress(structlog.DropEvent):
            self.capture(output_factory(record.name), record.levelname.lower(), event)


@dataclass
class _Saved:
    structlog_config: dict[str, Any]
    processors: list[Any]
    min_level: int
    root_level: int
    handlers: list[logging.Handler] = field(default_factory=list)


@contextlib.contextmanager
def capture_logs(level: str = "DEBUG") -> Iterator[list[dict[str, Any]]]:
    """Collect the events logged in the block (structlog and stdlib ``logging``) at ``level``
    and above, as dicts with ``event``, ``level``, ``logger`` and the bound context, scrubbed of
    secrets. Nothing reaches a database, a file or the console meanwhile, and everything is put
    back afterwards (also loggers cached before the block)."""
    events: list[dict[str, Any]] = []
    capture = _Capture(events)
    minimum = level_number(level)
    root = logging.getLogger()
    saved = _Saved(
        structlog_config=dict(structlog.get_config()),
        processors=replace_processors([merge_contextvars, capture]),
        min_level=TradelogBoundLogger._min_level,
        root_level=root.level,
    )
    structlog.configure(
        processors=live_processors(),
        wrapper_class=TradelogBoundLogger,
        logger_factory=output_factory,
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    TradelogBoundLogger.configure(minimum, TradelogBoundLogger._internal_errors)
    handler = _CaptureHandler(capture, minimum)
    saved.handlers = list(root.handlers)
    root.handlers[:] = [handler]
    root.setLevel(minimum)
    try:
        yield events
    finally:
        root.handlers[:] = saved.handlers
        root.setLevel(saved.root_level)
        TradelogBoundLogger.configure(saved.min_level, TradelogBoundLogger._internal_errors)
        replace_processors(saved.processors)
        structlog.configure(**saved.structlog_config)
