"""Owner-only files and directories: how tradelog creates everything it writes to disk.

Log files hold every user's events, the spool and dead letters hold rows, the SQLite database
holds everything: none of it is for other accounts on the host. Whatever the process umask,
every directory tradelog creates is ``0700`` and every file ``0600`` (the mode is set
explicitly after creation, because a umask can only take permissions away from the mode asked
for, never make a group- or world-readable request private, and an odd umask could even take
the owner's own bits). Files are opened with ``O_NOFOLLOW``, so a symbolic link planted where
tradelog writes is refused rather than followed.

Used by the file sink (``logs/``, ``logs/users/<id>/``, rotated ``.gz`` segments), the spool,
the dead-letter file, the writer statistics and error spill files (``_runtime/``), and the
engine, which creates a new SQLite database file (SQLite gives its ``-wal`` and ``-shm`` files
the database file's mode).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

__all__ = ["DIR_MODE", "FILE_MODE", "NOFOLLOW", "make_dirs", "open_private", "write_private"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


def make_dirs(path: Path | str) -> Path:
    """Create ``path`` and its missing parents, each owner-only; existing ones are left as
    they are (they may belong to the host). Returns ``path``."""
    target = Path(path)
    missing: list[Path] = []
    current = target
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue
        with contextlib.suppress(OSError):
            os.chmod(folder, DIR_MODE)
    return target


def open_private(path: Path | str, flags: int) -> int:
    """``os.open`` for tradelog's own files: ``O_NOFOLLOW`` and close-on-exec added; a file
    this call creates is ``0600`` whatever the umask. Returns the descriptor."""
    fd = os.open(path, flags | NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    if flags & os.O_CREAT:
        try:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except OSError:  # pragma: no cover - a file of another account: leave its mode
            pass
    return fd


def write_private(path: Path | str, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` (through an owner-only temporary file)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(temporary, target)
