"""The helper process of ``log_writer=process``: the writer's work, off the callers' GIL.

Started by :class:`~tradelog._logs.process_writer.ProcessLogWriter` as
``python -m tradelog._logs.helper READ_FD WRITE_FD`` (through a bootstrap that skips the public
package's ``__init__``: see ``_BOOT`` there). The parent ships batches of queued records over
one pipe; this process runs an ordinary :class:`~tradelog._logs.writer.LogWriter`
(its file and database threads: rows built, scrubbed, written to the files, the console and
``service_logs``, spooled when the database is away) and answers over the other pipe.

Every message is one frame: a 4-byte big-endian length, then a pickle. From the parent:

``("settings", Settings)``
    first, once (without the notification secrets: this process sends nothing).
``("batch", batch_id, records)``
    records taken off the parent's queue; written under ``batch_id``, so a batch the parent
    writes again after this process died is skipped by the database (see
    :mod:`tradelog._logs.batch`).
``("flush", seq)``
    a marker: answered with ``("flushed", seq, stats)`` once everything before it is written.
``("stop", seconds)``
    write what is left within ``seconds``; answered with ``("stopped", settled, stats)``, after
    which every batch received is in the database, the spool or the dead-letter file.

To the parent: ``("ready", pid)``, ``("acked", [batch_id, ...])`` for batches whose lines
are in the files and whose rows are in the database, the spool or the dead-letter file,
``("stats", stats)`` every second, and the two answers above.

This process ignores ``SIGINT`` and ``SIGTERM`` (a service manager signals the whole group): it
ends when its parent closes the pipe - on purpose or by dying - after writing everything it
received.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Final

from tradelog._db.engine import DbBounds, Engines
from tradelog._logs.inserters import make_inserter
from tradelog._logs.redact import RedactProcessor
from tradelog._logs.wire import dumps, loads, read_frame, write_frame
from tradelog._logs.writer import LogWriter, Marker, Shipment
from tradelog._users.registry import UserRegistry

__all__ = ["main", "serve"]

_STATS_EVERY: Final = 1.0
_QUEUED_BATCHES_MAX: Final = 8
"""Batches waiting in this process's queue before it stops reading the pipe (the parent's
sends then block and its own queue takes the back-pressure)."""


class _Answers:
    """This process's side of the answer pipe: acknowledgements, stats, flush answers."""

    def __init__(self, out: IO[bytes], snapshot: Callable[[], dict[str, Any]]) -> None:
        self._out = out
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._halves: dict[str, int] = {}
        self._ready: list[str] = []
        self.parked: Callable[[], bool] = lambda: False

    def send(self, message: tuple[Any, ...]) -> None:
        payload = dumps(message)
        with self._lock, contextlib.suppress(OSError, ValueError):
            write_frame(self._out, payload)

    def batch_done(self, batch_id: str) -> None:
        """One half of a batch is done (its lines, or its rows); ack it once both are."""
        with self._lock:
            if self._halves.pop(batch_id, None) is None:
                self._halves[batch_id] = 1
                return
            self._ready.append(batch_id)
        self.release()

    def release(self) -> None:
        """Send the acknowledgements held back, unless rows wait in memory for their user."""
        if self.parked():
            return
        with self._lock:
            ready, self._ready = self._ready, []
        if ready:
            self.send(("acked", ready))

    def stats(self) -> dict[str, Any]:
        return self._snapshot()


def _watch(answers: _Answers, markers: list[tuple[int, Any]], wake: threading.Event) -> None:
    """Answer flush markers in order and publish the counters every second."""
    next_stats = 0.0
    while True:
        if markers:
            seq, marker = markers[0]
            if marker.done.wait(0.05):
                markers.pop(0)
                answers.release()
                answers.send(("flushed", seq, answers.stats()))
                continue
        else:
            wake.wait(_STATS_EVERY)
            wake.clear()
        answers.release()
        now = time.monotonic()
        if now >= next_stats:
            next_stats = now + _STATS_EVERY
            answers.send(("stats", answers.stats()))


def serve(source: IO[bytes], out: IO[bytes]) -> int:
    """Run the writer on what the parent ships; returns the exit status."""
    first = read_frame(source)
    if first is None:
        return 1
    kind, settings = loads(first)
    if kind != "settings":
        return 2
    engines = Engines(
        settings.database_url,
        writer_timeout=settings.db_write_timeout,
        schema=settings.db_schema,
        bounds=DbBounds(settings.db_connect_timeout, settings.db_statement_timeout),
    )
    holder: list[LogWriter] = []

    def rejected(count: int) -> None:
        holder[0].count_rejected_users(count)

    users = UserRegistry(engines.app, mode=settings.unknown_users, on_reject=rejected)
    inserter = make_inserter(engines.log_writer(), lock_timeout=settings.db_write_timeout)
    writer = LogWriter(
        settings, RedactProcessor(values=settings.secret_values()), inserter, users=users
    )
    holder.append(writer)
    writer.publish_stats = False  # the parent publishes the counters this process sends
    writer.stats_file = False
    answers = _Answers(out, writer.snapshot)
    answers.parked = lambda: bool(writer.database.parked)
    writer.batch_done = answers.batch_done
    writer.start()
    markers: list[tuple[int, Marker]] = []
    wake = threading.Event()
    threading.Thread(
        target=_watch, args=(answers, markers, wake), name="tradelog-helper-answers", daemon=True
    ).start()
    answers.send(("ready", os.getpid()))
    queue = writer.queue
    stop_within = settings.db_write_timeout + 5.0
    while True:
        while len(queue) >= _QUEUED_BATCHES_MAX:
            time.sleep(0.001)
        payload = read_frame(source)
        if payload is None:
            break  # the parent closed the pipe, or died: write what came, then end
        message = loads(payload)
        kind = message[0]
        if kind == "batch":
            queue.append(Shipment(message[1], message[2]))
            writer.wake.set()
        elif kind == "flush":
            marker = Marker()
            queue.append(marker)
            writer.wake.set()
            markers.append((message[1], marker))
            wake.set()
        elif kind == "stop":
            stop_within = float(message[1])
            break
    settled = writer.stop(stop_within)
    answers.send(("stopped", settled, writer.snapshot()))
    engines.dispose()
    return 0


def main(argv: list[str]) -> int:
    """``python -m tradelog._logs.helper READ_FD WRITE_FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with os.fdopen(int(argv[1]), "rb") as source, os.fdopen(int(argv[2]), "wb") as out:
        return serve(source, out)


if __name__ == "__main__":  # pragma: no cover - run in the helper process
    sys.exit(main(sys.argv))
