"""Durable local spools of JSON records: what a call could not write while the database was down.

A :class:`JsonlSpool` keeps one owner-only (``0600``) file per process,
``{directory}/{prefix}{pid}.jsonl``, one JSON object per line. :meth:`JsonlSpool.append` writes
the lines and ``fsync``\\ s the file before it returns, so a record the caller was told is
spooled survives a crash of the process or the host.

:meth:`JsonlSpool.replay` hands the records to a writer **in the order they were appended**:

1. files left over from an earlier, interrupted replay come first (``....replay-<pid>.jsonl``,
   this process's or a dead process's), then this process's file and the files of processes
   that are no longer running;
2. a file is claimed by renaming it to ``{prefix}{pid}.replay-{replaying pid}.jsonl`` (only one
   process wins the rename), then its records are written in batches;
3. after every batch the claimed file's progress mark (``....jsonl.done``, the byte offset of
   the first record not yet written) moves on, so a replay that stops - the database went away
   again - resumes at the first record that was not written, before anything appended since;
   the claimed file itself is never rewritten, so a replay costs the same per record however
   many records wait (rewriting the rest after every batch made 4,000 one-record batches take
   144 s).

At-least-once window: a process killed after a batch committed and before the progress mark
moved replays that batch again (the records carry what the writer needs to recognise a repeat,
e.g. a notification's dedupe key or an error batch's id).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from tradelog._files import make_dirs, open_private
from tradelog._signals import block_in_this_thread

__all__ = ["JsonlSpool", "Replayer", "pid_alive", "waiting_records"]

_REPLAY: Final = ".replay-"
_DONE: Final = ".done"
"""Suffix of a claimed file's progress mark (the byte offset replayed so far)."""
_DONE_WIDTH: Final = 20
"""Digits of the mark, written in place (one ``pwrite``: never a torn number)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (the owner of a spool or spill file)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid that large
        return False
    except OSError:
        return True
    return True


class JsonlSpool:
    """The spool files named ``{prefix}*`` under ``directory`` (see the module docstring)."""

    def __init__(self, directory: Path | str, prefix: str, *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self.fsync = fsync
        """``fsync`` every append (False: a record survives the process, not the host)."""
        self._key = (os.path.abspath(self.directory), prefix)

    @property
    def own_path(self) -> Path:
        """This process's spool file."""
        return self.directory / f"{self.prefix}{os.getpid()}.jsonl"

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append ``records`` to this process's file with one ``write()`` and ``fsync`` it
        (unless :attr:`fsync` is off); raises ``OSError``. A replay of this process never
        renames the file between the open and the write (the two take one lock)."""
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        with _locks(self._key).append:
            make_dirs(self.directory)
            fd = open_private(self.own_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                # A lone surrogate cannot be UTF-8: it becomes "?" rather than lose the batch.
                view = memoryview(data.encode("utf-8", "replace"))
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)

    def pending(self) -> int:
        """How many records wait in the files a replay here would take (0 when none)."""
        count = 0
        for path in self._ready(claimed=True) + self._ready(claimed=False):
            with contextlib.suppress(OSError):
                count += waiting_records(path)
        return count

    def waiting(self) -> bool:
        """Whether a replay here has anything to take (cheaper than :meth:`pending`)."""
        return bool(self._ready(claimed=True) or self._ready(claimed=False))

    def has_own(self) -> bool:
        """Whether records of this process wait: in its file, or in a replay of its own that
        stopped part-way."""
        return self.own_path.exists() or bool(self.own_claims())

    def own_claims(self) -> list[Path]:
        """Files this process claimed and has not finished replaying."""
        try:
            return sorted(self.directory.glob(f"{self.prefix}*{_REPLAY}{os.getpid()}.jsonl"))
        except OSError:
            return []

    def _files(self) -> Iterator[Path]:
        try:
            yield from sorted(self.directory.glob(f"{self.prefix}*.jsonl"))
        except OSError:
            return

    def _ready(self, *, claimed: bool) -> list[Path]:
        """Leftover claimed files (``claimed``) or fresh files a replay here may take."""
        ready = []
        for path in self._files():
            stem = path.stem.removeprefix(self.prefix)
            owner, _, claimer = stem.partition(_REPLAY)
            if not owner.isdigit():
                continue
            if claimed != bool(claimer):
                continue
            holder = claimer or owner
            if holder.isdigit() and pid_alive(int(holder)) is (int(holder) == os.getpid()):
                ready.append(path)
        return ready

    def replay(
        self,
        write: Callable[[list[dict[str, Any]]], object],
        *,
        batch_size: int = 100,
        group: Callable[[dict[str, Any]], object] | None = None,
    ) -> int:
        """Write the spooled records with ``write`` (one call per batch, in order); returns how
        many were written. Stops at the first batch ``write`` raises on: that batch and the
        rest stay spooled, ahead of anything appended since.

        ``group``: consecutive records with the same key (not None) form one batch, whatever
        its size (a batch spooled under an id is replayed whole, under that id); records whose
        key is None go in batches of ``batch_size``."""
        replaying = _locks(self._key).replay
        if not replaying.acquire(blocking=False):
            return 0  # another thread of this process is replaying
        try:
            written = 0
            # Files a replay claimed first (this process's unfinished ones, or those of a
            # replayer that died), then unclaimed ones; each is renamed to this process's claim.
            for claimed in (True, False):
                paths = self._ready(claimed=claimed)
                for path in sorted(paths, key=lambda p: p.name != self._claim_of(p).name):
                    target = self._claim_of(path)
                    if path != target:
                        if target.exists():
                            # This process's own claim of that owner's file is unfinished: it
                            # goes first (a rename would replace it); this one waits its turn.
                            continue
                        with contextlib.suppress(OSError):  # left by an earlier claim's end
                            _done_path(target).unlink()
                        try:
                            with _locks(self._key).append:  # not while this process appends
                                path.rename(target)
                        except OSError:
                            continue
                        with contextlib.suppress(OSError):  # the dead replayer's progress
                            _done_path(path).rename(_done_path(target))
                    done, finished = self._replay_file(target, write, batch_size, group)
                    written += done
                    if not finished:
                        return written
            return written
        finally:
            replaying.release()

    def _claim_of(self, path: Path) -> Path:
        """The name ``path`` has once this process claims it."""
        owner = path.stem.partition(_REPLAY)[0]
        return path.with_name(f"{owner}{_REPLAY}{os.getpid()}.jsonl")

    def _replay_file(
        self,
        path: Path,
        write: Callable[[list[dict[str, Any]]], object],
        batch_size: int,
        group: Callable[[dict[str, Any]], object] | None,
    ) -> tuple[int, bool]:
        try:
            data = path.read_bytes()
        except OSError:
            return 0, False
        position = min(_done_offset(path), len(data))
        records: list[dict[str, Any]] = []
        ends: list[int] = []
        for raw in data[position:].splitlines(keepends=True):
            position += len(raw)
            with contextlib.suppress(ValueError):  # a torn or unreadable line
                record = json.loads(raw)
                if isinstance(record, dict):
                    records.append(record)
                    ends.append(position)
        written = 0
        mark: int | None = None
        try:
            for start, end in _batches(records, max(1, batch_size), group):
                batch = records[start:end]
                try:
                    write(batch)
                except Exception:
                    return written, False
                written += len(batch)
                if end < len(records):
                    with contextlib.suppress(OSError):
                        if mark is None:
                            mark = open_private(_done_path(path), os.O_WRONLY | os.O_CREAT)
                        os.pwrite(mark, f"{ends[end - 1]:0{_DONE_WIDTH}d}\n".encode(), 0)
        finally:
            if mark is not None:
                os.close(mark)
        # The mark first: dying in between leaves the file to be replayed again from its
        # start (at least once), never a mark that a later claim of this name would obey.
        for finished in (_done_path(path), path):
            with contextlib.suppress(OSError):
                finished.unlink()
        return written, True


class _Locks(NamedTuple):
    append: threading.Lock
    """Held while this process appends to its file, and while a replay renames it."""
    replay: threading.Lock
    """Held by the one replay of this process under way."""


_registry_pid = os.getpid()
_registry_lock = threading.Lock()
_registry: dict[tuple[str, str], _Locks] = {}


def _locks(key: tuple[str, str]) -> _Locks:
    """The locks of the spool files ``key`` (directory, prefix) names in this process: one pair
    however many :class:`JsonlSpool` objects name them. A forked child gets new ones (a lock
    another thread of the parent held at the fork would never be released there)."""
    global _registry_pid, _registry_lock, _registry
    pid = os.getpid()
    if pid != _registry_pid:
        _registry_lock, _registry, _registry_pid = threading.Lock(), {}, pid
    with _registry_lock:
        locks = _registry.get(key)
        if locks is None:
            locks = _registry[key] = _Locks(threading.Lock(), threading.Lock())
        return locks


def _done_path(path: Path) -> Path:
    return path.with_name(path.name + _DONE)


def _done_offset(path: Path) -> int:
    try:
        return max(0, int(_done_path(path).read_bytes().strip() or b"0"))
    except (OSError, ValueError):
        return 0


def waiting_records(path: Path) -> int:
    """How many records of spool file ``path`` are not replayed yet (its lines after the
    progress mark of a replay that stopped part-way); raises ``OSError``."""
    count = 0
    with path.open("rb") as handle:
        handle.seek(min(_done_offset(path), os.fstat(handle.fileno()).st_size))
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _batches(
    records: list[dict[str, Any]], size: int, group: Callable[[dict[str, Any]], object] | None
) -> Iterator[tuple[int, int]]:
    """The (start, end) of each batch of ``records`` (see :meth:`JsonlSpool.replay`)."""
    keys = [None] * len(records) if group is None else [group(record) for record in records]
    start = 0
    while start < len(records):
        end = start + 1
        key = keys[start]
        if key is None:
            while end < len(records) and end - start < size and keys[end] is None:
                end += 1
        else:
            while end < len(records) and keys[end] == key:
                end += 1
        yield start, end
        start = end


class Replayer:
    """A daemon thread that calls ``replay`` every ``interval`` seconds, and at once when
    :meth:`poke`\\ d; what ``replay`` raises is handed to ``on_error``, never raised."""

    def __init__(
        self,
        replay: Callable[[], object],
        *,
        interval: float,
        name: str,
        on_error: Callable[[BaseException], object],
    ) -> None:
        self._replay = replay
        self.interval = interval
        self.name = name
        self._on_error = on_error
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Replayer:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def poke(self) -> None:
        """Replay now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread, waiting up to ``timeout`` for a replay under way."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        block_in_this_thread()  # termination signals go to the main thread
        while not self._stop.is_set():
            try:
                self._replay()
            except Exception as exc:
                self._on_error(exc)
            self._wake.wait(self.interval)
            self._wake.clear()
