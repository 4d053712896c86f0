"""Live inbox streams: one thread per router finds new notifications and hands them to streams.

Each open ``GET /notifications/stream`` is a :class:`Subscription` (its user, the id it starts
after, an ``asyncio`` queue on the server's event loop). The hub's thread runs while anyone is
subscribed and asks the database for notifications of the subscribed users:

* when woken: by PostgreSQL (``LISTEN`` on :data:`~tradelog._notify.listen.NOTIFICATIONS_CHANNEL`,
  which every ``notify()`` announces at commit, from any process; the payload names the new
  row), or by this process's own ``notify()`` calls (the runtime's
  :class:`~tradelog._notify.wakeup.Wakeups`);
* and by polling: every ``poll_interval`` (0.5 s) on SQLite, with ``TRADELOG_LISTEN=off`` or
  while the listener is down, every ``listen_poll_interval`` (2 s) as a safety net while it
  listens. When the listener loses its connection, and again when it listens anew, the hub
  looks at once: what was committed while nobody listened is found by that look.

One query per round serves every stream: ``user_id IN (subscribed) AND (id > floor OR id IN
(named by wake-ups))``, ``floor`` being the highest id in the table :data:`LOOKBACK` seconds
ago, so a row whose transaction committed a little after a later-numbered one is still found,
and the range each round reads stays small however many notifications other users get. A row goes
to each subscription of its user that starts before it and has not had it yet; the stream
itself also drops what it already sent (its replay and the hub may both find a row), so every
notification reaches a stream exactly once.

A stream whose queue holds more than :data:`QUEUE_LIMIT` events (a client that stopped
reading) is ended; the client reconnects with ``Last-Event-ID`` and catches up from the
database. The thread stops :data:`IDLE_STOP` seconds after the last subscription ends, and on
:meth:`StreamHub.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from tradelog._db.engine import create_tradelog_engine
from tradelog._db.models import Notification
from tradelog._notify.listen import NOTIFICATIONS_CHANNEL, Listener
from tradelog._notify.wakeup import Wakeups
from tradelog._signals import block_in_this_thread

__all__ = ["IDLE_STOP", "LISTENER_NAME", "LOOKBACK", "QUEUE_LIMIT", "StreamHub", "Subscription"]

LISTENER_NAME: Final = "tradelog-web-listen"
"""The ``application_name`` of the listening connection (``pg_stat_activity`` shows it)."""
LOOKBACK: Final = 10.0
"""Seconds a round looks back for rows that committed after later-numbered ones."""
QUEUE_LIMIT: Final = 1000
"""Events one stream may have waiting before it is ended (its client catches up on reconnect)."""
IDLE_STOP: Final = 30.0
"""Seconds without any subscription after which the hub's thread stops."""
_MAX_HINTS: Final = 10_000

_log = logging.getLogger("tradelog.web")


@dataclass(eq=False)
class Subscription:
    """One live stream: ``user_id``'s notifications with an id above ``after``.

    ``queue`` receives :class:`~sqlalchemy.engine.Row`-free dicts from the hub (on ``loop``),
    and ``None`` when the stream must end.
    """

    user_id: int
    after: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    ended: bool = False
    pushed: set[int] = field(default_factory=set)
    """Ids the hub handed to this stream (read and written on the hub's thread only)."""

    def offer(self, event: dict[str, Any] | None) -> None:
        """Queue ``event`` (on the loop's thread); past :data:`QUEUE_LIMIT`, end the stream."""
        if self.ended:
            return
        if event is not None and self.queue.qsize() >= QUEUE_LIMIT:
            event = None
        if event is None:
            self.ended = True
        self.queue.put_nowait(event)


