"""Which tests start another interpreter or program, so the quick loop stays quick.

:func:`watch` wraps ``subprocess.Popen`` and ``multiprocessing``'s ``Process.start`` once per
test process and notes each start made on the main thread (the test's own; a thread another
test left behind is not this test's doing). ``tests/conftest.py`` fails a test that is not
marked ``slow`` and started one: ``make test-fast`` leaves the slow tests out, and a process
costs about a second of CPU (a fresh interpreter importing tradelog).
"""

from __future__ import annotations

import multiprocessing.process
import subprocess
import threading
from typing import Any

__all__ = ["started", "watch"]

started: list[str] = []
"""What the main thread started since the list was last cleared (a short description each)."""


def watch() -> None:
    """Install the wrappers (idempotent)."""
    if getattr(subprocess.Popen.__init__, "spawn_watch", False):
        return
    popen_init = subprocess.Popen.__init__
    process_start = multiprocessing.process.BaseProcess.start

    def popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **options: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            shown = args if isinstance(args, str | bytes) else " ".join(map(str, args))
            started.append(f"subprocess {str(shown)[:120]}")
        popen_init(self, args, *rest, **options)

    def start(self: multiprocessing.process.BaseProcess) -> None:
        if threading.current_thread() is threading.main_thread():
            started.append(f"multiprocessing {self.name}")
        process_start(self)

    popen.spawn_watch = True  # type: ignore[attr-defined]
    subprocess.Popen.__init__ = popen  # type: ignore[method-assign]
    multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
