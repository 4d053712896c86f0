"""Telegram rate limits held in the database, so every worker process on every host shares them.

Telegram allows about 30 messages a second per bot overall and one a second per chat (20 a
minute per group). Each limit is a row ``(key, next_at)``: the earliest instant (epoch seconds)
the next message under that key may be sent. Sending a message *reserves* a slot::

    lock the bot row and the chat row           (SELECT ... FOR UPDATE / SQLite write lock)
    if the chat row is in the future:           -> wait that long and ask again (no reservation)
    slot = max(now, bot.next_at)
    bot.next_at  = slot + 1 / messages_per_second
    chat.next_at = slot + chat interval
    commit; sleep until slot; send

The chat is reserved only when it is free, so one busy chat never holds the whole bot back.
A sender that wakes up noticeably after its slot (a loaded host) does not send late, which
could bunch with the following slots; it reserves a new slot instead.
Reserved slots are strictly spaced, so any one-second window holds at most
``messages_per_second`` messages however many processes send. Spacing slightly under
Telegram's figure (28/s, 1.05 s) absorbs jitter between reservation and arrival: a
message may reach Telegram up to ~70 ms after its slot (a busy event loop, a loaded host)
without putting 31 messages into one second.

On PostgreSQL the clock is the database server's (``clock_timestamp()``), so workers on hosts
with skewed clocks still agree; on SQLite (one host) it is the local clock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session

from tradelog._db.models import NotificationRateLimit
from tradelog._db.upsert import dialect_insert
from tradelog._notify.channels.base import Throttled

__all__ = ["DbRateLimiter", "RateLimits", "Reservation"]

_R = NotificationRateLimit
_CHAT_ROW_TTL: Final = 3600.0


@dataclass(frozen=True)
class RateLimits:
    """Sending limits per bot token; defaults sit just under Telegram's published figures."""

    messages_per_second: float = 28.0
    chat_interval: float = 1.05
    group_interval: float = 3.05
    #: A wait longer than this hands the delivery back to the outbox instead of holding it.
    max_wait: float = 10.0
    #: Waking up later than this after a reserved slot (a busy host) takes a new slot instead
    #: of sending late into the next messages' second.
    late_tolerance: float = 0.015

    def __post_init__(self) -> None:
        if self.messages_per_second <= 0 or self.chat_interval < 0 or self.group_interval < 0:
            raise ValueError("rate limits must be positive")


@dataclass(frozen=True)
class Reservation:
    """The outcome of one reservation attempt: ``wait`` seconds, and whether a slot is held.

    ``at`` is the slot (or the time the chat frees up) in epoch seconds on the limiter's clock.
    """

    wait: float
    reserved: bool
    at: float = 0.0


def _is_group(chat: str) -> bool:
    return chat.startswith(("-", "@"))


class DbRateLimiter:
    """Cross-process limiter for one bot (``scope``, e.g. the bot id, never the token)."""

    def __init__(self, engine: Engine, scope: str, limits: RateLimits | None = None) -> None:
        self.engine = engine
        self.limits = limits or RateLimits()
        self._bot_key = f"telegram:{scope}"
        self._chat_prefix = f"telegram:{scope}:chat:"
        self._postgres = engine.dialect.name == "postgresql"
        #: Slots given up because this process woke too late to use them.
        self.late_slots = 0

    def _chat_key(self, chat: str) -> str:
        return (self._chat_prefix + chat)[:160]

    def _now(self, session: Session) -> float:
        if self._postgres:
            return float(
                session.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            )
        return time.time()

    def _lock_rows(self, session: Session, keys: list[str]) -> dict[str, float]:
        insert = dialect_insert(session, _R)
        session.execute(
            insert.values([{"key": key, "next_at": 0.0} for key in keys]).on_conflict_do_nothing()
        )
        rows = session.execute(
            select(_R.key, _R.next_at).where(_R.key.in_(keys)).order_by(_R.key).with_for_update()
        )
        return {key: float(next_at) for key, next_at in rows}

    def reserve(self, chat: str) -> Reservation:
        """Try to reserve a send slot for ``chat`` (blocking database call; see module doc)."""
        chat_key = self._chat_key(chat)
        interval = self.limits.group_interval if _is_group(chat) else self.limits.chat_interval
        with Session(self.engine) as session, session.begin():
            rows = self._lock_rows(session, sorted((self._bot_key, chat_key)))
            now = self._now(session)
            chat_free_at = rows[chat_key]
            if chat_free_at > now:
                return Reservation(chat_free_at - now, reserved=False, at=chat_free_at)
            slot = max(now, rows[self._bot_key])
            session.execute(
                update(_R)
                .where(_R.key == self._bot_key)
                .values(next_at=slot + 1.0 / self.limits.messages_per_second)
            )
            session.execute(update(_R).where(_R.key == chat_key).values(next_at=slot + interval))
            return Reservation(slot - now, reserved=True, at=slot)

    def hold_off(self, chat: str | None, seconds: float) -> None:
        """Push ``chat`` (or the whole bot when None) back by ``seconds`` (after a 429)."""
        key = self._bot_key if chat is None else self._chat_key(chat)
        with Session(self.engine) as session, session.begin():
            rows = self._lock_rows(session, [key])
            until = self._now(session) + seconds
            if rows[key] < until:
                session.execute(update(_R).where(_R.key == key).values(next_at=until))

    def prune(self) -> int:
        """Delete chat rows idle for an hour; returns how many."""
        with Session(self.engine) as session, session.begin():
            cutoff = self._now(session) - _CHAT_ROW_TTL
            result = session.execute(
                delete(_R).where(_R.key.startswith(self._chat_prefix), _R.next_at < cutoff)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    async def acquire(self, chat: str) -> None:
        """Wait until a message to ``chat`` may be sent, holding its reserved slot.

        Raises :class:`Throttled` instead of waiting longer than ``limits.max_wait``.
        """
        while True:
            outcome = await asyncio.to_thread(self.reserve, chat)
            if outcome.reserved:
                due = time.monotonic() + outcome.wait
                if outcome.wait > 0:
                    await asyncio.sleep(outcome.wait)
                if time.monotonic() - due <= self.limits.late_tolerance:
                    return
                self.late_slots += 1
                continue
            if outcome.wait > self.limits.max_wait:
                raise Throttled(
                    f"chat {chat} is rate limited for {outcome.wait:.1f}s",
                    channel="telegram",
                    retry_after=outcome.wait,
                )
            await asyncio.sleep(outcome.wait)
