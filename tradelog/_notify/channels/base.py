"""What a delivery channel is: a message to send, the seam every channel implements, and the
errors a channel may raise beyond :class:`~tradelog.exceptions.DeliveryError`.

A channel renders and sends one :class:`OutgoingMessage`. It raises
:class:`~tradelog.exceptions.RetryableDeliveryError` for transient trouble (``retry_after`` when
the service said how long to wait), :class:`~tradelog.exceptions.PermanentDeliveryError` when
retrying cannot help, :class:`RecipientBlocked` when the recipient refuses the sender,
:class:`Throttled` when the service or the shared rate limit asks for a wait (not a failure at
all: the delivery waits and keeps its attempts), and :class:`ChannelUnavailable` when the
service itself is in trouble (5xx answers, timeouts, connection errors): that says nothing
about the delivery, so the worker counts it against the channel, not the delivery (see
:mod:`tradelog._notify.breaker`). Third-party errors are translated at the channel boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from tradelog.exceptions import PermanentDeliveryError, RetryableDeliveryError

__all__ = [
    "Channel",
    "ChannelUnavailable",
    "OutgoingMessage",
    "Progress",
    "RecipientBlocked",
    "SendReceipt",
    "Throttled",
]

Progress = Callable[[int], Awaitable[None]]
"""Called with the number of parts delivered so far after each part of a multi-part send."""


@dataclass(frozen=True)
class OutgoingMessage:
    """One message for one recipient, not yet rendered for a channel.

    ``text`` is the complete plain text (not the shortened ``notifications.message``);
    ``created_at`` and ``tz`` give the time shown to the user; ``silent`` asks for delivery
    without a notification sound where the channel supports it.
    """

    address: str
    title: str
    text: str
    level: str
    type_: str
    created_at: datetime
    tz: ZoneInfo
    silent: bool = False
    key: str | None = None
    """The same for every attempt of one delivery (an email's ``Message-ID`` is built from it,
    so a recipient's mail system can drop a copy that a late acknowledgement made us resend)."""


@dataclass(frozen=True)
class SendReceipt:
    """What the channel accepted: how many parts, and the service's ids for them if any."""

    parts: int = 1
    ids: tuple[str, ...] = field(default_factory=tuple)


class RecipientBlocked(PermanentDeliveryError):
    """The recipient blocked the sender (Telegram 403); the user is told in-app."""


class Throttled(RetryableDeliveryError):
    """Wait ``retry_after`` seconds and try again (a rate limit, Telegram's 429): no failure,
    no attempt spent."""


class ChannelUnavailable(RetryableDeliveryError):
    """The service is in trouble (5xx, timeout, connection refused or reset), whatever the
    message: a failure of the channel rather than of the delivery."""


@runtime_checkable
class Channel(Protocol):
    """A way to reach a user: Telegram, email, ..."""

    name: str

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        """Deliver ``message`` (from part ``start_part`` on); raise a DeliveryError on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
