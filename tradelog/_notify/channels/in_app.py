"""The in-app channel: the ``notifications`` row *is* the inbox entry, so in-app delivery is
recording it. This module adds the notices tradelog itself posts to a user's inbox, such as
"your Telegram bot is blocked", without sending them over the channel that just failed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._notify.dispatch import NotifyResult, dispatch

__all__ = ["post_notice", "telegram_blocked_notice"]


def post_notice(
    session: Session,
    user_id: int,
    title: str,
    message: str,
    *,
    level: str = "warning",
    dedupe_key: str | None = None,
    now: datetime | None = None,
) -> NotifyResult:
    """Record a ``system`` notification in ``user_id``'s inbox only (no Telegram, no email).

    The user's ``notify_system_events`` toggle still applies. The caller commits.
    """
    return dispatch(
        session,
        user_id,
        "system",
        level,
        title,
        message,
        dedupe_key=dedupe_key,
        now=now,
        external=False,
    )


def telegram_blocked_notice(
    session: Session, user_id: int, chat_id: str, reason: str, *, now: datetime | None = None
) -> NotifyResult:
    """Tell ``user_id`` in-app that Telegram refused their chat (at most once a day per chat)."""
    now = now or utcnow()
    return post_notice(
        session,
        user_id,
        "Telegram notifications are not reaching you",
        f"Telegram refused to deliver to chat {chat_id}: {reason}\n\n"
        "If you blocked the bot, unblock it (or start a chat with it again); if the chat id "
        "changed, update telegram_chat_id in your notification preferences. Notifications "
        "keep arriving in this inbox meanwhile.",
        dedupe_key=f"telegram-refused:{chat_id}:{now.date().isoformat()}"[:128],
        now=now,
    )
