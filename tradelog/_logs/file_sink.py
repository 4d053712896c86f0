"""Per-user JSONL files, safe to share between processes.

Layout (dates in the configured timezone)::

    {log_dir}/users/{user_id}/service-YYYY-MM-DD.jsonl          the file being written
    {log_dir}/users/{user_id}/service-YYYY-MM-DD.1.jsonl.gz     closed segments, oldest first
    {log_dir}/system/service-YYYY-MM-DD.jsonl                   events without a user

How several processes share a file without losing or interleaving lines:

* every process opens the file with ``O_APPEND`` and writes a whole batch of lines with one
  ``write()`` while holding an exclusive ``flock`` on the file;
* after taking the lock a writer checks that the path still names the file it has open
  (same inode); if a rotation renamed it meanwhile, it reopens the path and tries again;
* rotation happens under an exclusive lock on the directory's ``.rotate.lock`` file *and* the
  file's own lock, re-checking the size after both are held, so two processes never rotate the
  same file twice; the renamed segment is compressed afterwards (no writer can reach it any
  more) in a background thread, through a ``.tmp`` file renamed into place.

Files of past days are closed the same way (renamed to the next segment and compressed) by
:meth:`FileSink.seal_old_files`, which the writer calls now and then.

Directories (``logs/``, ``logs/users/``, ``logs/users/<id>/``) are created ``0700`` and files
(``.jsonl``, ``.gz``, the lock file) ``0600`` whatever the umask, opened with ``O_NOFOLLOW``
(:mod:`tradelog._files`).
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from tradelog._files import make_dirs, open_private
from tradelog._logs.rows import FileKey
from tradelog._signals import block_in_this_thread

__all__ = ["FileSink", "file_path", "iter_lines"]

_OPEN_FLAGS: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT
_MAX_OPEN: Final = 64
_REOPEN_ATTEMPTS: Final = 8
_SEAL_AFTER_SECONDS: Final = 300.0
"""A past day's file is closed once it has not been written for this long."""
_LOCK_NAME: Final = ".rotate.lock"
_CURRENT: Final = re.compile(r"^service-(\d{4}-\d{2}-\d{2})\.jsonl$")


def file_path(log_dir: Path, key: FileKey) -> Path:
    """The path of the current file for ``key`` (user id or None, local date)."""
    user_id, day = key
    folder = log_dir / "system" if user_id is None else log_dir / "users" / str(user_id)
    return folder / f"service-{day}.jsonl"


class _Open:
    """An open file descriptor and the inode it was opened on."""

    __slots__ = ("fd", "ino")

    def __init__(self, fd: int, ino: int) -> None:
        self.fd = fd
        self.ino = ino


