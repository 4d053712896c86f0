"""Notifications: sending them, the user's inbox and the user's preferences.

Sending (``tradelog.notify`` is the same function)::

    result = tradelog.notifications.notify(7, "trading", "info", "Sold TCS", "at 3,912.50")
    tradelog.notify(7, "trading", "info", "Pre-market summary", "3 re-placed", channels=("in_app",))

The inbox (user-scoped: a user reads their own, an admin anyone's)::

    with tradelog.session() as s:
        page = tradelog.notifications.list_notifications(s, actor, unread_only=True)
        tradelog.notifications.mark_read(s, actor, page.items[0].id)
        s.commit()

Preferences (types, channels, quiet hours in the user's timezone) are read by every
``notify()`` at the moment it runs.

A channel of your own implements :class:`Channel` (render and send one
:class:`OutgoingMessage`, raise a ``DeliveryError`` on failure) and is handed to
``tradelog.configure(channels={...})``.
"""

from __future__ import annotations

from tradelog._facade import anotify, notify
from tradelog._notify.channels.base import Channel, OutgoingMessage, SendReceipt
from tradelog._notify.dispatch import ChannelOutcome, NotifyResult
from tradelog._notify.inbox import Page, list_notifications, mark_all_read, mark_read, unread_count
from tradelog._notify.preferences import (
    EDITABLE_FIELDS,
    get_preferences,
    preferences_dict,
    update_preferences,
)

__all__ = [
    "EDITABLE_FIELDS",
    "Channel",
    "ChannelOutcome",
    "NotifyResult",
    "OutgoingMessage",
    "Page",
    "SendReceipt",
    "anotify",
    "get_preferences",
    "list_notifications",
    "mark_all_read",
    "mark_read",
    "notify",
    "preferences_dict",
    "unread_count",
    "update_preferences",
]
