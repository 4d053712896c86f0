"""JsonlSpool: owner-only appends, replay in order, resume after a failure, adopt the dead."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from tradelog._spool_files import JsonlSpool, _locks, pid_alive, waiting_records

_GONE_PID = 4_999_999  # above any pid_max: no such process


def _recorder(fail_on: set[int] | None = None) -> tuple[list[int], Any]:
    seen: list[int] = []

    def write(batch: list[dict[str, Any]]) -> None:
        for record in batch:
            if fail_on and record["n"] in fail_on:
                raise RuntimeError("database down")
        seen.extend(record["n"] for record in batch)

    return seen, write


def test_append_is_owner_only_and_replay_keeps_order(tmp_path: Path) -> None:
    """Records come back in the order appended; the file is 0600 and gone afterwards."""
    spool = JsonlSpool(tmp_path / "rt", "t-")
    spool.append([{"n": 1}, {"n": 2}])
    spool.append([{"n": 3}])
    assert stat.S_IMODE(spool.own_path.stat().st_mode) == 0o600
    assert spool.pending() == 3
    seen, write = _recorder()
    assert spool.replay(write, batch_size=2) == 3
    assert seen == [1, 2, 3]
    assert spool.pending() == 0
    assert not list((tmp_path / "rt").iterdir())


def test_a_failed_replay_resumes_before_what_came_later(tmp_path: Path) -> None:
    """The batch that failed and the rest are replayed first, then records appended since."""
    spool = JsonlSpool(tmp_path, "t-")
    spool.append([{"n": n} for n in range(1, 6)])
    seen, write = _recorder(fail_on={3})
    assert spool.replay(write, batch_size=1) == 2
    assert seen == [1, 2]
    spool.append([{"n": 6}])
    assert spool.pending() == 4
    seen, write = _recorder()
    assert spool.replay(write, batch_size=1) == 4
    assert seen == [3, 4, 5, 6]


@pytest.mark.parametrize("name", [f"t-{_GONE_PID}.jsonl", f"t-1.replay-{_GONE_PID}.jsonl"])
def test_spools_of_dead_processes_are_adopted(tmp_path: Path, name: str) -> None:
    """A fresh or half-replayed file of a process that is gone is replayed here."""
    (tmp_path / name).write_text(json.dumps({"n": 9}) + "\n")
    spool = JsonlSpool(tmp_path, "t-")
    seen, write = _recorder()
    assert spool.replay(write) == 1
    assert seen == [9]


def test_files_of_live_processes_are_left_alone(tmp_path: Path) -> None:
    """Another live process's spool is its own to replay."""
    other = os.getppid()
    (tmp_path / f"t-{other}.jsonl").write_text(json.dumps({"n": 1}) + "\n")
    spool = JsonlSpool(tmp_path, "t-")
    seen, write = _recorder()
    assert spool.replay(write) == 0
    assert seen == []


def test_grouped_records_are_replayed_in_their_groups(tmp_path: Path) -> None:
    """With ``group``, consecutive records of one key are one batch whatever its size, and
    records without a key go in batches of ``batch_size``, in order."""
    spool = JsonlSpool(tmp_path, "t-", fsync=False)
    spool.append([{"n": n, "k": "a"} for n in range(3)])
    spool.append([{"n": n, "k": None} for n in range(3, 6)])
    spool.append([{"n": 6, "k": "b"}, {"n": 7, "k": "a"}])
    batches: list[list[int]] = []
    written = spool.replay(
        lambda batch: batches.append([r["n"] for r in batch]),
        batch_size=2,
        group=lambda record: record["k"],
    )
    assert written == 8
    assert batches == [[0, 1, 2], [3, 4], [5], [6], [7]]


def test_a_record_that_is_not_utf8_is_kept_with_a_replacement(tmp_path: Path) -> None:
    """A lone surrogate cannot be written as UTF-8: it becomes "?" and the batch is kept."""
    spool = JsonlSpool(tmp_path, "t-")
    spool.append([{"n": 1, "text": "bad \ud800 char"}])
    seen: list[str] = []
    assert spool.replay(lambda batch: seen.extend(r["text"] for r in batch)) == 1
    assert seen == ["bad ? char"]


