"""Cross-process wake-ups on PostgreSQL: ``NOTIFY`` when rows commit, ``LISTEN`` elsewhere.

:class:`~tradelog._notify.wakeup.Wakeups` reaches the parts of one process. A part in another
process (a web server streaming a user's inbox, a delivery worker) learns of new rows by
polling, or, on PostgreSQL, by listening:

* :func:`announce` runs ``SELECT pg_notify(channel, payload)`` inside the caller's transaction.
  PostgreSQL delivers the message when that transaction commits and drops it on a rollback,
  so a listener never hears of a row it cannot read yet. On SQLite it does nothing.
* :func:`announce_once` does the same at most once per transaction: the delivery workers'
  wake-up (:data:`DELIVERIES_CHANNEL`) is one message per committed batch of new deliveries,
  whether the transaction queued one delivery or ten thousand, never one per row.
* :class:`Listener` is a daemon thread holding one autocommit connection that ``LISTEN``\\ s on
  some channels and calls ``on_message(channel, payload)`` for each message (on its own thread:
  the callback must be quick). It reconnects after a failure with a capped backoff; while it is
  not listening (``connected`` is False, and always on SQLite) its users poll at their fast
  rate. Messages sent while it was disconnected are lost: a wake-up is a hint, never the record.

A message is at most 8,000 bytes; payloads here are short ids. Each committed transaction's
messages arrive in commit order; identical messages of one transaction are folded into one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Final

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tradelog._signals import block_in_this_thread

__all__ = [
    "DELIVERIES_CHANNEL",
    "NOTIFICATIONS_CHANNEL",
    "Listener",
    "announce",
    "announce_once",
    "supports_listen",
]

NOTIFICATIONS_CHANNEL: Final = "tradelog_notifications"
"""Announced by every ``notify()`` that creates a notification; payload ``"<user_id>:<id>"``."""
DELIVERIES_CHANNEL: Final = "tradelog_deliveries"
"""Announced once by each transaction that queued outbox deliveries due now (empty payload);
delivery workers listen on it."""

_MAX_BACKOFF: Final = 5.0
_log = logging.getLogger("tradelog.notify.listen")


def supports_listen(engine: Engine) -> bool:
    """Whether ``engine``'s database has ``LISTEN``/``NOTIFY`` (PostgreSQL)."""
    return engine.dialect.name == "postgresql"


def announce(session: Session, channel: str, payload: str) -> None:
    """Queue ``payload`` on ``channel`` for delivery when ``session``'s transaction commits
    (PostgreSQL); nothing on other databases."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    session.execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
    )


def announce_once(session: Session, channel: str, payload: str = "") -> None:
    """:func:`announce` ``payload`` on ``channel`` unless this transaction already did.

    The check costs no statement: the transaction that announced is remembered in
    ``session.info`` and is recognised while it (or a savepoint inside it) is open. Should the
    same message be queued twice anyway (the announcing savepoint was released, then another
    row came), PostgreSQL folds identical messages of one transaction into one.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = ("tradelog.announced", channel, payload)
    current = session.get_nested_transaction() or session.get_transaction()
    seen = session.info.get(key)
    level = current
    while level is not None:
        if level is seen:
            return
        level = level.parent
    announce(session, channel, payload)
    session.info[key] = current


class Listener:
    """``LISTEN`` on ``channels`` with one connection of ``engine``, on a daemon thread.

    Give it an engine of its own without a pool (``poolclass=NullPool``): the connection keeps
    listening until it is closed, which a pool would not do when it is handed back.

    ``on_message(channel, payload)`` runs on the listener's thread; ``on_state(connected)`` (if
    given) whenever the connection is established or lost. :meth:`start` does nothing on a
    database without ``LISTEN``. ``timeout`` bounds each wait, hence how late :meth:`stop` is
    noticed.
    """

    def __init__(
        self,
        engine: Engine,
        channels: Iterable[str],
        on_message: Callable[[str, str], None],
        *,
        on_state: Callable[[bool], None] | None = None,
        timeout: float = 0.5,
        name: str = "tradelog-listen",
    ) -> None:
        self.engine = engine
        self.channels = tuple(channels)
        self.on_message = on_message
        self.on_state = on_state
        self.timeout = timeout
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether the listener is listening now."""
        return self._connected

    def start(self) -> Listener:
        """Start listening (once; a no-op without ``LISTEN``)."""
        if self._thread is None and supports_listen(self.engine):
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close the connection; waits up to ``timeout`` for the thread."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def _set_state(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        if self.on_state is not None:
            with contextlib.suppress(Exception):
                self.on_state(connected)

    def _run(self) -> None:
        block_in_this_thread()
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.1
            except Exception as exc:
                self._set_state(False)
                _log.warning("listening for %s failed: %s", ", ".join(self.channels), exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
        self._set_state(False)

    def _listen(self) -> None:
        with self.engine.connect() as opened:
            connection = opened.execution_options(isolation_level="AUTOCOMMIT")
            for channel in self.channels:
                connection.exec_driver_sql(f'LISTEN "{channel}"')
            raw = connection.connection.dbapi_connection
            self._set_state(True)
            while not self._stop.is_set():
                for message in raw.notifies(timeout=self.timeout):  # type: ignore[union-attr]
                    with contextlib.suppress(Exception):
                        self.on_message(message.channel, message.payload)
