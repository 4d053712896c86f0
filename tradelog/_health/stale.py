"""Watching heartbeats: a service stale past the threshold alerts once per episode, and again
when it ends.

:class:`StaleMonitor` runs in the process that runs the delivery worker (the runtime starts it
with ``TRADELOG_WORKER=true``; ``tradelog worker`` runs one too), every
``TRADELOG_STALE_CHECK_INTERVAL`` seconds. Each check (:meth:`StaleMonitor.check_once`):

1. ends the open episodes whose service sent a heartbeat since (``recovered``) or was marked
   stopped (``stopped``);
2. opens an episode for each service marked running whose last heartbeat is older than
   ``TRADELOG_STALE_HEARTBEAT_SECONDS`` (:func:`tradelog._health.status.stale_services`).

An episode is a ``service_stale_episodes`` row named by the user and the heartbeat it went stale
after, so any number of monitors agree: the one whose ``INSERT ... ON CONFLICT DO NOTHING``
inserts it alerts, and the one whose guarded ``UPDATE`` ends it announces the end. The alerts
are written in the same transaction as the row (a failure rolls both back and the next check
tries again) with the dedupe keys ``stale:<episode>`` / ``stale-end:<episode>``.

Who hears: the operators (:func:`tradelog._recipients.operator_ids`) with the detail; the
owner with a sentence - "Your trading service has not reported since 10:42 IST; the operators
have been told." - and, when heartbeats resume, that it is back. A service stopped while stale
is announced to the operators only (the owner gets ``mark_stopped``'s own notice). All are
``service`` notifications: ``warning`` when stale, ``info`` when it ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._db.models import ServiceStaleEpisode, ServiceStatus
from tradelog._db.upsert import dialect_insert
from tradelog._health.status import stale_services
from tradelog._health.writer import describe_failure
from tradelog._recipients import describe_user, local_time, operator_ids, user_zone
from tradelog._signals import block_in_this_thread

__all__ = ["StaleCheck", "StaleMonitor"]

_log: Final = logging.getLogger("tradelog.service")

SendFn = Callable[..., Any]


@dataclass
class StaleCheck:
    """What one check did: the episodes it opened and ended (ids)."""

    opened: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


def _minutes(delta: timedelta) -> str:
    minutes = max(0, round(delta.total_seconds() / 60))
    return f"{minutes} min"


class StaleMonitor:
    """Checks heartbeats with ``engine`` and alerts through ``send`` (the notification service's
    ``notify``); see the module docstring. ``operators`` are the configured extra operator ids.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        send: SendFn,
        threshold: float,
        interval: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        operators: Iterable[int] = (),
    ) -> None:
        self.engine = engine
        self._send = send
        self.threshold = timedelta(seconds=threshold)
        self.interval = interval
        self.clock = clock
        self.operators = tuple(operators)
        self.checks = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> StaleMonitor:
        """Check in a daemon thread until :meth:`stop` (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tradelog-stale", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits up to ``timeout`` for a check under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        block_in_this_thread()
        while not self._stop.is_set():
            self.run_check()
            if self._stop.wait(self.interval):
                return

    def run_check(self) -> StaleCheck | None:
        """One check; a failure is logged and counted, never raised."""
        try:
            result = self.check_once()
        except Exception as exc:
            self.failures += 1
            _log.warning("tradelog could not check heartbeats: %s", describe_failure(exc))
            return None
        self.checks += 1
        return result

    # -- one check ---------------------------------------------------------------------------

    def check_once(self, now: datetime | None = None) -> StaleCheck:
        """End what is over, then open what went stale (see the module docstring)."""
        at = now or self.clock()
        result = StaleCheck()
        with Session(self.engine, expire_on_commit=False) as session:
            operators = operator_ids(session, self.operators)
            open_episodes = session.execute(
                select(ServiceStaleEpisode, ServiceStatus)
                .join(ServiceStatus, ServiceStatus.user_id == ServiceStaleEpisode.user_id)
                .where(ServiceStaleEpisode.ended_at.is_(None))
                .order_by(ServiceStaleEpisode.id)
            ).all()
            stale = stale_services(session, at, self.threshold)
            session.commit()
        for episode, status in open_episodes:
            ended_by = self._ended_by(episode, status)
            if ended_by is not None and self._end(episode, status, ended_by, at, operators):
                result.ended.append(episode.id)
        for status in stale:
            opened = self._open(status, at, operators)
            if opened is not None:
                result.opened.append(opened)
        return result

    @staticmethod
    def _ended_by(episode: ServiceStaleEpisode, status: ServiceStatus) -> str | None:
        if not status.service_running:
            return "stopped"
        if status.last_heartbeat is not None and status.last_heartbeat > episode.since:
            return "recovered"
        return None

    def _open(self, status: ServiceStatus, at: datetime, operators: list[int]) -> int | None:
        since = status.last_heartbeat or status.created_at
        with Session(self.engine) as session:
            episode = session.execute(
                dialect_insert(session, ServiceStaleEpisode)
                .values(user_id=status.user_id, since=since, detected_at=at)
                .on_conflict_do_nothing(index_elements=["user_id", "since"])
                .returning(ServiceStaleEpisode.id)
            ).scalar_one_or_none()
            if episode is None:
                session.commit()
                return None
            owner = status.user_id
            who = describe_user(session, owner)
            for operator in operators:
                when = local_time(since, user_zone(session, operator), now=at)
                self._send(
                    operator,
                    "service",
                    "warning",
                    f"Service stale: user {owner}",
                    f"{who}: marked running, no heartbeat since {when} ({_minutes(at - since)}; "
                    f"threshold {_minutes(self.threshold)}).\ndetails: tradelog status",
                    dedupe_key=f"stale:{episode}",
                    session=session,
                )
            if owner not in operators:
                when = local_time(since, user_zone(session, owner), now=at)
                told = "; the operators have been told." if operators else "."
                self._send(
                    owner,
                    "service",
                    "warning",
                    "Service not responding",
                    f"Your trading service has not reported since {when}{told}",
                    dedupe_key=f"stale:{episode}",
                    session=session,
                )
            session.commit()
        return int(episode)

    def _end(
        self,
        episode: ServiceStaleEpisode,
        status: ServiceStatus,
        ended_by: str,
        at: datetime,
        operators: list[int],
    ) -> bool:
        with Session(self.engine) as session:
            ended = session.execute(
                update(ServiceStaleEpisode)
                .where(ServiceStaleEpisode.id == episode.id, ServiceStaleEpisode.ended_at.is_(None))
                .values(ended_at=at, ended_by=ended_by)
                .returning(ServiceStaleEpisode.id)
            ).first()
            if ended is None:
                session.commit()
                return False
            owner = episode.user_id
            who = describe_user(session, owner)
            back = status.last_heartbeat if ended_by == "recovered" else None
            for operator in operators:
                zone = user_zone(session, operator)
                if back is not None:
                    title = f"Service recovered: user {owner}"
                    text = (
                        f"{who}: heartbeats resumed at {local_time(back, zone, now=at)} "
                        f"after {_minutes(back - episode.since)} without one."
                    )
                else:
                    title = f"Service stopped while stale: user {owner}"
                    text = f"{who}: marked stopped; it had been stale since " + local_time(
                        episode.since, zone, now=at
                    )
                self._send(
                    operator,
                    "service",
                    "info",
                    title,
                    text,
                    dedupe_key=f"stale-end:{episode.id}",
                    session=session,
                )
            if back is not None and owner not in operators:
                when = local_time(back, user_zone(session, owner), now=at)
                self._send(
                    owner,
                    "service",
                    "info",
                    "Service reporting again",
                    f"Your trading service is reporting again (since {when}).",
                    dedupe_key=f"stale-end:{episode.id}",
                    session=session,
                )
            session.commit()
        return True
