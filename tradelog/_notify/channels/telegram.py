"""Telegram through python-telegram-bot, against ``TRADELOG_TELEGRAM_API_URL``.

python-telegram-bot builds request URLs as ``base_url + token``, so the bot is created with
``base_url=f"{api_url}/bot"``. Messages use HTML parse mode with all user text escaped
(:func:`~tradelog._notify.formatting.telegram_parts`); a text longer than Telegram's 4,096
characters goes out as several parts, in order, each through the shared rate limiter.

Error translation (python-telegram-bot's tree: ``BadRequest`` and ``TimedOut`` are subclasses
of ``NetworkError``, so the specific clauses come first):

=======================  ===================================================================
``RetryAfter``           retryable after its ``retry_after``; the chat is held off that long
``Forbidden``            :class:`RecipientBlocked` (bot blocked, kicked from the group, ...)
``InvalidToken``         permanent: the bot token was rejected
``ChatMigrated``         permanent, naming the new chat id to configure
``BadRequest``           permanent (chat not found, unparsable entities, ...)
``TimedOut``             retryable (the message may still have arrived: at-least-once)
``NetworkError``         retryable (connection trouble, 5xx answers)
other ``TelegramError``  retryable
=======================  ===================================================================

The bot token is removed from every message, and the python-telegram-bot exception is not
chained as ``__cause__``: its text and URLs can contain the token, and delivery errors end up
in rows and log lines.
"""

from __future__ import annotations

import asyncio
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tradelog._notify.channels.base import (
    OutgoingMessage,
    Progress,
    RecipientBlocked,
    SendReceipt,
)
from tradelog._notify.formatting import telegram_parts
from tradelog.exceptions import (
    ConfigurationError,
    MissingExtraError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    from tradelog._notify.ratelimit import DbRateLimiter

__all__ = ["TelegramChannel", "bot_id", "translate_error"]


def _telegram() -> Any:
    try:
        import telegram  # noqa: PLC0415 - optional extra
        import telegram.error  # noqa: PLC0415
        import telegram.request  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError("telegram", "python-telegram-bot") from exc
    return telegram


def bot_id(token: str) -> str:
    """The public bot id part of a token (``123456:ABC...`` -> ``123456``); never the secret."""
    head, sep, _secret = token.partition(":")
    if not sep or not head.isdigit():
        raise ConfigurationError(
            "TRADELOG_TELEGRAM_BOT_TOKEN does not look like a bot token (expected 123456:ABC...)",
            variable="TRADELOG_TELEGRAM_BOT_TOKEN",
        )
    return head


def _retry_after_seconds(exc: Any) -> float:
    raw = getattr(exc, "_retry_after", None)
    if raw is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = exc.retry_after
    if isinstance(raw, timedelta):
        return raw.total_seconds()
    return float(raw)


def _scrub(text: str, token: str | None) -> str:
    if not token:
        return text
    secret = token.partition(":")[2]
    text = text.replace(token, "<bot token>")
    return text.replace(secret, "<bot token>") if secret else text


def translate_error(exc: Exception, chat: str, token: str | None = None) -> Exception:
    """The tradelog delivery error for a python-telegram-bot exception (see the module doc).

    ``token`` is removed from the message: python-telegram-bot quotes it in some errors and
    URLs in network errors contain it, and the reason ends up in rows and log lines.
    """
    error = _telegram().error
    message = _scrub(str(exc) or type(exc).__name__, token)
    if isinstance(exc, error.RetryAfter):
        return RetryableDeliveryError(
            f"telegram flood control: {message}",
            channel="telegram",
            retry_after=_retry_after_seconds(exc),
        )
    if isinstance(exc, error.Forbidden):
        return RecipientBlocked(f"telegram refused chat {chat}: {message}", channel="telegram")
    if isinstance(exc, error.InvalidToken):
        return PermanentDeliveryError(
            f"telegram rejected the bot token: {message}", channel="telegram"
        )
    if isinstance(exc, error.ChatMigrated):
        return PermanentDeliveryError(
            f"telegram chat {chat} moved to {exc.new_chat_id}; set telegram_chat_id to it",
            channel="telegram",
        )
    if isinstance(exc, error.BadRequest):
        return PermanentDeliveryError(f"telegram: {message}", channel="telegram")
    if isinstance(exc, error.TimedOut):
        return RetryableDeliveryError(f"telegram timed out: {message}", channel="telegram")
    if isinstance(exc, error.NetworkError):
        return RetryableDeliveryError(f"telegram network error: {message}", channel="telegram")
    return RetryableDeliveryError(f"telegram error: {message}", channel="telegram")


class TelegramChannel:
    """Sends messages with one bot; every part goes through ``limiter`` (when given)."""

    name = "telegram"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        limiter: DbRateLimiter | None = None,
        timeout: float = 10.0,
        connections: int = 16,
    ) -> None:
        telegram = _telegram()
        self.bot_id = bot_id(token)
        self._token = token
        self.limiter = limiter
        request = telegram.request.HTTPXRequest(
            connection_pool_size=connections,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            pool_timeout=timeout,
        )
        base = api_url.rstrip("/")
        self._bot = telegram.Bot(
            token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot", request=request
        )
        self._no_preview = telegram.LinkPreviewOptions(is_disabled=True)
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            try:
                await self._bot.initialize()
            except Exception as exc:
                raise translate_error(exc, "-", self._token) from None
            self._started = True

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        """Send ``message`` as one or more HTML messages, resuming after ``start_part`` parts.

        ``progress`` is awaited with the count of parts delivered after each part but the last.
        """
        error = _telegram().error
        parts = telegram_parts(
            message.title,
            message.text,
            message.level,
            message.type_,
            message.created_at,
            message.tz,
        )
        chat = message.address
        await self._start()
        ids: list[str] = []
        for index in range(min(start_part, len(parts)), len(parts)):
            if self.limiter is not None:
                await self.limiter.acquire(chat)
            try:
                sent = await self._bot.send_message(
                    chat_id=chat,
                    text=parts[index],
                    parse_mode="HTML",
                    disable_notification=message.silent,
                    link_preview_options=self._no_preview,
                )
            except error.TelegramError as exc:
                translated = translate_error(exc, chat, self._token)
                if (
                    self.limiter is not None
                    and isinstance(translated, RetryableDeliveryError)
                    and translated.retry_after
                ):
                    await _hold_off(self.limiter, chat, translated.retry_after)
                raise translated from None
            ids.append(str(sent.message_id))
            if progress is not None and index + 1 < len(parts):
                await progress(index + 1)
        return SendReceipt(parts=len(parts), ids=tuple(ids))

    async def check(self) -> str:
        """Call ``getMe``; return the bot's username (for ``tradelog notify test-channel``)."""
        await self._start()
        return str(self._bot.username)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._started:
            await self._bot.shutdown()
            self._started = False


async def _hold_off(limiter: DbRateLimiter, chat: str, seconds: float) -> None:
    await asyncio.to_thread(limiter.hold_off, chat, seconds)
