"""Turn one ``notify(...)`` call into rows: the notification (the in-app record) and one outbox
delivery per external channel, all inside the given session's transaction.

Nothing is sent here. The delivery worker picks the outbox rows up once the transaction
commits, so a caller that rolls back sends nothing, and one that commits is guaranteed a
delivery attempt (the transactional outbox pattern). On PostgreSQL the new notification is also
announced on :data:`~tradelog._notify.listen.NOTIFICATIONS_CHANNEL`, heard by listeners in
other processes (live inbox streams) when the transaction commits, and a transaction that
queued deliveries due now announces :data:`~tradelog._notify.listen.DELIVERIES_CHANNEL` once
(however many it queued), which wakes the delivery workers of every process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._db.models import Notification, NotificationDelivery
from tradelog._db.upsert import dialect_insert
from tradelog._logs.redact import REDACT_MARGIN, redact_text
from tradelog._notify.formatting import format_time, not_kept_marker
from tradelog._notify.listen import (
    DELIVERIES_CHANNEL,
    NOTIFICATIONS_CHANNEL,
    announce,
    announce_once,
)
from tradelog._notify.policy import (
    DEFAULT_TIMEZONE,
    ChannelDecision,
    decide,
    validate_channels,
    validate_level,
    validate_timezone,
    validate_type,
)
from tradelog._notify.preferences import preferences_row, snapshot
from tradelog.exceptions import ConflictError

__all__ = [
    "FULL_TEXT_LIMIT",
    "MESSAGE_COLUMN_LIMIT",
    "ChannelOutcome",
    "NotifyResult",
    "OutcomeStatus",
    "check_request",
    "dispatch",
    "prepare_text",
]

logger = logging.getLogger("tradelog.notify")

MESSAGE_COLUMN_LIMIT: Final = 1024
TITLE_COLUMN_LIMIT: Final = 255
FULL_TEXT_LIMIT: Final = 65_536
"""Characters of a notification's text that are kept (and sent); beyond it the text ends in
a marker saying how much was left out."""
DEDUPE_KEY_LIMIT: Final = 128

OutcomeStatus = Literal["queued", "deferred", "suppressed", "failed", "recorded", "duplicate"]


@dataclass(frozen=True)
class ChannelOutcome:
    """What ``notify`` did for one channel.

    ``status``:

    ``queued``      an outbox delivery is due now
    ``deferred``    held by quiet hours until ``not_before`` (UTC)
    ``suppressed``  deliberately not sent (``reason``: quiet hours in drop mode, ...)
    ``failed``      cannot be sent (``reason``: missing chat id or address); recorded as failed
    ``recorded``    the in-app inbox entry was written
    ``duplicate``   the dedupe key matched an earlier notification; nothing new was queued
    """

    channel: str
    status: OutcomeStatus
    not_before: datetime | None = None
    reason: str | None = None
    silent: bool = False
    delivery_id: int | None = None

    def describe(self, tz: ZoneInfo | None = None) -> str:
        """One line such as ``telegram: deferred until 2026-05-14 07:00:00 IST (01:30 UTC)``."""
        text = f"{self.channel}: {self.status}"
        if self.not_before is not None and self.status in ("deferred", "duplicate"):
            local = format_time(self.not_before, tz or ZoneInfo(DEFAULT_TIMEZONE))
            text += f" until {local} ({self.not_before.strftime('%Y-%m-%d %H:%M UTC')})"
        if self.silent:
            text += " (silently)"
        if self.reason:
            text += f" ({self.reason})"
        return text


@dataclass(frozen=True)
class NotifyResult:
    """The outcome of one ``notify`` call, channel by channel.

    ``created`` is False when no notification was made: the type is switched off (``reason``
    says so) or the dedupe key matched an earlier one (``duplicate`` is then True and
    ``notification_id`` is the earlier notification).

    ``spooled`` is True when the database could not be reached and the request was kept in
    the local notification spool instead (``{log_dir}/_runtime/notify-unwritten-<pid>.jsonl``):
    it is written - preferences, quiet hours and the dedupe key applied then - when the
    database returns. ``notification_id`` is None and ``channels`` is empty.
    """

    user_id: int
    notification_id: int | None
    created: bool
    duplicate: bool = False
    reason: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    channels: tuple[ChannelOutcome, ...] = field(default_factory=tuple)
    spooled: bool = False

    def channel(self, name: str) -> ChannelOutcome | None:
        """The outcome for channel ``name``, or None when the channel was not involved."""
        return next((c for c in self.channels if c.channel == name), None)

    def describe(self) -> list[str]:
        """One human-readable line per channel (times in the user's timezone and UTC)."""
        try:
            tz = validate_timezone(self.timezone)
        except ValueError:
            tz = ZoneInfo(DEFAULT_TIMEZONE)
        if self.spooled:
            return [f"spooled: {self.reason}"]
        if not self.created and not self.duplicate:
            return [f"not created: {self.reason}"]
        head = f"notification {self.notification_id}" + (
            " (duplicate of an earlier notification)" if self.duplicate else ""
        )
        return [head, *(c.describe(tz) for c in self.channels)]

    def __str__(self) -> str:
        return "; ".join(self.describe())


def _clean(text: str) -> str:
    return text.replace("\x00", "")


def _cap(text: str) -> str:
    """Scrub ``text``, then keep at most :data:`FULL_TEXT_LIMIT` characters of it."""
    if len(text) <= FULL_TEXT_LIMIT:
        return redact_text(text)
    kept = redact_text(text[: FULL_TEXT_LIMIT + REDACT_MARGIN])[:FULL_TEXT_LIMIT]
    return kept + not_kept_marker(len(text) - FULL_TEXT_LIMIT)


def prepare_text(title: object, message: object) -> tuple[str, str, str | None]:
    """Validate a title and message; return ``(title, stored message, full message or None)``.

    Both are scrubbed of secrets first (the log redactor's text rules: tokens, passwords,
    keys ...), so no row, inbox view, Telegram or email message carries one. A message
    longer than :data:`FULL_TEXT_LIMIT` (65,536) characters is cut there with a marker
    saying how much was left out. The ``message`` column holds 1,024 characters: a longer
    text is stored shortened there (ending in an ellipsis) and complete in ``full_message``.
    Titles longer than 255 characters are shortened. NUL characters are removed
    (PostgreSQL refuses them).
    """
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title must be a non-empty string")
    if not isinstance(message, str):
        raise ValueError(f"message must be a string, got {type(message).__name__}")
    clean_title = redact_text(_clean(title[: TITLE_COLUMN_LIMIT + REDACT_MARGIN]).strip())
    if len(clean_title) > TITLE_COLUMN_LIMIT:
        clean_title = clean_title[: TITLE_COLUMN_LIMIT - 1] + "\u2026"
    full = _cap(_clean(message))
    if len(full) <= MESSAGE_COLUMN_LIMIT:
        return clean_title, full, None
    return clean_title, full[: MESSAGE_COLUMN_LIMIT - 1] + "\u2026", full


def _check_dedupe_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > DEDUPE_KEY_LIMIT:
        raise ValueError(f"dedupe_key must be a non-empty string of at most {DEDUPE_KEY_LIMIT}")
    return key


def _existing(session: Session, user_id: int, dedupe_key: str) -> Notification | None:
    return session.execute(
        select(Notification).where(
            Notification.user_id == user_id, Notification.dedupe_key == dedupe_key
        )
    ).scalar_one_or_none()


def _duplicate(session: Session, found: Notification, timezone: str) -> NotifyResult:
    rows = session.execute(
        select(NotificationDelivery)
        .where(NotificationDelivery.notification_id == found.id)
        .order_by(NotificationDelivery.id)
    ).scalars()
    channels = [
        ChannelOutcome(
            row.channel,
            "duplicate",
            not_before=row.not_before if row.status == "pending" else None,
            reason=f"already {row.status}",
            delivery_id=row.id,
        )
        for row in rows
    ]
    channels.append(ChannelOutcome("in_app", "duplicate", reason="already recorded"))
    return NotifyResult(
        user_id=found.user_id,
        notification_id=found.id,
        created=False,
        duplicate=True,
        reason="dedupe key matched an earlier notification",
        timezone=timezone,
        channels=tuple(channels),
    )


def _delivery(
    notification_id: int, user_id: int, decision: ChannelDecision, now: datetime
) -> NotificationDelivery:
    status = {"send": "pending", "defer": "pending", "suppress": "suppressed", "fail": "failed"}
    return NotificationDelivery(
        notification_id=notification_id,
        user_id=user_id,
        channel=decision.channel,
        status=status[decision.action],
        not_before=decision.not_before,
        next_attempt_at=decision.not_before or now,
        silent=decision.silent,
        last_error=decision.reason if decision.action in ("suppress", "fail") else None,
    )


def _outcome(decision: ChannelDecision, delivery_id: int | None) -> ChannelOutcome:
    status: dict[str, OutcomeStatus] = {
        "send": "queued",
        "defer": "deferred",
        "suppress": "suppressed",
        "fail": "failed",
    }
    return ChannelOutcome(
        decision.channel,
        status[decision.action],
        not_before=decision.not_before,
        reason=decision.reason,
        silent=decision.silent,
        delivery_id=delivery_id,
    )


def check_request(
    type_: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None,
    channels: Iterable[str] | None,
) -> dict[str, object]:
    """Validate a ``notify`` request without the database (raises ``ValueError`` as
    :func:`dispatch` would); returns it scrubbed, as the notification spool keeps it."""
    clean_title, stored, full = prepare_text(title, message)
    allowed = validate_channels(channels)
    return {
        "type": validate_type(type_),
        "level": validate_level(level),
        "title": clean_title,
        "message": full or stored,
        "dedupe_key": _check_dedupe_key(dedupe_key),
        "channels": sorted(allowed) if allowed is not None else None,
    }


def dispatch(  # noqa: PLR0917 - mirrors notify(user_id, type, level, title, message)
    session: Session,
    user_id: int,
    type_: str,
    level: str,
    title: str,
    message: str,
    *,
    dedupe_key: str | None = None,
    now: datetime | None = None,
    external: bool = True,
    channels: Iterable[str] | None = None,
) -> NotifyResult:
    """Write a notification and its outbox deliveries into ``session`` (flushed, not committed).

    ``type_``/``level`` outside the valid values raise :class:`ValueError` listing them; an
    unknown user raises :class:`~tradelog.exceptions.NotFound`. With ``external=False`` only
    the in-app record is written (used for notices about delivery problems themselves).
    ``channels`` restricts the channels this call may use, within what the preferences allow
    (``("in_app",)``: the inbox only). The user's preferences are read now, inside the same
    transaction.
    """
    type_ = validate_type(type_)
    level = validate_level(level)
    allowed = validate_channels(channels)
    title, stored, full = prepare_text(title, message)
    key = _check_dedupe_key(dedupe_key)
    now = now or utcnow()

    prefs = preferences_row(session, user_id)
    timezone = prefs.timezone or DEFAULT_TIMEZONE
    if key is not None:
        found = _existing(session, user_id, key)
        if found is not None:
            return _duplicate(session, found, timezone)

    decision = decide(snapshot(prefs), type_, level, now, channels=allowed)
    if not decision.create:
        return NotifyResult(user_id, None, created=False, reason=decision.reason, timezone=timezone)
    external_decisions = [d for d in decision.channels if d.channel != "in_app"] if external else []

    insert = dialect_insert(session, Notification).values(
        user_id=user_id,
        type=type_,
        level=level,
        title=title,
        message=stored,
        full_message=full,
        dedupe_key=key,
        created_at=now,
        in_app_delivered=True,
    )
    if key is not None:
        # The unique (user_id, dedupe_key) index decides between racing producers; DO NOTHING
        # keeps the caller's transaction usable (no IntegrityError, no savepoint needed).
        insert = insert.on_conflict_do_nothing(index_elements=["user_id", "dedupe_key"])
    new_id = session.execute(insert.returning(Notification.id)).scalar_one_or_none()
    if new_id is None:
        found = _existing(session, user_id, key or "")
        if found is None:  # pragma: no cover - the winner was deleted in between
            raise ConflictError(f"dedupe key {key!r} clashed with a vanished notification")
        return _duplicate(session, found, timezone)
    deliveries = [_delivery(new_id, user_id, d, now) for d in external_decisions]
    session.add_all(deliveries)
    session.flush()
    announce(session, NOTIFICATIONS_CHANNEL, f"{user_id}:{new_id}")  # heard at commit (PostgreSQL)
    if any(d.action == "send" for d in external_decisions):
        announce_once(session, DELIVERIES_CHANNEL)  # one wake-up per committed transaction

    outcomes = [_outcome(d, row.id) for d, row in zip(external_decisions, deliveries, strict=True)]
    outcomes.append(ChannelOutcome("in_app", "recorded"))
    for outcome in outcomes:
        if outcome.status == "failed":
            logger.warning(
                "notification %s to user %s cannot go out on %s: %s",
                new_id,
                user_id,
                outcome.channel,
                outcome.reason,
                extra={
                    "user_id": user_id,
                    "notification_id": new_id,
                    "channel": outcome.channel,
                    "delivery_id": outcome.delivery_id,
                },
            )
    return NotifyResult(
        user_id=user_id,
        notification_id=new_id,
        created=True,
        timezone=timezone,
        channels=tuple(outcomes),
    )
