"""The outbox of per-channel deliveries: claiming due rows, recording outcomes, the backlog.

Claiming is one statement, so two workers never hold the same delivery::

    UPDATE notification_deliveries
       SET status = 'sending', claimed_by = :worker, attempts = attempts + 1,
           next_attempt_at = :lease_expiry, ...
     WHERE id IN (SELECT id FROM notification_deliveries
                   WHERE status IN ('pending', 'sending') AND next_attempt_at <= :now
                   ORDER BY next_attempt_at, id LIMIT :n
                     FOR UPDATE SKIP LOCKED)          -- PostgreSQL only
    RETURNING ...

On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several workers claim disjoint batches without
waiting for each other; on SQLite the statement takes the database write lock, which
serialises claims. A ``sending`` row's ``next_attempt_at`` is the lease expiry: if its worker
dies, the row becomes due again once the lease runs out and another worker claims it.

Every outcome is recorded with a guard ``claimed_by = :worker AND status = 'sending'``: a
worker whose lease was taken over records nothing (and logs that it lost the claim). Finished
rows keep ``claimed_by``: it names the worker that sent (or gave up on) the delivery.

Unserved channels: a Telegram delivery needs a worker with a bot token, an email one a worker
with an SMTP host. When a due delivery has waited longer than
``TRADELOG_UNSERVED_DELIVERY_TIMEOUT`` (default 15 minutes) and no worker claimed *any*
delivery on its channel in that time, a worker that cannot send the channel fails it with the
reason (:func:`fail_unserved`), so a deployment without a token or SMTP host shows up as failed
deliveries with a reason, log lines and ``tradelog status``, not as a silently growing backlog.
A busy worker for that channel keeps claiming, so a long queue behind the rate limit is never
failed this way. ``tradelog notify retry`` queues such deliveries again once a worker is set up.

Leases: a claim holds for ``TRADELOG_WORKER_LEASE`` seconds (30) and the worker renews the
claims it holds every third of that (:func:`renew`) for as long as it has them, in flight or
queued; a claim nobody renews (its worker was killed) is due again once the lease ran out and
shows as ``stuck`` in :func:`backlog_summary` meanwhile.

At-least-once windows (everything else is exactly once):

* a worker killed after the channel accepted a message (or a Telegram part) but before its
  outcome is committed leaves the row ``sending``: after the lease another worker sends that
  message (part) again;
* a send whose answer does not arrive within the client timeout (``TRADELOG_TELEGRAM_TIMEOUT``,
  ``TRADELOG_SMTP_TIMEOUT``) is retried, though the service may have accepted it: the user may
  get it twice (an email copy carries the same ``Message-ID``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from tradelog._access import Actor, scoped
from tradelog._db.base import utcnow
from tradelog._db.models import Notification, NotificationDelivery, NotificationRateLimit
from tradelog._logs.redact import redact_text
from tradelog._notify.listen import DELIVERIES_CHANNEL, announce_once
from tradelog.exceptions import ConflictError, NotFound

__all__ = [
    "ClaimedDelivery",
    "UnservedDelivery",
    "backlog_summary",
    "check_retryable",
    "claim",
    "claim_digest_members",
    "fail_unserved",
    "mark_failed",
    "mark_retry",
    "mark_sent",
    "mark_suppressed",
    "record_progress",
    "release",
    "renew",
    "requeue_failed",
]

ERROR_LIMIT: Final = 1024
_D = NotificationDelivery
_SENT_FLAGS: Final = {"telegram": "telegram_sent", "email": "email_sent"}


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a worker holds (status ``sending``) until it records an outcome."""

    id: int
    notification_id: int
    user_id: int
    channel: str
    attempts: int
    not_before: datetime | None
    silent: bool
    parts_sent: int

    @property
    def deferred(self) -> bool:
        """Whether quiet hours held this delivery back (deferred rows may be digested)."""
        return self.not_before is not None


_RETURNING = (
    _D.id,
    _D.notification_id,
    _D.user_id,
    _D.channel,
    _D.attempts,
    _D.not_before,
    _D.silent,
    _D.parts_sent,
)


def _claimed(rows: Sequence[Any]) -> list[ClaimedDelivery]:
    found = [ClaimedDelivery(*row) for row in rows]
    return sorted(found, key=lambda c: c.id)


def _claim_values(worker: str, now: datetime, lease: float) -> dict[str, Any]:
    return {
        "status": "sending",
        "claimed_by": worker[:128],
        "claimed_at": now,
        "attempts": _D.attempts + 1,
        "next_attempt_at": now + timedelta(seconds=lease),
        "updated_at": now,
    }