class FileSink:
    """Append lines to per-user and system files; rotate by size; thread-safe."""

    def __init__(self, log_dir: Path, max_bytes: int) -> None:
        self.log_dir = Path(log_dir)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._open: dict[FileKey, _Open] = {}
        self._dirs: set[Path] = set()
        self._compressors: list[threading.Thread] = []

    def write(self, groups: Mapping[FileKey, Sequence[str]]) -> int:
        """Append each group of lines to its file; return the number of lines written.

        Raises :class:`OSError` when a file cannot be written (the other groups are still
        attempted first).
        """
        written = 0
        failure: OSError | None = None
        with self._lock:
            for key, lines in groups.items():
                try:
                    self._append(key, "".join(lines).encode("utf-8", "replace"))
                    written += len(lines)
                except OSError as exc:
                    self._forget(key)
                    failure = exc
        if failure is not None:
            raise failure
        return written

    def seal_old_files(self, today: str, now: float | None = None) -> int:
        """Close (rotate and compress) files of days before ``today`` in the directories this
        sink has written to, once they have been idle for a few minutes; return how many."""
        moment = time.time() if now is None else now
        sealed = 0
        with self._lock:
            for key in [key for key in self._open if key[1] < today]:
                self._forget(key)
            folders = list(self._dirs)
        for folder in folders:
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                match = _CURRENT.match(name)
                if match is None or match.group(1) >= today:
                    continue
                path = folder / name
                try:
                    if moment - path.stat().st_mtime < _SEAL_AFTER_SECONDS:
                        continue
                except OSError:
                    continue
                if self._rotate(path, incoming=None):
                    sealed += 1
        return sealed

    def close(self, timeout: float = 5.0) -> None:
        """Close every open file and wait (up to ``timeout``) for pending compression."""
        with self._lock:
            for key in list(self._open):
                self._forget(key)
        deadline = time.monotonic() + timeout
        for thread in self._compressors:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._compressors = [t for t in self._compressors if t.is_alive()]

    def abandon(self) -> None:
        """Drop file descriptors inherited through ``fork`` (in the child) without locking."""
        for entry in list(self._open.values()):
            with contextlib.suppress(OSError):
                os.close(entry.fd)
        self._open = {}

    # -- internals -------------------------------------------------------------------------

    def _append(self, key: FileKey, data: bytes) -> None:
        path = file_path(self.log_dir, key)
        for _attempt in range(_REOPEN_ATTEMPTS):
            entry = self._open.get(key)
            if entry is None:
                entry = self._open_file(key, path)
            fd = entry.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                if current is None or current.st_ino != entry.ino:
                    stale = True
                else:
                    stale = False
                    size = os.fstat(fd).st_size
                    if size > 0 and size + len(data) > self.max_bytes:
                        stale = True
                    else:
                        _write_all(fd, data)
                        return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if stale:
                if current is not None and current.st_ino == entry.ino:
                    self._forget(key)
                    self._rotate(path, incoming=len(data))
                else:
                    self._forget(key)
        # Lost the race to rotations too many times in a row: write anyway (still locked,
        # still whole lines), accepting a file slightly above the size limit.
        entry = self._open_file(key, path)
        fcntl.flock(entry.fd, fcntl.LOCK_EX)
        try:
            _write_all(entry.fd, data)
        finally:
            fcntl.flock(entry.fd, fcntl.LOCK_UN)

    def _open_file(self, key: FileKey, path: Path) -> _Open:
        folder = path.parent
        if folder not in self._dirs:
            make_dirs(folder)
            self._dirs.add(folder)
        fd = open_private(path, _OPEN_FLAGS)
        entry = _Open(fd, os.fstat(fd).st_ino)
        if len(self._open) >= _MAX_OPEN:
            self._forget(next(iter(self._open)))
        self._open[key] = entry
        return entry

    def _forget(self, key: FileKey) -> None:
        entry = self._open.pop(key, None)
        if entry is not None:
            with contextlib.suppress(OSError):
                os.close(entry.fd)

    def _rotate(self, path: Path, incoming: int | None) -> bool:
        """Rename ``path`` to its next segment if it still needs it; compress it later.

        ``incoming`` is the size about to be written (rotate when it would not fit); None
        closes the file whatever its size (a past day's file). Returns whether it rotated.
        """
        folder = path.parent
        lock_fd = open_private(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                fd = open_private(path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                stat = os.fstat(fd)
                try:
                    same = os.stat(path).st_ino == stat.st_ino
                except FileNotFoundError:
                    same = False
                if not same or stat.st_size == 0:
                    return False
                if incoming is not None and stat.st_size + incoming <= self.max_bytes:
                    return False
                self._recover_segments(folder)
                segment = _next_segment(folder, path.name)
                os.rename(path, segment)
            finally:
                os.close(fd)
        finally:
            os.close(lock_fd)
        self._compress_later(segment)
        return True

    def _recover_segments(self, folder: Path) -> None:
        """Compress segments a crashed process left uncompressed (called under the dir lock)."""
        try:
            names = os.listdir(folder)
        except OSError:
            return
        present = set(names)
        for name in names:
            if name.endswith(".jsonl.gz.tmp") and name[: -len(".tmp")] in present:
                with contextlib.suppress(OSError):
                    os.unlink(folder / name)
            if not _is_segment(name):
                continue
            path = folder / name
            if name + ".gz" in present:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            self._compress_later(path, only_if_unclaimed=True)

    def _compress_later(self, segment: Path, *, only_if_unclaimed: bool = False) -> None:
        thread = threading.Thread(
            target=_compress,
            args=(segment, only_if_unclaimed),
            name="tradelog-gzip",
            daemon=True,
        )
        self._compressors = [t for t in self._compressors if t.is_alive()]
        self._compressors.append(thread)
        thread.start()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        view = view[count:]


_SEGMENT: Final = re.compile(r"^service-\d{4}-\d{2}-\d{2}\.(\d+)\.jsonl(?:\.gz)?(?:\.tmp)?$")


def _is_segment(name: str) -> bool:
    match = _SEGMENT.match(name)
    return match is not None and name.endswith(".jsonl")


def _next_segment(folder: Path, current: str) -> Path:
    """The next free ``service-DATE.N.jsonl`` name for ``current`` (``service-DATE.jsonl``)."""
    stem = current[: -len(".jsonl")]
    pattern = re.compile(rf"^{re.escape(stem)}\.(\d+)\.jsonl")
    numbers = [int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m]
    return folder / f"{stem}.{max(numbers, default=0) + 1}.jsonl"


def _compress(segment: Path, only_if_unclaimed: bool) -> None:
    """Gzip ``segment`` to ``segment.gz`` (via a ``.tmp`` file), then remove it."""
    block_in_this_thread()
    try:
        fd = open_private(segment, os.O_RDONLY)
    except OSError:
        return
    try:
        flags = fcntl.LOCK_EX | (fcntl.LOCK_NB if only_if_unclaimed else 0)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            return  # another process is compressing it
        if not segment.exists():
            return
        target = segment.with_name(segment.name + ".gz")
        temporary = segment.with_name(segment.name + ".gz.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        out_fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with (
            os.fdopen(os.dup(fd), "rb") as source,
            os.fdopen(out_fd, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6) as out,
        ):
            shutil.copyfileobj(source, out, 1 << 20)
        os.replace(temporary, target)
        os.unlink(segment)
    except OSError:
        return
    finally:
        os.close(fd)


def iter_lines(paths: Iterable[Path]) -> Iterable[str]:
    """Yield every line of plain and gzip-compressed log files (for tools and tests)."""
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from handle