def test_a_replay_moves_a_mark_instead_of_rewriting_the_file(tmp_path: Path) -> None:
    """The claimed file is never rewritten while it is replayed (rewriting the rest after each
    batch made a replay quadratic: 4,000 one-record batches took 144 s); a progress mark moves
    instead, the backlog counts only what follows it, and the next replay starts there."""
    spool = JsonlSpool(tmp_path, "t-", fsync=False)
    spool.append([{"n": n} for n in range(6)])
    claimed = tmp_path / f"t-{os.getpid()}.replay-{os.getpid()}.jsonl"
    shapes: set[tuple[int, int]] = set()

    def write(batch: list[dict[str, Any]]) -> None:
        info = claimed.stat()
        shapes.add((info.st_ino, info.st_size))
        if batch[0]["n"] == 4:
            raise RuntimeError("database down")

    assert spool.replay(write, batch_size=2) == 4
    assert len(shapes) == 1, "the claimed file was rewritten during the replay"
    assert (tmp_path / f"{claimed.name}.done").exists()
    assert waiting_records(claimed) == 2
    assert spool.pending() == 2
    seen, write_all = _recorder()
    assert spool.replay(write_all, batch_size=2) == 2
    assert seen == [4, 5]
    assert list(tmp_path.iterdir()) == []


def test_a_dead_replayers_progress_is_taken_over_with_its_file(tmp_path: Path) -> None:
    """A claimed file of a replayer that is gone is resumed at its mark, not from the start."""
    claimed = tmp_path / f"t-1.replay-{_GONE_PID}.jsonl"
    lines = [json.dumps({"n": n}) + "\n" for n in range(4)]
    claimed.write_text("".join(lines))
    (tmp_path / f"{claimed.name}.done").write_text(f"{len(lines[0]) + len(lines[1])}\n")
    spool = JsonlSpool(tmp_path, "t-")
    assert spool.pending() == 2
    seen, write = _recorder()
    assert spool.replay(write) == 2
    assert seen == [2, 3]
    assert list(tmp_path.iterdir()) == []


def test_a_mark_left_by_an_earlier_claim_is_not_obeyed(tmp_path: Path) -> None:
    """A mark whose file is gone (a replay ended between deleting the two) does not skip the
    records of a later file claimed under the same name."""
    spool = JsonlSpool(tmp_path, "t-")
    stale = tmp_path / f"t-{os.getpid()}.replay-{os.getpid()}.jsonl.done"
    stale.write_text("00000000000000000010\n")
    spool.append([{"n": 1}, {"n": 2}])
    seen, write = _recorder()
    assert spool.replay(write) == 2
    assert seen == [1, 2]
    assert list(tmp_path.iterdir()) == []


def test_a_dead_replayers_claim_never_replaces_this_processs_own(tmp_path: Path) -> None:
    """This process's unfinished claim of an owner's file and a dead replayer's claim of the
    same owner's later file: both are replayed, this process's first (taking the dead one over
    used to rename it onto this process's claim, losing the rest of it)."""
    me = os.getpid()
    dead = next(p for p in range(2, 10**6) if str(p) < str(me) and not pid_alive(p))
    mine = tmp_path / f"t-{_GONE_PID}.replay-{me}.jsonl"
    lines = [json.dumps({"n": n}) + "\n" for n in range(4)]
    mine.write_text("".join(lines))
    (tmp_path / f"{mine.name}.done").write_text(f"{len(lines[0]):020d}\n")  # 0 written
    (tmp_path / f"t-{_GONE_PID}.replay-{dead}.jsonl").write_text(
        "".join(json.dumps({"n": n}) + "\n" for n in range(10, 13))
    )
    spool = JsonlSpool(tmp_path, "t-")
    assert spool.pending() == 6
    seen, write = _recorder()
    assert spool.replay(write) == 6
    assert seen == [1, 2, 3, 10, 11, 12]
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_does_not_inherit_a_held_lock(tmp_path: Path) -> None:
    """A child forked while another thread of the parent appends (its lock held) can append
    at once: the child has locks of its own."""
    spool = JsonlSpool(tmp_path, "t-", fsync=False)
    spool.append([{"n": 0}])  # the locks exist
    holder_has_it, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _locks(spool._key).append:
            holder_has_it.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holder_has_it.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            signal.alarm(5)  # a child stuck on the inherited lock dies of SIGALRM
            spool.append([{"n": 1}])
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.WIFEXITED(status), "the forked child hung on a lock its parent's thread held"
    assert os.WEXITSTATUS(status) == 0
