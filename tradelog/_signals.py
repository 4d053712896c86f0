"""Where signals land in a process that runs tradelog's threads.

Python runs signal handlers on the main thread only, but the kernel may deliver a process
signal to any thread that does not block it; the main thread then learns of it only when it
next runs Python code, which a main thread waiting on a lock or an event may not do for a long
time. :func:`block_in_this_thread`, called first thing by every thread tradelog starts, keeps
the termination signals off tradelog's threads, so the kernel delivers them to a thread that
can act on them (the main thread, typically).

:func:`deferred` holds those signals back on the main thread for a few statements that must
not be split by a handler (taking records off the queue and noting that they are held; writing
them to the spool and forgetting them): a handler that raises (``sys.exit`` in a ``SIGTERM``
handler) or that ends the process then finds every record either queued, held where it can
see it, or written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Final

__all__ = ["TERMINATING", "block_in_this_thread", "deferred"]

TERMINATING: Final = frozenset(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")
    if hasattr(signal, name)
)
"""Signals a host commonly handles by leaving (``sys.exit``) or that end the process."""


def block_in_this_thread() -> None:
    """Keep :data:`TERMINATING` off the calling (non-main) thread; never raises."""
    if threading.current_thread() is threading.main_thread():
        return
    with contextlib.suppress(Exception):
        signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """On the main thread, hold :data:`TERMINATING` back for the ``with`` block (a signal
    that arrives meanwhile is handled right after it); elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    except Exception:
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
