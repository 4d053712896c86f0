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

:func:`redeliver_swallowed` covers a gap in Python itself: a handler runs wherever the main
thread is at the next check, which may be inside a weak-reference callback or a ``__del__``
run by the garbage collector (SQLAlchemy registers such callbacks). There the handler's
``SystemExit`` cannot propagate: Python reports it as "unraisable" and the process carries on
as if the signal had never come. tradelog's ``sys.unraisablehook`` hands such an exit to
:func:`redeliver_swallowed`, which sends the same signal again from a helper thread, so the
handler runs once more where its exception can end the program.
"""

from __future__ import annotations

import _thread
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import CodeType, TracebackType
from typing import Final

__all__ = ["TERMINATING", "block_in_this_thread", "deferred", "redeliver_swallowed"]

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
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the mask as it is
    except Exception:
        yield
        return
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
    except BaseException:
        # The block took effect, then a handler pending since before it ran and raised
        # (Python runs pending handlers as pthread_sigmask returns): undo the block, or the
        # process would keep these signals blocked for good.
        with contextlib.suppress(Exception):
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_REDELIVERY_DELAY: Final = 0.01
"""Seconds before a swallowed signal is sent again: the collection that swallowed it ends."""
_MAX_REDELIVERIES: Final = 20
"""A process whose handler keeps landing in callbacks is not sent the signal forever."""
_redeliveries = itertools.count()


def _handler_code(handler: object) -> CodeType | None:
    function = getattr(handler, "__func__", handler)
    code = getattr(function, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _signal_raised_in(traceback: TracebackType | None) -> int | None:
    """The termination signal whose Python handler has a frame in ``traceback``."""
    handlers: dict[CodeType, int] = {}
    for signum in TERMINATING:
        with contextlib.suppress(Exception):
            code = _handler_code(signal.getsignal(signum))
            if code is not None:
                handlers.setdefault(code, signum)
    while traceback is not None:
        found = handlers.get(traceback.tb_frame.f_code)
        if found is not None:
            return found
        traceback = traceback.tb_next
    return None


def _send_later(signum: int) -> None:
    """Send ``signum`` shortly, from a thread that blocks it: the kernel hands it to the main
    thread."""
    with contextlib.suppress(Exception):
        signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)
        time.sleep(_REDELIVERY_DELAY)
        os.kill(os.getpid(), signum)


def redeliver_swallowed(exc: BaseException | None, traceback: TracebackType | None) -> bool:
    """If ``exc`` is a ``SystemExit`` or ``KeyboardInterrupt`` raised by a signal handler in a
    place Python could not raise it from (reported to ``sys.unraisablehook``), send the
    signal again shortly from a helper thread. Returns whether it did; never raises."""
    try:
        if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
            return False
        signum = _signal_raised_in(traceback)
        if (
            signum is None
            and isinstance(exc, KeyboardInterrupt)
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signum = signal.SIGINT
        if signum is None or next(_redeliveries) >= _MAX_REDELIVERIES:
            return False
        # A raw thread: threading.Thread.start() waits, in Python code, for the thread to
        # run, and a handler landing in that wait (the redelivered signal itself, on a busy
        # machine) would be swallowed again with nothing left to send it once more.
        _thread.start_new_thread(_send_later, (signum,))
        return True
    except Exception:
        return False
