"""The delivery worker's threads for blocking calls: an executor that keeps working at exit.

The worker's event loop hands database calls, rate-limit reservations and message rendering
to threads (``asyncio.to_thread``). The standard ``ThreadPoolExecutor`` refuses new work once
the interpreter starts to exit (``threading`` shuts every such pool down before ``atexit``
handlers run), which is exactly when tradelog gives the deliveries a process just made a
bounded moment to go out. :class:`DaemonExecutor` is a small fixed pool of daemon threads,
started with the worker, that serves until the worker closes it; it becomes the worker
loop's default executor.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tradelog._signals import block_in_this_thread

__all__ = ["DaemonExecutor"]

_Call = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(ThreadPoolExecutor):
    """``size`` daemon threads taking calls from one queue, in order of submission.

    A ``ThreadPoolExecutor`` only by type (asyncio accepts nothing else as a loop's default
    executor): :meth:`submit` and :meth:`shutdown` are its own, so the interpreter-exit flag
    of :mod:`concurrent.futures` does not apply and the parent's threads are never started.
    """

    def __init__(self, size: int, name: str = "tradelog-delivery-io") -> None:
        super().__init__(max_workers=1, thread_name_prefix=name)
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._closed_flag = False
        self._daemons = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=True)
            for n in range(max(1, size))
        ]
        for thread in self._daemons:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on one of the threads."""
        if self._closed_flag:
            raise RuntimeError("the executor is closed")
        future: Future[Any] = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let the threads end once the calls already queued are done."""
        if self._closed_flag:
            return
        self._closed_flag = True
        for _ in self._daemons:
            self._calls.put(None)
        if wait:
            for thread in self._daemons:
                if thread is not threading.current_thread():
                    thread.join()

    def _serve(self) -> None:
        block_in_this_thread()
        while True:
            call = self._calls.get()
            if call is None:
                return
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    future.set_exception(exc)
            else:
                with contextlib.suppress(Exception):
                    future.set_result(result)
