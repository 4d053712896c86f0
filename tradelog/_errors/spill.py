"""Files that keep error rows the database refused, until it takes them.

A writer that cannot store a batch - or a caller whose error finds the queue full - appends it
to ``<directory>/errors-unwritten-<pid>.jsonl`` (one JSON object per line, the
:class:`~tradelog._errors.record.ErrorRecord` fields and the batch's id). The files are
:class:`~tradelog._spool_files.JsonlSpool` files, the mechanism the notification and telemetry
spools use: a replay claims this process's file, or one left by a process that is gone, by
renaming it to ``....replay-<pid>.jsonl`` (only one process wins the rename; an append of this
process never lands in between), stores it batch by batch under the ids the batches were
spilled with, and moves a progress mark past each batch; a replay that stops (the database went
away again) resumes there, and a claimed file whose replayer died is taken over at its mark by
the next replay. A batch stored by a replay that was killed before its mark moved finds its id
taken the next time (:class:`~tradelog._errors.store.ErrorStore`), so nothing is stored twice
and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from tradelog._errors.record import ErrorRecord
from tradelog._logs.batch import new_batch_id
from tradelog._spool_files import JsonlSpool, pid_alive

__all__ = ["PREFIX", "SpillFiles", "record_from_json", "record_to_dict", "record_to_json"]

PREFIX: Final = "errors-unwritten-"
_LEGACY_CLAIM: Final = re.compile(rf"^{PREFIX}(?P<owner>\d+)\.replay-(?P<by>\d+)$")
"""A file claimed by a replay of an older version (no ``.jsonl``): taken over as it is."""


def record_to_dict(record: ErrorRecord, batch_id: str | None = None) -> dict[str, Any]:
    """The JSON object of a spill-file line for ``record`` (of batch ``batch_id``)."""
    return {
        "batch_id": batch_id,
        "user_id": record.user_id,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "traceback": record.traceback,
        "context": record.context,
        "occurred_at": record.occurred_at.isoformat(),
        "fingerprint": record.fingerprint,
        "uncaught": record.uncaught,
    }


def record_to_json(record: ErrorRecord, batch_id: str | None = None) -> str:
    """One spill-file line for ``record`` (of batch ``batch_id``)."""
    return json.dumps(record_to_dict(record, batch_id), ensure_ascii=False)


def record_from_json(line: str) -> ErrorRecord:
    """The record a spill-file line holds (raises ``ValueError``/``KeyError`` if malformed)."""
    return _from_json(line)[0]


def _from_json(line: str) -> tuple[ErrorRecord, str | None]:
    return _from_dict(json.loads(line))


def _from_dict(data: dict[str, Any]) -> tuple[ErrorRecord, str | None]:
    data = dict(data)
    batch_id = data.pop("batch_id", None)
    data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    return ErrorRecord(**data), batch_id if isinstance(batch_id, str) else None


def _batch_key(data: dict[str, Any]) -> object:
    batch_id = data.get("batch_id")
    return batch_id if isinstance(batch_id, str) else None


class SpillFiles:
    """The spill files under one directory (``{log_dir}/_runtime``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Written on the caller's thread when the queue is full: no fsync there (a row
        # survives the process; the database is the durable copy).
        self._spool = JsonlSpool(directory, PREFIX, fsync=False)

    @property
    def own_path(self) -> Path:
        """This process's spill file."""
        return self._spool.own_path

    def has_own(self) -> bool:
        """Whether this process has spilled rows waiting (in its file, or in a replay of its
        own that stopped part-way)."""
        return self._spool.has_own()

    def waiting(self) -> bool:
        """Whether rows wait in a file this process may replay: its own, one left by a
        process that is gone, or one whose replay stopped or whose replayer died."""
        try:
            return self._spool.waiting() or bool(self._legacy_claims())
        except OSError:
            return False

    def append(self, records: Sequence[ErrorRecord], batch_id: str | None = None) -> None:
        """Add ``records`` as one batch (``batch_id``, default a new one) to this process's
        file with one ``write()`` (raises ``OSError`` when that fails)."""
        identifier = batch_id or new_batch_id()
        self._spool.append([record_to_dict(record, identifier) for record in records])

    def replay(self, write: Callable[[Sequence[ErrorRecord], str], object], batch_size: int) -> int:
        """Store spilled rows with ``write(records, batch_id)``, one call per batch; returns
        how many rows were offered (a batch found stored already stores nothing).

        Stops at the first failing batch: it and the rest stay claimed by this process, and
        the next replay starts there.
        """
        self._take_over_legacy_claims()

        def store(batch: list[dict[str, Any]]) -> None:
            records: list[ErrorRecord] = []
            batch_id: str | None = None
            for data in batch:
                try:
                    record, batch_id = _from_dict(data)
                except Exception:  # noqa: S112 - a line that is no record cannot be stored
                    continue
                records.append(record)
            if records:
                write(records, batch_id or new_batch_id())

        return self._spool.replay(store, batch_size=max(batch_size, 1), group=_batch_key)

    def _legacy_claims(self) -> list[Path]:
        found = []
        for path in self.directory.glob(f"{PREFIX}*.replay-*"):
            match = _LEGACY_CLAIM.match(path.name)
            if match is not None and (
                int(match["by"]) == os.getpid() or not pid_alive(int(match["by"]))
            ):
                found.append(path)
        return found

    def _take_over_legacy_claims(self) -> None:
        """Give files claimed by an older version's replay that died the current name, so
        the replay below takes them over."""
        with contextlib.suppress(OSError):
            for path in self._legacy_claims():
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(f"{path.name}.jsonl"))
