"""``log_writer=process``: the log writer's work moves to a helper process.

In one process the callers and the writer share one GIL: building a row (scrubbing, cleaning,
encoding) and binding it for the driver is Python work that runs between the callers' calls,
so sustained throughput is bounded by the sum of the two (``bench/caller_bench.py`` prints that
bound). :class:`ProcessLogWriter` keeps the caller side exactly as it is - one ``deque.append``
per event - and replaces the file thread by a *ship* thread that pickles each batch of queued
records (about 0.3 µs a record) and writes it to a helper process
(:mod:`tradelog._logs.helper`), which builds, writes the files and the console and inserts the
rows, on another core.

**Nothing taken is lost, nothing is written twice.** A batch keeps the id it was formed under
in this process. It stays noted here (``unacked``) until the helper acknowledges that its lines
are in the files and its rows are in the database, the spool or the dead-letter file. When the
helper dies or cannot be started, this process writes the unacknowledged batches itself, under
the same ids, and goes on with the ordinary writer threads (:class:`LogWriter`): a batch the
helper had committed is skipped by the database. The files have no such id: the lines of a
batch the helper wrote but had not acknowledged when it was killed appear twice.

Records that callers spill (a full queue) are written here as in thread mode: their lines to
the files and this process's console, their rows to the spool, replayed by this process's
database thread, which otherwise only waits. A flush waits for the helper, for that spool and
for this process's console.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from tradelog._logs.inserters import Inserter
from tradelog._logs.redact import Redactor
from tradelog._logs.rows import Record
from tradelog._logs.stats import COUNTERS
from tradelog._logs.wire import dumps, loads, read_frame, write_frame
from tradelog._logs.writer import LogWriter, Marker
from tradelog._signals import block_in_this_thread
from tradelog._users.registry import KnownUsers
from tradelog.config import Secret, Settings

__all__ = ["HelperLink", "ProcessLogWriter"]

_READY_WITHIN: Final = 10.0
"""Seconds the helper may take to start (import, connect) before this process writes itself."""
_EXIT_WITHIN: Final = 2.0
_BOOT: Final = """\
import importlib.util, sys, types
spec = importlib.util.find_spec("tradelog")
package = types.ModuleType("tradelog")
package.__spec__, package.__file__ = spec, spec.origin
package.__path__ = list(spec.submodule_search_locations)
sys.modules["tradelog"] = package
from tradelog._logs.helper import main
sys.exit(main(sys.argv))
"""
"""``python -m tradelog._logs.helper``, without running ``tradelog/__init__.py``: the helper
needs the writer's modules, not the public facade (nothing registers itself at import), and
starts in about 0.9 s instead of 1.3 s."""
_STOP_MARGIN: Final = 0.5
"""The helper gets the stop deadline less this; this process waits for it until the deadline
plus this (the caller of ``stop`` waits a second past the deadline for the threads)."""


class HelperLink:
    """This process's end of one helper process: its pipes, and a thread reading answers."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self._in: Any = None
        self._send_lock = threading.Lock()
        self.reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, settings: Settings) -> None:
        """Start the helper and send it ``settings`` (the notification secrets only as values
        to mask)."""
        to_child, ours_out = os.pipe()
        ours_in, from_child = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, path]))}
        try:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
                # -P: the working directory is not put first on the path, so the package
                # found is the one this process imported (first on PYTHONPATH), not a folder
                # named tradelog wherever the host happens to run.
                [sys.executable, "-P", "-c", _BOOT, str(to_child), str(from_child)],
                pass_fds=(to_child, from_child),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            for fd in (ours_out, ours_in):
                os.close(fd)
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        self._out = os.fdopen(ours_out, "wb")
        self._in = os.fdopen(ours_in, "rb")
        # The notification secrets are not the helper's to use; it gets them only among the
        # values it masks wherever they appear.
        quiet = dataclasses.replace(
            settings,
            telegram_bot_token=None,
            smtp_password=None,
            web_admin_token=None,
            redact_values=tuple(Secret(value) for value in settings.secret_values()),
        )
        self.send(dumps(("settings", quiet)))

    @property
    def sending(self) -> bool:
        """Whether a send is under way (blocked, when the helper does not read)."""
        return self._send_lock.locked()

    def send(self, payload: bytes) -> None:
        """Write one frame; raises ``OSError`` when the helper is gone."""
        out = self._out
        if out is None:
            raise BrokenPipeError("the helper process is not running")
        with self._send_lock:
            try:
                write_frame(out, payload)
            except ValueError as exc:  # closed meanwhile
                raise BrokenPipeError(str(exc)) from exc

    def receive(self) -> tuple[Any, ...] | None:
        """The next answer; None once the helper closed its end (or died)."""
        source = self._in
        if source is None:
            return None
        try:
            payload = read_frame(source)
        except (OSError, ValueError):
            return None
        if payload is None:
            return None
        return loads(payload)

    def close(self, timeout: float) -> None:
        """Close the pipe (the helper ends once it has written what it got) and reap it;
        kill it if it is still there after ``timeout`` seconds - or if a send is still
        blocked on the pipe by then (a helper that stopped reading: stopped, or stuck)."""
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._send_lock.acquire(timeout=max(0.0, timeout)):
            self.kill()  # the blocked write fails with EPIPE and lets go of the lock
            self._send_lock.acquire()
        try:
            out, self._out = self._out, None
            if out is not None:
                with contextlib.suppress(OSError, ValueError):
                    out.close()
        finally:
            self._send_lock.release()
        timeout = max(0.0, deadline - time.monotonic())
        process = self.process
        if process is None:
            return
        try:
            process.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_EXIT_WITHIN)

    def abandon(self) -> list[Any]:
        """In a forked child: let go of the parent's helper. The inherited pipe ends are
        pointed at ``/dev/null`` (so the helper sees the end of its pipe when the parent
        closes it, and a frame half-written at the fork can never be completed from here);
        returns the file objects, which the caller keeps referenced."""
        ends = [end for end in (self._out, self._in) if end is not None]
        for end in ends:
            with contextlib.suppress(OSError, ValueError):
                null = os.open(os.devnull, os.O_RDWR)
                try:
                    os.dup2(null, end.fileno())
                finally:
                    os.close(null)
        self._out = self._in = None
        self.process = None
        return ends


