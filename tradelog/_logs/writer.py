"""The background log writer: from the in-memory queue to the files and the database.

Callers only append to :attr:`LogWriter.queue` (a ``collections.deque``: appending is one
atomic C call, no lock). Two daemon threads do the rest:

``tradelog-files``
    wakes every ``flush_interval`` seconds, or early when the queue passes a quarter of its
    size; takes up to ``batch_size`` records at a time, turns them into rows and lines
    (:class:`~tradelog._logs.rows.RowBuilder`: redaction, sanitising, encoding), appends the
    lines to the per-user files and hands the rows over.
``tradelog-db``
    inserts the batches handed over (:class:`~tradelog._logs.db_sink.DatabaseSink`): every
    batch waiting when it looks, in one transaction; spools them when the database is
    unavailable, replays the spool when it answers again, and publishes the counters every
    few seconds.

``tradelog-console`` (console on)
    writes the console lines of the events flagged for it, which the file thread hands over
    per batch (:mod:`tradelog._logs.console`): the same JSON line as the file, or a pretty
    line when ``sys.stderr`` is a terminal.

Splitting the work lets the file side go on while the database is slow or down, and lets the
database driver's C code (which releases the GIL) overlap the Python work of the next batches.
Each driver call lets go of the GIL and must take it back, which behind the busy file thread
waits up to the interpreter's switch interval (5 ms): a cost per call, not per row. So the
file thread does not wait for the database thread: it hands batches over and goes on building
(up to :data:`_IN_FLIGHT_MAX` batches wait in memory), and the database thread writes all
that has arrived in one transaction, a few calls for thousands of rows. When the database
thread falls far behind, the file thread spools batches itself.

:meth:`LogWriter.flush` queues a marker behind everything emitted so far and waits until the
database thread reaches it with nothing left in the spool - its own, and the spools left by
processes that are gone (a terminated child), which it adopts and replays first.

**Nothing taken is lost.** Records taken off the queue are, at every moment, either noted in
:attr:`LogWriter.held` under the id of the batch they will form, or handed over to the database
thread, or in the spool (:mod:`tradelog._signals` holds signals back on the main thread for
the few statements that move them from one place to the next). A ``BaseException`` on a
caller's thread (``sys.exit`` in a ``SIGTERM`` handler) puts what that call held back at the
front of the queue; a process about to die (:meth:`LogWriter.spool_what_is_left`) spools
everything held, queued, handed over or in the database call, under the batches' ids, so
whatever a stuck call commits after all is skipped at replay. No lock is held across code a
signal handler can re-enter.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

from tradelog._logs.batch import Batch, new_batch_id
from tradelog._logs.console import ConsoleLines, PrettyLines, stderr_is_terminal
from tradelog._logs.db_sink import DatabaseSink
from tradelog._logs.file_sink import FileSink
from tradelog._logs.inserters import Inserter
from tradelog._logs.redact import Redactor
from tradelog._logs.rows import DbRow, FileKey, Prepared, Record, RowBuilder
from tradelog._logs.spool import DeadLetterFile, Spool
from tradelog._logs.stats import STALL_AFTER, WriterStats, prune_writer_stats, save
from tradelog._signals import block_in_this_thread, deferred
from tradelog._users.registry import KnownUsers
from tradelog.config import Settings

__all__ = ["LogWriter", "Marker", "Shipment"]

_STATS_EVERY: Final = 5.0
_SEAL_EVERY: Final = 60.0
_DB_WAIT: Final = 1.0
"""How long the file thread waits for the database thread to take a batch before it spools
the batch itself (the database is stuck: lock wait, slow network)."""
_IN_FLIGHT_MAX: Final = 8
"""Batches handed to the database thread and not yet written (4,000 rows at the default batch
size): the file thread waits beyond that, and spools after :data:`_DB_WAIT`. The drain of
50,000 queued rows on SQLite went from 0.63-0.77x sqlite3 ``executemany`` with one batch at a
time (in lock-step) to 0.84x with up to 4, 0.90x with 8, 0.91x with 16, 0.93x with 32 (3-4
runs each). They are in memory only, like the queue: a ``SIGKILL`` loses them (a ``SIGTERM``
spools them, see :meth:`LogWriter.spool_what_is_left`), so the bound is where the gain stops."""
_REPLAY_BUDGET: Final = 4
"""Spooled batches replayed between two looks at newly handed-over batches."""


class Marker:
    """A point in the queue; set once everything before it is written (or on stop)."""

    __slots__ = ("done", "stop_deadline")

    def __init__(self, stop_deadline: float | None = None) -> None:
        self.done = threading.Event()
        self.stop_deadline = stop_deadline


class Shipment(NamedTuple):
    """Records that arrive already formed into a batch, under the id they keep (a helper
    process's writer receives these from its parent: see :mod:`tradelog._logs.helper`)."""

    batch_id: str
    records: list[Record]


def _no_one(batch_id: str) -> None:
    return None


class LogWriter:
    """Owns the queue, the sinks and the two writer threads of one process."""

    def __init__(
        self,
        settings: Settings,
        redactor: Redactor,
        inserter: Inserter,
        *,
        users: KnownUsers | None = None,
    ) -> None:
        self.settings = settings
        self.log_dir = Path(settings.log_dir)
        self.queue: deque[Any] = deque()
        self.limit = settings.queue_size
        # Wake the writer early once a quarter of the queue is used (at least a batch, at most
        # half the queue); otherwise it wakes every flush_interval.
        self.wake_at = max(1, min(max(settings.batch_size, self.limit // 4), self.limit // 2))
        self.wake = threading.Event()
        self.batch_size = settings.batch_size
        self.interval = settings.flush_interval
        self.stats = WriterStats(stall_after=STALL_AFTER)
        self.publish_stats = True
        """Save the counters from the database thread every few seconds (False: a status
        publisher that never touches the database does it; see :mod:`tradelog._status`)."""
        self.stats_file = True
        """Whether this writer has a stats file at all (a helper process's counters are
        published by its parent, merged with its own)."""
        self.redactor = redactor
        self.files = FileSink(self.log_dir, settings.file_max_bytes)
        self.dead_letter = DeadLetterFile(self.log_dir / "_dead_letter", settings.zone)
        self.spool = Spool(self.log_dir / "_spool")
        self.database = DatabaseSink(
            inserter,
            self.spool,
            self.dead_letter,
            self.stats,
            batch_size=settings.batch_size,
            users=users,
        )
        self._builder = RowBuilder(redactor, settings.zone)
        self._spill_builders = threading.local()
        self.held: dict[str, list[Record]] = {}
        """Records taken off the queue and not yet handed over or spooled, by batch id."""
        self.console: ConsoleLines | None = None
        if settings.console:
            pretty = PrettyLines(redactor, settings.zone) if stderr_is_terminal() else None
            self.console = ConsoleLines(pretty)
        self._handoff: deque[Any] = deque()
        self._handoff_wake = threading.Event()
        self._slot = threading.Condition()
        self._in_flight = 0
        self._db_stalled = False
        self._threads: list[threading.Thread] = []
        self._running = False
        self._stopped = False
        self._next_seal = 0.0
        self._dead_seen = 0
        """``dead_lettered`` when the previous flush returned."""
        self.batch_done: Callable[[str], None] = _no_one
        """Called twice for every batch: once its lines are in the files, once its rows are
        in the database, the spool or the dead-letter file (a helper process acknowledges a
        shipment to its parent after both)."""

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the two writer threads."""
        if self._running or self._stopped:
            return
        self._running = True
        try:
            prune_writer_stats(self.log_dir)
        except Exception:  # pragma: no cover - housekeeping only
            self.stats.internal_errors += 1
        self._threads = [
            threading.Thread(target=self._run_intake, name=self._intake_name, daemon=True),
            threading.Thread(target=self._run_database, name="tradelog-db", daemon=True),
        ]
        if self.console is not None:
            self.console.start()
        for thread in self._threads:
            thread.start()

    @property
    def running(self) -> bool:
        return self._running and any(thread.is_alive() for thread in self._threads)

    @property
    def thread_idents(self) -> frozenset[int]:
        idents = {t.ident for t in self._threads if t.ident is not None}
        if self.console is not None and self.console.ident is not None:
            idents.add(self.console.ident)
        return frozenset(idents)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is in the files and the database.

        False when that did not happen within ``timeout`` - or when rows went to the
        dead-letter file since the previous flush (the database refused them: they are not
        in it)."""
        before = self._dead_seen
        if not self.running:
            done = self.database.settled and not self.queue
        else:
            deadline = time.monotonic() + max(0.0, timeout)
            marker = Marker()
            self.queue.append(marker)
            self.wake.set()
            done = marker.done.wait(max(0.0, timeout))
            if self.console is not None:  # the file thread handed the lines over first
                self.console.drain(max(0.0, deadline - time.monotonic()))
        dead = self.dead_lettered()
        self._dead_seen = dead
        return done and dead == before

    def dead_lettered(self) -> int:
        """Rows sent to the dead-letter file so far."""
        return self.stats.dead_lettered

    def stop(self, timeout: float) -> bool:
        """Write what is queued, replay what can be replayed within ``timeout``, then stop.

        Returns whether everything reached the database (else it stays in the spool).
        """
        if self._stopped:
            return self.database.settled
        self._stopped = True
        deadline = time.monotonic() + max(0.0, timeout)
        if self._running:
            marker = Marker(stop_deadline=deadline)
            self.queue.append(marker)
            self.wake.set()
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        stuck = any(thread.is_alive() for thread in self._threads)
        self._running = False
        if stuck:
            # A database call that does not return (a network stall): spool what it holds
            # under its batch ids - if it commits after all, the replay skips it.
            self.database.abandon()
            self._spool_handed_over()
        # Anything that slipped in behind the stop marker is written on this thread.
        self._spill_queue()
        self._finish_intake(deadline)
        self.save_stats()
        if self.console is not None:
            self.console.stop(max(0.0, deadline - time.monotonic()) + 0.5)
        if stuck:  # pragma: no cover - a hung database call: leave its resources alone
            return False
        self.files.close()
        self.spool.close()
        self.database.inserter.close()
        return self.database.settled

    def _finish_intake(self, deadline: float) -> None:
        """At :meth:`stop`, once the threads are done and before the sinks close: write on
        this thread whatever another stage still holds (nothing, here)."""

    def spool_what_is_left(self) -> int:
        """The process is about to die (``SIGTERM``) with the writer still busy: put what is
        held by an interrupted call, queued, waiting for the database thread or inside the
        database call in the files and the spool, for the next writer to replay (batches
        keep their ids, so one the database thread commits meanwhile is skipped there).
        Returns how many rows were spooled this way."""
        spooled = 0
        for batch_id in list(self.held):
            records = self.held.get(batch_id)
            if records:  # _write_here takes it out of held as it spools it
                spooled += self._write_here(batch_id, records)
        spooled += self._spill_queue()
        spooled += self._spool_handed_over()
        spooled += self.database.abandon()
        return spooled

    def _spill_queue(self) -> int:
        """Write everything queued on this thread (markers are dropped)."""
        count = 0
        queue = self.queue
        while queue:
            try:
                head = queue[0]
            except IndexError:
                break
            if type(head) is not tuple:
                with contextlib.suppress(IndexError):
                    queue.popleft()
                continue
            count += self.spill(None)
        return count

    def _spool_handed_over(self) -> int:
        """Spool the batches handed to the database thread and not taken yet (each is
        spooled before it leaves the hand-over queue: at worst twice, under one id)."""
        count = 0
        handoff = self._handoff
        while handoff:
            try:
                item = handoff[0]
            except IndexError:
                break
            if type(item) is Batch:
                self.database.spool_batches([item])
                count += len(item.rows)
            try:
                taken = handoff.popleft()
            except IndexError:
                break
            if taken is not item:  # the database thread took ours meanwhile: keep this one
                handoff.appendleft(taken)
        return count

    def abandon(self) -> object:
        """In a forked child: let go of everything inherited from the parent's writer.

        Returns the inherited database connection, which the caller keeps referenced (closing
        it would end the parent's session).
        """
        self._stopped = True
        self._running = False
        self.queue.clear()
        if self.console is not None:
            self.console.abandon()
        self.files.abandon()
        self.spool.abandon()
        return self.database.inserter.abandon()

    # -- caller side -----------------------------------------------------------------------

    def submit(self, record: Record) -> None:
        """Queue ``record`` (wake the writer early when the queue passes its mark), or handle
        it on the calling thread when the queue is full or intake is closed (:meth:`spill`)."""
        queue = self.queue
        if len(queue) < self.limit:
            queue.append(record)
            if len(queue) == self.wake_at:
                self.wake.set()
        else:
            self.spill(record)

    def close_intake(self) -> None:
        """From now on handle every record on the caller's thread (the writer is stopping)."""
        self.limit = 0

    def count_rejected_users(self, count: int) -> None:
        """Count writes refused because their user is unknown (``rejected_users``)."""
        with self.stats.lock:
            self.stats.rejected_users += count

    def note_observer_error(self) -> None:
        """Count an exception observer that raised (reported as ``observer_errors``)."""
        with self.stats.lock:
            self.stats.observer_errors += 1

    def spill(self, record: Record | None) -> int:
        """Handle a record on the calling thread: the queue is full, or the writer stopped.

        The caller also takes a batch of queued records off the queue and writes them with
        its own (database rows to the spool, replayed by the database thread, then the file
        lines), so a writer that has fallen behind gets room again and the next calls queue
        as usual. Thread-safe and lock-free. Returns how many records were written; raises
        only a ``BaseException`` raised into it (a signal handler's ``SystemExit``), after
        putting what it held back at the front of the queue.
        """
        batch_id = new_batch_id()
        records: list[Record] = []
        try:
            # A signal held back here is handled as the block ends: what it raises must
            # find the records noted as held, to be put back.
            with deferred():
                self.held[batch_id] = records
                self._take_queued(records, self.batch_size - (record is not None))
                if record is not None:
                    records.append(record)
            return self._write_here(batch_id, records, count_overflow=record is not None)
        except BaseException:
            with deferred():
                back = self.held.pop(batch_id, None)
                if back:
                    self.queue.extendleft(reversed(back))
            raise

    def _write_here(
        self, batch_id: str, records: list[Record], *, count_overflow: bool = False
    ) -> int:
        """Write ``records`` (held under ``batch_id``) on this thread: rows to the spool,
        then lines to the files."""
        try:
            prepared = self._build_here(records)
            self._show(records, prepared)
            groups: dict[FileKey, list[str]] = {}
            rows: list[DbRow] = []
            rejects: list[Prepared] = []
            for item in prepared:
                groups.setdefault(item.file_key, []).append(item.line)
                if item.row is not None and item.reject is None:
                    rows.append(item.row)
                elif item.row is not None:
                    rejects.append(item)
            # No handler runs on this thread while it holds a lock of the sinks (the spool's,
            # the files', the counters'): one that re-entered them would wait on itself.
            with deferred():
                if self.held.pop(batch_id, None) is None:
                    return 0  # taken over by spool_what_is_left (a signal handler)
                if rows:
                    self.database.spool_batches([Batch(batch_id, rows)])
                try:
                    self._dead_letter(rejects)
                finally:
                    self._write_files(groups)
                with self.stats.lock:
                    self.stats.overflowed += count_overflow
                    self.stats.processed += len(records) - count_overflow
            return len(records)
        except Exception as exc:
            with self.stats.lock:
                self.stats.internal_errors += 1
                self.stats.last_error = f"spill: {type(exc).__name__}: {exc}"
            return 0

    @property
    def _spill_builder(self) -> RowBuilder:
        """The calling thread's spill builder (tests look at its plan cache)."""
        local = self._spill_builders
        builder: RowBuilder | None = getattr(local, "builder", None)
        if builder is None:
            builder = local.builder = RowBuilder(
                self.redactor, self.settings.zone, compile_plans=False
            )
        return builder

    def _build_here(self, records: list[Record]) -> list[Prepared]:
        """Build ``records`` with this thread's spill builder; with a fresh one when a signal
        handler spills while this thread was already building (a builder is not re-entrant)."""
        local = self._spill_builders
        if getattr(local, "busy", False):
            fresh = RowBuilder(self.redactor, self.settings.zone, compile_plans=False)
            return [fresh.build(item) for item in records]
        builder = self._spill_builder
        local.busy = True
        try:
            return [builder.build(item) for item in records]
        finally:
            local.busy = False

    def _take_queued(self, taken: list[Record], limit: int) -> None:
        """Move up to ``limit`` records from the front of the queue to ``taken`` (stopping
        at a marker)."""
        queue = self.queue
        while len(taken) < limit:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if type(item) is not tuple:
                queue.appendleft(item)
                break
            taken.append(item)

    def snapshot(self) -> dict[str, Any]:
        """The counters and gauges (see :mod:`tradelog._logs.stats`), and which writer this
        is (``log_writer``)."""
        data = self.stats.snapshot(
            queue_depth=len(self.queue),
            spool_pending=self.spool.pending,
            running=self.running,
        )
        data["log_writer"] = "thread"
        return data

    def save_stats(self) -> None:
        """Write the counters to this process's stats file (unless ``stats_file`` is off)."""
        if self.stats_file:
            save(self.log_dir, self.snapshot())

    # -- file thread -----------------------------------------------------------------------

    _intake_name = "tradelog-files"

    def _run_intake(self) -> None:
        """The thread that takes batches off the queue: here, the file thread."""
        self._run_files()

    def _run_files(self) -> None:
        block_in_this_thread()
        queue = self.queue
        wake = self.wake
        while True:
            if not queue:
                wake.wait(self.interval)
                wake.clear()
            while queue:
                batch_id, records, marker = self._take_batch()
                if records:
                    self._process(batch_id, records)
                else:
                    self.held.pop(batch_id, None)
                if marker is not None:
                    self._hand_over(marker)
                    if marker.stop_deadline is not None:
                        return  # whatever follows is written by stop() on its own thread
            self._maybe_seal()

    def _take_batch(self) -> tuple[str, list[Record], Marker | None]:
        """Take the next batch off the queue, noted in :attr:`held` under its id: up to
        ``batch_size`` records, or one :class:`Shipment` under its own id; and the marker
        that ended it, if one did."""
        queue = self.queue
        batch_size = self.batch_size
        batch_id = new_batch_id()
        records: list[Record] = []
        self.held[batch_id] = records
        while len(records) < batch_size:
            try:
                item = queue.popleft()
            except IndexError:
                # A caller's spill took the rest since the look above: the thread must live
                # on and write what it already took.
                break
            if type(item) is tuple:
                records.append(item)
            elif type(item) is Shipment:
                if records:  # written after the records taken before it
                    queue.appendleft(item)
                    break
                self.held.pop(batch_id, None)
                batch_id, records = item
                self.held[batch_id] = records
                break
            else:
                return batch_id, records, item
        return batch_id, records, None

    def _process(self, batch_id: str, records: list[Record]) -> None:
        try:
            build = self._builder.build
            prepared = [build(record) for record in records]
            if self.console is not None:
                self._show(records, prepared)
            groups: dict[FileKey, list[str]] = {}
            rows: list[DbRow] = []
            rejects: list[Prepared] = []
            for item in prepared:
                row, key, line, reject = item
                lines = groups.get(key)
                if lines is None:
                    groups[key] = [line]
                else:
                    lines.append(line)
                if row is not None:
                    if reject is None:
                        rows.append(row)
                    else:
                        rejects.append(item)
            if rows:
                # Handed over (or spooled) before it stops being held: a dying process's
                # spool_what_is_left sees it in one place or the other, at worst in both
                # under the same id.
                self._hand_over_rows(Batch(batch_id, rows))
            self.held.pop(batch_id, None)
            self._write_files(groups)
            self._dead_letter(rejects)
            if not rows:
                self.batch_done(batch_id)
        except Exception as exc:  # pragma: no cover - defensive: nothing above should raise
            self.stats.internal_errors += 1
            self.stats.last_error = f"writer: {type(exc).__name__}: {exc}"
        finally:
            self.held.pop(batch_id, None)
            self.stats.processed += len(records)
            self.batch_done(batch_id)

    def _show(self, records: list[Record], prepared: list[Prepared]) -> None:
        """Hand the console the lines of the records flagged for it (one append per batch)."""
        console = self.console
        if console is None:
            return
        shown = [
            (record, item.line)
            for record, item in zip(records, prepared, strict=True)
            if len(record) > 4 and record[4]
        ]
        if shown:
            console.put(shown)

    def _write_files(self, groups: dict[FileKey, list[str]]) -> None:
        count = sum(len(lines) for lines in groups.values())
        system = sum(len(lines) for key, lines in groups.items() if key[0] is None)
        try:
            self.files.write(groups)
        except OSError as exc:
            with self.stats.lock:
                self.stats.file_errors += count
                self.stats.last_error = f"files: {exc}"
            return
        with self.stats.lock:
            self.stats.file_lines += count
            self.stats.system_lines += system

    def _dead_letter(self, rejects: list[Prepared]) -> None:
        if not rejects:
            return
        self.dead_letter.write((item.row, item.reject or "", None) for item in rejects)
        with self.stats.lock:
            self.stats.dead_lettered += len(rejects)

    def _hand_over(self, item: Any) -> None:
        self._handoff.append(item)
        self._handoff_wake.set()

    def _hand_over_rows(self, batch: Batch) -> None:
        """Give a batch to the database thread, waiting only while :data:`_IN_FLIGHT_MAX`
        batches are in its hands already; spool it when the database thread stays stuck.

        (Spooling here whenever rows already wait in the spool, rather than letting the
        database thread decide when it takes the batch, made one thread's 40,000 calls then
        ``flush()`` slower: 0.87x to 0.82x structlog, 6 interleaved runs each.)
        """
        slot = self._slot
        with slot:
            stalled = self._in_flight > 0 and self._db_stalled
            if not stalled and slot.wait_for(self._slot_free, _DB_WAIT):
                self._db_stalled = False
                self._in_flight += 1
                self._hand_over(batch)
                return
            # The database thread is stuck in a call (a lock wait, a slow network): keep the
            # files flowing and let the rows wait in the spool, in order - behind the batches
            # handed over and not taken yet, which go there first (under this lock the
            # database thread takes none meanwhile; a batch in its call, if the call gives up,
            # goes back in front of them all).
            self._db_stalled = True
            spooled = [*self._take_back_handed_over(), batch]
            self._in_flight -= len(spooled) - 1
            self.database.spool_batches(spooled)
        for each in spooled:
            self.batch_done(each.batch_id)

    def _take_back_handed_over(self) -> list[Batch]:
        """The batches waiting in the hand-over, taken out of it in order (markers stay, in
        order); called with :attr:`_slot` held."""
        handoff = self._handoff
        batches: list[Batch] = []
        others: list[Any] = []
        while True:
            try:
                item = handoff.popleft()
            except IndexError:
                break
            (batches if type(item) is Batch else others).append(item)
        handoff.extendleft(reversed(others))
        return batches

    def _slot_free(self) -> bool:
        return self._in_flight < _IN_FLIGHT_MAX

    def _maybe_seal(self) -> None:
        now = time.monotonic()
        if now < self._next_seal:
            return
        self._next_seal = now + _SEAL_EVERY
        try:
            today = datetime.now(UTC).astimezone(self.settings.zone).date().isoformat()
            self.files.seal_old_files(today)
        except Exception:  # pragma: no cover - housekeeping must not stop the writer
            self.stats.internal_errors += 1

    # -- database thread -------------------------------------------------------------------

    def _take_handed_over(self) -> tuple[list[Batch], list[Batch], Marker | None]:
        """The batches waiting in the hand-over, in order, up to the first marker (taken too;
        None when the hand-over ran empty, or a dying process's sweep spooled the rest): those
        to insert now, and those spooled here because rows wait in the spool before them (the
        database is down, or behind on its spool). Deciding under :attr:`_slot`, where the file
        thread spools what it cannot hand over, keeps the spool in the order of the batches.
        """
        handoff = self._handoff
        database = self.database
        batches: list[Batch] = []
        marker: Marker | None = None
        with self._slot:
            # Noted as in flight while they leave the hand-over, so a dying process's sweep
            # finds each in one place or the other (at worst in both, under its id).
            database.in_flight = batches
            while True:
                try:
                    item = handoff.popleft()
                except IndexError:
                    break
                if type(item) is not Batch:
                    marker = item
                    break
                batches.append(item)
            if not batches or database.takes_rows_now:
                return batches, [], marker
            database.spool_batches(batches)
            database.in_flight = []
            self._in_flight -= len(batches)
            self._slot.notify()
        return [], batches, marker

    def _run_database(self) -> None:
        block_in_this_thread()
        handoff = self._handoff
        wake = self._handoff_wake
        database = self.database
        waiting: list[Marker] = []
        next_stats = time.monotonic() + _STATS_EVERY
        stop: Marker | None = None
        more = False
        while stop is None:
            if not handoff and not more:
                hint = database.wait_hint()
                timeout = self.interval if hint is None else min(self.interval, hint)
                wake.wait(max(0.0, timeout))
                wake.clear()
            while True:
                batches, spooled, marker = self._take_handed_over()
                if batches:
                    self.stats.call_started = time.monotonic()
                    try:
                        database.deliver_all(batches)
                    finally:
                        self.stats.call_started = None
                    with self._slot:
                        self._in_flight -= len(batches)
                        self._slot.notify()
                for batch in batches + spooled:
                    self.batch_done(batch.batch_id)
                if marker is None:
                    break
                waiting.append(marker)
                database.look_for_orphans()
                if marker.stop_deadline is not None:
                    stop = marker
            self.stats.call_started = time.monotonic()
            try:
                more = database.maintain(budget=_REPLAY_BUDGET)
            finally:
                self.stats.call_started = None
            if waiting and database.settled:
                for marker in waiting:
                    marker.done.set()
                waiting = []
            if self.publish_stats and time.monotonic() >= next_stats:
                next_stats = time.monotonic() + _STATS_EVERY
                self.save_stats()
        database.finish(stop.stop_deadline or time.monotonic())
        if database.settled:
            for marker in waiting:
                marker.done.set()
