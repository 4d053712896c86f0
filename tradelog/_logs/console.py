"""The console view of the log: lines for ``sys.stderr``, written by a thread of their own.

The caller never renders anything: an event meant for the console is queued like any other,
flagged (the last item of its :data:`~tradelog._logs.rows.Record`). The writer's file thread,
once it has built a batch (redaction, sanitising, encoding: see :mod:`tradelog._logs.rows`),
hands the flagged events to :class:`ConsoleLines` with one ``deque`` append per batch, and the
``tradelog-console`` thread writes them, one ``write`` per wake-up. The caller's cost therefore
does not depend on the size of what it logs, and a console nobody reads (a full pipe) stalls
neither the caller nor the files and the database.

Two formats, chosen when the writer is built:

* ``sys.stderr`` is a terminal: structlog's ``ConsoleRenderer`` (colours) on the scrubbed event
  (:class:`PrettyLines`), rendered on the console thread;
* otherwise (a pipe, a file, systemd, docker): **one JSON line per event**, exactly the line the
  per-user file gets - ``{"timestamp", "level", "user_id", "module", "message", "context"}``,
  already scrubbed and encoded by the row builder, so it costs nothing more.

Lines keep the order the events were queued in (so each thread's lines keep its order).
:meth:`ConsoleLines.drain` waits until everything handed over so far is written (``flush()``
and ``shutdown()`` call it). At most ``max_pending`` characters wait; beyond that new lines
are dropped, counted (:attr:`ConsoleLines.dropped`) and reported by one notice line once the
console takes lines again - the files and the database still get every event.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import structlog

from tradelog._logs.redact import REDACT_MARGIN, Redactor
from tradelog._logs.sanitize import truncate
from tradelog._signals import block_in_this_thread

__all__ = ["ConsoleLines", "PrettyLines", "stderr_is_terminal"]

PRETTY_MESSAGE_MAX: Final = 64 * 1024
"""A pretty line shows at most this many characters of the message (scrubbed before the cut)."""
MAX_PENDING: Final = 32 * 1024 * 1024
"""Characters that may wait for the console before new lines are dropped (and counted)."""

Shown = tuple[Any, str]
"""What the file thread hands over: (the queued record, its JSON line)."""


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` is a terminal (then the console gets coloured pretty lines)."""
    try:
        return bool(sys.stderr.isatty())
    except Exception:
        return False


class PrettyLines:
    """Renders a queued record the way ``structlog.dev.ConsoleRenderer`` does, scrubbed."""

    def __init__(self, redactor: Redactor, zone: ZoneInfo, *, colors: bool = True) -> None:
        self._redactor = redactor
        self._zone = zone
        self._renderer: Callable[[Any, str, dict[str, Any]], str] = structlog.dev.ConsoleRenderer(
            colors=colors
        )

    def __call__(self, record: Any) -> str:
        """The line (without its newline) for ``record`` = (time, level, logger, event, ...)."""
        at, level, name, event = record[0], record[1], record[2], record[3]
        try:
            view: dict[str, Any] = {
                "timestamp": datetime.fromtimestamp(at, self._zone).isoformat(
                    timespec="milliseconds"
                ),
                "level": level.lower(),
                "logger": name,
            }
            view.update(event)
            message = view.setdefault("event", "")
            if type(message) is str and len(message) > PRETTY_MESSAGE_MAX:
                view["event"] = message[: PRETTY_MESSAGE_MAX + REDACT_MARGIN]
            scrubbed = self._redactor(view)
            if not isinstance(scrubbed, dict):  # pragma: no cover - a dict stays a dict
                scrubbed = {"event": "<event could not be rendered>"}
            shown = scrubbed.get("event")
            if type(shown) is str and len(shown) > PRETTY_MESSAGE_MAX:
                scrubbed["event"] = truncate(shown, PRETTY_MESSAGE_MAX)
            return self._renderer(None, level.lower(), scrubbed)
        except Exception:  # pragma: no cover - a renderer that fails: say so, scrubbed
            return f"{level} {name}: <event could not be rendered>"


class ConsoleLines:
    """The console queue and its thread (see the module docstring).

    ``render``: None writes the JSON lines as they are; else a callable turning a record into
    a line (:class:`PrettyLines`).
    """

    def __init__(
        self, render: Callable[[Any], str] | None = None, *, max_pending: int = MAX_PENDING
    ) -> None:
        self._render = render
        self._max_pending = max_pending
        self._pending: deque[Sequence[Shown]] = deque()
        self._size = 0
        self._queued = 0
        self._written = 0
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.dropped = 0
        """Lines dropped because the console did not take them fast enough."""
        self._reported = 0

    @property
    def ident(self) -> int | None:
        """The console thread's id (None before :meth:`start`)."""
        return None if self._thread is None else self._thread.ident

    def start(self) -> None:
        """Start the console thread."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="tradelog-console", daemon=True)
        self._thread.start()

    def put(self, shown: Sequence[Shown]) -> None:
        """Queue the lines of one batch (in order). Never blocks, never raises."""
        size = sum(len(line) for _, line in shown)
        with self._lock:
            if self._size + size > self._max_pending and self._size:
                self.dropped += len(shown)
                return
            self._pending.append(shown)
            self._size += size
            self._queued += 1
        if self._thread is None or not self._thread.is_alive():
            self._write_pending()  # no console thread (stopped, or a forked child): write now
        else:
            self._wake.set()

    def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every line queued so far is written."""
        with self._done:
            target = self._queued
            return self._done.wait_for(lambda: self._written >= target, max(0.0, timeout))

    def stop(self, timeout: float) -> bool:
        """Write what is queued (within ``timeout``), then end the thread."""
        written = self.drain(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, min(timeout, 1.0)))
        self._thread = None
        return written

    def abandon(self) -> None:
        """In a forked child: forget the parent's queue (its thread does not exist here)."""
        self._pending.clear()
        self._size = 0
        self._queued = self._written = 0
        self._thread = None
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)

    def _run(self) -> None:
        block_in_this_thread()
        while not self._stopping:
            self._wake.wait(1.0)
            self._wake.clear()
            self._write_pending()
        self._write_pending()

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                batches = list(self._pending)
                self._pending.clear()
            text = self._text(batches)
            with contextlib.suppress(Exception):
                stream = sys.stderr
                stream.write(text)
                stream.flush()
            with self._done:
                self._size -= sum(len(line) for batch in batches for _, line in batch)
                self._written += len(batches)
                self._done.notify_all()

    def _text(self, batches: list[Sequence[Shown]]) -> str:
        render = self._render
        if render is None:
            text = "".join([line for batch in batches for _, line in batch])
        else:
            text = "".join([f"{render(record)}\n" for batch in batches for record, _ in batch])
        dropped = self.dropped - self._reported
        if dropped:
            self._reported += dropped
            text += (
                f"tradelog: {dropped} console lines were dropped (stderr was not read fast "
                "enough); the files and the database have every event\n"
            )
        return text
