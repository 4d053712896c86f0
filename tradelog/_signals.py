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
from collections.abc import Callable, Iterator
from types import CodeType, TracebackType
from typing import Final

__all__ = [
    "TERMINATING",
    "HandlerWatch",
    "block_in_this_thread",
    "deferred",
    "redeliver_swallowed",
]

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


class HandlerWatch:
    """Makes sure a Python ``SIGTERM`` handler is not lost on a main thread stuck in C code.

    Python runs a handler only when the main thread next runs Python code. A main thread
    blocked in a call that does not return on a signal, or one that the signal reached a moment
    before it blocked (a multiprocessing worker waiting on its queue's lock when
    ``Pool.terminate`` sends ``SIGTERM``), never runs it: the process lives on and the parent
    waits for it forever. The watch gets every signal through Python's wake-up file
    descriptor (written by the C-level handler, whatever the main thread is doing); when
    ``signum`` arrives and the handler has not started within ``grace`` seconds, it runs
    ``on_stuck`` on its own thread and ends the process with exit status ``128 + signum``.

    Installed only where no wake-up descriptor is set (asyncio's signal handling uses one).
    """

    def __init__(self, signum: int, on_stuck: Callable[[], None], grace: float) -> None:
        self.signum = signum
        self._on_stuck = on_stuck
        self._grace = grace
        self._started = threading.Event()
        self._pipe: tuple[int, int] | None = None

    def start(self) -> bool:
        """Take the wake-up descriptor and start watching (main thread only); False where
        one is already set or it cannot be set."""
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        except (ValueError, OSError):
            previous = None
        if previous != -1:
            if previous is not None:
                signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return False
        self._pipe = (read, write)
        thread = threading.Thread(target=self._run, args=(read,), name="tradelog-signal-watch")
        thread.daemon = True
        thread.start()
        return True

    def handler_started(self) -> None:
        """Called first thing by the handler: the main thread got the signal."""
        self._started.set()

    def stop(self) -> None:
        """Give the wake-up descriptor back and end the watching thread (main thread only;
        elsewhere, nothing)."""
        self._release()  # the thread then reads the end of the pipe and leaves

    def forget_in_child(self) -> None:
        """After ``fork``: the child must not write its signals into the parent's pipe."""
        pipe = self._pipe
        if pipe is not None and self._release():
            with contextlib.suppress(OSError):
                os.close(pipe[0])

    def _release(self) -> bool:
        """Unset the wake-up descriptor if it is ours and close our write end. The end is
        kept open while Python may still write to it (set only from the main thread)."""
        pipe = self._pipe
        if pipe is None:
            return False
        try:
            current = signal.set_wakeup_fd(-1)
        except (ValueError, OSError):
            return False
        if current != pipe[1]:  # pragma: no cover - replaced by someone else: leave theirs
            signal.set_wakeup_fd(current)
        self._pipe = None
        with contextlib.suppress(OSError):
            os.close(pipe[1])
        return True

    def _run(self, read: int) -> None:
        block_in_this_thread()
        while True:
            try:
                received = os.read(read, 64)
            except OSError:
                return
            if not received:
                return
            if self.signum in received and not self._started.wait(self._grace):
                try:
                    self._on_stuck()
                finally:
                    os._exit(128 + self.signum)
