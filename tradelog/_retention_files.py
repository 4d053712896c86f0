"""Runtime files past retention: dead letters and spills the writers left behind.

* **Dead letters** - ``{log_dir}/_dead_letter/<table>-YYYY-MM-DD.jsonl``: rows the database
  refused for a reason of their own, kept for a person to look at. A file goes once the date
  in its name is older than the period (in the configured timezone), like the log files.
* **Spills** - the log writer's spool (``{log_dir}/_spool/spool-*.jsonl`` and its
  ``.offset`` file) and the error writer's (``{log_dir}/_runtime/errors-unwritten-*``): rows
  waiting for the database. Writers replay and delete them as soon as the database answers,
  so one still there after the period (by modification time) belongs to a writer that never
  came back to a working database. It is deleted only when no live process holds it: a spool
  whose ``flock`` is held, or an error spill whose process id is alive, is left alone.

:func:`expired` lists the candidates (pure apart from reading the directory);
:func:`remove` deletes one, re-checking ownership under the spool's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Final

from tradelog._spool_files import pid_alive

__all__ = ["DEAD_LETTER_PATTERN", "RuntimeFile", "expired", "remove"]

DEAD_LETTER_PATTERN: Final = re.compile(r"^[A-Za-z0-9_]+-(?P<date>\d{4}-\d{2}-\d{2})\.jsonl$")
_SPOOL: Final = re.compile(r"^spool-.+\.jsonl$")
_MARK: Final = ".done"
"""Suffix of a replay's progress mark beside an error spill file (see tradelog._spool_files)."""
_ERROR_SPILL: Final = re.compile(
    r"^errors-unwritten-(?P<pid>\d+)(?:\.jsonl|\.replay-(?P<by>\d+)(?:\.jsonl)?)$"
)
"""An error spill file: the owner's, or one a replay claimed (older versions named those
without ``.jsonl``)."""


@dataclass(frozen=True)
class RuntimeFile:
    """A dead-letter or spill file past retention."""

    path: Path
    kind: str
    """``dead_letters`` or ``spill_files``."""
    size: int


def _dated(name: str) -> date | None:
    match = DEAD_LETTER_PATTERN.match(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match["date"])
    except ValueError:
        return None


def _spool_held(path: Path) -> bool:
    """Whether a live writer holds ``path``'s lock (taking and releasing it to find out)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _in_use(path: Path) -> bool:
    if _SPOOL.match(path.name):
        return _spool_held(path)
    match = _ERROR_SPILL.match(path.name)
    if match is not None:
        return any(pid_alive(int(pid)) for pid in (match["pid"], match["by"]) if pid)
    return False


def expired(
    log_dir: Path, *, dead_letter_cutoff: date, spill_cutoff: datetime
) -> Iterator[RuntimeFile]:
    """Dead letters dated before ``dead_letter_cutoff``; spills not modified since
    ``spill_cutoff`` that no live process holds."""
    letters = log_dir / "_dead_letter"
    if letters.is_dir():
        for path in sorted(letters.iterdir()):
            day = _dated(path.name)
            if day is not None and day < dead_letter_cutoff and path.is_file():
                yield RuntimeFile(path, "dead_letters", path.stat().st_size)
    limit = spill_cutoff.timestamp()
    spills = [
        *(
            sorted((log_dir / "_spool").glob("spool-*.jsonl"))
            if (log_dir / "_spool").is_dir()
            else []
        ),
        *(
            sorted((log_dir / "_runtime").glob("errors-unwritten-*"))
            if (log_dir / "_runtime").is_dir()
            else []
        ),
    ]
    for path in spills:
        with contextlib.suppress(FileNotFoundError):
            if path.name.endswith(_MARK) and path.with_name(path.name[: -len(_MARK)]).exists():
                continue  # a replay's progress mark goes with its file, never before it
            if not path.is_file() or path.stat().st_mtime >= limit or _in_use(path):
                continue
            size = path.stat().st_size
            offset = path.with_name(path.name + ".offset")
            if offset.exists():
                size += offset.stat().st_size
            yield RuntimeFile(path, "spill_files", size)


def remove(item: RuntimeFile) -> None:
    """Delete ``item`` (a spool with its ``.offset`` file, under its lock); a spool a writer
    took meanwhile is left alone (``BlockingIOError``)."""
    if item.kind != "spill_files" or not _SPOOL.match(item.path.name):
        item.path.unlink()
        if item.kind == "spill_files":  # a replay's progress mark goes with its file
            item.path.with_name(item.path.name + ".done").unlink(missing_ok=True)
        return
    fd = os.open(item.path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError when taken
        item.path.unlink()
        item.path.with_name(item.path.name + ".offset").unlink(missing_ok=True)
    finally:
        os.close(fd)
