"""Chaining and removal of the process hooks, in process (the real crashes run in subprocesses)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from tradelog._errors.hooks import (
    InstalledHooks,
    LoopExceptionHandler,
    SysExceptHook,
    install_hooks,
    install_loop_handler,
)


class RecordingCapture:
    """A capture that remembers what it was given (the hooks' only dependency)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def capture(
        self,
        exc: BaseException,
        *,
        user_id: int | None = None,
        context: Mapping[str, Any] | None = None,
        uncaught: bool = False,
        sync: bool = False,
    ) -> bool:
        self.calls.append(
            {"exc": exc, "user_id": user_id, "context": dict(context or {}), "sync": sync}
        )
        return True


class ExplodingCapture(RecordingCapture):
    """A capture that fails: the previous hooks must still run."""

    def capture(self, exc: BaseException, **options: Any) -> bool:
        raise RuntimeError("capture broke")


@pytest.fixture
def saved_hooks() -> Iterator[None]:
    """Put the interpreter's hooks back whatever a test does."""
    saved = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    policy = asyncio.get_event_loop_policy()
    yield
    sys.excepthook, threading.excepthook, sys.unraisablehook = saved
    asyncio.set_event_loop_policy(policy)


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_hooks_record_then_call_the_previous_ones(saved_hooks: None) -> None:
    """Every hook records and forwards; uninstall restores the originals."""
    seen: list[str] = []
    sys.excepthook = lambda kind, value, tb: seen.append(f"sys {value}")
    threading.excepthook = lambda args: seen.append(f"thread {args.exc_value}")
    sys.unraisablehook = lambda u: seen.append(f"unraisable {u.exc_value}")
    previous = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    capture = RecordingCapture()
    hooks = install_hooks(capture)

    crash = _raised(ValueError("main"))
    sys.excepthook(type(crash), crash, crash.__traceback__)
    thread_crash = _raised(KeyError("t"))
    thread = threading.Thread(name="worker")
    threading.excepthook(
        threading.ExceptHookArgs([type(thread_crash), thread_crash, None, thread])  # type: ignore[call-arg]
    )
    lost = _raised(RuntimeError("del"))
    sys.unraisablehook(
        SimpleNamespace(
            exc_type=RuntimeError,
            exc_value=lost,
            exc_traceback=None,
            err_msg="in __del__",
            object=object(),
        )
    )
    interrupt = KeyboardInterrupt()
    sys.excepthook(KeyboardInterrupt, interrupt, None)

    assert seen == ["sys main", "thread 't'", "unraisable del", "sys "]
    assert [c["context"]["source"] for c in capture.calls] == [
        "sys.excepthook",
        "threading.excepthook",
        "sys.unraisablehook",
    ]
    assert [c["sync"] for c in capture.calls] == [True, True, False]
    assert capture.calls[1]["context"]["thread"] == "worker"
    assert capture.calls[2]["context"]["err_msg"] == "in __del__"

    hooks.uninstall()
    assert (sys.excepthook, threading.excepthook, sys.unraisablehook) == previous
    hooks.uninstall()  # idempotent


def test_a_failing_capture_never_breaks_the_chain(saved_hooks: None) -> None:
    """The previous hook runs even when recording raises."""
    seen: list[str] = []
    sys.excepthook = lambda kind, value, tb: seen.append(str(value))
    install_hooks(ExplodingCapture(), threading_hook=False, unraisable=False)
    crash = _raised(ValueError("still printed"))
    sys.excepthook(type(crash), crash, crash.__traceback__)
    assert seen == ["still printed"]


def test_hook_chained_on_top_is_switched_off_not_removed(saved_hooks: None) -> None:
    """When another tracker wrapped ours, uninstall leaves it in place and ours only forwards."""
    seen: list[str] = []
    sys.excepthook = lambda kind, value, tb: seen.append("original")
    capture = RecordingCapture()
    hooks = install_hooks(capture, threading_hook=False, unraisable=False, asyncio_handler=False)
    ours = sys.excepthook
    assert isinstance(ours, SysExceptHook)

    def later_tracker(kind: Any, value: Any, tb: Any) -> None:
        seen.append("later")
        ours(kind, value, tb)

    sys.excepthook = later_tracker
    hooks.uninstall()
    assert sys.excepthook is later_tracker
    crash = _raised(ValueError("x"))
    sys.excepthook(type(crash), crash, crash.__traceback__)
    assert seen == ["later", "original"]
    assert capture.calls == []


def test_traceback_is_attached_when_missing(saved_hooks: None) -> None:
    """An exception handed over without ``__traceback__`` gets the hook's traceback."""
    capture = RecordingCapture()
    sys.excepthook = lambda *a: None
    install_hooks(capture, threading_hook=False, unraisable=False, asyncio_handler=False)
    crash = _raised(ValueError("x"))
    tb = crash.__traceback__
    crash.__traceback__ = None
    sys.excepthook(type(crash), crash, tb)
    assert capture.calls[0]["exc"].__traceback__ is tb


def test_new_event_loops_get_the_handler_and_it_chains(saved_hooks: None) -> None:
    """Loops made after install carry our handler; it forwards to the default one."""
    capture = RecordingCapture()
    hooks = install_hooks(capture, excepthook=False, threading_hook=False, unraisable=False)
    loop = asyncio.new_event_loop()
    try:
        handler = loop.get_exception_handler()
        assert isinstance(handler, LoopExceptionHandler)
        exc = _raised(KeyError("quote"))
        forwarded: list[str] = []
        loop.default_exception_handler = lambda context: forwarded.append(  # type: ignore[method-assign]
            context["message"]
        )
        loop.call_exception_handler(
            {"message": "Task exception was never retrieved", "exception": exc}
        )
        loop.call_exception_handler({"message": "no exception here"})
        assert forwarded == ["Task exception was never retrieved", "no exception here"]
        assert capture.calls[0]["context"]["source"] == "asyncio"
        assert install_loop_handler(capture, loop) is handler  # not installed twice
    finally:
        loop.close()
    hooks.uninstall()
    after = asyncio.new_event_loop()
    try:
        assert not isinstance(after.get_exception_handler(), LoopExceptionHandler)
    finally:
        after.close()


def test_running_loop_gets_the_handler_chained_to_the_host_handler(saved_hooks: None) -> None:
    """Installed from inside a running loop: chained to the handler the host set."""
    capture = RecordingCapture()
    seen: list[Any] = []

    async def main() -> InstalledHooks:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
        hooks = install_hooks(capture, excepthook=False, threading_hook=False, unraisable=False)
        exc = _raised(ValueError("cb"))
        loop.call_exception_handler({"message": "callback failed", "exception": exc})
        hooks.uninstall()
        assert not isinstance(loop.get_exception_handler(), LoopExceptionHandler)
        return hooks

    asyncio.run(main())
    assert len(seen) == 1
    assert len(capture.calls) == 1
