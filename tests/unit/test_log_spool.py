"""The spool: rows kept in order on disk until the database takes them."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tradelog._logs.rows import DbRow
from tradelog._logs.spool import Spool, adopt_orphans


def _rows(*names: str) -> list[DbRow]:
    return [(1, "INFO", "spool", name, None, "2025-01-15 03:45:00.000000") for name in names]


def _messages(spool: Spool, limit: int = 100) -> list[str]:
    return [row[3] for row in spool.read(limit).rows]


def test_prepend_puts_older_rows_before_everything_pending(tmp_path: Path) -> None:
    """Rows given back after a failed insert are replayed before rows spooled meanwhile."""
    spool = Spool(tmp_path)
    spool.append(_rows("a1"))
    spool.append(_rows("a2"))
    chunk = spool.read(1)
    spool.commit(chunk)  # a1 replayed
    spool.append(_rows("a3"))
    spool.prepend(_rows("b1", "b2"))
    assert spool.pending == 4
    assert _messages(spool) == ["b1", "b2", "a2", "a3"]
    spool.commit(spool.read(3))
    assert _messages(spool) == ["a3"]
    spool.commit(spool.read(10))
    assert spool.pending == 0
    assert spool.path is not None
    assert spool.path.stat().st_size == 0  # emptied once everything is replayed
    spool.close()
    assert not list(tmp_path.glob("spool-*"))


def test_prepend_to_an_empty_spool_appends(tmp_path: Path) -> None:
    """With nothing pending, prepending is appending."""
    spool = Spool(tmp_path)
    spool.prepend(_rows("only"))
    spool.prepend([])
    assert _messages(spool) == ["only"]
    spool.close()


def test_an_adopted_spool_resumes_after_a_prepend(tmp_path: Path) -> None:
    """The committed offset is saved, so a later writer replays the new order exactly once."""
    spool = Spool(tmp_path)
    spool.append(_rows("newer1", "newer2"))
    spool.prepend(_rows("older"))
    spool.close()  # rows pending: left for adoption, as after a crash
    (adopted,) = adopt_orphans(tmp_path)
    assert adopted.pending == 3
    assert _messages(adopted) == ["older", "newer1", "newer2"]
    adopted.commit(adopted.read(10))
    adopted.close()
    assert not list(tmp_path.glob("spool-*"))


def test_prepend_appends_behind_a_large_backlog(tmp_path: Path) -> None:
    """Above the limit the backlog is not copied: the rows go to the end instead."""
    spool = Spool(tmp_path, prepend_limit=100)
    spool.append(_rows(*(f"backlog {i}" for i in range(5))))
    spool.prepend(_rows("older"))
    assert _messages(spool) == [*(f"backlog {i}" for i in range(5)), "older"]
    spool.close()


def test_batches_are_read_whole_with_their_ids(tmp_path: Path) -> None:
    """A read never splits a batch: it stops between batches, even past its limit, and
    every batch comes back under the id it was spooled with."""
    spool = Spool(tmp_path)
    spool.append(_rows("a1", "a2", "a3"), batch_id="aaa")
    spool.append(_rows("b1"), batch_id="bbb")
    chunk = spool.read(2)
    assert [(b.batch_id, [r[3] for r in b.rows]) for b in chunk.batches] == [
        ("aaa", ["a1", "a2", "a3"])
    ]
    spool.commit(chunk)
    assert [b.batch_id for b in spool.read(10).batches] == ["bbb"]


def test_a_batch_larger_than_the_read_window_is_read_whole(tmp_path: Path) -> None:
    """A batch of more than 4 MiB is still one batch (the window grows)."""
    spool = Spool(tmp_path)
    big = [(1, "INFO", "spool", "x" * 1000, "y" * 8000, "2025-01-15 03:45:00.000000")] * 600
    spool.append(big, batch_id="big")
    spool.append(_rows("after"), batch_id="small")
    chunk = spool.read(100)
    assert [(b.batch_id, len(b.rows)) for b in chunk.batches] == [("big", 600)]
    spool.commit(chunk)
    assert spool.pending == 1


def test_lines_of_older_versions_without_ids_are_replayed(tmp_path: Path) -> None:
    """A spool written before batch ids (six columns a line) is read as batches of new ids."""
    path = tmp_path / "spool-1-old.jsonl"
    path.write_text(
        '[1,"INFO","m","old1",null,"2025-01-15 03:45:00.000000"]\n'
        '[1,"INFO","m","old2",null,"2025-01-15 03:45:00.000000"]\n'
    )
    (spool,) = adopt_orphans(tmp_path)
    chunk = spool.read(10)
    assert [r[3] for r in chunk.rows] == ["old1", "old2"]
    assert len(chunk.batches) == 1
    assert len(chunk.batches[0].batch_id) == 32
    spool.close()


def test_the_rest_of_a_partly_written_chunk_is_in_the_file_before_the_chunk_is_done(
    tmp_path: Path,
) -> None:
    """A replayed chunk whose first batch landed and whose second did not: the second goes
    back in front of what follows, and the chunk is marked done by the same offset move. A
    process that dies right after (the spool adopted as left) replays the rest exactly once,
    then what followed; with nothing committed yet, the whole chunk is still pending."""
    spool = Spool(tmp_path)
    spool.append(_rows("landed"))
    spool.append(_rows("rest1", "rest2"))
    spool.append(_rows("later"))
    chunk = spool.read(3)  # the two first batches
    assert [row[3] for row in chunk.rows] == ["landed", "rest1", "rest2"]
    spool.prepend_batches([chunk.batches[1]], consumed=chunk)
    assert spool.pending == 3
    spool.close()  # the process dies here: rows pending, left for adoption
    (adopted,) = adopt_orphans(tmp_path)
    assert adopted.pending == 3
    replayed = adopted.read(10)
    assert [row[3] for row in replayed.rows] == ["rest1", "rest2", "later"]
    assert replayed.batches[0].batch_id == chunk.batches[1].batch_id  # skipped if it landed
    adopted.commit(replayed)
    adopted.close()


def test_the_rest_goes_behind_a_large_backlog_and_the_chunk_is_still_done(tmp_path: Path) -> None:
    """Above the copy limit the rest is appended, and the chunk is marked done all the same."""
    spool = Spool(tmp_path, prepend_limit=10)
    spool.append(_rows("landed", "rest"))
    spool.append(_rows(*(f"later {i}" for i in range(3))))
    chunk = spool.read(2)
    rest = type(chunk.batches[0])(chunk.batches[0].batch_id, chunk.batches[0].rows[1:])
    spool.prepend_batches([rest], consumed=chunk)
    assert spool.pending == 4
    assert _messages(spool) == [*(f"later {i}" for i in range(3)), "rest"]
    spool.close()


def _adopt_until(directory: str, stop: Any, adopted: Any) -> None:
    """Another process's writer looking for orphans as fast as it can."""
    adopted.value = -1  # running
    while not stop.is_set():
        for spool in adopt_orphans(Path(directory)):
            adopted.value += 1
            spool.close()


