"""Process-wide hooks that send uncaught exceptions to an error capture, chained.

Each hook remembers the hook installed before it and always calls it afterwards, so another
error tracker (or Python's default printing) keeps working. :meth:`InstalledHooks.uninstall`
puts the previous hook back when ours is still the one installed; when something was installed
on top of ours since, ours is switched off instead and only forwards.

==========================  ================================================================
hook                        what is recorded
==========================  ================================================================
``sys.excepthook``          an uncaught exception in the main thread: written synchronously
                            (queued errors first) before the previous hook prints it; level
                            ``critical``. ``KeyboardInterrupt`` is not an error.
``threading.excepthook``    an uncaught exception in a thread: written synchronously on the
                            dying thread; ``critical``. ``SystemExit`` is ignored, as Python
                            does.
``sys.unraisablehook``      an exception Python could not raise (``__del__``, callbacks):
                            queued (the hook may run inside garbage collection); ``error``.
                            A signal handler's ``SystemExit`` or ``KeyboardInterrupt``
                            swallowed there is not an error: the signal is sent again
                            (:func:`tradelog._signals.redeliver_swallowed`).
asyncio                     an exception handler on the loop running at install time, and on
                            every loop created afterwards through the event-loop policy
                            (``asyncio.run``, ``asyncio.new_event_loop``): "Task exception
                            was never retrieved" and callback errors are queued; ``critical``.
==========================  ================================================================

asyncio: on Python 3.14+, where event-loop policies are deprecated, only the loop running at
install time gets the handler automatically. A loop made by a custom ``loop_factory`` or by a
policy installed after ``configure()`` does not get it either: call
``tradelog.install_loop_handler()`` from a coroutine running on it. A handler set
later with ``loop.set_exception_handler`` replaces ours (asyncio keeps only one per loop).

Child processes started by :mod:`multiprocessing` never reach these hooks (the child prints the
traceback itself and exits): wrap the child's target with
:func:`tradelog.guard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Protocol

import structlog

from tradelog._signals import redeliver_swallowed
from tradelog._users.context import user_of

__all__ = [
    "Capturer",
    "InstalledHooks",
    "LoopExceptionHandler",
    "install_hooks",
    "install_loop_handler",
]

_POLICIES_SUPPORTED: Final = sys.version_info < (3, 14)
"""asyncio deprecates event-loop policies in 3.14; there only running loops get the handler."""
_OBJECT_REPR: Final = 200

ExcInfoHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]
LoopHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class Capturer(Protocol):
    """What the hooks need from a capture (:class:`tradelog._errors.pipeline.ErrorCapture`)."""

    def capture(
        self,
        exc: BaseException,
        *,
        user_id: int | None = None,
        context: Mapping[str, Any] | None = None,
        uncaught: bool = False,
        sync: bool = False,
    ) -> bool: ...


def _with_traceback(value: BaseException, tb: TracebackType | None) -> BaseException:
    if tb is not None and value.__traceback__ is None:
        with contextlib.suppress(Exception):
            value = value.with_traceback(tb)
    return value


def _safe_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if len(text) <= _OBJECT_REPR else text[: _OBJECT_REPR - 1] + "…"


class _Hook:
    """A chained hook: ``active`` is switched off when it cannot be removed."""

    def __init__(self, capture: Capturer) -> None:
        self.capture = capture
        self.active = True

    def _record(self, value: BaseException, **options: Any) -> None:
        if not self.active:
            return
        with contextlib.suppress(Exception):
            self.capture.capture(value, **options)


class SysExceptHook(_Hook):
    """``sys.excepthook``: record the crash, then call the previous hook."""

    def __init__(self, capture: Capturer, previous: ExcInfoHook) -> None:
        super().__init__(capture)
        self.previous = previous

    def __call__(
        self, kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(value, Exception):
            self._record(
                _with_traceback(value, tb),
                context={"source": "sys.excepthook"},
                uncaught=True,
                sync=True,
            )
        self.previous(kind, value, tb)


class ThreadingExceptHook(_Hook):
    """``threading.excepthook``: record the thread's crash, then call the previous hook."""

    def __init__(
        self, capture: Capturer, previous: Callable[[threading.ExceptHookArgs], Any]
    ) -> None:
        super().__init__(capture)
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        value = args.exc_value
        if isinstance(value, Exception):
            thread = args.thread
            self._record(
                _with_traceback(value, args.exc_traceback),
                context={
                    "source": "threading.excepthook",
                    "thread": thread.name if thread is not None else None,
                },
                uncaught=True,
                sync=True,
            )
        self.previous(args)


class UnraisableHook(_Hook):
    """``sys.unraisablehook``: queue the exception, then call the previous hook."""

    def __init__(self, capture: Capturer, previous: Callable[[Any], Any]) -> None:
        super().__init__(capture)
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        value = getattr(unraisable, "exc_value", None)
        caught: SystemExit | KeyboardInterrupt | None = None
        try:
            if isinstance(value, Exception):
                self._record(
                    _with_traceback(value, getattr(unraisable, "exc_traceback", None)),
                    context={
                        "source": "sys.unraisablehook",
                        "err_msg": getattr(unraisable, "err_msg", None),
                        "object": _safe_repr(getattr(unraisable, "object", None)),
                    },
                )
            self.previous(unraisable)
        except (SystemExit, KeyboardInterrupt) as exc:
            # A handler ran inside this hook (a signal arriving while the previous hook, which
            # can be slow, formats a traceback): Python would swallow it here too.
            caught = exc
        # A signal handler's sys.exit() that ran inside a garbage-collection callback (or in
        # this hook): Python swallowed it; the signal is sent again, once this hook is done,
        # so the program still ends (not an error).
        sent = redeliver_swallowed(value, getattr(unraisable, "exc_traceback", None))
        if not sent and caught is not None:
            redeliver_swallowed(caught, caught.__traceback__)


