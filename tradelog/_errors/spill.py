"""Files that keep error rows the database refused, until it takes them.

A writer that cannot store a batch - or a caller whose error finds the queue full - appends it
to ``<directory>/errors-unwritten-<pid>.jsonl`` (one JSON object per line, the
:class:`~tradelog._errors.record.ErrorRecord` fields and the batch's id). Replaying takes this
process's file and the files of processes that are no longer running: each file is first
renamed to ``....replay-<pid>`` (only one process wins the rename), its rows are stored batch
by batch under their ids, then it is deleted. Rows a failed replay did not store go back to a
spill file with their ids; a batch stored by a replay that was killed before it deleted the
file finds its id taken the next time (:class:`~tradelog._errors.store.ErrorStore`), so nothing
is stored twice and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from tradelog._errors.record import ErrorRecord
from tradelog._files import make_dirs, open_private
from tradelog._logs.batch import new_batch_id
from tradelog._spool_files import pid_alive

__all__ = ["PREFIX", "SpillFiles", "record_from_json", "record_to_json"]

PREFIX: Final = "errors-unwritten-"


def record_to_json(record: ErrorRecord, batch_id: str | None = None) -> str:
    """One spill-file line for ``record`` (of batch ``batch_id``)."""
    return json.dumps(
        {
            "batch_id": batch_id,
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
    return _from_json(line)[0]


def _from_json(line: str) -> tuple[ErrorRecord, str | None]:
    data = json.loads(line)
    batch_id = data.pop("batch_id", None)
    data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return ErrorRecord(**data), batch_id if isinstance(batch_id, str) else None


class SpillFiles:
    """The spill files under one directory (``{log_dir}/_runtime``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._replaying = threading.RLock()
        """Held by a replay of this process, so :meth:`waiting` never looks in between its
        rename of a file and its putting back rows it could not store."""

    @property
    def own_path(self) -> Path:
        """This process's spill file."""
        return self.directory / f"{PREFIX}{os.getpid()}.jsonl"

    def has_own(self) -> bool:
        """Whether this process has spilled rows waiting."""
        return self.own_path.exists()

    def waiting(self) -> bool:
        """Whether rows wait in a file this process may replay (its own, or one left by a
        process that is gone), or in a replay under way."""
        with self._replaying:
            try:
                return bool(self._ready()) or any(self.directory.glob(f"{PREFIX}*.replay-*"))
            except OSError:
                return False

    def append(self, records: Sequence[ErrorRecord], batch_id: str | None = None) -> None:
        """Add ``records`` as one batch (``batch_id``, default a new one) to this process's
        file with one ``write()`` (raises ``OSError`` when that fails)."""
        self._append(self.own_path, [(batch_id or new_batch_id(), list(records))])

    def _append(self, path: Path, batches: Sequence[tuple[str, list[ErrorRecord]]]) -> None:
        data = "".join(
            record_to_json(record, batch_id) + "\n"
            for batch_id, records in batches
            for record in records
        ).encode("utf-8", "replace")
        make_dirs(self.directory)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _ready(self) -> list[Path]:
        try:
            paths = sorted(self.directory.glob(f"{PREFIX}*.jsonl"))
        except OSError:
            return []
        ready = []
        for path in paths:
            pid = path.stem.removeprefix(PREFIX)
            if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
                ready.append(path)
        return ready

    def replay(self, write: Callable[[Sequence[ErrorRecord], str], object], batch_size: int) -> int:
        """Store spilled rows with ``write(records, batch_id)``, one call per batch; returns
        how many rows were offered (a batch found stored already stores nothing).

        Stops at the first failing batch: the rows not stored go back to a spill file.
        """
        with self._replaying:
            return self._replay(write, max(batch_size, 1))

    def _replay(self, write: Callable[[Sequence[ErrorRecord], str], object], size: int) -> int:
        stored = 0
        for path in self._ready():
            claimed = path.with_name(f"{path.stem}.replay-{os.getpid()}")
            try:
                path.rename(claimed)
                lines = claimed.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            batches = _batches(lines, size)
            for index, (batch_id, records) in enumerate(batches):
                try:
                    write(records, batch_id)
                except Exception:
                    with contextlib.suppress(OSError):
                        self._append(path, batches[index:])
                        claimed.unlink()
                    return stored
                stored += len(records)
            with contextlib.suppress(OSError):
                claimed.unlink()
        return stored


def _batches(lines: list[str], size: int) -> list[tuple[str, list[ErrorRecord]]]:
    """The batches of a spill file in order: consecutive lines with one id; lines written
    without an id (older versions) in groups of ``size`` under new ids."""
    batches: list[tuple[str, list[ErrorRecord]]] = []
    key: object = object()
    for line in lines:
        try:
            record, batch_id = _from_json(line)
        except Exception:  # noqa: S112 - an unreadable line (a torn write) cannot be stored
            continue
        if batches and batch_id == key and (batch_id is not None or len(batches[-1][1]) < size):
            batches[-1][1].append(record)
            continue
        batches.append((batch_id or new_batch_id(), [record]))
        key = batch_id
    return batches
