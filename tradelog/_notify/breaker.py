"""A circuit breaker per channel, shared by every delivery worker through the database.

When Telegram or the SMTP server is down (5xx answers, timeouts, refused connections), every
delivery would fail, spend an attempt and back off on its own schedule: after a long outage
the backlog trickles out over many minutes, and deliveries that were unlucky run out of
attempts. Instead the *channel* is paused:

* a worker that sees a channel-wide failure (:class:`~tradelog._notify.channels.base.
  ChannelUnavailable`) records it; ``threshold`` of them in a row (no success in between, from
  any worker) open the breaker: the channel is paused until ``paused_until``;
* while it is paused no worker claims deliveries of that channel, and a delivery that fails
  while it is paused is handed back *without* spending an attempt;
* once the pause is over, exactly one worker (a compare-and-set on the row) probes the service
  with the channel's own check (Telegram ``getMe``, an SMTP connect and login): success closes
  the breaker and every worker sends the backlog at once; failure pauses again, twice as long
  each time up to ``max_pause`` (10 s by default), so recovery is noticed within seconds.

Per-delivery attempts therefore count only failures specific to a delivery: isolated
retryable errors while the channel otherwise works. The one exception is the start of an
outage: the first ``threshold - 1`` channel-wide failures, before the breaker opens, are each
counted against their delivery (one attempt each, at most ``threshold - 1`` deliveries).

State lives in ``notification_rate_limits`` (the table the Telegram rate limiter shares), two
rows per channel scope (``telegram:<bot id>``, ``email:<host>:<port>``):

* ``breaker:<scope>``: ``next_at`` is the epoch second until which the channel is paused
  (0 when closed; while a probe runs, the end of the probe's time);
* ``breaker:<scope>:failures``: ``next_at`` holds the count of channel-wide failures in a row.

Times come from the worker's clock (``clock().timestamp()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from tradelog._db.models import NotificationRateLimit
from tradelog._db.upsert import dialect_insert

__all__ = ["BreakerState", "ChannelBreaker", "paused_channels"]

_R = NotificationRateLimit
PREFIX: Final = "breaker:"


@dataclass(frozen=True)
class BreakerState:
    """One channel's breaker: paused until ``paused_until`` (epoch seconds, 0 = closed)."""

    scope: str
    paused_until: float
    failures: int

    def is_open(self, now: float) -> bool:
        """Whether the channel is paused at ``now`` (or a probe is running)."""
        return self.paused_until > now

    def probe_due(self, now: float) -> bool:
        """Whether the pause is over and the channel must be probed before it is used."""
        return 0 < self.paused_until <= now


class ChannelBreaker:
    """The breaker of one channel scope (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        scope: str,
        *,
        threshold: int = 3,
        pause: float = 1.0,
        max_pause: float = 10.0,
    ) -> None:
        self.engine = engine
        self.scope = scope
        self.threshold = max(1, threshold)
        self.pause = pause
        self.max_pause = max(pause, max_pause)
        self._key = f"{PREFIX}{scope}"[:160]
        self._failures_key = f"{PREFIX}{scope}:failures"[:160]

    def _pause_for(self, failures: int) -> float:
        steps = max(0, failures - self.threshold)
        return float(min(self.max_pause, self.pause * 2.0 ** min(steps, 30)))

    def _lock(self, session: Session) -> tuple[float, int]:
        insert = dialect_insert(session, _R)
        session.execute(
            insert.values(
                [{"key": self._key, "next_at": 0.0}, {"key": self._failures_key, "next_at": 0.0}]
            ).on_conflict_do_nothing()
        )
        rows = dict(
            session.execute(
                select(_R.key, _R.next_at)
                .where(_R.key.in_((self._key, self._failures_key)))
                .order_by(_R.key)
                .with_for_update()
            ).all()
        )
        return float(rows[self._key]), int(rows[self._failures_key])

    def _write(self, session: Session, paused_until: float, failures: int) -> None:
        session.execute(update(_R).where(_R.key == self._key).values(next_at=paused_until))
        session.execute(
            update(_R).where(_R.key == self._failures_key).values(next_at=float(failures))
        )

    def state(self) -> BreakerState:
        """The current state (closed when the rows do not exist yet)."""
        with Session(self.engine) as session:
            rows = dict(
                session.execute(
                    select(_R.key, _R.next_at).where(_R.key.in_((self._key, self._failures_key)))
                ).all()
            )
        return BreakerState(
            self.scope,
            float(rows.get(self._key, 0.0)),
            int(rows.get(self._failures_key, 0.0)),
        )

    def record_failure(self, now: float) -> BreakerState:
        """Count a channel-wide failure; the state after it (open once ``threshold`` in a row)."""
        with Session(self.engine) as session, session.begin():
            paused_until, failures = self._lock(session)
            failures += 1
            if paused_until <= now and failures >= self.threshold:
                paused_until = now + self._pause_for(failures)
            self._write(session, paused_until, failures)
        return BreakerState(self.scope, paused_until, failures)

    def record_success(self) -> None:
        """Close the breaker: the channel answered."""
        with Session(self.engine) as session, session.begin():
            paused_until, failures = self._lock(session)
            if paused_until or failures:
                self._write(session, 0.0, 0)

    def claim_probe(self, now: float, timeout: float) -> bool:
        """Take the probe of a paused channel whose pause is over; False when another worker
        did (or the channel is not paused). The probe holds the channel for ``timeout``."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(_R)
                .where(_R.key == self._key, _R.next_at > 0, _R.next_at <= now)
                .values(next_at=now + timeout)
            )
            return int(result.rowcount) == 1  # type: ignore[attr-defined]

    def probe_failed(self, now: float) -> BreakerState:
        """The probe failed: pause again, longer (up to ``max_pause``)."""
        with Session(self.engine) as session, session.begin():
            _paused, failures = self._lock(session)
            failures = max(failures, self.threshold) + 1
            paused_until = now + self._pause_for(failures)
            self._write(session, paused_until, failures)
        return BreakerState(self.scope, paused_until, failures)


def paused_channels(session: Session) -> list[BreakerState]:
    """Every channel scope whose breaker is open or probing (for ``tradelog status``)."""
    rows = dict(session.execute(select(_R.key, _R.next_at).where(_R.key.startswith(PREFIX))).all())
    states = []
    for key, until in sorted(rows.items()):
        if key.endswith(":failures") or float(until) <= 0:
            continue
        scope = key[len(PREFIX) :]
        failures = int(rows.get(f"{key}:failures", 0.0))
        states.append(BreakerState(scope, float(until), failures))
    return states
