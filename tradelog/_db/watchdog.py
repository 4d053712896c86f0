"""A client-side bound on PostgreSQL calls whose server never answers.

``statement_timeout`` is enforced by the server and TCP keepalives by the kernel; neither ends
a call when the path to the server still accepts bytes but nothing comes back (a proxy or a
firewall that black-holes an established connection, an acknowledgement lost after the
request left). libpq then waits for the reply for ever. :func:`bound_driver_calls` wraps an
engine's dialect so that every statement, commit, rollback and pool ping it sends registers a
deadline with the process's :class:`SocketWatchdog`; a call still waiting at its deadline has its
socket shut down, so the driver raises at once (and the engine's error listener turns that
into :class:`~tradelog.exceptions.StorageError`). The connection is then discarded by the
pool like any other broken one.

A transaction that lifts its own limit (``SET LOCAL statement_timeout = 0``, as converting
``service_logs`` to partitions does) is left alone until it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import Engine

from tradelog._signals import block_in_this_thread

__all__ = ["SocketWatchdog", "bound_driver_calls", "watchdog"]

_LIFTS_LIMIT: Final = re.compile(
    r"^\s*SET\s+LOCAL\s+statement_timeout\s*(=|TO)\s*'?0'?\s*;?\s*$", re.I
)


class SocketWatchdog:
    """Shuts down the socket of a call still waiting at its deadline (one thread per
    process, started with the first bounded engine or call, and again in a forked child)."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._lock_pid = os.getpid()
        self._deadlines: dict[int, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0
        self.cut = 0
        """How many calls were cut (their socket shut down) since the process started."""
        self.unwatched = 0
        """How many times the thread could not be started (the calls went ahead unwatched)."""

    def _locked(self) -> threading.Condition:
        """The lock of this process. A forked child gets a fresh lock, no thread and none of
        the parent's calls: the parent's lock may have been held by its thread at the fork.
        Checked on every use rather than in a fork hook, which other fork hooks that make
        database calls could run before."""
        if self._lock_pid != os.getpid():
            self._lock = threading.Condition()
            self._lock_pid = os.getpid()
            self._deadlines = {}
            self._thread = None
            self._wakes_at = 0.0
        return self._lock

    def arm(self, key: int, fd: int, seconds: float) -> None:
        """Cut ``fd`` unless :meth:`disarm` is called with ``key`` within ``seconds``."""
        deadline = time.monotonic() + seconds
        lock = self._locked()
        with lock:
            self._deadlines[key] = (deadline, fd)
            self._ensure_thread(lock)
            if deadline < self._wakes_at:  # wake the thread only when it would sleep past this
                lock.notify()

    def disarm(self, key: int) -> None:
        """The call under ``key`` returned (or raised)."""
        with self._locked():
            self._deadlines.pop(key, None)

    def start(self) -> None:
        """Start the thread now (an engine that will send calls starts it when it is made), so
        that calls made while the interpreter exits are watched too: Python 3.12 and later
        refuse to start a thread then."""
        lock = self._locked()
        with lock:
            self._ensure_thread(lock)

    def _ensure_thread(self, lock: threading.Condition) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(
            target=self._run, args=(lock,), name="tradelog-db-watchdog", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            # "can't create new thread at interpreter shutdown" (Python 3.12+), or the system's
            # limit on threads: the call goes ahead unwatched, bounded by the server's
            # statement_timeout and TCP keepalives, and the next call tries again.
            self._thread = None
            self.unwatched += 1
            return
        self._thread = thread

    def _run(self, lock: threading.Condition) -> None:
        block_in_this_thread()
        with lock:
            while True:
                now = time.monotonic()
                expired = [(key, fd) for key, (at, fd) in self._deadlines.items() if at <= now]
                for key, fd in expired:
                    del self._deadlines[key]
                    self._cut(fd)
                upcoming = [at for at, _ in self._deadlines.values()]
                self._wakes_at = min(upcoming) if upcoming else now + 60.0
                lock.wait(max(0.01, self._wakes_at - now))
                self._wakes_at = 0.0  # awake: arm() need not notify

    def _cut(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            duplicate = socket.socket(fileno=os.dup(fd))
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
                self.cut += 1
            finally:
                duplicate.close()


watchdog = SocketWatchdog()
"""The process's watchdog."""


def _driver(connection: Any) -> Any:
    """The driver's own connection behind SQLAlchemy's proxies (a statement sees the driver's
    connection, a commit the pool's proxy of it)."""
    return getattr(connection, "driver_connection", None) or connection


def _socket_of(dbapi_connection: Any) -> int | None:
    with contextlib.suppress(Exception):
        return int(dbapi_connection.pgconn.socket)
    return None


def bound_driver_calls(engine: Engine, seconds: float, ping_seconds: float) -> None:
    """Bound every statement, commit and rollback ``engine`` sends (PostgreSQL) to ``seconds``
    on the client side, and the pool's ping of an idle connection to ``ping_seconds`` (see the
    module docstring)."""
    dialect = engine.dialect
    unbounded: weakref.WeakSet[Any] = weakref.WeakSet()  # connections that lifted their limit

    def guarded(dbapi_connection: Any, call: Callable[[], Any], bound: float = seconds) -> Any:
        driver = _driver(dbapi_connection)
        key = id(driver)
        fd = None if driver in unbounded else _socket_of(driver)
        if fd is None:
            return call()
        watchdog.arm(key, fd, bound)
        try:
            return call()
        finally:
            watchdog.disarm(key)

    def statement(name: str) -> None:
        original = getattr(dialect, name)

        def wrapper(cursor: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
            connection = cursor.connection
            if isinstance(text, str) and _LIFTS_LIMIT.match(text):
                unbounded.add(_driver(connection))
            return guarded(connection, lambda: original(cursor, text, *args, **kwargs))

        setattr(dialect, name, wrapper)

    def ending(name: str) -> None:
        original = getattr(dialect, name)

        def wrapper(dbapi_connection: Any) -> Any:
            try:
                return guarded(dbapi_connection, lambda: original(dbapi_connection))
            finally:
                unbounded.discard(_driver(dbapi_connection))

        setattr(dialect, name, wrapper)

    def ping() -> None:
        original = dialect.do_ping

        def wrapper(dbapi_connection: Any) -> Any:
            return guarded(dbapi_connection, lambda: original(dbapi_connection), ping_seconds)

        dialect.do_ping = wrapper  # type: ignore[method-assign]

    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        statement(name)
    for name in ("do_commit", "do_rollback"):
        ending(name)
    ping()  # the pool's check of a connection before it lends it
    watchdog.start()
