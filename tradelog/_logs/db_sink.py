"""What happens to a batch on its way into ``service_logs``: :class:`DatabaseSink`.

The bulk insert itself is :mod:`~tradelog._logs.inserters`'. This is the state machine around
it; failures are told apart by their cause:

* **the rows** (a ``user_id`` with no user, a value a column refuses): the batch is split in
  halves until the bad rows are alone; every good row lands and each bad one goes to the
  dead-letter file with the reason. Rows whose user does not exist (yet) are held back for a
  couple of seconds first, since a host may log about a user it has not committed yet; then
  the user is registered and the rows land, or they are dead-lettered and counted
  (``unknown_users``, see :mod:`tradelog._users.registry`).
* **the database** (down, unreachable, locked beyond the lock timeout, table missing, anything
  else): the rows are appended to the spool, further batches follow them there so the order is
  kept, and the database is retried with exponential backoff; once it answers the spool is
  replayed in order.

Every batch keeps its id (:mod:`tradelog._logs.batch`) from the first try to the last: a batch
whose commit was not acknowledged goes to the spool under the same id and is skipped at replay
if it did commit. :attr:`DatabaseSink.in_flight` names the batches a call in progress holds,
so a writer that gives up on a stuck call can spool them (:meth:`DatabaseSink.abandon`).

:class:`DatabaseSink` never raises.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Final

from tradelog._logs.batch import Batch, new_batch, part_id
from tradelog._logs.inserters import DatabaseUnavailable, Inserter, RowsRejected
from tradelog._logs.rows import DbRow
from tradelog._logs.spool import DeadLetterFile, Spool, SpoolChunk, adopt_orphans
from tradelog._logs.stats import WriterStats
from tradelog._users.registry import KnownUsers

__all__ = ["REPLAY_GROUP", "DatabaseSink"]

_BACKOFF_START: Final = 0.05
_BACKOFF_MAX: Final = 5.0
_PARK_SECONDS: Final = 2.0
"""How long rows of an unknown user wait for that user to appear before being dead-lettered."""
_PARK_RECHECK: Final = 0.25
_ORPHAN_SCAN_SECONDS: Final = 30.0
REPLAY_GROUP: Final = 8
"""A replay reads up to this many batches' worth of rows from the spool and writes them in one
transaction (:meth:`Inserter.insert_together`). Each driver call lets go of the GIL and must
take it back, which beside a busy caller thread waits for the switch interval (5 ms): per call,
not per row. The spool fills exactly when callers are busiest (their queue is full), so a
replay that catches up has to spend few calls per row."""


class _Interrupted(Exception):
    """The database went away part-way through; the ``remaining`` batches may not be written
    (the first one may be, if its commit was not acknowledged)."""

    def __init__(self, remaining: list[Batch], reason: str) -> None:
        super().__init__(reason)
        self.remaining = remaining
        self.reason = reason


class DatabaseSink:
    """Deliver batches: insert, or spool and replay, or dead-letter; never raises.

    Used by one thread only (the writer's database thread), except :meth:`spool_rows`, which
    any thread may call.
    """

    def __init__(
        self,
        inserter: Inserter,
        spool: Spool,
        dead_letter: DeadLetterFile,
        stats: WriterStats,
        *,
        batch_size: int,
        clock: Callable[[], float] = time.monotonic,
        users: KnownUsers | None = None,
    ) -> None:
        self.inserter = inserter
        self.users = users
        self.spool = spool
        self.dead_letter = dead_letter
        self.stats = stats
        self.batch_size = batch_size
        self._clock = clock
        self._known_users: set[int] = set()
        self._down = False
        self._delay = _BACKOFF_START
        self._next_attempt = 0.0
        self._parked: list[tuple[float, DbRow]] = []
        self._unspooled: list[Batch] = []
        self._next_park_check = 0.0
        self._orphans: list[Spool] = []
        self._next_orphan_scan = 0.0
        self.in_flight: list[Batch] = []
        """The batches the call in progress holds (being inserted, or next in line)."""
        self.abandoned = False

    # -- state -----------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Everything handed over so far (and every adopted orphan spool) is in the database
        or the dead-letter file."""
        return (
            self.spool.pending == 0
            and not self._parked
            and not self._unspooled
            and not self._orphans
        )

    @property
    def parked(self) -> int:
        """Rows waiting in memory for their user to be registered."""
        return len(self._parked)

    def look_for_orphans(self) -> None:
        """Adopt the spools of processes that are gone at the next :meth:`maintain` (a flush
        asks for this, so what a terminated child left in its spool is replayed by it)."""
        self._next_orphan_scan = 0.0

    @property
    def available(self) -> bool:
        return not self._down

    def wait_hint(self, now: float | None = None) -> float | None:
        """Seconds until there is work to retry (None: nothing scheduled)."""
        moment = self._clock() if now is None else now
        hints = []
        if self.spool.pending or self._orphans:
            hints.append(max(0.0, self._next_attempt - moment) if self._down else 0.0)
        if self._parked:
            hints.append(max(0.0, self._next_park_check - moment))
        return min(hints) if hints else None

    # -- delivery --------------------------------------------------------------------------

    @property
    def takes_rows_now(self) -> bool:
        """Rows delivered now go straight in: the database is not known to be down and no
        rows wait in the spool before them (else they go behind those, in order)."""
        return not (self._down or self.spool.pending or self.abandoned)

    def deliver_all(self, batches: list[Batch]) -> None:
        """Insert ``batches`` (handed over in this order) now, together in one transaction
        where they can go so (see :meth:`_write_together`); spool them while the database is
        down or the sink abandoned.

        The caller has seen :attr:`takes_rows_now` (nothing waiting in the spool before these):
        rows spooled since are newer, so these go in now even so. ``batches`` is
        :attr:`in_flight` from the start: the caller may have noted the very list there while
        it took the batches from its hand-over.
        """
        self.in_flight = batches
        try:
            batches = [batch for batch in batches if batch.rows]
            if self.abandoned or self._down:
                self.spool_batches(batches)
                return
            try:
                self._write_together(batches, park=True)
            except _Interrupted as stop:
                self._went_down(stop.reason)
                # Nothing was pending when the insert began, so whatever was spooled while it
                # waited (the file thread gives up on a stuck insert, callers spill) is newer.
                self._spool_first(self.spool, stop.remaining)
        finally:
            self.in_flight = []

    def spool_rows(self, rows: Sequence[DbRow]) -> None:
        """Append ``rows`` to the spool as a new batch (thread-safe)."""
        self.spool_batches([new_batch(list(rows))])

    def spool_batches(self, batches: Sequence[Batch]) -> None:
        """Append batches to the spool (thread-safe); nothing is lost if that fails loudly."""
        batches = [batch for batch in batches if batch.rows]
        if not batches:
            return
        try:
            self.spool.append_batches(batches)
        except OSError as exc:  # pragma: no cover - a full disk: keep the rows in memory
            self.stats.last_error = f"spool: {exc}"
            self._unspooled.extend(batches)
            return
        with self.stats.lock:
            self.stats.spooled += sum(len(batch.rows) for batch in batches)

    def abandon(self) -> int:
        """The call in progress is stuck and the writer stops: spool what it holds (under
        the same ids: if it commits after all, the replay skips it), the parked rows and
        anything kept in memory; from now on every batch goes to the spool. Returns the
        number of rows spooled. Any thread may call it."""
        self.abandoned = True
        held = list(self.in_flight)
        parked = [row for _, row in self._parked]
        self._parked = []
        if parked:
            held.append(new_batch(parked))
        kept, self._unspooled = self._unspooled, []
        held.extend(kept)
        self.spool_batches(held)
        return sum(len(batch.rows) for batch in held)

    def _spool_first(
        self, spool: Spool, batches: Sequence[Batch], *, consumed: SpoolChunk | None = None
    ) -> None:
        """Put batches back at the front of ``spool`` (older than everything pending in it);
        ``consumed``: the chunk of ``spool`` they are the unwritten rest of."""
        try:
            spool.prepend_batches(batches, consumed=consumed)
        except OSError as exc:  # pragma: no cover - a full disk: keep the rows in memory
            self.stats.last_error = f"spool: {exc}"
            self._unspooled.extend(batches)
            if consumed is not None:
                with contextlib.suppress(OSError):
                    spool.commit(consumed)
            return
        if spool is self.spool:
            with self.stats.lock:
                self.stats.spooled += sum(len(batch.rows) for batch in batches)

    def maintain(self, *, budget: int = 20, now: float | None = None) -> bool:
        """Retry the database, replay up to ``budget`` spooled batches, settle parked rows.

        Returns True when more replay work is ready right away.
        """
        moment = self._clock() if now is None else now
        if self.abandoned:
            return False
        if self._unspooled:  # pragma: no cover - only after the spool could not be written
            batches, self._unspooled = self._unspooled, []
            self.spool_batches(batches)
        if self._parked and moment >= self._next_park_check:
            self._settle_parked(moment)
        if self._down and moment < self._next_attempt:
            return False
        for _ in range(budget):
            source = self.spool if self.spool.pending else self._next_orphan(moment)
            if source is None:
                return False
            if not self._replay_chunk(source):
                return False
        return bool(self.spool.pending or self._orphans)

    def finish(self, deadline: float) -> None:
        """At shutdown: replay while the database answers and time remains, then leave
        whatever is still waiting (parked rows included) in the spool for a later writer."""
        while True:
            now = self._clock()
            if now >= deadline:
                break
            more = self.maintain(budget=1, now=now)
            if not (self.spool.pending or self._parked or self._unspooled):
                break
            if more:
                continue
            hint = self.wait_hint()
            if hint is None:
                break
            time.sleep(max(0.001, min(hint, deadline - self._clock())))
        if self._parked:
            rows = [row for _, row in self._parked]
            self._parked = []
            self.spool_rows(rows)
        if self._unspooled:  # pragma: no cover - only after the spool could not be written
            batches, self._unspooled = self._unspooled, []
            self.spool_batches(batches)
        for orphan in self._orphans:
            orphan.close()
        self._orphans = []

    # -- internals -------------------------------------------------------------------------

    def _write(self, batches: list[Batch], *, park: bool) -> None:
        """Insert ``batches`` (users checked first), bisecting around rejected rows.

        Raises :class:`_Interrupted` with the batches not yet written when the database fails.
        """
        for index, batch in enumerate(batches):
            later = batches[index + 1 :]
            self.in_flight = batches[index:]
            try:
                rows = self._check_users(batch.rows, park=park)
            except _Interrupted as stop:
                raise _Interrupted(batches[index:], stop.reason) from stop
            pending: list[Batch] = [Batch(batch.batch_id, rows)] if rows else []
            while pending:
                chunk = pending.pop()
                self.in_flight = [chunk, *reversed(pending), *later]
                try:
                    written = self.inserter.insert(chunk.rows, batch_id=chunk.batch_id)
                except RowsRejected as exc:
                    if len(chunk.rows) == 1:
                        self._dead(chunk.rows, str(exc))
                        continue
                    middle = len(chunk.rows) // 2
                    pending.append(Batch(part_id(chunk.batch_id, 1), chunk.rows[middle:]))
                    pending.append(Batch(part_id(chunk.batch_id, 0), chunk.rows[:middle]))
                    continue
                except DatabaseUnavailable as exc:
                    raise _Interrupted([chunk, *reversed(pending), *later], str(exc)) from exc
                self._came_up()
                if written:
                    self.stats.written += len(chunk.rows)
                    self.stats.batches += 1
                else:
                    self.stats.duplicates += len(chunk.rows)
        self.in_flight = []

    def _write_together(self, batches: list[Batch], *, park: bool) -> None:
        """Several batches: their users checked once (``park``: as in :meth:`_write`), then
        one transaction for all of them (:meth:`Inserter.insert_together`). One batch, or a
        transaction refused (an id claimed before, a row the database rejects): one by one
        through :meth:`_write`, rejected rows bisected out.

        Every driver call lets go of the GIL and takes it back, which beside a busy thread
        waits up to the switch interval (5 ms): per call, not per row, so the rows of many
        batches in one transaction is what lets the database keep up while the file thread or
        callers hold the GIL. Raises :class:`_Interrupted` with every batch when the database
        fails on the one transaction (none of them landed, or, with an unacknowledged commit,
        all did: their ids decide on the next try).
        """
        if len(batches) > 1:
            self.in_flight = batches
            try:
                self._check_users([row for batch in batches for row in batch.rows], park=park)
            except _Interrupted as stop:
                raise _Interrupted(batches, stop.reason) from stop
            known = self._known_users  # rows of users parked or dead-lettered are not in it
            batches = [
                Batch(batch.batch_id, [row for row in batch.rows if row[0] in known])
                for batch in batches
            ]
            batches = [batch for batch in batches if batch.rows]
        if len(batches) > 1:
            self.in_flight = batches
            try:
                written = self.inserter.insert_together(batches)
            except RowsRejected:
                written = False
            except DatabaseUnavailable as exc:
                raise _Interrupted(batches, str(exc)) from exc
            if written:
                self.in_flight = []
                self._came_up()
                self.stats.written += sum(len(batch.rows) for batch in batches)
                self.stats.batches += len(batches)
                return
        self._write(batches, park=park)

    def _check_users(self, rows: list[DbRow], *, park: bool) -> list[DbRow]:
        unknown = {row[0] for row in rows} - self._known_users
        if not unknown:
            return rows
        try:
            found = self.inserter.existing_users(unknown)
        except DatabaseUnavailable as exc:
            raise _Interrupted([], str(exc)) from exc
        self._known_users.update(found)
        missing = unknown - found
        if not missing:
            return rows
        if park:
            keep = [row for row in rows if row[0] not in missing]
            held = [row for row in rows if row[0] in missing]
            moment = self._clock()
            if not self._parked:
                self._next_park_check = moment + _PARK_RECHECK
            self._parked.extend((moment + _PARK_SECONDS, row) for row in held)
            return keep
        try:
            registered = self._register(missing)
        except DatabaseUnavailable as exc:
            raise _Interrupted([], str(exc)) from exc
        missing -= registered
        for row in rows:
            if row[0] in missing:
                self._unknown_user(row)
        return [row for row in rows if row[0] not in missing]

    def _register(self, ids: set[int]) -> set[int]:
        """Which of ``ids`` (users not found) exist after the unknown-user policy ran."""
        if self.users is None or not ids:
            return set()
        try:
            found = self.users.resolve(ids)
        except Exception as exc:
            raise DatabaseUnavailable(f"registering users: {type(exc).__name__}: {exc}") from exc
        self._known_users.update(found)
        return found

    def _unknown_user(self, row: DbRow) -> None:
        self._dead([row], f"no user with id {row[0]}")
        if self.users is not None:
            self.users.reject()

    def _settle_parked(self, now: float) -> None:
        """Insert parked rows whose user now exists; dead-letter those whose wait is over."""
        parked = self._parked
        self._parked = []
        self._next_park_check = now + _PARK_RECHECK
        if self._down and now < self._next_attempt:
            self._parked = parked
            return
        ids = {row[0] for _, row in parked}
        try:
            found = self.inserter.existing_users(ids)
        except DatabaseUnavailable as exc:
            self._went_down(str(exc))
            self._parked = parked
            return
        self._known_users.update(found)
        overdue = {row[0] for due, row in parked if now >= due and row[0] not in found}
        try:
            found |= self._register(overdue)
        except DatabaseUnavailable as exc:
            self._went_down(str(exc))
            self._parked = parked
            return
        ready = [row for _, row in parked if row[0] in found]
        for due, row in parked:
            if row[0] in found:
                continue
            if now >= due:
                self._unknown_user(row)
            else:
                self._parked.append((due, row))
        if ready:
            if self.spool.pending:
                self.spool_rows(ready)
            else:
                self.deliver_all([new_batch(ready)])

    def _replay_chunk(self, source: Spool) -> bool:
        chunk: SpoolChunk = source.read(self.batch_size * REPLAY_GROUP)
        if chunk.lines == 0:
            if source is not self.spool:
                self._retire_orphan(source)
            return source is not self.spool
        if chunk.corrupt:
            self.dead_letter.write((None, "unreadable spool line", line) for line in chunk.corrupt)
            with self.stats.lock:
                self.stats.dead_lettered += len(chunk.corrupt)
        total = len(chunk.rows)
        try:
            self._write_together(chunk.batches, park=False)
        except _Interrupted as stop:
            self.in_flight = []
            self._went_down(stop.reason)
            left = sum(len(batch.rows) for batch in stop.remaining)
            if left == total and stop.remaining[0] == chunk.batches[0]:
                return False  # nothing landed: the chunk stays where it is
            # Part of the chunk landed: the rest goes back in front of what follows it, and
            # only then is the chunk marked done (one offset move: dying in between loses
            # nothing, the landed part is skipped by id when the chunk is replayed again).
            self.stats.replayed += total - left
            self._spool_first(source, stop.remaining, consumed=chunk)
            return False
        source.commit(chunk)
        self.stats.replayed += total
        return True

    def _next_orphan(self, now: float) -> Spool | None:
        if now >= self._next_orphan_scan:
            self._next_orphan_scan = now + _ORPHAN_SCAN_SECONDS
            self._orphans.extend(adopt_orphans(self.spool.directory, self.spool))
        return self._orphans[0] if self._orphans else None

    def _retire_orphan(self, orphan: Spool) -> None:
        orphan.close()
        with contextlib.suppress(ValueError):
            self._orphans.remove(orphan)

    def _dead(self, rows: list[DbRow], reason: str) -> None:
        try:
            self.dead_letter.write((row, reason, None) for row in rows)
        except OSError as exc:  # pragma: no cover - cannot even write the dead-letter file
            self.stats.last_error = f"dead letter: {exc}"
        with self.stats.lock:
            self.stats.dead_lettered += len(rows)

    def _went_down(self, reason: str) -> None:
        now = self._clock()
        if self._down:
            self._delay = min(self._delay * 2, _BACKOFF_MAX)
        else:
            self._down = True
            self._delay = _BACKOFF_START
        self._next_attempt = now + self._delay * random.uniform(0.8, 1.2)
        self.stats.database = "unavailable"
        self.stats.last_error = reason

    def _came_up(self) -> None:
        if self._down or self.stats.database != "ok":
            self._down = False
            self._delay = _BACKOFF_START
            self.stats.database = "ok"
