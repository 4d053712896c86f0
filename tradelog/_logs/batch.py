"""A batch of ``service_logs`` rows and its id: the unit that is written exactly once.

Every batch gets an id when it is formed (:func:`new_batch`). The inserter claims the id in
``tradelog_write_batches`` in the same transaction as the rows; the spool keeps the id with each
row, so a batch replayed after an unacknowledged commit, or after a process was killed between
the insert and the saved spool offset, claims an id that is already taken and is skipped.

When a batch has to be split (a row the database refuses is searched for by halving), each half
is a batch of its own with an id derived from its parent's (:func:`part_id`), so the split is
the same every time the batch is retried and each part is written once.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final, NamedTuple

from tradelog._logs.rows import DbRow

__all__ = ["BATCH_ID_MAX", "Batch", "new_batch", "new_batch_id", "part_id"]

BATCH_ID_MAX: Final = 96
"""The column's width (``tradelog_write_batches.batch_id``)."""


class Batch(NamedTuple):
    """Rows that go into the database in one transaction, under one id."""

    batch_id: str
    rows: list[DbRow]


def new_batch_id() -> str:
    """A fresh, unguessable id (32 hex digits)."""
    return secrets.token_hex(16)


def new_batch(rows: list[DbRow]) -> Batch:
    """``rows`` under a fresh id."""
    return Batch(new_batch_id(), rows)


def part_id(batch_id: str, index: int) -> str:
    """The id of part ``index`` (0 or 1) of a batch split in halves."""
    derived = f"{batch_id}.{index}"
    if len(derived) <= BATCH_ID_MAX:
        return derived
    return hashlib.sha256(derived.encode()).hexdigest()[:32] + "~"
