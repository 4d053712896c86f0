"""How a delivery worker hears of new deliveries committed by other processes.

In one process the notification service rings :class:`~tradelog._notify.wakeup.Wakeups` after
each commit. Across processes, on PostgreSQL, every transaction that queued deliveries due now
announces :data:`~tradelog._notify.listen.DELIVERIES_CHANNEL` once at commit
(:func:`~tradelog._notify.listen.announce_once`), and :class:`OutboxListener` holds one
``LISTEN`` connection per worker that turns each message into a wake-up.

A wake-up is a hint, never the record: the worker keeps polling every
``TRADELOG_WORKER_POLL_INTERVAL`` for what no message announces (retries and waits falling due,
quiet hours ending, leases running out) and for everything while the listener is not
connected; when the connection is lost or established again the worker looks at once, so what
was committed while nobody listened is found by that look. ``TRADELOG_LISTEN=off`` (for a
transaction-pooling proxy such as PgBouncer, where ``LISTEN`` does not work) leaves polling
alone; SQLite always polls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from tradelog._db.engine import create_tradelog_engine
from tradelog._notify.listen import DELIVERIES_CHANNEL, Listener, supports_listen

__all__ = ["LISTENER_NAME", "OutboxListener"]

LISTENER_NAME: Final = "tradelog-worker-listen"
"""The ``application_name`` of a worker's listening connection (``pg_stat_activity`` shows it)."""

_log = logging.getLogger("tradelog.notify.worker")


class OutboxListener:
    """Calls ``wake()`` for every :data:`DELIVERIES_CHANNEL` message and whenever the
    listening connection is established or lost (on its own thread; ``wake`` must be quick).

    It opens its own unpooled connection to ``engine``'s database; :meth:`start` does nothing
    on a database without ``LISTEN``.
    """

    def __init__(
        self, engine: Engine, wake: Callable[[], None], *, name: str = LISTENER_NAME
    ) -> None:
        self.engine = engine
        self.wake = wake
        self.name = name
        self._engine: Engine | None = None
        self._listener: Listener | None = None

    @property
    def listening(self) -> bool:
        """Whether the ``LISTEN`` connection is up now."""
        listener = self._listener
        return listener is not None and listener.connected

    def start(self) -> OutboxListener:
        """Start listening (a no-op on SQLite or when already started)."""
        if self._listener is not None or not supports_listen(self.engine):
            return self
        try:
            named = self.engine.url.update_query_dict({"application_name": self.name})
            self._engine = create_tradelog_engine(named, poolclass=NullPool)
        except Exception as exc:  # the worker still polls; it never stops over this
            _log.warning("delivery worker cannot listen for new deliveries: %s", exc)
            return self
        self._listener = Listener(
            self._engine,
            [DELIVERIES_CHANNEL],
            lambda _channel, _payload: self.wake(),
            on_state=lambda _connected: self.wake(),
            timeout=0.25,
            name=self.name,
        ).start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop listening and close the connection (waits up to ``timeout`` for the thread)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop(timeout)
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()
