"""Which channels a worker sends over: :func:`build_channels` from the settings.

Telegram needs ``TRADELOG_TELEGRAM_BOT_TOKEN`` (and shares one rate limiter per bot across every
worker through the database); email needs ``TRADELOG_SMTP_HOST``. A channel whose extra is not
installed raises :class:`~tradelog.exceptions.MissingExtraError` naming it.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tradelog._notify.channels.base import Channel
from tradelog._notify.channels.email import EmailChannel
from tradelog._notify.channels.telegram import TelegramChannel, bot_id
from tradelog._notify.ratelimit import DbRateLimiter, RateLimits
from tradelog.config import Settings

__all__ = ["CHANNEL_SETTINGS", "build_channels"]

CHANNEL_SETTINGS = {"telegram": "TRADELOG_TELEGRAM_BOT_TOKEN", "email": "TRADELOG_SMTP_HOST"}
"""The setting that turns each external channel on."""


def build_channels(
    engine: Engine, settings: Settings, *, rate_limits: RateLimits | None = None
) -> dict[str, Channel]:
    """The channels ``settings`` configure: Telegram with a bot token, email with an SMTP host."""
    channels: dict[str, Channel] = {}
    if settings.telegram_bot_token:
        token = settings.telegram_bot_token.reveal()
        limits = rate_limits or RateLimits(
            messages_per_second=settings.telegram_rate,
            chat_interval=settings.telegram_chat_interval,
        )
        limiter = DbRateLimiter(engine, bot_id(token), limits)
        channels["telegram"] = TelegramChannel(
            token,
            api_url=settings.telegram_api_url,
            limiter=limiter,
            timeout=settings.telegram_timeout,
        )
    if settings.smtp_host:
        channels["email"] = EmailChannel.from_settings(settings)
    return channels
