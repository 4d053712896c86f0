"""A tiny host application that crashes in a chosen way (run as a script by the hook tests).

    python crash_app.py DATABASE_URL LOG_DIR SCENARIO USER_ID

It installs its *own* hooks first (as another error tracker would), then calls
``tradelog.configure()``, then fails. Each of the host's hooks prints a ``PREVIOUS ...`` line
on stderr so the tests can see it was still called.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import sys
import threading
from typing import Any

DATABASE_URL, LOG_DIR, SCENARIO, USER_ID = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def host_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    _say(f"PREVIOUS sys.excepthook {kind.__name__}: {value}")


def host_thread_hook(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread else "?"
    _say(f"PREVIOUS threading.excepthook {name} {args.exc_type.__name__}: {args.exc_value}")


def host_unraisable_hook(unraisable: Any) -> None:
    _say(f"PREVIOUS sys.unraisablehook {unraisable.exc_type.__name__}: {unraisable.exc_value}")


def host_loop_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _say(f"PREVIOUS loop handler {context.get('exception')!r}")


sys.excepthook = host_excepthook
threading.excepthook = host_thread_hook
sys.unraisablehook = host_unraisable_hook

import tradelog  # noqa: E402 - the host's hooks come first on purpose
from tradelog import guard, install_loop_handler  # noqa: E402

tradelog.configure(database_url=DATABASE_URL, log_dir=LOG_DIR, console=False)


def crash_main_thread() -> None:
    raise ValueError("main thread crash")


def crash_thread() -> None:
    def work() -> None:
        raise ZeroDivisionError("thread crash")

    thread = threading.Thread(target=work, name="order-worker")
    thread.start()
    thread.join()


async def _failing_task() -> None:
    raise KeyError("task crash")


async def _leave_task_unretrieved() -> None:
    task = asyncio.create_task(_failing_task(), name="quote-poller")
    await asyncio.sleep(0.05)
    del task
    gc.collect()


def crash_asyncio_new_loop() -> None:
    """The loop is created after tradelog was set up: the policy gives it the handler."""
    asyncio.run(_leave_task_unretrieved())


def crash_asyncio_running_loop() -> None:
    """The host sets its own handler on a running loop, then tradelog is added on top."""

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(host_loop_handler)
        install_loop_handler()
        await _leave_task_unretrieved()

    asyncio.run(main())


class _Leaky:
    def __del__(self) -> None:
        raise RuntimeError("cleanup failed")


def crash_unraisable() -> None:
    _Leaky()
    gc.collect()


@guard
def _child_target(user_id: int) -> None:
    with guard(user_id=user_id, job="backtest"):
        raise MemoryError("child crash")


def crash_child(method: str) -> None:
    process = multiprocessing.get_context(method).Process(
        target=_child_target, args=(USER_ID,), name="backtest-child"
    )
    process.start()
    process.join()
    _say(f"child exit code {process.exitcode}")


if __name__ == "__main__":
    scenarios = {
        "main": crash_main_thread,
        "thread": crash_thread,
        "asyncio-new-loop": crash_asyncio_new_loop,
        "asyncio-running-loop": crash_asyncio_running_loop,
        "unraisable": crash_unraisable,
        "child-fork": lambda: crash_child("fork"),
        "child-spawn": lambda: crash_child("spawn"),
    }
    scenarios[SCENARIO]()