def _task_bindings(task: object) -> dict[str, Any]:
    """The structlog context bound inside ``task`` (Python 3.12+ exposes a task's context)."""
    get_context = getattr(task, "get_context", None)
    if get_context is None:
        return {}
    try:
        return dict(get_context().run(structlog.contextvars.get_contextvars))
    except Exception:
        return {}


class LoopExceptionHandler(_Hook):
    """An asyncio exception handler: queue the exception, then call the previous handler
    (or the loop's default handler, which logs it)."""

    def __init__(self, capture: Capturer, previous: LoopHandler | None) -> None:
        super().__init__(capture)
        self.previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Record the exception in ``context``, then pass it on (previous handler or default)."""
        value = context.get("exception")
        if isinstance(value, Exception):
            task = context.get("task") or context.get("future")
            bound = _task_bindings(task)
            details: dict[str, Any] = {
                **bound,
                "source": "asyncio",
                "message": context.get("message"),
            }
            if task is not None:
                get_name = getattr(task, "get_name", None)
                details["task"] = get_name() if get_name else _safe_repr(task)
            user_id = user_of(value) or bound.get("user_id")
            self._record(
                value,
                user_id=user_id if isinstance(user_id, int) else None,
                context=details,
                uncaught=True,
            )
        if self.previous is not None:
            self.previous(loop, context)
        else:
            loop.default_exception_handler(context)


def install_loop_handler(
    capture: Capturer, loop: asyncio.AbstractEventLoop
) -> LoopExceptionHandler:
    """Install a chained exception handler on ``loop`` and return it."""
    current = loop.get_exception_handler()
    if isinstance(current, LoopExceptionHandler) and current.active:
        return current
    handler = LoopExceptionHandler(capture, current)
    loop.set_exception_handler(handler)
    return handler


class _HandlerPolicy(asyncio.AbstractEventLoopPolicy):
    """Delegates to the policy it wraps; loops it creates get a :class:`LoopExceptionHandler`."""

    def __init__(self, inner: asyncio.AbstractEventLoopPolicy, capture: Capturer) -> None:
        self.inner = inner
        self.capture = capture
        self.active = True

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self.inner.get_event_loop()

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.inner.set_event_loop(loop)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self.inner.new_event_loop()
        if self.active:
            install_loop_handler(self.capture, loop)
        return loop

    def get_child_watcher(self) -> Any:  # pragma: no cover - deprecated asyncio API
        return self.inner.get_child_watcher()

    def set_child_watcher(self, watcher: Any) -> None:  # pragma: no cover - deprecated API
        self.inner.set_child_watcher(watcher)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class InstalledHooks:
    """The hooks one :func:`install_hooks` call put in place."""

    def __init__(self) -> None:
        self.sys_hook: SysExceptHook | None = None
        self.thread_hook: ThreadingExceptHook | None = None
        self.unraisable_hook: UnraisableHook | None = None
        self.loop_handlers: list[tuple[asyncio.AbstractEventLoop, LoopExceptionHandler]] = []
        self.policy: _HandlerPolicy | None = None

    def uninstall(self) -> None:
        """Restore the previous hooks (or switch ours off where others were chained on top)."""
        if self.sys_hook is not None:
            self.sys_hook.active = False
            if sys.excepthook is self.sys_hook:
                sys.excepthook = self.sys_hook.previous
        if self.thread_hook is not None:
            self.thread_hook.active = False
            if threading.excepthook is self.thread_hook:
                threading.excepthook = self.thread_hook.previous
        if self.unraisable_hook is not None:
            self.unraisable_hook.active = False
            if sys.unraisablehook is self.unraisable_hook:
                sys.unraisablehook = self.unraisable_hook.previous
        for loop, handler in self.loop_handlers:
            handler.active = False
            with contextlib.suppress(Exception):
                if loop.get_exception_handler() is handler:
                    loop.set_exception_handler(handler.previous)
        self.loop_handlers.clear()
        if self.policy is not None:
            self.policy.active = False
            with contextlib.suppress(Exception):
                if asyncio.get_event_loop_policy() is self.policy:
                    asyncio.set_event_loop_policy(self.policy.inner)
        self.sys_hook = self.thread_hook = self.unraisable_hook = None
        self.policy = None


def install_hooks(
    capture: Capturer,
    *,
    excepthook: bool = True,
    threading_hook: bool = True,
    unraisable: bool = True,
    asyncio_handler: bool = True,
) -> InstalledHooks:
    """Install the chained hooks that send uncaught exceptions to ``capture``."""
    installed = InstalledHooks()
    if excepthook:
        installed.sys_hook = SysExceptHook(capture, sys.excepthook)
        sys.excepthook = installed.sys_hook
    if threading_hook:
        installed.thread_hook = ThreadingExceptHook(capture, threading.excepthook)
        threading.excepthook = installed.thread_hook
    if unraisable:
        installed.unraisable_hook = UnraisableHook(capture, sys.unraisablehook)
        sys.unraisablehook = installed.unraisable_hook
    if asyncio_handler:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            installed.loop_handlers.append((running, install_loop_handler(capture, running)))
        if _POLICIES_SUPPORTED:
            installed.policy = _HandlerPolicy(asyncio.get_event_loop_policy(), capture)
            asyncio.set_event_loop_policy(installed.policy)
    return installed