@pytest.mark.slow
def test_a_spool_being_created_is_never_adopted(tmp_path: Path) -> None:
    """A new spool file appears under its adoptable name already locked: another process
    scanning for orphans all the while never takes (and deletes) one that is being created,
    so no row appended to it is lost. (It used to be created, then locked: a scan in between
    found an empty unlocked orphan and deleted it, and the rows went to the unlinked file.)"""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    adopted = context.Value("i", 0)
    scanner = context.Process(target=_adopt_until, args=(str(tmp_path), stop, adopted))
    scanner.start()
    lost: list[str] = []
    created = 0
    try:
        while adopted.value == 0 and scanner.is_alive():
            time.sleep(0.01)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            spool = Spool(tmp_path)
            try:
                spool.append(_rows(f"r{created}"))
            except OSError as exc:  # the scanner held the lock the new file was to take
                lost.append(repr(exc))
            else:
                if spool.path is None or not spool.path.exists():
                    lost.append(str(spool.path))
                spool.commit(spool.read(10))
            spool.close()
            created += 1
    finally:
        stop.set()
        scanner.join(10)
    assert created > 200
    assert lost == [], f"{len(lost)} of {created} new spools were taken from their writer"
    assert adopted.value == -1, "the scanner adopted a spool its writer still held"


def test_a_file_left_by_a_process_that_died_creating_its_spool_is_removed(
    tmp_path: Path,
) -> None:
    """A staging file older than a minute and unlocked (its process died between the create
    and the rename) goes at the next scan, with its offset file; a recent one stays."""
    old = tmp_path / "spool-1-deadbeef.jsonl.new"
    old_offset = tmp_path / "spool-1-deadbeef.jsonl.offset"
    recent = tmp_path / "spool-2-cafef00d.jsonl.new"
    for path in (old, old_offset, recent):
        path.write_bytes(b"")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert adopt_orphans(tmp_path) == []
    assert not old.exists()
    assert not old_offset.exists()
    assert recent.exists()


_AWKWARD: list[DbRow] = [
    (1, "INFO", "spool", "plain", None, "2025-01-15 03:45:00.000000"),
    (2**62, "ERROR", "m\u00f6dule", 'quote " back\\slash \u20b9 \u6f22', '{"k":"v"}', "t"),
    (3, "WARNING", "tab\there", "line\nbreak \x01 \u2028", "", "2025-01-15 03:45:00.5"),
]


@pytest.mark.parametrize("row", _AWKWARD)
def test_a_spool_line_is_what_json_dumps_writes(row: DbRow, tmp_path: Path) -> None:
    """Rows are written without ``json.dumps`` for speed: the bytes are the same, so spools
    written by earlier versions and by this one read alike, and every value comes back."""
    spool = Spool(tmp_path)
    spool.append([row], batch_id="ab12")
    assert spool.path is not None
    expected = json.dumps([*row, "ab12"], ensure_ascii=False, separators=(",", ":")) + "\n"
    assert spool.path.read_bytes() == expected.encode()
    (batch,) = spool.read(10).batches
    assert batch == ("ab12", [row])


def test_a_row_of_unusual_types_is_still_written_as_json(tmp_path: Path) -> None:
    """A value of another type (an int subclass, say) goes through the JSON encoder."""
    spool = Spool(tmp_path)
    spool.append([(True, "INFO", "m", "x", None, "t")], batch_id="cd34")  # type: ignore[list-item]
    assert spool.path is not None
    assert spool.path.read_text() == '[true,"INFO","m","x",null,"t","cd34"]\n'


def test_a_line_that_is_not_utf8_is_corrupt_not_fatal(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 make the line unreadable (dead-lettered), not the spool."""
    spool = Spool(tmp_path)
    spool.append(_rows("before"), batch_id="ef56")
    assert spool.path is not None
    with spool.path.open("ab") as handle:
        handle.write(b'[1,"INFO","m","\xff",null,"t","ef57"]\n')
    spool._pending += 1
    spool.append(_rows("after"), batch_id="ef58")
    chunk = spool.read(10)
    assert [row[3] for row in chunk.rows] == ["before", "after"]
    assert len(chunk.corrupt) == 1
