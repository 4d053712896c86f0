"""Error capture, wired into the process: the public entry points and the active capture.

Where exceptions come from:

* ``log.exception(...)`` / ``log.error(..., exc_info=...)``: :func:`install` (called by
  ``tradelog.configure``) registers :meth:`ErrorCapture.observe` with the runtime, which calls it
  for every log event carrying an exception (events below ``error`` level are left alone);
* :func:`capture_exception` (``tradelog.capture_exception``);
* the chained process hooks of :mod:`tradelog._errors.hooks` (uncaught exceptions in the main
  thread, in threads, in asyncio tasks, unraisable exceptions);
* :func:`guard`, for multiprocessing children, which never reach those hooks;
* failed tasks of :func:`tradelog.track_task`.

How they are written is :class:`~tradelog._errors.pipeline.ErrorCapture`'s business.

Global state: which capture is active (set by :func:`install`, cleared at shutdown) and a
standalone capture built from the environment when ``tradelog.configure()`` was never called.
Everything else takes explicit objects: ``ErrorCapture(settings, engine)`` and
``install_capture(capture)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from sqlalchemy import Engine

from tradelog._errors.hooks import InstalledHooks, install_hooks
from tradelog._errors.hooks import install_loop_handler as _install_loop_handler
from tradelog._errors.pipeline import ErrorCapture, exception_from
from tradelog.config import Settings

__all__ = [
    "ErrorCapture",
    "Installation",
    "active",
    "capture_exception",
    "guard",
    "install",
    "install_capture",
    "install_loop_handler",
]

_F = TypeVar("_F", bound=Callable[..., Any])


# --------------------------------------------------------------------------- global wiring


class Installation:
    """An active capture with its hooks; :meth:`close` undoes :func:`install_capture`."""

    def __init__(self, capture: ErrorCapture, hooks: InstalledHooks | None) -> None:
        self.capture = capture
        self.hooks = hooks

    def close(self) -> None:
        """Restore the previous hooks, deactivate the capture and close it."""
        if self.hooks is not None:
            self.hooks.uninstall()
        with _state.lock:
            if _state.active is self:
                _state.active = None
        self.capture.close()


class _State:
    """The module's global state: the active installation and the standalone fallback."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Installation | None = None
        self.fallback: ErrorCapture | None = None


_state = _State()


def install_capture(capture: ErrorCapture, *, hooks: bool = True) -> Installation:
    """Make ``capture`` the active one and (by default) install the chained process hooks."""
    installation = Installation(capture, install_hooks(capture) if hooks else None)
    with _state.lock:
        _state.active = installation
    return installation


def install(runtime: Any) -> ErrorCapture:
    """Wire error capture into a configured runtime (called by ``tradelog.configure``).

    Registers the exception observer, a flusher and a closer, and installs the hooks.
    """
    engine = getattr(runtime, "engine", None)
    capture = ErrorCapture(runtime.settings, engine if isinstance(engine, Engine) else None)
    installation = install_capture(capture)
    runtime.add_exception_observer(capture.observe)
    runtime.add_flusher(capture.flush)
    runtime.add_closer(installation.close)
    return capture


def _runtime_settings() -> Settings | None:
    try:
        runtime = importlib.import_module("tradelog._runtime")
    except ImportError:  # pragma: no cover - runtime absent
        return None
    current = getattr(runtime, "current", None)
    found = current() if current is not None else None
    return getattr(found, "settings", None)


def active() -> ErrorCapture:
    """The installed capture, else a standalone one for the runtime's (or the environment's)
    settings, created on first use and reused (queued rows are flushed at exit)."""
    retired = None
    with _state.lock:
        if _state.active is not None:
            return _state.active.capture
        settings = _runtime_settings() or Settings.from_env()
        fallback = _state.fallback
        if fallback is None or fallback._closed or fallback.settings != settings:
            retired = fallback
            fallback = _state.fallback = ErrorCapture(settings)
    if retired is not None:
        retired.close()
    return fallback


def capture_exception(
    exc: BaseException | tuple[Any, Any, Any] | None = None,
    *,
    user_id: int | None = None,
    **context: Any,
) -> bool:
    """Record ``exc`` (default: the exception being handled) with ``context``.

    Returns whether it was queued; False when there is no exception, it was already
    recorded, or the queue is full. Never raises. ``tradelog.flush()`` waits for the write.
    """
    try:
        value = exception_from(exc if exc is not None else sys.exc_info())
        if value is None:
            return False
        return active().capture(
            value, user_id=user_id, context={"source": "capture_exception", **context}
        )
    except Exception:
        return False


def install_loop_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the chained asyncio exception handler on ``loop`` (default: the running loop).

    For loops the policy does not create (a custom ``loop_factory``, uvloop installed after
    ``configure()``); call it first thing in the main coroutine.
    """
    target = loop if loop is not None else asyncio.get_running_loop()
    capture = active()
    handler = _install_loop_handler(capture, target)
    with _state.lock:
        installation = _state.active
    if installation is not None and installation.hooks is not None:
        installation.hooks.loop_handlers.append((target, handler))


@contextlib.contextmanager
def _guarding(user_id: int | None, context: Mapping[str, Any]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        import multiprocessing  # noqa: PLC0415 - only needed on this path

        details = {
            "source": "guard",
            "process": multiprocessing.current_process().name,
            "pid": os.getpid(),
            **context,
        }
        with contextlib.suppress(Exception):
            active().capture(exc, user_id=user_id, context=details, uncaught=True, sync=True)
        raise


@overload
def guard(fn: _F, /) -> _F: ...


@overload
def guard(fn: None = None, /, *, user_id: int | None = None, **context: Any) -> _Guard: ...


def guard(
    fn: Callable[..., Any] | None = None, /, *, user_id: int | None = None, **context: Any
) -> Any:
    """Record an exception escaping a block or function synchronously, then re-raise it.

    For code whose exceptions never reach ``sys.excepthook``, above all the target of a
    :mod:`multiprocessing` child process::

        @tradelog._errors.capture.guard
        def work(order_id): ...

        multiprocessing.Process(target=work, args=(7,)).start()

        with guard(user_id=3, job="rebalance"):
            ...

    In a forked child the parent's configuration is reused (with fresh connections); a spawned
    child uses ``tradelog.configure()`` if it called it, else the ``TRADELOG_*`` environment.
    """
    if fn is not None:
        return _Guard(None, {})(fn)
    return _Guard(user_id, context)


class _Guard:
    def __init__(self, user_id: int | None, context: Mapping[str, Any]) -> None:
        self.user_id = user_id
        self.context = dict(context)
        self._blocks: list[contextlib.AbstractContextManager[None]] = []

    def __enter__(self) -> None:
        block = _guarding(self.user_id, self.context)
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
        user_id, context = self.user_id, self.context
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _guarding(user_id, context):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with _guarding(user_id, context):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)


def _reset_after_fork() -> None:
    _state.lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_reset_after_fork)
