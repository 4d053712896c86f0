"""Telegram through python-telegram-bot, against ``TRADELOG_TELEGRAM_API_URL``.

Messages use HTML parse mode with all user text escaped
(:func:`~tradelog._notify.formatting.telegram_messages`, rendered off the event loop); a text
longer than Telegram's 4,096 characters goes out as several parts, in order, each through the
shared rate limiter. When Telegram answers 400 "can't parse entities" for a part, that part is
sent once more as plain text (same header, text and footer, no markup).

**The bot token never leaves this module's transport.** python-telegram-bot is given a
stand-in token (``<bot id>:withheld``), so its own log lines (``Set Bot API URL ...`` at DEBUG),
its errors and the URLs httpx logs (``HTTP Request: POST .../bot<bot id>:withheld/sendMessage``
at INFO) never contain the secret, whatever level and handlers the host gives the ``httpx``,
``httpcore`` and ``telegram`` loggers. :class:`TokenTransport`, the httpx transport under
python-telegram-bot's client, puts the real token into the request URL as it hands the request
to the connection, below every logging call, and removes it from any transport error. (httpx's
environment proxy settings do not apply under a custom transport; the proxy for the API URL is
read from the environment here instead.)

Error translation (python-telegram-bot's tree: ``BadRequest`` and ``TimedOut`` are subclasses
of ``NetworkError``, so the specific clauses come first):

=======================  ===================================================================
``RetryAfter``           :class:`Throttled`: wait ``retry_after`` (the chat is held off that
                         long); not a failure, no attempt spent
``Forbidden``            :class:`RecipientBlocked` (bot blocked, kicked from the group, ...)
``InvalidToken``         permanent: the bot token was rejected
``ChatMigrated``         permanent, naming the new chat id to configure
``BadRequest``           permanent (chat not found, message too long, ...); "can't parse
                         entities" is retried once as plain text first
``TimedOut``             :class:`ChannelUnavailable` (the message may still have arrived:
                         at-least-once)
``NetworkError``         :class:`ChannelUnavailable` (connection trouble, 5xx answers)
other ``TelegramError``  retryable
=======================  ===================================================================
"""

from __future__ import annotations