class StreamHub:
    """Finds new notifications for the live streams of one router (see the module docstring).

    ``sessions`` opens a session on the runtime's database, ``engine`` gives its engine (the
    listener opens its own connection to the same database), ``wakeups`` the registry this
    process's ``notify()`` rings, ``serialize`` turns a notification row into a stream event,
    ``poll_interval`` gives the seconds between polls while nothing wakes the hub; ``listen``
    whether to ``LISTEN`` on PostgreSQL (``TRADELOG_LISTEN``; off, the hub only polls).
    """

    def __init__(
        self,
        sessions: Callable[[], Session],
        engine: Callable[[], Engine],
        *,
        serialize: Callable[[Notification], dict[str, Any]],
        wakeups: Callable[[], Wakeups | None] = lambda: None,
        poll_interval: Callable[[], float] = lambda: 0.5,
        listen_poll_interval: float = 2.0,
        listen: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = sessions
        self._engine = engine
        self._serialize = serialize
        self._wakeups = wakeups
        self.poll_interval = poll_interval
        self.listen_poll_interval = listen_poll_interval
        self.listen = listen
        self._lock = threading.Lock()
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._fresh: list[Subscription] = []
        self._hints: set[int] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None
        self.rounds = 0
        """How many times the hub asked the database (for tests and measurements)."""

    # -- for streams ---------------------------------------------------------------------

    def subscribe(self, user_id: int, after: int) -> Subscription:
        """Register a stream of ``user_id``'s notifications with an id above ``after``; starts
        the hub's thread when it is not running. Call from the event loop."""
        subscription = Subscription(user_id, after, asyncio.get_running_loop())
        with self._lock:
            self._subscriptions.setdefault(user_id, set()).add(subscription)
            self._fresh.append(subscription)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="tradelog-web-streams", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its stream ended)."""
        subscription.ended = True
        with self._lock:
            found = self._subscriptions.get(subscription.user_id)
            if found is not None:
                found.discard(subscription)
                if not found:
                    del self._subscriptions[subscription.user_id]

    def wake(self) -> None:
        """Look at the database now (thread-safe, never blocks)."""
        self._wake.set()

    def heard(self, channel: str, payload: str) -> None:
        """A ``NOTIFY`` on the notifications channel: ``"<user_id>:<id>"``."""
        user, _, ident = payload.partition(":")
        with contextlib.suppress(ValueError):
            with self._lock:
                if int(user) in self._subscriptions and len(self._hints) < _MAX_HINTS:
                    self._hints.add(int(ident))
            self._wake.set()

    def _listener_changed(self, connected: bool) -> None:
        """Lost: poll at the fast rate from now. (Re)connected: look once more, for what was
        committed while nobody listened."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the hub's thread runs."""
        return self._thread is not None

    @property
    def listening(self) -> bool:
        """Whether the hub hears PostgreSQL's wake-ups now."""
        listener = self._listener
        return listener is not None and listener.connected

    def close(self, timeout: float = 5.0) -> None:
        """End every stream and stop the thread."""
        with self._lock:
            subscriptions = [s for found in self._subscriptions.values() for s in found]
            self._subscriptions.clear()
            thread, self._thread = self._thread, None
        for subscription in subscriptions:
            _offer(subscription, None)
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        block_in_this_thread()
        unsubscribe: Callable[[], None] | None = None
        listen_engine: Engine | None = None
        listener: Listener | None = None
        try:
            wakeups = self._wakeups()
            if wakeups is not None:
                unsubscribe = wakeups.subscribe(self.wake)
            engine = self._engine()
            if engine.dialect.name == "postgresql" and self.listen():
                named = engine.url.update_query_dict({"application_name": LISTENER_NAME})
                listen_engine = create_tradelog_engine(named, poolclass=NullPool)
                listener = Listener(
                    listen_engine,
                    [NOTIFICATIONS_CHANNEL],
                    self.heard,
                    on_state=self._listener_changed,
                    name=LISTENER_NAME,
                )
                self._listener = listener.start()
            self._loop()
        except Exception:  # pragma: no cover - the loop itself survives database failures
            _log.exception("the live notification streams stopped")
        finally:
            if listener is not None:
                listener.stop()
                if self._listener is listener:
                    self._listener = None
            if listen_engine is not None:
                listen_engine.dispose()
            if unsubscribe is not None:
                unsubscribe()
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _loop(self) -> None:
        floor: int | None = None
        tops: deque[tuple[float, int]] = deque()
        idle_since: float | None = None
        failures = 0
        while not self._stop.is_set():
            wait = self.listen_poll_interval if self.listening else self.poll_interval()
            if failures:
                wait = min(wait * (2**failures), 5.0)
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                users = sorted(self._subscriptions)
                fresh, self._fresh = self._fresh, []
                hints, self._hints = self._hints, set()
                if not users:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= IDLE_STOP:
                        self._thread = None
                        return
                    continue
            idle_since = None
            try:
                if floor is None:
                    floor = self._top_id()
                for subscription in fresh:
                    self._catch_up(subscription, floor)
                top = self._round(users, floor, hints)
                failures = 0
            except Exception as exc:
                failures = min(failures + 1, 4)
                with self._lock:
                    self._fresh.extend(s for s in fresh if not s.ended)
                    self._hints.update(hints)
                _log.warning("live streams could not read new notifications: %s", exc)
                continue
            now = time.monotonic()
            tops.append((now, top))
            while len(tops) > 1 and tops[1][0] <= now - LOOKBACK:
                tops.popleft()
            if tops[0][0] <= now - LOOKBACK:
                floor = max(floor, tops[0][1])

    def _top_id(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.max(Notification.id))) or 0)

    def _round(self, users: Iterable[int], floor: int, hints: set[int]) -> int:
        """One query for every subscribed user; returns the highest id it saw."""
        self.rounds += 1
        newer = Notification.id > floor
        where = or_(newer, Notification.id.in_(sorted(hints))) if hints else newer
        with self._sessions() as session:
            # Read first: every id up to it is taken, so the floor may rise to it once the
            # look-back has passed, even while the subscribed users get nothing.
            highest = int(session.scalar(select(func.max(Notification.id))) or 0)
            rows = session.scalars(
                select(Notification)
                .where(Notification.user_id.in_(list(users)), where)
                .order_by(Notification.id)
            ).all()
            return max(highest, self._hand_out(rows, floor))

    def _catch_up(self, subscription: Subscription, floor: int) -> None:
        """What a new stream missed: its user's rows after its start, up to ``floor`` (the
        rounds find the rest). A stream that missed more than :data:`QUEUE_LIMIT` gets that
        many and ends; its client reconnects from the last one."""
        if subscription.ended or subscription.after >= floor:
            return
        with self._sessions() as session:
            rows = session.scalars(
                select(Notification)
                .where(
                    Notification.user_id == subscription.user_id,
                    Notification.id > subscription.after,
                    Notification.id <= floor,
                )
                .order_by(Notification.id)
                .limit(QUEUE_LIMIT)
            ).all()
            self._hand_out(rows, floor, only=subscription)
        if len(rows) >= QUEUE_LIMIT:
            _offer(subscription, None)

    def _hand_out(
        self, rows: Iterable[Notification], top: int, *, only: Subscription | None = None
    ) -> int:
        """Give each row to the streams of its user that start before it and lack it."""
        for row in rows:
            top = max(top, row.id)
            if only is not None:
                targets = [only]
            else:
                with self._lock:
                    targets = list(self._subscriptions.get(row.user_id, ()))
            targets = [s for s in targets if row.id > s.after and row.id not in s.pushed]
            if not targets:
                continue
            event = self._serialize(row)
            for subscription in targets:
                subscription.pushed.add(row.id)
                _offer(subscription, event)
        return top


def _offer(subscription: Subscription, event: dict[str, Any] | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the stream is gone
        subscription.loop.call_soon_threadsafe(subscription.offer, event)
