"""The spool: rows kept in order on disk until the database takes them."""

from __future__ import annotations

from pathlib import Path

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
