"""Delivery channels: Telegram, email and the in-app inbox."""

from tradelog._notify.channels.base import (
    Channel,
    OutgoingMessage,
    Progress,
    RecipientBlocked,
    SendReceipt,
    Throttled,
)

__all__ = [
    "Channel",
    "OutgoingMessage",
    "Progress",
    "RecipientBlocked",
    "SendReceipt",
    "Throttled",
]