import asyncio
import urllib.request
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from tradelog._notify.channels.base import (
    ChannelUnavailable,
    OutgoingMessage,
    Progress,
    RecipientBlocked,
    SendReceipt,
    Throttled,
)
from tradelog._notify.channels.tls import shared_context
from tradelog._notify.formatting import TelegramPart, telegram_messages
from tradelog.exceptions import (
    ConfigurationError,
    DeliveryError,
    MissingExtraError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

if TYPE_CHECKING:
    import httpx

    from tradelog._notify.ratelimit import DbRateLimiter

__all__ = ["TelegramChannel", "TokenTransport", "bot_id", "translate_error"]

WITHHELD: Final = "withheld"
"""What python-telegram-bot holds instead of the token's secret part."""
_CONNECT_TIMEOUT: Final = 10.0
_ENTITY_ERROR: Final = "can't parse entities"


def _telegram() -> Any:
    try:
        import httpx  # noqa: PLC0415 - optional extra
        import telegram  # noqa: PLC0415
        import telegram.error  # noqa: PLC0415
        import telegram.request  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError("telegram", "python-telegram-bot") from exc
    del httpx
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


def translate_error(exc: Exception, chat: str, token: str | None = None) -> DeliveryError:
    """The tradelog delivery error for a python-telegram-bot exception (see the module doc).

    ``token`` is removed from the message as a second line of defence (python-telegram-bot
    only ever holds the stand-in token).
    """
    error = _telegram().error
    message = _scrub(str(exc) or type(exc).__name__, token)
    if isinstance(exc, error.RetryAfter):
        return Throttled(
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
        return ChannelUnavailable(f"telegram timed out: {message}", channel="telegram")
    if isinstance(exc, error.NetworkError):
        return ChannelUnavailable(f"telegram network error: {message}", channel="telegram")
    return RetryableDeliveryError(f"telegram error: {message}", channel="telegram")


def _environment_proxy(api_url: str) -> str | None:
    """The proxy the environment names for ``api_url`` (``HTTPS_PROXY``, ``NO_PROXY`` ...)."""
    scheme, _, rest = api_url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0]
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(scheme.lower()) or proxies.get("all")


class TokenTransport:
    """An httpx transport that swaps the stand-in token in a Bot API URL for the real one.

    It wraps the transport that opens the connections; httpx and python-telegram-bot only
    ever see (and log) the stand-in. Transport errors are raised again with the token removed
    from their text and the stand-in request attached.
    """

    def __init__(self, token: str, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._token = token
        stand_in = f"{bot_id(token)}:{WITHHELD}"
        self._stand_in = [
            f"/bot{stand_in}/".encode(),
            f"/bot{stand_in.replace(':', '%3A')}/".encode(),
        ]
        self._real = f"/bot{token}/".encode()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` with the real token in its URL."""
        import httpx  # noqa: PLC0415 - the optional extra, imported with the channel

        raw_path = request.url.raw_path
        for stand_in in self._stand_in:
            if stand_in in raw_path:
                raw_path = raw_path.replace(stand_in, self._real, 1)
                break
        real = httpx.Request(
            request.method,
            request.url.copy_with(raw_path=raw_path),
            headers=request.headers,
            stream=request.stream,
            extensions=request.extensions,
        )
        try:
            return await self._inner.handle_async_request(real)
        except httpx.HTTPError as exc:
            scrubbed = _scrub(str(exc), self._token)
            try:
                replacement = type(exc)(scrubbed, request=request)  # type: ignore[call-arg]
            except TypeError:
                replacement = httpx.TransportError(scrubbed, request=request)
            raise replacement from None

    async def aclose(self) -> None:
        """Close the connections."""
        await self._inner.aclose()

    async def __aenter__(self) -> TokenTransport:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _request(  # noqa: PLR0917 - private helper of TelegramChannel.__init__
    telegram: Any, httpx: Any, token: str, base: str, timeout: float, size: int
) -> Any:
    """A python-telegram-bot request object whose transport holds the real token."""
    inner = httpx.AsyncHTTPTransport(
        verify=shared_context(httpx.create_ssl_context),
        limits=httpx.Limits(max_connections=size),
        proxy=_environment_proxy(base),
        http1=True,
        http2=False,
    )
    return telegram.request.HTTPXRequest(
        connection_pool_size=size,
        connect_timeout=min(_CONNECT_TIMEOUT, timeout),
        read_timeout=timeout,
        write_timeout=timeout,
        pool_timeout=timeout,
        httpx_kwargs={"transport": TokenTransport(token, inner)},
    )


class TelegramChannel:
    """Sends messages with one bot; every part goes through ``limiter`` (when given).

    ``timeout`` bounds each Bot API request (connecting at most 10 s of it); a request that
    is not answered in time is retried, and if Telegram had accepted it the user gets the
    part twice (the README's at-least-once windows).
    """

    name = "telegram"

    def __init__(
        self,
        token: str,
        *,
        api_url: str = "https://api.telegram.org",
        limiter: DbRateLimiter | None = None,
        timeout: float = 30.0,
        connections: int = 16,
    ) -> None:
        telegram = _telegram()
        import httpx  # noqa: PLC0415 - the optional extra

        self.bot_id = bot_id(token)
        self.scope = f"telegram:{self.bot_id}"
        self._token = token
        self.limiter = limiter
        base = api_url.rstrip("/")
        requests = [
            _request(telegram, httpx, token, base, timeout, size) for size in (1, connections)
        ]
        self._bot = telegram.Bot(
            f"{self.bot_id}:{WITHHELD}",
            base_url=f"{base}/bot",
            base_file_url=f"{base}/file/bot",
            request=requests[1],
            get_updates_request=requests[0],
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
        parts = await asyncio.to_thread(
            telegram_messages,
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
            ids.append(await self._send_part(chat, parts[index], message.silent))
            if progress is not None and index + 1 < len(parts):
                await progress(index + 1)
        return SendReceipt(parts=len(parts), ids=tuple(ids))

    async def _send_part(self, chat: str, part: TelegramPart, silent: bool) -> str:
        """One part as HTML, or, when Telegram cannot parse its entities, once as plain text."""
        error = _telegram().error
        for text, mode in ((part.html, "HTML"), (part.plain, None)):
            if self.limiter is not None:
                await self.limiter.acquire(chat)
            try:
                sent = await self._bot.send_message(
                    chat_id=chat,
                    text=text,
                    parse_mode=mode,
                    disable_notification=silent,
                    link_preview_options=self._no_preview,
                )
            except error.TelegramError as exc:
                if (
                    mode is not None
                    and isinstance(exc, error.BadRequest)
                    and _ENTITY_ERROR in str(exc).lower()
                ):
                    continue
                translated = translate_error(exc, chat, self._token)
                if self.limiter is not None and isinstance(translated, Throttled):
                    await _hold_off(self.limiter, chat, translated.retry_after or 1.0)
                raise translated from None
            return str(sent.message_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def check(self) -> str:
        """Call ``getMe``; return the bot's username (also the probe of a paused channel)."""
        if self._started:
            try:
                user = await self._bot.get_me()
            except Exception as exc:
                raise translate_error(exc, "-", self._token) from None
            return str(user.username)
        await self._start()
        return str(self._bot.username)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._started:
            await self._bot.shutdown()
            self._started = False


async def _hold_off(limiter: DbRateLimiter, chat: str, seconds: float) -> None:
    await asyncio.to_thread(limiter.hold_off, chat, seconds)
