"""Per-user JSONL files: rotation, compression and several processes writing one file."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from datetime import date
from pathlib import Path

import pytest

from tradelog._logs.file_sink import FileSink, file_path, iter_lines
from tradelog.retention import log_file_date


def _line(writer: int, seq: int, pad: int = 60) -> str:
    return json.dumps({"writer": writer, "seq": seq, "pad": "p" * pad}) + "\n"


def _written_order(path: Path) -> tuple[str, int]:
    """Sort key: by date, then closed segments by number, then the file being written."""
    parts = path.name.split(".")
    return (parts[0], int(parts[1]) if parts[1].isdigit() else 1 << 62)


def _all_lines(folder: Path) -> list[str]:
    return list(iter_lines(sorted(folder.glob("service-*"), key=_written_order)))


def test_rotation_keeps_every_line_and_compresses_segments(tmp_path: Path) -> None:
    """Size rotation within a day: segments .1, .2 ... compressed, nothing lost or repeated."""
    sink = FileSink(tmp_path, max_bytes=2048)
    key = (7, "2025-01-15")
    for batch in range(100):
        sink.write({key: [_line(0, batch * 5 + i) for i in range(5)]})
    sink.close()
    folder = tmp_path / "users" / "7"
    names = sorted(p.name for p in folder.glob("service-*"))
    assert "service-2025-01-15.jsonl" in names
    segments = [n for n in names if n != "service-2025-01-15.jsonl"]
    assert len(segments) > 10
    assert all(n.endswith(".jsonl.gz") for n in segments)
    # Retention finds every file, the compressed segments included, by the date in its name.
    assert {log_file_date(n) for n in names} == {date(2025, 1, 15)}
    seqs = [json.loads(line)["seq"] for line in _all_lines(folder)]
    assert seqs == list(range(500))  # in the order written, across the segments
    for path in folder.glob("service-*"):
        if not path.name.endswith(".gz"):
            assert path.stat().st_size <= 2048


def _hammer(log_dir: str, writer: int, count: int) -> None:
    sink = FileSink(Path(log_dir), max_bytes=16_384)
    key = (1, "2025-01-15")
    for start in range(0, count, 10):
        sink.write({key: [_line(writer, seq) for seq in range(start, start + 10)]})
    sink.close()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_share_a_file_without_losing_or_mixing_lines(tmp_path: Path, method: str) -> None:
    """Four processes append to one user's file while it rotates: every line intact, once."""
    context = multiprocessing.get_context(method)
    count = 2000
    processes = [
        context.Process(target=_hammer, args=(str(tmp_path), writer, count)) for writer in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    folder = tmp_path / "users" / "1"
    lines = _all_lines(folder)
    parsed = [json.loads(line) for line in lines]  # an interleaved line would not parse
    pairs = sorted((item["writer"], item["seq"]) for item in parsed)
    assert pairs == [(w, s) for w in range(4) for s in range(count)]
    for writer in range(4):  # each process's lines stay in its own order
        seqs = [item["seq"] for item in parsed if item["writer"] == writer]
        assert seqs == list(range(count))
    assert not list(folder.glob("*.tmp"))


def test_past_days_are_sealed_once_idle(tmp_path: Path) -> None:
    """A previous day's file is closed (renamed to a segment and compressed) when idle."""
    sink = FileSink(tmp_path, max_bytes=1 << 20)
    old = (3, "2025-01-14")
    new = (3, "2025-01-15")
    sink.write({old: [_line(0, 1)], new: [_line(0, 2)]})
    old_path = file_path(tmp_path, old)
    assert sink.seal_old_files("2025-01-15") == 0  # still fresh
    stale = time.time() - 600
    os.utime(old_path, (stale, stale))
    assert sink.seal_old_files("2025-01-15") == 1
    sink.close()
    folder = tmp_path / "users" / "3"
    assert sorted(p.name for p in folder.glob("service-*")) == [
        "service-2025-01-14.1.jsonl.gz",
        "service-2025-01-15.jsonl",
    ]
    assert [json.loads(line)["seq"] for line in _all_lines(folder)] == [1, 2]


def test_a_crashed_compression_is_finished_by_the_next_rotation(tmp_path: Path) -> None:
    """An uncompressed segment left behind is compressed when the directory rotates again."""
    sink = FileSink(tmp_path, max_bytes=1024)
    key = (4, "2025-01-15")
    folder = tmp_path / "users" / "4"
    folder.mkdir(parents=True)
    (folder / "service-2025-01-15.1.jsonl").write_text(_line(9, 0))
    (folder / "service-2025-01-15.1.jsonl.gz.tmp").write_bytes(b"half written")
    for seq in range(40):
        sink.write({key: [_line(0, seq)]})
    sink.close()
    names = sorted(p.name for p in folder.glob("service-*"))
    assert "service-2025-01-15.1.jsonl" not in names
    assert "service-2025-01-15.1.jsonl.gz.tmp" not in names
    assert "service-2025-01-15.1.jsonl.gz" in names
    items = [json.loads(line) for line in _all_lines(folder)]
    assert sorted(i["seq"] for i in items if i["writer"] == 0) == list(range(40))
    assert [i["seq"] for i in items if i["writer"] == 9] == [0]


def test_a_file_removed_under_the_writer_is_recreated(tmp_path: Path) -> None:
    """If the open file disappears (retention, an operator), the next write opens a new one."""
    sink = FileSink(tmp_path, max_bytes=1 << 20)
    key = (5, "2025-01-15")
    sink.write({key: [_line(0, 1)]})
    file_path(tmp_path, key).unlink()
    sink.write({key: [_line(0, 2)]})
    sink.close()
    assert [json.loads(line)["seq"] for line in _all_lines(tmp_path / "users" / "5")] == [2]


def test_unwritable_location_raises_after_trying_every_group(tmp_path: Path) -> None:
    """A group that cannot be written raises OSError; the others are written."""
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "6").write_text("a file where a directory should be")
    sink = FileSink(tmp_path, max_bytes=1 << 20)
    with pytest.raises(FileExistsError):
        sink.write({(6, "2025-01-15"): [_line(0, 1)], (None, "2025-01-15"): [_line(0, 2)]})
    sink.close()
    assert len(_all_lines(tmp_path / "system")) == 1
