"""Recording exceptions that never reach a process hook: :class:`Guard`.

The target of a :mod:`multiprocessing` child, a job run by an executor that keeps the exception
to itself: wrap it (decorator or ``with`` block) and an exception leaving it is written
synchronously - the process may be about to die - and re-raised unchanged. The capture is looked
up through ``source`` each time, so a guard made before ``configure()`` (a decorator at import
time) uses whatever is configured when it fires.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from tradelog._errors.hooks import Capturer

__all__ = ["CaptureSource", "Guard"]

CaptureSource = Callable[[], Capturer | None]
"""Returns the capture to record with (None: nothing is recorded)."""

_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def _guarding(
    source: CaptureSource, user_id: int | None, context: Mapping[str, Any]
) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        details = {
            "source": "guard",
            "process": multiprocessing.current_process().name,
            "pid": os.getpid(),
            **context,
        }
        with contextlib.suppress(Exception):
            capture = source()
            if capture is not None:
                capture.capture(exc, user_id=user_id, context=details, uncaught=True, sync=True)
        raise


class Guard:
    """A context manager and decorator (sync and async) that records what escapes it."""

    def __init__(
        self, source: CaptureSource, user_id: int | None, context: Mapping[str, Any]
    ) -> None:
        self.source = source
        self.user_id = user_id
        self.context = dict(context)
        self._blocks: list[contextlib.AbstractContextManager[None]] = []

    def __enter__(self) -> None:
        block = _guarding(self.source, self.user_id, self.context)
        self._blocks.append(block)
        block.__enter__()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._blocks.pop().__exit__(kind, exc, tb)

    def __call__(self, fn: _F) -> _F:
        source, user_id, context = self.source, self.user_id, self.context
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _guarding(source, user_id, context):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with _guarding(source, user_id, context):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)
