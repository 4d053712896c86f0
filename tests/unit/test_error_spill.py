"""Spill files: rows round-trip, and a replay that fails half-way stores nothing twice."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tradelog._errors.record import ErrorRecord
from tradelog._errors.spill import PREFIX, SpillFiles, record_from_json, record_to_json

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def _record(n: int) -> ErrorRecord:
    return ErrorRecord(
        user_id=n % 3 or None,
        error_type="ValueError",
        error_message=f"error {n} ✓",
        traceback="Traceback ...",
        context={"n": n},
        occurred_at=T0 + timedelta(seconds=n),
        fingerprint="a" * 64,
        uncaught=n % 2 == 0,
    )


def test_record_round_trip() -> None:
    """Every field, the aware time included, survives a spill line."""
    record = _record(4)
    assert record_from_json(record_to_json(record)) == record


def test_replay_stores_everything_once(tmp_path: Path) -> None:
    """A failure in the second batch keeps the unstored rows; the next replay stores them."""
    spills = SpillFiles(tmp_path)
    spills.append([_record(0), _record(1)])
    spills.append([_record(2), _record(3)])
    spills.append([_record(4)])
    assert spills.has_own()
    stored: list[int] = []
    calls = 0

    def flaky(batch: Sequence[ErrorRecord], batch_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("database went away")
        stored.extend(int(r.error_message.split()[1]) for r in batch)

    assert spills.replay(flaky, batch_size=2) == 2
    assert stored == [0, 1]
    assert spills.replay(flaky, batch_size=2) == 3
    assert stored == [0, 1, 2, 3, 4]
    assert not spills.has_own()
    assert list(tmp_path.iterdir()) == []


def test_files_of_running_processes_are_left_alone(tmp_path: Path) -> None:
    """Another live process's file is its own business; a dead process's file is taken."""
    alive = tmp_path / f"{PREFIX}{os.getppid()}.jsonl"
    alive.write_text(record_to_json(_record(1)) + "\n")
    dead = tmp_path / f"{PREFIX}999999999.jsonl"
    dead.write_text(record_to_json(_record(2)) + "\nnot json\n")
    (tmp_path / f"{PREFIX}junk.jsonl").write_text("x\n")
    taken: list[ErrorRecord] = []
    assert SpillFiles(tmp_path).replay(lambda rows, _: taken.extend(rows), batch_size=10) == 1
    assert taken == [_record(2)]
    assert alive.exists()
    assert not dead.exists()


def test_a_batch_keeps_its_id_through_a_failed_replay(tmp_path: Path) -> None:
    """Each spilled batch is offered under the id it was spilled with, also after a replay
    that failed put it back: the store recognises a batch it committed before."""
    spills = SpillFiles(tmp_path)
    spills.append([_record(0), _record(1)], batch_id="aa")
    spills.append([_record(2)], batch_id="bb")
    seen: list[tuple[str, int]] = []

    def down(batch: Sequence[ErrorRecord], batch_id: str) -> None:
        raise ConnectionError("down")

    assert spills.replay(down, batch_size=10) == 0
    assert spills.replay(lambda rows, i: seen.append((i, len(rows))), batch_size=10) == 3
    assert seen == [("aa", 2), ("bb", 1)]
