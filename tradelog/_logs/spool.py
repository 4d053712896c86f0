"""Local files that keep rows the database could not take: the spool and the dead-letter file.

**Spool** (``{log_dir}/_spool/spool-<pid>-<token>.jsonl``): rows waiting for the database, one
JSON array per line (the row's six columns and its batch id, see :mod:`tradelog._logs.batch`),
in the order they were meant to be written. A batch is always read back whole, so it is
replayed under the id it was first tried with. Each process owns its spool
(it holds an exclusive ``flock`` on it while it runs), appends to it while the database is down
or behind, and replays it in order once the database answers, remembering how far it got in a
``.offset`` file next to it; a crash between an insert and the saved offset replays that
batch again, and its id, already committed, makes the database skip it. When
everything is replayed the file is emptied; at a clean shutdown an empty spool is deleted.

A spool whose lock can be taken belongs to a process that has gone (it crashed, or it stopped
while the database was down): any later writer *adopts* it (:func:`adopt_orphans`), replays it
and deletes it.

**Dead letters** (``{log_dir}/_dead_letter/service_logs-YYYY-MM-DD.jsonl``): rows the database
refused for a reason of their own (a ``user_id`` with no user, a value the column rejects), one
JSON object per line with the reason, so nothing is silently dropped and the row can be fixed
and loaded by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from tradelog._files import make_dirs, open_private
from tradelog._logs.batch import Batch, new_batch_id
from tradelog._logs.rows import DbRow, row_as_dict

__all__ = ["DeadLetterFile", "Spool", "SpoolChunk", "adopt_orphans"]

_READ_BYTES: Final = 4 << 20
_OFFSET_WIDTH: Final = 20
_BATCH_READ_MAX: Final = 256 << 20
_PREPEND_MAX_BYTES: Final = 64 << 20
"""Pending bytes above which :meth:`Spool.prepend` appends instead."""
_STAGING_SUFFIX: Final = ".new"
"""A spool file being created (not yet locked and renamed): adopters do not look at it."""
_STAGING_STALE_SECONDS: Final = 60.0
"""A staging file this old, unlocked, was left by a process that died creating it (empty)."""


@dataclass
class SpoolChunk:
    """Whole batches read from a spool, to be committed once they are in the database."""

    batches: list[Batch]
    end: int
    """File offset just after the last line read."""
    corrupt: list[str] = field(default_factory=list)
    """Lines that could not be parsed (they go to the dead-letter file)."""

    @property
    def rows(self) -> list[DbRow]:
        return [row for batch in self.batches for row in batch.rows]

    @property
    def lines(self) -> int:
        return sum(len(batch.rows) for batch in self.batches) + len(self.corrupt)


class Spool:
    """An append-only file of rows in write order; thread-safe; owned by one process."""

    def __init__(
        self,
        directory: Path,
        *,
        path: Path | None = None,
        fd: int | None = None,
        prepend_limit: int = _PREPEND_MAX_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.prepend_limit = prepend_limit
        self._lock = threading.RLock()
        self.path = path
        self._fd = fd
        self._offset_fd: int | None = None
        self._read_offset = 0
        self._pending = 0
        if fd is not None and path is not None:
            self._open_offset_file()
            self._read_offset = self._load_offset()
            self._pending = self._count_lines(self._read_offset)

    @property
    def pending(self) -> int:
        """Rows appended (or found on adoption) and not yet committed."""
        return self._pending

    def append(self, rows: Sequence[DbRow], batch_id: str | None = None) -> None:
        """Append ``rows`` as one batch (``batch_id``, default a new one) durably enough to
        survive the process (one ``write()``)."""
        self.append_batches([Batch(batch_id or new_batch_id(), list(rows))])

    def append_batches(self, batches: Sequence[Batch]) -> None:
        """Append ``batches`` in order with one ``write()``."""
        count = sum(len(batch.rows) for batch in batches)
        if not count:
            return
        data = _encode(batches)
        with self._lock:
            fd = self._ensure_file()
            _write_all(fd, data)
            self._pending += count

    def prepend(self, rows: Sequence[DbRow], batch_id: str | None = None) -> None:
        """Put ``rows`` (one batch) before every pending row."""
        self.prepend_batches([Batch(batch_id or new_batch_id(), list(rows))])

    def prepend_batches(
        self, batches: Sequence[Batch], *, consumed: SpoolChunk | None = None
    ) -> None:
        """Put ``batches`` before every pending row (they are older than all of them).

        The rows are appended followed by a copy of the pending lines, and the committed
        offset then moves past the originals, so the file stays append-only: a crash part-way
        through replays some rows twice at worst, it never loses one. When more than
        ``prepend_limit`` bytes are pending the rows are simply appended (order is given up
        rather than copying a large backlog).

        ``consumed``: a chunk read from this spool and written in part; ``batches`` are its
        unwritten rest. It is marked committed by the same offset move, after the rest is in
        the file: a process that dies in between replays the chunk again (what landed is
        skipped by its id) and never loses the rest.
        """
        count = sum(len(batch.rows) for batch in batches)
        with self._lock:
            if not count or self._fd is None or self._pending <= 0:
                self.append_batches(batches)
                if consumed is not None:
                    self.commit(consumed)
                return
            fd = self._fd
            start, done = self._read_offset, 0
            if consumed is not None and consumed.end > start:
                start, done = consumed.end, consumed.lines
            end = os.fstat(fd).st_size
            _write_all(fd, _encode(batches))
            if end - start <= self.prepend_limit:
                position = start
                while position < end:
                    chunk = os.pread(fd, min(_READ_BYTES, end - position), position)
                    if not chunk:  # pragma: no cover - the file shrank under us
                        break
                    _write_all(fd, chunk)
                    position += len(chunk)
                start = end
            self._read_offset = start
            self._pending = max(0, self._pending + count - done)
            self._save_offset()

    def read(self, limit: int) -> SpoolChunk:
        """Read whole batches after the committed offset, about ``limit`` rows (more when the
        first batch is larger; nothing is consumed yet)."""
        with self._lock:
            if self._fd is None or self._pending <= 0:
                return SpoolChunk([], self._read_offset)
            window = _READ_BYTES
            while True:
                data = os.pread(self._fd, window, self._read_offset)
                chunk = _split(data, limit, complete=len(data) < window)
                if chunk is not None:
                    batches, corrupt, position = chunk
                    return SpoolChunk(batches, self._read_offset + position, corrupt)
                if window >= _BATCH_READ_MAX:
                    # One batch larger than any sane batch: give up on it as corrupt.
                    end = data.find(b"\n", len(data) // 2)
                    position = len(data) if end == -1 else end + 1
                    return SpoolChunk(
                        [], self._read_offset + position, ["<spool batch larger than 256 MiB>"]
                    )
                window *= 4

    def commit(self, chunk: SpoolChunk) -> None:
        """Mark ``chunk`` as written; empty the file once everything is replayed."""
        with self._lock:
            if chunk.end <= self._read_offset:
                return
            self._read_offset = chunk.end
            self._pending = max(0, self._pending - chunk.lines)
            if self._fd is None:
                return
            if self._pending == 0 and os.fstat(self._fd).st_size <= self._read_offset:
                os.ftruncate(self._fd, 0)
                self._read_offset = 0
            self._save_offset()

    def close(self) -> None:
        """Release the spool: delete it when nothing is pending, else leave it for adoption."""
        with self._lock:
            if self._fd is None:
                return
            if self._pending == 0 and self.path is not None:
                for path in (self.path, _offset_path(self.path)):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            self._close_fds()

    def abandon(self) -> None:
        """Forget descriptors inherited through ``fork`` (in the child), leaving the file."""
        self._close_fds()
        self._pending = 0

    # -- internals -------------------------------------------------------------------------

    def _ensure_file(self) -> int:
        """Create this process's spool file. It is created and locked under a name no
        adopter looks at, then renamed: created under its own name, another process's scan
        for orphans could take it between the create and the lock, find it empty and delete
        it, and every row appended to it afterwards went to an unlinked file."""
        if self._fd is not None:
            return self._fd
        make_dirs(self.directory)
        name = f"spool-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        path = self.directory / name
        staging = path.with_name(name + _STAGING_SUFFIX)
        fd = open_private(staging, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.path = path
            self._fd = fd
            self._read_offset = 0
            self._open_offset_file()
            self._save_offset()
            os.rename(staging, path)  # the lock goes with the open file
        except BaseException:
            self._close_fds()
            self.path = None
            with contextlib.suppress(OSError):
                os.unlink(staging)
            with contextlib.suppress(OSError):
                os.unlink(_offset_path(path))
            raise
        return fd

    def _open_offset_file(self) -> None:
        assert self.path is not None
        self._offset_fd = open_private(_offset_path(self.path), os.O_RDWR | os.O_CREAT)

    def _save_offset(self) -> None:
        if self._offset_fd is not None:
            os.pwrite(self._offset_fd, f"{self._read_offset:0{_OFFSET_WIDTH}d}\n".encode(), 0)

    def _load_offset(self) -> int:
        if self._offset_fd is None:
            return 0
        raw = os.pread(self._offset_fd, _OFFSET_WIDTH + 1, 0).strip()
        try:
            return max(0, int(raw or b"0"))
        except ValueError:
            return 0

    def _count_lines(self, offset: int) -> int:
        assert self._fd is not None
        count = 0
        while True:
            data = os.pread(self._fd, _READ_BYTES, offset)
            if not data:
                return count
            count += data.count(b"\n")
            offset += len(data)

    def _close_fds(self) -> None:
        for fd in (self._fd, self._offset_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = None
        self._offset_fd = None


def adopt_orphans(directory: Path, own: Spool | None = None) -> list[Spool]:
    """Take over the spools of processes that are gone (their lock is free), oldest first."""
    try:
        entries = sorted(Path(directory).glob("spool-*.jsonl"), key=_mtime)
    except OSError:
        return []
    _remove_stale_staging(Path(directory))
    adopted: list[Spool] = []
    for path in entries:
        if own is not None and own.path == path:
            continue
        try:
            fd = open_private(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)  # replayed and deleted by someone else meanwhile
        except OSError:
            os.close(fd)
            continue
        spool = Spool(directory, path=path, fd=fd)
        if spool.pending == 0:
            spool.close()
            continue
        adopted.append(spool)
    return adopted


def _remove_stale_staging(directory: Path) -> None:
    """Delete spool files a process died creating (empty, unlocked, older than a minute)."""
    try:
        staged = list(directory.glob(f"spool-*.jsonl{_STAGING_SUFFIX}"))
    except OSError:
        return
    limit = time.time() - _STAGING_STALE_SECONDS
    for path in staged:
        if _mtime(path) >= limit:
            continue
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                with contextlib.suppress(OSError):
                    os.unlink(_offset_path(path.with_name(path.name[: -len(_STAGING_SUFFIX)])))
            finally:
                os.close(fd)


class DeadLetterFile:
    """Append rejected rows, with the reason, to a dated JSONL file (shared by processes)."""

    def __init__(self, directory: Path, zone: ZoneInfo) -> None:
        self.directory = Path(directory)
        self._zone = zone
        self._lock = threading.Lock()

    def write(self, entries: Iterable[tuple[DbRow | None, str, str | None]]) -> int:
        """Append ``(row, reason, raw_line)`` entries; returns how many were written."""
        now = datetime.now(UTC)
        lines = []
        for row, reason, raw in entries:
            record: dict[str, Any] = {"failed_at": now.isoformat(), "reason": reason}
            if row is not None:
                shown = row_as_dict(row)
                context = shown.get("context")
                if isinstance(context, str):
                    with contextlib.suppress(ValueError):
                        shown["context"] = json.loads(context)
                record["row"] = shown
            if raw is not None:
                record["line"] = raw
            lines.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        if not lines:
            return 0
        path = (
            self.directory / f"service_logs-{now.astimezone(self._zone).date().isoformat()}.jsonl"
        )
        data = "".join(lines).encode("utf-8", "replace")
        with self._lock:
            make_dirs(self.directory)
            fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _write_all(fd, data)
            finally:
                os.close(fd)
        return len(lines)


_QUOTE: Final = encode_basestring
"""A JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it (C, when available)."""
_ENCODE_LINE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_DECODE_LINE: Final = json.JSONDecoder().decode


def _encode(batches: Sequence[Batch]) -> bytes:
    return "".join(_line(row, batch.batch_id) for batch in batches for row in batch.rows).encode(
        "utf-8", "replace"
    )


def _line(row: DbRow, batch_id: str) -> str:
    """One spool line: the row's six values and its batch id as a JSON array. A row of the
    usual types is written directly (0.4 µs against 2.2 µs for ``json.dumps``, the same
    bytes); anything else through the encoder."""
    user_id, level, module, message, context, timestamp = row
    if (
        type(user_id) is int
        and type(level) is str
        and type(module) is str
        and type(message) is str
        and type(timestamp) is str
        and (context is None or type(context) is str)
    ):
        return (
            f"[{user_id},{_QUOTE(level)},{_QUOTE(module)},{_QUOTE(message)},"
            f"{'null' if context is None else _QUOTE(context)},{_QUOTE(timestamp)},"
            f"{_QUOTE(batch_id)}]\n"
        )
    return _ENCODE_LINE([*row, batch_id]) + "\n"


def _split(data: bytes, limit: int, *, complete: bool) -> tuple[list[Batch], list[str], int] | None:
    """Whole batches from the start of ``data`` up to about ``limit`` rows, the corrupt lines
    among them and the position after the last line taken; None when ``data`` ends inside the
    first batch and more of the file must be read (``complete``: ``data`` is all there is).

    Consecutive lines without a batch id (spools of older versions) form one batch."""
    batches: list[Batch] = []
    corrupt: list[tuple[int, str]] = []
    position = 0  # after the last whole batch
    scan = 0
    count = 0
    current: Batch | None = None
    current_key: str | None = None
    while True:
        newline = data.find(b"\n", scan)
        if newline == -1:
            break
        raw = data[scan:newline]
        parsed = _parse(raw)
        if parsed is None:
            corrupt.append((scan, raw.decode("utf-8", "replace")))
            scan = newline + 1
            if current is None:
                position = scan
            continue
        row, batch_id = parsed
        if current is None or batch_id != current_key:
            if current is not None:
                batches.append(current)
                count += len(current.rows)
                position = scan
                current = None
                if count >= limit:
                    break
            current = Batch(batch_id or new_batch_id(), [])
            current_key = batch_id
        current.rows.append(row)
        scan = newline + 1
    if current is not None:
        if complete:
            batches.append(current)
            position = scan
        elif not batches:
            return None  # the first batch goes on beyond what was read
    if not batches and not corrupt and data and not complete:
        return None  # one line longer than the window
    return batches, [line for start, line in corrupt if start < position], position


def _offset_path(path: Path) -> Path:
    return path.with_name(path.name + ".offset")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _parse(raw: bytes) -> tuple[DbRow, str | None] | None:
    """A spool line's row and batch id (None in lines of older versions, which had none)."""
    try:
        value = _DECODE_LINE(raw.decode("utf-8"))
    except ValueError:  # not UTF-8 (UnicodeDecodeError), not JSON
        return None
    if not (isinstance(value, list) and len(value) in (6, 7)):
        return None
    batch_id = value.pop() if len(value) == 7 else None
    if batch_id is not None and not isinstance(batch_id, str):
        return None
    user_id, level, module, message, context, timestamp = value
    if not (
        isinstance(user_id, int)
        and isinstance(level, str)
        and isinstance(module, str)
        and isinstance(message, str)
        and (context is None or isinstance(context, str))
        and isinstance(timestamp, str)
    ):
        return None
    return (user_id, level, module, message, context, timestamp), batch_id


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        view = view[count:]
