"""Spill files: rows round-trip, and a replay that fails half-way stores nothing twice."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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


_GONE_PID = 4_999_999  # above any pid_max: no such process


@pytest.mark.parametrize(
    "name",
    [f"{PREFIX}1.replay-{_GONE_PID}.jsonl", f"{PREFIX}1.replay-{_GONE_PID}"],
    ids=["claimed", "claimed-by-an-older-version"],
)
def test_a_replay_whose_process_died_is_taken_over(tmp_path: Path, name: str) -> None:
    """A file a replay had claimed when its process was killed is stored by the next replay,
    batch by batch under the spilled ids; until then the rows count as waiting. (Before, such
    a file was never replayed, and flush() waited for it for ever.)"""
    lines = [
        record_to_json(_record(0), "aa"),
        record_to_json(_record(1), "aa"),
        record_to_json(_record(2), "bb"),
    ]
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    spills = SpillFiles(tmp_path)
    assert spills.waiting()
    seen: list[tuple[str, list[int]]] = []

    def store(batch: Sequence[ErrorRecord], batch_id: str) -> None:
        seen.append((batch_id, [int(r.error_message.split()[1]) for r in batch]))

    assert spills.replay(store, batch_size=10) == 3
    assert seen == [("aa", [0, 1]), ("bb", [2])]
    assert not spills.waiting()
    assert list(tmp_path.iterdir()) == []


def test_a_spilled_batch_is_replayed_whole_under_its_id(tmp_path: Path) -> None:
    """A batch larger than the replay's batch size is not split: its id covers all of it."""
    spills = SpillFiles(tmp_path)
    spills.append([_record(n) for n in range(5)], batch_id="aa")
    seen: list[tuple[str, int]] = []
    assert spills.replay(lambda rows, i: seen.append((i, len(rows))), batch_size=2) == 5
    assert seen == [("aa", 5)]


def test_a_replay_that_stopped_part_way_is_still_this_processs_to_finish(
    tmp_path: Path,
) -> None:
    """After a replay stopped at a failing batch, the rest counts as this process's own (the
    writer replays it after its next successful write) and comes before later spills."""
    spills = SpillFiles(tmp_path)
    spills.append([_record(0)], batch_id="aa")
    spills.append([_record(1)], batch_id="bb")

    def fail_on_bb(batch: Sequence[ErrorRecord], batch_id: str) -> None:
        if batch_id == "bb":
            raise ConnectionError("down")

    assert spills.replay(fail_on_bb, batch_size=10) == 1
    assert not spills.own_path.exists()
    assert spills.has_own()
    spills.append([_record(2)], batch_id="cc")
    seen: list[str] = []
    assert spills.replay(lambda rows, i: seen.append(i), batch_size=10) == 2
    assert seen == ["bb", "cc"]
    assert not spills.has_own()
