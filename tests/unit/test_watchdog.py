"""The database watchdog's own thread: in a forked child, and when no thread can start."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tradelog._db.watchdog import SocketWatchdog


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")
def test_a_forked_child_watches_with_a_lock_of_its_own() -> None:
    """The parent's lock may be held by its thread at the fork (here: by this thread): the
    child neither waits for it nor misses a deadline."""
    watchdog = SocketWatchdog()
    watchdog.start()
    with watchdog._lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                ours, _theirs = socket.socketpair()
                watchdog.arm(1, ours.fileno(), 0.05)
                deadline = time.monotonic() + 5
                while watchdog.cut == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                code = 0 if watchdog.cut == 1 else 3
            finally:
                os._exit(code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child waited for the lock its parent held at the fork")
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_call_goes_ahead_unwatched_when_no_thread_can_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As while Python 3.12+ exits: the call is not held up, the miss is counted, and the
    next call starts the thread."""
    watchdog = SocketWatchdog()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        watchdog.arm(1, 0, 30.0)
        watchdog.disarm(1)
    assert watchdog.unwatched == 1
    ours, theirs = socket.socketpair()
    with ours, theirs:
        watchdog.arm(2, ours.fileno(), 0.05)
        deadline = time.monotonic() + 5
        while watchdog.cut == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watchdog.cut == 1
