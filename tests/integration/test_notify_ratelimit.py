"""The database-held Telegram rate limiter shared by every worker process."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.support.db import MigratedDatabase
from tradelog._notify.channels.base import Throttled
from tradelog._notify.ratelimit import DbRateLimiter, RateLimits


def test_bot_slots_are_spaced(db: MigratedDatabase) -> None:
    """Reservations for different chats get slots at least 1/rate apart, in order."""
    limiter = DbRateLimiter(db.engine, "111", RateLimits(messages_per_second=20))
    waits = [limiter.reserve(str(chat)) for chat in range(1, 11)]
    assert all(w.reserved for w in waits)
    gaps = [b.at - a.at for a, b in itertools.pairwise(waits)]
    assert all(gap >= 0.05 - 1e-6 for gap in gaps), gaps


def test_busy_chat_is_not_reserved(db: MigratedDatabase) -> None:
    """A second message to one chat must wait the chat interval and takes no bot slot."""
    limiter = DbRateLimiter(db.engine, "111", RateLimits(chat_interval=1.0, group_interval=3.0))
    assert limiter.reserve("42").reserved
    second = limiter.reserve("42")
    assert not second.reserved
    assert 0.5 < second.wait <= 1.0
    other = limiter.reserve("43")
    assert other.reserved
    assert other.wait < 0.5
    assert limiter.reserve("-100123").reserved
    group = limiter.reserve("-100123")
    assert 2.5 < group.wait <= 3.1  # the group slot itself may sit a bot slot or two ahead


def test_hold_off_and_prune(db: MigratedDatabase) -> None:
    """hold_off pushes a chat back; prune removes only long-idle chat rows."""
    limiter = DbRateLimiter(db.engine, "111")
    limiter.hold_off("42", 5.0)
    assert 4.0 < limiter.reserve("42").wait <= 5.0
    limiter.hold_off(None, 0.5)
    assert limiter.reserve("77").wait > 0.1
    db.execute(
        "INSERT INTO notification_rate_limits (key, next_at) VALUES ('telegram:111:chat:old', 1.0)"
    )
    assert limiter.prune() == 1
    keys = {r["key"] for r in db.rows("SELECT key FROM notification_rate_limits")}
    assert keys == {"telegram:111", "telegram:111:chat:42", "telegram:111:chat:77"}


def test_acquire_waits_or_throttles(db: MigratedDatabase) -> None:
    """acquire sleeps through short waits and raises Throttled beyond max_wait."""
    limiter = DbRateLimiter(db.engine, "111", RateLimits(chat_interval=0.2, max_wait=0.5))

    async def main() -> float:
        await limiter.acquire("42")
        started = time.perf_counter()
        await limiter.acquire("42")
        return time.perf_counter() - started

    assert 0.1 < asyncio.run(main()) < 1.5
    limiter.hold_off("42", 3.0)
    with pytest.raises(Throttled) as caught:
        asyncio.run(limiter.acquire("42"))
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 2.5


def test_limits_validated() -> None:
    """Non-positive rates are refused."""
    with pytest.raises(ValueError, match="positive"):
        RateLimits(messages_per_second=0)