def claim(
    engine: Engine,
    worker: str,
    *,
    limit: int,
    lease: float,
    now: datetime | None = None,
    channels: Sequence[str] | None = None,
) -> list[ClaimedDelivery]:
    """Claim up to ``limit`` due deliveries (pending and due, or sending with an expired lease).

    ``channels`` restricts the claim to those channels (a worker only claims what it can send).
    """
    now = now or utcnow()
    due = (
        select(_D.id)
        .where(_D.status.in_(("pending", "sending")), _D.next_attempt_at <= now)
        .order_by(_D.next_attempt_at, _D.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if channels is not None:
        due = due.where(_D.channel.in_(tuple(channels)))
    statement = (
        update(_D)
        .where(_D.id.in_(due.scalar_subquery()))
        .values(**_claim_values(worker, now, lease))
        .returning(*_RETURNING)
        .execution_options(synchronize_session=False)
    )
    with Session(engine) as session, session.begin():
        return _claimed(session.execute(statement).all())


def claim_digest_members(
    engine: Engine,
    worker: str,
    carrier: ClaimedDelivery,
    *,
    lease: float,
    limit: int = 100,
    now: datetime | None = None,
) -> list[ClaimedDelivery]:
    """Claim the other due, deferred deliveries of ``carrier``'s user and channel.

    They are released together with ``carrier`` as one digest message.
    """
    now = now or utcnow()
    due = (
        select(_D.id)
        .where(
            _D.user_id == carrier.user_id,
            _D.channel == carrier.channel,
            _D.status == "pending",
            _D.not_before.is_not(None),
            _D.next_attempt_at <= now,
            _D.id != carrier.id,
        )
        .order_by(_D.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(_D)
        .where(_D.id.in_(due.scalar_subquery()))
        .values(**_claim_values(worker, now, lease))
        .returning(*_RETURNING)
        .execution_options(synchronize_session=False)
    )
    with Session(engine) as session, session.begin():
        return _claimed(session.execute(statement).all())


def _owned(ids: Sequence[int], worker: str) -> Any:
    return and_(_D.id.in_(tuple(ids)), _D.claimed_by == worker[:128], _D.status == "sending")


def _finish(engine: Engine, ids: Sequence[int], worker: str, values: dict[str, Any]) -> int:
    statement = (
        update(_D)
        .where(_owned(ids, worker))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    with Session(engine) as session, session.begin():
        return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def _error(text: str) -> str:
    """A ``last_error`` value: scrubbed first, then cut to the column."""
    text = redact_text(text)
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "\u2026"


def mark_sent(
    engine: Engine,
    carrier_id: int,
    member_ids: Sequence[int],
    worker: str,
    *,
    channel: str,
    parts_sent: int = 0,
    now: datetime | None = None,
) -> int:
    """Record a successful send: the carrier ``sent``, digest members ``digested``.

    Sets ``telegram_sent``/``email_sent`` on every notification involved. Returns how many
    deliveries this worker still owned (fewer than expected means a lost lease).
    """
    now = now or utcnow()
    common = {"sent_at": now, "updated_at": now, "last_error": None}
    flag = _SENT_FLAGS[channel]
    with Session(engine) as session, session.begin():
        changed = session.execute(
            update(_D)
            .where(_owned([carrier_id], worker))
            .values(status="sent", parts_sent=parts_sent, **common)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if member_ids:
            changed += session.execute(
                update(_D)
                .where(_owned(member_ids, worker))
                .values(status="digested", digest_id=carrier_id, **common)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        notification_ids = select(_D.notification_id).where(
            _D.id.in_((carrier_id, *member_ids)), _D.status.in_(("sent", "digested"))
        )
        session.execute(
            update(Notification)
            .where(Notification.id.in_(notification_ids.scalar_subquery()))
            .values({flag: True})
            .execution_options(synchronize_session=False)
        )
    return int(changed)


def mark_retry(
    engine: Engine,
    ids: Sequence[int],
    worker: str,
    *,
    error: str,
    next_attempt_at: datetime,
    parts_sent: int | None = None,
    now: datetime | None = None,
) -> int:
    """Put deliveries back to ``pending`` until ``next_attempt_at`` after a transient failure."""
    values = _failure_values("pending", error, parts_sent, now)
    values |= {"claimed_by": None, "next_attempt_at": next_attempt_at}
    return _finish(engine, ids, worker, values)


def release(
    engine: Engine,
    ids: Sequence[int],
    worker: str,
    *,
    next_attempt_at: datetime,
    now: datetime | None = None,
    error: str | None = None,
    parts_sent: int | None = None,
) -> int:
    """Hand deliveries back without counting an attempt: the worker stopped, or it was told
    to wait (a rate limit, Telegram's ``retry_after``, a paused channel). ``error`` records
    why it waits in ``last_error``."""
    values: dict[str, Any] = {
        "status": "pending",
        "claimed_by": None,
        "next_attempt_at": next_attempt_at,
        "attempts": case((_D.attempts > 0, _D.attempts - 1), else_=0),
        "updated_at": now or utcnow(),
    }
    if error is not None:
        values["last_error"] = _error(error)
    if parts_sent is not None:
        values["parts_sent"] = parts_sent
    return _finish(engine, ids, worker, values)


def mark_failed(
    engine: Engine,
    ids: Sequence[int],
    worker: str,
    *,
    error: str,
    parts_sent: int | None = None,
    now: datetime | None = None,
) -> int:
    """Record a permanent failure (or exhausted retries) with its reason."""
    return _finish(engine, ids, worker, _failure_values("failed", error, parts_sent, now))


def _failure_values(
    status: str, error: str, parts_sent: int | None, now: datetime | None
) -> dict[str, Any]:
    """Column values shared by a retry and a final failure."""
    values: dict[str, Any] = {
        "status": status,
        "last_error": _error(error),
        "updated_at": now or utcnow(),
    }
    if parts_sent is not None:
        values["parts_sent"] = parts_sent
    return values


def mark_suppressed(
    engine: Engine, ids: Sequence[int], worker: str, *, reason: str, now: datetime | None = None
) -> int:
    """Record that deliveries were deliberately not sent (``reason``), e.g. channel switched off."""
    return _finish(
        engine,
        ids,
        worker,
        {
            "status": "suppressed",
            "last_error": _error(reason),
            "updated_at": now or utcnow(),
        },
    )


def record_progress(
    engine: Engine,
    delivery_id: int,
    worker: str,
    *,
    parts_sent: int,
    lease: float,
    now: datetime | None = None,
) -> bool:
    """Store how many parts went out and extend the lease; False if the claim was lost."""
    now = now or utcnow()
    return (
        _finish(
            engine,
            [delivery_id],
            worker,
            {
                "parts_sent": parts_sent,
                "next_attempt_at": now + timedelta(seconds=lease),
                "updated_at": now,
            },
        )
        == 1
    )


def renew(
    engine: Engine,
    ids: Sequence[int],
    worker: str,
    *,
    lease: float,
    now: datetime | None = None,
) -> int:
    """Extend this worker's claims on ``ids`` to ``now + lease``; returns how many it still
    held (fewer means a lease ran out and another worker took the delivery over)."""
    if not ids:
        return 0
    now = now or utcnow()
    return _finish(engine, ids, worker, {"next_attempt_at": now + timedelta(seconds=lease)})


@dataclass(frozen=True)
class UnservedDelivery:
    """A delivery :func:`fail_unserved` failed."""

    id: int
    notification_id: int
    user_id: int
    due_at: datetime


def fail_unserved(
    engine: Engine,
    channel: str,
    *,
    timeout: float,
    reason: str,
    now: datetime | None = None,
) -> list[UnservedDelivery]:
    """Fail ``channel`` deliveries due for over ``timeout`` seconds that no worker serves.

    Nothing happens while any ``channel`` delivery was claimed within ``timeout``, or a worker
    probed the paused channel within it (a worker for the channel is alive, maybe just busy or
    waiting out an outage). Returns the deliveries failed with ``reason``.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=timeout)
    overdue = and_(_D.channel == channel, _D.status == "pending", _D.next_attempt_at <= cutoff)
    with Session(engine) as session, session.begin():
        if session.execute(select(_D.id).where(overdue).limit(1)).first() is None:
            return []
        served = select(_D.id).where(_D.channel == channel, _D.claimed_at >= cutoff).limit(1)
        if session.execute(served).first() is not None:
            return []
        probing = select(NotificationRateLimit.key).where(
            NotificationRateLimit.key.startswith(f"breaker:{channel}:"),
            NotificationRateLimit.next_at >= cutoff.timestamp(),
        )
        if session.execute(probing.limit(1)).first() is not None:
            return []
        rows = session.execute(
            update(_D)
            .where(overdue)
            .values(status="failed", last_error=_error(reason), updated_at=now)
            .returning(_D.id, _D.notification_id, _D.user_id, _D.next_attempt_at)
            .execution_options(synchronize_session=False)
        ).all()
    return sorted((UnservedDelivery(*row) for row in rows), key=lambda d: d.id)


def check_retryable(session: Session, actor: Actor, ids: Sequence[int]) -> None:
    """Every named delivery must exist, be visible to ``actor`` (:class:`NotFound` otherwise)
    and have failed (:class:`ConflictError` otherwise)."""
    found = {
        d.id: d
        for d in session.execute(
            scoped(select(_D), _D.user_id, actor).where(_D.id.in_(tuple(ids)))
        ).scalars()
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no delivery with id {', '.join(map(str, missing))}")
    busy = [f"{i} ({found[i].status})" for i in ids if found[i].status != "failed"]
    if busy:
        raise ConflictError(f"only failed deliveries can be retried; not failed: {', '.join(busy)}")


def requeue_failed(
    session: Session, *, delivery_ids: Sequence[int] | None = None, user_id: int | None = None
) -> int:
    """Make failed deliveries pending again with a fresh attempt budget; returns the count.

    The caller commits. With neither filter every failed delivery is requeued.
    """
    statement = update(_D).where(_D.status == "failed")
    if delivery_ids is not None:
        statement = statement.where(_D.id.in_(tuple(delivery_ids)))
    if user_id is not None:
        statement = statement.where(_D.user_id == user_id)
    now = utcnow()
    result = session.execute(
        statement.values(
            status="pending", attempts=0, next_attempt_at=now, updated_at=now
        ).execution_options(synchronize_session=False)
    )
    changed = int(result.rowcount)  # type: ignore[attr-defined]
    if changed:
        announce_once(session, DELIVERIES_CHANNEL)  # the workers hear of it at commit
    return changed


def backlog_summary(
    session: Session,
    *,
    now: datetime | None = None,
    recent_failures: int = 5,
    overdue_after: float = 900.0,
    max_attempts: int = 8,
) -> dict[str, Any]:
    """The outbox at a glance, for ``tradelog status`` (plain JSON-friendly values).

    Keys: ``pending`` (all not yet sent), ``due`` (pending and due now), ``overdue`` (due for
    over ``overdue_after`` seconds: no worker is sending them; is one running, with that
    channel configured?), ``deferred`` (held by quiet hours), ``sending``, ``stuck`` (sending
    with a lease nobody renewed: its worker died), ``last_attempt`` (pending deliveries whose
    next attempt is their last of ``max_attempts``), ``failed`` (failed for good),
    ``failed_24h``, ``sent_24h``, ``oldest_due_at`` (ISO UTC or None), ``by_channel``
    (``{channel: {status: count}}``) and ``recent_failures`` (newest failed deliveries with
    their reasons).
    """
    now = now or utcnow()
    day_ago = now - timedelta(days=1)
    late = now - timedelta(seconds=overdue_after)
    pending = _D.status == "pending"
    counts = session.execute(
        select(
            func.count().filter(pending),
            func.count().filter(pending, _D.next_attempt_at <= now),
            func.count().filter(pending, _D.not_before.is_not(None), _D.next_attempt_at > now),
            func.count().filter(_D.status == "sending"),
            func.count().filter(_D.status == "sending", _D.next_attempt_at <= now),
            func.count().filter(_D.status == "failed"),
            func.count().filter(_D.status == "failed", _D.updated_at >= day_ago),
            func.count().filter(
                _D.status.in_(("sent", "digested")), _D.sent_at.is_not(None), _D.sent_at >= day_ago
            ),
            func.min(_D.next_attempt_at).filter(or_(pending, _D.status == "sending")),
            func.count().filter(pending, _D.next_attempt_at <= late),
            func.count().filter(pending, _D.attempts >= max(0, max_attempts - 1)),
        ).where(
            or_(
                _D.status.in_(("pending", "sending", "failed")),
                _D.updated_at >= day_ago,
            )
        )
    ).one()
    by_channel: dict[str, dict[str, int]] = {}
    for channel, status, count, overdue in session.execute(
        select(
            _D.channel,
            _D.status,
            func.count(),
            func.count().filter(pending, _D.next_attempt_at <= late),
        )
        .where(_D.status.in_(("pending", "sending", "failed")))
        .group_by(_D.channel, _D.status)
    ):
        by_channel.setdefault(channel, {})[status] = int(count)
        if overdue:
            by_channel[channel]["overdue"] = int(overdue)
    failures = session.execute(
        select(
            _D.id,
            _D.notification_id,
            _D.user_id,
            _D.channel,
            _D.attempts,
            _D.last_error,
            _D.updated_at,
        )
        .where(_D.status == "failed")
        .order_by(_D.updated_at.desc(), _D.id.desc())
        .limit(recent_failures)
    ).all()
    oldest = counts[8]
    return {
        "pending": int(counts[0]),
        "due": int(counts[1]),
        "overdue": int(counts[9]),
        "deferred": int(counts[2]),
        "sending": int(counts[3]),
        "stuck": int(counts[4]),
        "last_attempt": int(counts[10]),
        "failed": int(counts[5]),
        "failed_24h": int(counts[6]),
        "sent_24h": int(counts[7]),
        "oldest_due_at": oldest.isoformat() if oldest is not None else None,
        "by_channel": by_channel,
        "recent_failures": [
            {
                "delivery_id": row.id,
                "notification_id": row.notification_id,
                "user_id": row.user_id,
                "channel": row.channel,
                "attempts": row.attempts,
                "error": row.last_error,
                "at": row.updated_at.isoformat() if row.updated_at else None,
            }
            for row in failures
        ],
    }