class ProcessLogWriter(LogWriter):
    """A :class:`LogWriter` whose building and writing happen in a helper process."""

    def __init__(
        self,
        settings: Settings,
        redactor: Redactor,
        inserter: Inserter,
        *,
        users: KnownUsers | None = None,
    ) -> None:
        super().__init__(settings, redactor, inserter, users=users)
        # The helper shows the lines of the batches it is sent; this process's console shows
        # those it writes itself: a caller's spill when the queue is full, and everything
        # once the helper is gone.
        self.link = HelperLink()
        self.unacked: dict[str, list[Record]] = {}
        """Batches shipped and not yet acknowledged, by id, oldest first."""
        self._lock = threading.Lock()
        self._markers: dict[int, Marker] = {}
        self._seq = 0
        self._helper_stats: dict[str, Any] | None = None
        self._gone: str | None = None
        self._helper_stopped = threading.Event()
        self._reader: threading.Thread | None = None
        self._left_behind = 0
        self.local = False
        """True once this process writes itself (the helper could not start, or died)."""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the helper process - waiting until it is ready, at most
        :data:`_READY_WITHIN` seconds, so the first events are not spilled while it imports
        and connects - and this process's threads. When the helper cannot start, this
        process writes itself (``stats()["log_writer"]`` says so)."""
        if self._running or self._stopped:
            return
        self.start_helper()
        super().start()

    @property
    def thread_idents(self) -> frozenset[int]:
        idents = set(super().thread_idents)
        reader = self._reader
        if reader is not None and reader.ident is not None:
            idents.add(reader.ident)
        return frozenset(idents)

    def stop(self, timeout: float) -> bool:
        """Stop the helper (it writes what it was sent within ``timeout``) and this
        process's threads. A helper that stopped reading its pipe (stopped, stuck) is killed
        when ``timeout`` is nearly spent, so the ship thread's blocked send fails and what the
        helper did not acknowledge is written here; see :meth:`_finish_intake`."""
        self._left_behind = 0
        unblock = threading.Timer(max(0.0, timeout - _STOP_MARGIN), self._unblock)
        unblock.daemon = True
        unblock.start()
        try:
            settled = super().stop(timeout)
        finally:
            unblock.cancel()
        return settled and not self._left_behind

    def _unblock(self) -> None:
        if self.link.sending:
            self._gone = self._gone or "stopped reading its pipe"
            self.link.kill()

    def _finish_intake(self, deadline: float) -> None:
        """Close the pipe and reap the helper (killed when it is stuck). Batches it did not
        acknowledge are written here: rows to the spool under their ids, lines to the files."""
        self.link.close(max(0.0, deadline - time.monotonic()) + _EXIT_WITHIN)
        for batch_id, records in self._take_unacked():
            self._left_behind += self._write_here(batch_id, records) or len(records)

    def _take_unacked(self) -> list[tuple[str, list[Record]]]:
        """The batches the helper did not acknowledge, oldest first, moved to :attr:`held`
        (where a dying process's :meth:`spool_what_is_left` finds them) to be written here."""
        with self._lock:
            batches = list(self.unacked.items())
            self.unacked.clear()
        for batch_id, records in batches:
            self.held[batch_id] = records
        return batches

    def abandon(self) -> object:
        return (self.link.abandon(), super().abandon())

    def dead_lettered(self) -> int:
        helper = self._helper_stats or {}
        return self.stats.dead_lettered + int(helper.get("dead_lettered", 0))

    def snapshot(self) -> dict[str, Any]:
        data = super().snapshot()
        helper = self._helper_stats
        data["log_writer"] = "thread (helper process gone)" if self.local else "process"
        data["helper_pid"] = None if self.local else self.link.pid
        if helper is None:
            return data
        for name in COUNTERS:
            data[name] = data.get(name, 0) + int(helper.get(name, 0))
        data["spool_pending"] += int(helper.get("spool_pending", 0))
        if not self.local:
            for name in ("database", "stalled_for", "recovered_error"):
                data[name] = helper.get(name)
            data["last_error"] = helper.get("last_error") or data.get("last_error")
        return data

    # -- ship thread -----------------------------------------------------------------------

    _intake_name = "tradelog-ship"

    def _run_intake(self) -> None:
        """The ship thread: batches to the helper; the file thread once it is gone."""
        block_in_this_thread()
        if self.local:
            self._run_files()
            return
        queue = self.queue
        wake = self.wake
        while True:
            if self._gone is not None:
                self._fall_back(self._gone)
                self._run_files()
                return
            if not queue:
                wake.wait(self.interval)
                wake.clear()
            while queue and self._gone is None:
                batch_id, records, marker = self._take_batch()
                if records:
                    self._ship(batch_id, records)
                else:
                    self.held.pop(batch_id, None)
                if marker is not None:
                    if marker.stop_deadline is not None:
                        self._stop_helper(marker)
                        return
                    self._ship_marker(marker)

    def start_helper(self) -> bool:
        """Start the helper process and wait until it is ready (once); False when this
        process writes itself instead."""
        if self.link.process is not None or self.local:
            return not self.local
        try:
            self.link.start(self.settings)
        except Exception as exc:
            self._fall_back(f"could not start: {type(exc).__name__}: {exc}")
            return False
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read_answers, args=(ready,), name="tradelog-helper-answers", daemon=True
        )
        self._reader.start()
        if not ready.wait(_READY_WITHIN) or self._gone is not None:
            self._fall_back(self._gone or f"not ready after {_READY_WITHIN:.0f} s")
            return False
        return True

    def _ship(self, batch_id: str, records: list[Record]) -> None:
        with self._lock:
            self.unacked[batch_id] = records
        try:
            self.link.send(dumps(("batch", batch_id, records)))
        except OSError as exc:
            self._gone = self._gone or f"pipe: {exc}"
        self.held.pop(batch_id, None)
        self.stats.processed += len(records)

    def _ship_marker(self, marker: Marker) -> None:
        self._seq += 1
        with self._lock:
            self._markers[self._seq] = marker
        try:
            self.link.send(dumps(("flush", self._seq)))
        except OSError as exc:
            self._gone = self._gone or f"pipe: {exc}"

    def _stop_helper(self, marker: Marker) -> None:
        """Ask the helper to write what is left within the stop deadline; write here what it
        did not acknowledge, then let this process's database thread finish."""
        deadline = marker.stop_deadline or time.monotonic()
        if self._gone is None:
            try:
                within = max(0.0, deadline - time.monotonic() - _STOP_MARGIN)
                self.link.send(dumps(("stop", within)))
            except OSError as exc:
                self._gone = f"pipe: {exc}"
        if self._gone is None and not self._helper_stopped.wait(
            max(0.0, deadline - time.monotonic()) + _STOP_MARGIN
        ):
            self._gone = "did not stop in time"
        if self._gone is not None:
            self._fall_back(self._gone)
        self._hand_over(marker)

    def _fall_back(self, reason: str) -> None:
        """The helper is gone: write the batches it did not acknowledge here, under their
        ids, and go on with the ordinary threads."""
        with self.stats.lock:
            self.stats.internal_errors += 1
            self.stats.last_error = f"log writer helper process: {reason}; writing in this process"
        self.link.kill()
        self.local = True
        with self._lock:
            markers = [self._markers[seq] for seq in sorted(self._markers)]
            self._markers.clear()
        for batch_id, records in self._take_unacked():
            self.stats.processed -= len(records)  # counted once more as they are written here
            self._process(batch_id, records)
        for marker in markers:
            self._hand_over(marker)

    # -- answers ---------------------------------------------------------------------------

    def _read_answers(self, ready: threading.Event) -> None:
        block_in_this_thread()
        link = self.link
        while True:
            answer = link.receive()
            if answer is None:
                break
            kind = answer[0]
            if kind == "acked":
                with self._lock:
                    for batch_id in answer[1]:
                        self.unacked.pop(batch_id, None)
            elif kind == "flushed":
                self._helper_stats = answer[2]
                with self._lock:
                    done = [seq for seq in self._markers if seq <= answer[1]]
                    markers = [self._markers.pop(seq) for seq in sorted(done)]
                for marker in markers:  # done once this process's own spool is empty too
                    self._hand_over(marker)
            elif kind == "stats":
                self._helper_stats = answer[1]
            elif kind == "ready":
                ready.set()
            elif kind == "stopped":
                self._helper_stats = answer[2]
                with self._lock:
                    self.unacked.clear()  # in the database, the spool or dead letters
                self._helper_stopped.set()
        if not self._helper_stopped.is_set():
            process = link.process
            code = None if process is None else process.poll()
            self._gone = self._gone or ("exited" if code is None else f"exited with status {code}")
            self.wake.set()
        ready.set()
