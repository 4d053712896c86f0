"""What a claimed delivery becomes before it is sent: a :class:`Job` and its message.

A job is one claimed delivery (the *carrier*) plus, for deliveries that quiet hours deferred,
the other deferred deliveries of the same user and channel released with it as one digest.
:func:`prepare` reads the user's preferences *now* (a channel switched off since queueing is
suppressed, a missing chat id or address fails permanently) and the notifications' full text,
and renders the one message to send. A digest's text is capped like one notification's
(:data:`~tradelog._notify.dispatch.FULL_TEXT_LIMIT` characters, then a marker). The message's
``key`` is the same for every attempt of the delivery (an email's ``Message-ID``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tradelog._db.models import Notification
from tradelog._notify.channels.base import OutgoingMessage
from tradelog._notify.dispatch import FULL_TEXT_LIMIT
from tradelog._notify.formatting import DigestItem, cap_text, digest, digest_level
from tradelog._notify.outbox import ClaimedDelivery
from tradelog._notify.policy import LEVELS
from tradelog._notify.preferences import preferences_row, snapshot

__all__ = ["Job", "Prepared", "prepare"]

_ADDRESS = {"telegram": "telegram_chat_id", "email": "email_address"}
_ENABLED = {"telegram": "telegram_enabled", "email": "email_enabled"}


@dataclass
class Job:
    """One message to send: the carrier delivery and the digest members riding with it."""

    carrier: ClaimedDelivery
    members: list[ClaimedDelivery] = field(default_factory=list)
    parts_sent: int = 0

    @property
    def ids(self) -> list[int]:
        """Every delivery id the job settles."""
        return [self.carrier.id, *(m.id for m in self.members)]

    @property
    def key(self) -> tuple[str, int]:
        """(channel, user id): jobs with one key are sent one after another, in order."""
        return self.carrier.channel, self.carrier.user_id

    @property
    def attempts(self) -> int:
        """The most attempts any of the job's deliveries has had."""
        return max([self.carrier.attempts, *(m.attempts for m in self.members)])


@dataclass(frozen=True)
class Prepared:
    """The message to send, or why nothing is sent (``suppress``) or can be (``fail``)."""

    message: OutgoingMessage | None = None
    suppress: str | None = None
    fail: str | None = None


def prepare(engine: Engine, job: Job, now: datetime) -> Prepared:
    """Read the preferences and notifications of ``job`` and render its message."""
    channel = job.carrier.channel
    with Session(engine) as session:
        prefs = preferences_row(session, job.carrier.user_id)
        session.commit()
        view = snapshot(prefs)
        wanted = [c.notification_id for c in (job.carrier, *job.members)]
        notes = {
            n.id: n
            for n in session.execute(
                select(Notification).where(Notification.id.in_(wanted))
            ).scalars()
        }
    if not getattr(view, _ENABLED[channel]):
        return Prepared(suppress=f"{channel} was switched off before delivery")
    address = getattr(view, _ADDRESS[channel])
    if not address:
        return Prepared(fail=f"missing {_ADDRESS[channel]}")
    tz = view.zone()
    key = f"tradelog.{job.carrier.notification_id}.{job.carrier.id}"
    ordered = [job.carrier, *job.members]
    found = [notes[c.notification_id] for c in ordered if c.notification_id in notes]
    if not found:
        return Prepared(suppress="the notification no longer exists")
    if len(found) == 1:
        note = found[0]
        return Prepared(
            message=OutgoingMessage(
                address=address,
                title=note.title,
                text=note.text,
                level=note.level,
                type_=note.type,
                created_at=note.created_at,
                tz=tz,
                silent=job.carrier.silent,
                key=key,
            )
        )
    items = [DigestItem(n.title, n.text, n.level, n.type, n.created_at) for n in found]
    title, text = digest(items, tz)
    text = cap_text(text, FULL_TEXT_LIMIT)
    worst = max(found, key=lambda n: LEVELS.index(n.level) if n.level in LEVELS else 0)
    return Prepared(
        message=OutgoingMessage(
            address=address,
            title=title,
            text=text,
            level=digest_level(items),
            type_=worst.type,
            created_at=now,
            tz=tz,
            silent=job.carrier.silent,
            key=key,
        )
    )
