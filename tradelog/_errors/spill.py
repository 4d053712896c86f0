"""Files that keep error rows the database refused, until it takes them.

A writer that cannot store a batch appends it to ``<directory>/errors-unwritten-<pid>.jsonl``
(one JSON object per line, the :class:`~tradelog._errors.record.ErrorRecord` fields). Replaying
takes this process's file and the files of processes that are no longer running: each file is
first renamed to ``....replay-<pid>`` (only one process wins the rename), its rows are stored
in batches, then it is deleted. Rows a failed replay did not store go back to a spill file, so
nothing is stored twice and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from tradelog._errors.record import ErrorRecord
from tradelog._files import make_dirs, open_private

__all__ = ["PREFIX", "SpillFiles", "record_from_json", "record_to_json"]

PREFIX: Final = "errors-unwritten-"


def record_to_json(record: ErrorRecord) -> str:
    """One spill-file line for ``record``."""
    return json.dumps(
        {
            "user_id": record.user_id,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "traceback": record.traceback,
            "context": record.context,
            "occurred_at": record.occurred_at.isoformat(),
            "fingerprint": record.fingerprint,
            "uncaught": record.uncaught,
        },
        ensure_ascii=False,
    )


def record_from_json(line: str) -> ErrorRecord:
    """The record a spill-file line holds (raises ``ValueError``/``KeyError`` if malformed)."""
    data = json.loads(line)
    data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return ErrorRecord(**data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class SpillFiles:
    """The spill files under one directory (``{log_dir}/_runtime``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def own_path(self) -> Path:
        """This process's spill file."""
        return self.directory / f"{PREFIX}{os.getpid()}.jsonl"

    def has_own(self) -> bool:
        """Whether this process has spilled rows waiting."""
        return self.own_path.exists()

    def append(self, records: Sequence[ErrorRecord]) -> None:
        """Add ``records`` to this process's file (raises ``OSError`` when that fails)."""
        self._append(self.own_path, records)

    def _append(self, path: Path, records: Sequence[ErrorRecord]) -> None:
        make_dirs(self.directory)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.writelines(record_to_json(record) + "\n" for record in records)

    def _ready(self) -> list[Path]:
        try:
            paths = sorted(self.directory.glob(f"{PREFIX}*.jsonl"))
        except OSError:
            return []
        ready = []
        for path in paths:
            pid = path.stem.removeprefix(PREFIX)
            if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                ready.append(path)
        return ready

    def replay(self, write: Callable[[Sequence[ErrorRecord]], object], batch_size: int) -> int:
        """Store spilled rows with ``write`` (one call per batch); returns how many were stored.

        Stops at the first failing batch: the rows not stored go back to a spill file.
        """
        stored = 0
        size = max(batch_size, 1)
        for path in self._ready():
            claimed = path.with_name(f"{path.stem}.replay-{os.getpid()}")
            try:
                path.rename(claimed)
                lines = claimed.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            records: list[ErrorRecord] = []
            for line in lines:
                with contextlib.suppress(Exception):
                    records.append(record_from_json(line))
            for start in range(0, len(records), size):
                try:
                    write(records[start : start + size])
                except Exception:
                    with contextlib.suppress(OSError):
                        self._append(path, records[start:])
                        claimed.unlink()
                    return stored
                stored += len(records[start : start + size])
            with contextlib.suppress(OSError):
                claimed.unlink()
        return stored
