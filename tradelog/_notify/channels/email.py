"""Email through aiosmtplib: STARTTLS, implicit TLS or plain, optional AUTH, timeouts.

Each message is ``multipart/alternative`` (plain text and HTML) with the subject built from the
title by :func:`~tradelog._notify.formatting.email_subject`, which turns CR/LF and other control
characters into spaces, so a title can never add a header. One SMTP connection is kept open
and reused for a burst of messages; a connection the server closed in between is reopened once.

Every attempt of one delivery carries the same ``Message-ID``
(``<tradelog.<notification>.<delivery>@<sender domain>>``): when a server accepted a message but
its answer came after ``TRADELOG_SMTP_TIMEOUT``, the retry is a copy with that id, which mail
systems that deduplicate by ``Message-ID`` drop.

Error translation:

======================================  =====================================================
recipient refused 5xx, other 5xx        permanent (``550 No such user``, ``554 ...``)
authentication failed (535, ...)        permanent: the SMTP credentials are wrong
4xx answers                             retryable (greylisting, ``451 try again later``)
421, connect / read timeouts,           :class:`ChannelUnavailable`: the server is in
disconnects, TLS or socket errors       trouble, not the message
======================================  =====================================================
"""

from __future__ import annotations

import asyncio
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from tradelog._notify.channels.base import (
    ChannelUnavailable,
    OutgoingMessage,
    Progress,
    SendReceipt,
)
from tradelog._notify.channels.tls import shared_context
from tradelog._notify.formatting import email_bodies, email_subject
from tradelog.config import SMTP_SECURITY_MODES, Settings
from tradelog.exceptions import (
    ConfigurationError,
    DeliveryError,
    MissingExtraError,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

__all__ = ["EmailChannel", "build_message", "translate_error"]


def _aiosmtplib() -> Any:
    try:
        import aiosmtplib  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise MissingExtraError("email", "aiosmtplib") from exc
    return aiosmtplib


def build_message(message: OutgoingMessage, sender: str) -> EmailMessage:
    """The email for ``message``: multipart text + HTML, header-safe subject."""
    plain, rich = email_bodies(
        message.title, message.text, message.level, message.type_, message.created_at, message.tz
    )
    email = EmailMessage()
    email["Subject"] = email_subject(message.title, message.level)
    email["From"] = sender
    email["To"] = message.address
    email["Date"] = formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or None
    if message.key:
        email["Message-ID"] = f"<{message.key}@{domain or 'tradelog.invalid'}>"
    else:
        email["Message-ID"] = make_msgid(domain=domain)
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(plain)
    email.add_alternative(rich, subtype="html")
    return email


def _by_code(code: int, text: str) -> DeliveryError:
    if 400 <= code < 500:
        return RetryableDeliveryError(text, channel="email")
    return PermanentDeliveryError(text, channel="email")


def translate_error(exc: BaseException) -> DeliveryError:
    """The tradelog delivery error for an aiosmtplib or socket exception (see the module doc)."""
    smtp = _aiosmtplib()
    if isinstance(exc, smtp.SMTPRecipientsRefused):
        refused = exc.recipients[0] if exc.recipients else None
        if refused is None:
            return PermanentDeliveryError("email: every recipient was refused", channel="email")
        return _by_code(
            refused.code,
            f"email: recipient {refused.recipient} refused: {refused.code} {refused.message}",
        )
    if isinstance(exc, smtp.SMTPAuthenticationError):
        return PermanentDeliveryError(
            f"email: SMTP authentication failed: {exc.code} {exc.message}", channel="email"
        )
    if isinstance(exc, smtp.SMTPResponseException):
        text = f"email: SMTP server answered {exc.code} {exc.message}"
        if exc.code == 421:
            return ChannelUnavailable(text, channel="email")
        return _by_code(exc.code, text)
    if isinstance(exc, smtp.SMTPNotSupported):
        return PermanentDeliveryError(f"email: {exc}", channel="email")
    if isinstance(exc, TimeoutError):
        return ChannelUnavailable(f"email: timed out: {exc}", channel="email")
    return ChannelUnavailable(f"email: {type(exc).__name__}: {exc}".rstrip(": "), channel="email")


class EmailChannel:
    """Sends notification emails over one reused SMTP connection."""

    name = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        sender: str,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if security not in SMTP_SECURITY_MODES:
            raise ConfigurationError(
                f"TRADELOG_SMTP_SECURITY must be one of {', '.join(SMTP_SECURITY_MODES)}, "
                f"got {security!r}",
                variable="TRADELOG_SMTP_SECURITY",
            )
        _aiosmtplib()
        self.host = host
        self.port = port
        self.scope = f"email:{host}:{port}"
        self.security = security
        self.sender = sender
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._client: Any = None
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self.connections_opened = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, *, tls_context: ssl.SSLContext | None = None
    ) -> EmailChannel:
        """The channel configured by ``TRADELOG_SMTP_*``; :class:`ConfigurationError` if unset."""
        if not settings.smtp_host:
            raise ConfigurationError(
                "email is not configured: set TRADELOG_SMTP_HOST", variable="TRADELOG_SMTP_HOST"
            )
        sender = settings.smtp_from or settings.smtp_username
        if not sender or "@" not in sender:
            raise ConfigurationError(
                "email needs a sender address: set TRADELOG_SMTP_FROM",
                variable="TRADELOG_SMTP_FROM",
            )
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.reveal() if settings.smtp_password else None,
            sender=sender,
            timeout=settings.smtp_timeout,
            tls_context=tls_context,
        )

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {loop: (lock := asyncio.Lock())}
        return lock

    async def _connect(self) -> Any:
        smtp = _aiosmtplib()
        options: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "timeout": self._timeout,
            "use_tls": self.security == "tls",
            "start_tls": self.security == "starttls",
            "username": self._username,
            "password": self._password,
            "local_hostname": self._local_hostname,
        }
        if self.security != "none":
            options["tls_context"] = self._tls_context or shared_context(ssl.create_default_context)
        client = smtp.SMTP(**options)
        self.connections_opened += 1
        try:
            await client.connect()
        except BaseException:
            client.close()
            raise
        return client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                if client.is_connected:
                    await client.quit()
            except Exception:
                client.close()

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        """Send one email; raises a :class:`~tradelog.exceptions.DeliveryError` on failure."""
        smtp = _aiosmtplib()
        email = build_message(message, self.sender)
        async with self._lock():
            for attempt in (1, 2):
                reused = self._client is not None and self._client.is_connected
                try:
                    if not reused:
                        await self._drop()
                        self._client = await self._connect()
                    await self._client.send_message(email)
                except smtp.SMTPServerDisconnected as exc:
                    await self._drop()
                    if reused and attempt == 1:
                        continue  # the idle connection was closed by the server: reopen once
                    raise translate_error(exc) from exc
                except smtp.SMTPResponseException as exc:
                    if exc.code == 421:  # service closing the connection
                        await self._drop()
                        if reused and attempt == 1:
                            continue
                    elif self._client is not None:
                        await self._reset()
                    raise translate_error(exc) from exc
                except smtp.SMTPRecipientsRefused as exc:
                    await self._reset()
                    raise translate_error(exc) from exc
                except (TimeoutError, smtp.SMTPException, OSError) as exc:
                    await self._drop()
                    raise translate_error(exc) from exc
                return SendReceipt(parts=1, ids=(str(email["Message-ID"]),))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reset(self) -> None:
        """Abort the failed transaction (RSET) so the connection can carry the next message."""
        try:
            await self._client.rset()
        except Exception:
            await self._drop()

    async def check(self) -> str:
        """Connect (and authenticate) without sending; returns ``host:port``."""
        async with self._lock():
            await self._drop()
            try:
                self._client = await self._connect()
            except Exception as exc:
                raise translate_error(exc) from exc
        return f"{self.host}:{self.port}"

    async def aclose(self) -> None:
        """QUIT and close the connection."""
        async with self._lock():
            await self._drop()
