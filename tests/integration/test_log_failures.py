"""When things go wrong: bad rows, a database outage, a full queue, a crashed writer's spool."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import tradelog
from tests.support.db import PG_ADMIN_URL, MigratedDatabase
from tests.support.logs import dead_letters, file_records, running
from tradelog._logs.batch import Batch, new_batch
from tradelog._logs.spool import Spool
from tradelog._logs.writer import _IN_FLIGHT_MAX


def _messages(db: MigratedDatabase) -> list[str]:
    return [str(r["message"]) for r in db.rows("SELECT message FROM service_logs ORDER BY id")]


def _wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_poisoned_batch_lands_every_good_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A row for a user that does not exist is dead-lettered (unknown users rejected);
    everything else lands."""
    cycle: dict[str, Any] = {}
    cycle["self"] = cycle
    with running(db.url, tmp_path, flush_interval=5.0, unknown_users="reject") as runtime:
        log = tradelog.get_logger("batch")
        for i in range(10):
            log.info(f"good {i}", user_id=users["alice"] if i % 2 else users["bob"])
        log.info("nobody", user_id=999_999)
        log.info(
            "odd\x00values", user_id=users["alice"], nan=float("nan"), raw=b"\xff", cycle=cycle
        )
        log.info("bad id type", user_id="not-a-number")
        assert not runtime.flush(20)  # two rows are in the dead-letter file, not the database
        assert runtime.flush(5)  # nothing new since: everything else is in
        stats = runtime.stats()
    assert sorted(_messages(db)) == sorted([f"good {i}" for i in range(10)] + ["oddvalues"])
    letters = dead_letters(tmp_path)
    assert sorted(letter["reason"] for letter in letters) == [
        "invalid user_id 'not-a-number': expected a positive integer",
        "no user with id 999999",
    ]
    nobody = next(letter for letter in letters if "999999" in letter["reason"])
    assert nobody["row"]["message"] == "nobody"
    assert stats["dead_lettered"] == 2
    assert stats["rejected_users"] == 1
    assert stats["written"] == 11
    assert stats["dropped"] == 0
    # The files still have every event, the rejected ones included.
    assert [line["message"] for line in file_records(tmp_path, 999_999)] == ["nobody"]


def test_a_user_id_beyond_the_column_costs_only_its_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """An id PostgreSQL's INTEGER cannot hold, in the middle of a burst that fills the spool:
    that event is dead-lettered, every other row lands, and the database stays usable (its
    insert used to fail the replay of its chunk for good, and every later row with it)."""
    with running(db.url, tmp_path, queue_size=50, batch_size=20) as runtime:
        log = tradelog.get_logger("big")
        for i in range(300):
            log.info(f"row {i}", user_id=users["alice"])
            if i == 150:
                log.info("too big", user_id=2**40)
        assert not runtime.flush(30)  # one row is in the dead-letter file
        assert runtime.flush(5)
        stats = runtime.stats()
    assert sorted(_messages(db)) == sorted(f"row {i}" for i in range(300))
    (letter,) = dead_letters(tmp_path)
    assert letter["reason"] == "invalid user_id 1099511627776: user ids go up to 2147483647"
    assert stats["database"] == "ok"


def test_rows_the_database_refuses_are_bisected_out(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A foreign-key failure inside a bulk insert (the user was deleted) costs only its rows."""
    with running(db.url, tmp_path, flush_interval=5.0) as runtime:
        log = tradelog.get_logger("bisect")
        log.info("bob is known", user_id=users["bob"])
        assert runtime.flush(10)
        db.execute("DELETE FROM service_logs WHERE user_id = :u", u=users["bob"])
        db.execute("DELETE FROM users WHERE id = :u", u=users["bob"])
        for i in range(40):
            log.info(f"row {i}", user_id=users["bob"] if i in (7, 23) else users["alice"])
        assert not runtime.flush(20)  # rows 7 and 23 were dead-lettered
        assert runtime.flush(5)
        stats = runtime.stats()
    assert _messages(db) == [f"row {i}" for i in range(40) if i not in (7, 23)]
    letters = dead_letters(tmp_path)
    assert sorted(letter["row"]["message"] for letter in letters) == ["row 23", "row 7"]
    assert all(
        "IntegrityError" in letter["reason"] or "ForeignKey" in letter["reason"]
        for letter in letters
    )
    assert stats["dead_lettered"] == 2


def test_a_user_committed_just_after_the_log_call_keeps_the_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Rows for a user that is not there yet wait briefly instead of being dead-lettered."""
    with running(db.url, tmp_path) as runtime:
        new_id = 4242
        tradelog.get_logger("signup").info("welcome", user_id=new_id)
        time.sleep(0.3)
        db.execute(
            "INSERT INTO users (id, email, name, password_hash, role, is_active) "
            "VALUES (:i, 'new@example.com', 'New', '!', 'user', true)",
            i=new_id,
        )
        assert runtime.flush(10)
    assert _messages(db) == ["welcome"]
    assert dead_letters(tmp_path) == []


@contextmanager
def _postgres_outage(db: MigratedDatabase) -> Iterator[None]:
    """Refuse new connections to the test database and cut the existing ones."""
    name = make_url(db.url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        yield
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


@contextmanager
def _sqlite_outage(db: MigratedDatabase) -> Iterator[None]:
    """Hold SQLite's write lock from another connection."""
    path = make_url(db.url).database
    assert path is not None
    blocker = sqlite3.connect(path, isolation_level=None, timeout=10)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        blocker.execute("COMMIT")
        blocker.close()


def _outage(db: MigratedDatabase) -> Any:
    return _postgres_outage(db) if db.backend == "postgresql" else _sqlite_outage(db)


def test_a_database_outage_loses_nothing(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Rows logged while the database is unavailable are spooled and replayed in order."""
    with running(db.url, tmp_path, db_write_timeout=0.3, batch_size=50) as runtime:
        log = tradelog.get_logger("outage", user_id=users["alice"])
        for i in range(100):
            log.info(f"before {i}")
        assert runtime.flush(20)
        with _outage(db):
            for i in range(300):
                log.info(f"during {i}")
            assert not runtime.flush(1.0)
            during = runtime.stats()
            assert during["database"] == "unavailable"
            assert during["spooled"] > 0
            # The files do not wait for the database.
            assert len(file_records(tmp_path, users["alice"])) == 400
        for i in range(100):
            log.info(f"after {i}")
        assert runtime.flush(30)
        stats = runtime.stats()
    expected = (
        [f"before {i}" for i in range(100)]
        + [f"during {i}" for i in range(300)]
        + [f"after {i}" for i in range(100)]
    )
    assert _messages(db) == expected
    assert stats["replayed"] > 0
    assert stats["written"] == 500
    assert stats["database"] == "ok"
    assert stats["dropped"] == 0
    assert dead_letters(tmp_path) == []
    assert not [p for p in (tmp_path / "_spool").glob("*.jsonl") if p.stat().st_size]


def test_shutdown_during_an_outage_leaves_a_spool_the_next_writer_replays(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Nothing is lost when the process stops while the database is down."""
    with _outage(db):
        runtime = tradelog.configure(
            database_url=db.url, log_dir=tmp_path, console=False, db_write_timeout=0.3
        )
        log = tradelog.get_logger("stopping", user_id=users["alice"])
        for i in range(50):
            log.info(f"queued {i}")
        assert runtime.shutdown(timeout=1.0) is False
    assert _messages(db) == []
    (spool,) = (tmp_path / "_spool").glob("spool-*.jsonl")
    assert len(spool.read_text().splitlines()) == 50
    with running(db.url, tmp_path) as later:
        _wait_for(lambda: later.stats()["replayed"] == 50)
    assert _messages(db) == [f"queued {i}" for i in range(50)]
    assert not list((tmp_path / "_spool").glob("spool-*.jsonl"))


def test_an_orphaned_spool_is_adopted_with_its_bad_lines_dead_lettered(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A spool left by a crashed process is replayed by the next writer; garbage lines are
    dead-lettered, not retried forever."""
    left = Spool(tmp_path / "_spool")
    left.append(
        [
            (
                users["alice"],
                "INFO",
                "crashed",
                "from a crashed process",
                None,
                "2025-01-15 09:15:00.000001",
            ),
            (users["bob"], "ERROR", "crashed", "second", '{"k":1}', "2025-01-15 09:15:01.000000"),
        ]
    )
    assert left.path is not None
    with left.path.open("a") as handle:
        handle.write("this is not json\n")
    left._pending += 1
    left.close()  # rows pending: the file stays, unlocked - as after a crash
    with running(db.url, tmp_path) as runtime:
        _wait_for(lambda: runtime.stats()["replayed"] == 2)
    assert _messages(db) == ["from a crashed process", "second"]
    row = db.rows("SELECT context, timestamp FROM service_logs WHERE message = 'second'")[0]
    context = row["context"]
    assert (json.loads(context) if isinstance(context, str) else context) == {"k": 1}
    (letter,) = dead_letters(tmp_path)
    assert letter["reason"] == "unreadable spool line"
    assert letter["line"] == "this is not json"


def _left_spool(log_dir: Path, batches: list[Batch]) -> None:
    """A spool with ``batches`` pending, left unlocked as by a process that crashed."""
    left = Spool(log_dir / "_spool")
    left.append_batches(batches)
    left.close()


def _rows(user_id: int, name: str, count: int) -> list[Any]:
    return [
        (user_id, "INFO", "replay", f"{name} {i}", None, f"2025-01-15 09:15:{i:02d}.000000")
        for i in range(count)
    ]


def test_a_replay_writes_its_chunk_of_batches_in_one_transaction(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Spooled batches are replayed several to a transaction: one commit (one claim time,
    on PostgreSQL one transaction id) for the six batches, every row once, in order."""
    batches = [new_batch(_rows(users["alice"], f"b{b}", 10)) for b in range(6)]
    _left_spool(tmp_path, batches)
    with running(db.url, tmp_path, batch_size=50) as runtime:
        _wait_for(lambda: runtime.stats()["replayed"] == 60)
        stats = runtime.stats()
    assert _messages(db) == [f"b{b} {i}" for b in range(6) for i in range(10)]
    assert (stats["written"], stats["batches"], stats["duplicates"]) == (60, 6, 0)
    claims = db.rows("SELECT batch_id, committed_at FROM tradelog_write_batches")
    assert {claim["batch_id"] for claim in claims} == {batch.batch_id for batch in batches}
    assert len({str(claim["committed_at"]) for claim in claims}) == 1
    if db.backend == "postgresql":
        (one,) = db.rows("SELECT count(DISTINCT xmin::text) AS n FROM service_logs")
        assert one["n"] == 1


def test_a_replayed_chunk_holding_a_batch_already_in_writes_the_others_once(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A batch committed before its spool place was saved (a replay killed in between) is
    in the chunk again: the one transaction is refused and each batch goes on its own, the
    committed one skipped by its id."""
    batches = [new_batch(_rows(users["alice"], f"b{b}", 5)) for b in range(3)]
    with running(db.url, tmp_path / "first") as first:
        first.writer.database.inserter.insert(batches[1].rows, batch_id=batches[1].batch_id)
    _left_spool(tmp_path, batches)
    with running(db.url, tmp_path, batch_size=50) as runtime:
        _wait_for(lambda: runtime.stats()["replayed"] == 15)
        stats = runtime.stats()
    assert sorted(_messages(db)) == sorted(f"b{b} {i}" for b in range(3) for i in range(5))
    assert (stats["written"], stats["duplicates"]) == (10, 5)


def test_a_row_refused_in_a_replayed_chunk_costs_only_that_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A row the database refuses inside a chunk replayed as one transaction (its user was
    deleted after the writer knew it) is bisected out; the rest of the chunk lands."""
    with running(db.url, tmp_path, db_write_timeout=0.3, batch_size=10) as runtime:
        log = tradelog.get_logger("refused")
        log.info("bob is known", user_id=users["bob"])
        assert runtime.flush(10)
        db.execute("DELETE FROM service_logs WHERE user_id = :u", u=users["bob"])
        db.execute("DELETE FROM users WHERE id = :u", u=users["bob"])
        with _outage(db):
            for i in range(40):
                log.info(f"row {i}", user_id=users["bob"] if i == 17 else users["alice"])
            assert not runtime.flush(1.0)
            assert runtime.stats()["spooled"] == 40
        assert not runtime.flush(20)  # row 17 was dead-lettered
        stats = runtime.stats()
    assert _messages(db) == [f"row {i}" for i in range(40) if i != 17]
    assert [letter["row"]["message"] for letter in dead_letters(tmp_path)] == ["row 17"]
    assert (stats["written"], stats["dead_lettered"]) == (40, 1)  # "bob is known" too


def test_a_full_queue_spills_instead_of_dropping(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """With a tiny queue, callers write what does not fit themselves; every event lands."""
    with running(db.url, tmp_path, queue_size=1) as runtime:
        log = tradelog.get_logger("burst", user_id=users["alice"])
        threads = [
            threading.Thread(target=lambda t=t: [log.info(f"t{t} e{i}") for i in range(500)])
            for t in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert runtime.flush(30)
        stats = runtime.stats()
    assert stats["overflowed"] > 0
    assert stats["enqueued"] == 2000
    assert stats["written"] == 2000
    assert stats["dropped"] == 0
    assert len(_messages(db)) == 2000
    assert len(file_records(tmp_path, users["alice"])) == 2000


def test_stats_report_an_unreachable_database(tmp_path: Path) -> None:
    """A database that never answers: files keep working, rows wait in the spool."""
    url = f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}"
    with running(url, tmp_path, db_write_timeout=0.1, shutdown_timeout=0.5) as runtime:
        tradelog.get_logger("x", user_id=1).info("kept")
        assert not runtime.flush(0.5)
        stats = runtime.stats()
    assert stats["database"] == "unavailable"
    assert "OperationalError" in (stats["last_error"] or "")
    assert stats["spooled"] == 1
    assert [line["message"] for line in file_records(tmp_path, 1)] == ["kept"]


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_missing_table_is_an_outage_not_a_data_error(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """If service_logs is missing the rows are spooled (not dead-lettered) until it is back."""
    with running(db.url, tmp_path, db_write_timeout=0.3) as runtime:
        db.execute("ALTER TABLE service_logs RENAME TO service_logs_away")
        tradelog.get_logger("t", user_id=users["alice"]).info("waiting for the table")
        assert not runtime.flush(1.0)
        assert dead_letters(tmp_path) == []
        db.execute("ALTER TABLE service_logs_away RENAME TO service_logs")
        assert runtime.flush(20)
    assert _messages(db) == ["waiting for the table"]


@contextmanager
def _table_locked(db: MigratedDatabase) -> Iterator[None]:
    """Make inserts into service_logs wait for a lock (another connection holds it)."""
    if db.backend == "sqlite":
        with _sqlite_outage(db):
            yield
        return
    blocker = create_engine(db.url, pool_size=1)
    try:
        with blocker.connect() as connection:
            connection.execute(text("LOCK TABLE service_logs IN ACCESS EXCLUSIVE MODE"))
            yield
            connection.rollback()
    finally:
        blocker.dispose()


def test_a_batch_that_gives_up_waiting_for_a_lock_keeps_its_place(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """While an insert waits for a lock, later batches go to the spool; when that insert gives
    up, its rows are replayed before them, so the table keeps the order of the calls."""
    # Long enough for the file thread to give up on the stuck insert and spool later batches
    # (a COPY waits for the lock before it takes any row, which holds the file thread longer).
    wait = 1.3 if db.backend == "sqlite" else 2.3
    with running(db.url, tmp_path, db_write_timeout=wait, batch_size=10) as runtime:
        log = tradelog.get_logger("locked", user_id=users["alice"])
        log.info("first")
        assert runtime.flush(10)
        count = after = 0
        with _table_locked(db):
            while after < 20:  # until the stuck insert has given up, and a little more
                log.info(f"while locked {count:04d}")
                count += 1
                after += runtime.stats()["database"] == "unavailable"
                time.sleep(0.01)
        assert runtime.flush(30)
        stats = runtime.stats()
    assert _messages(db) == ["first"] + [f"while locked {i:04d}" for i in range(count)]
    assert stats["spooled"] > 0
    assert stats["written"] == count + 1


@pytest.mark.parametrize("backend", ["sqlite"])
def test_files_keep_flowing_while_a_database_call_hangs(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A database call stuck waiting for a lock does not hold up the files: batches wait in
    memory for the database thread up to a bound, then go to the spool."""
    count = (_IN_FLIGHT_MAX + 6) * 10  # more batches of 10 than may wait in memory
    with running(db.url, tmp_path, db_write_timeout=8.0, batch_size=10) as runtime:
        log = tradelog.get_logger("hang", user_id=users["alice"])
        log.info("first")
        assert runtime.flush(10)
        with _sqlite_outage(db):
            started = time.monotonic()
            for i in range(count):
                log.info(f"while stuck {i}")
                time.sleep(0.005)
            _wait_for(lambda: len(file_records(tmp_path, users["alice"])) == count + 1, timeout=6.0)
            assert time.monotonic() - started < 8.0  # well before the lock wait gives up
            assert runtime.stats()["spooled"] > 0
        assert runtime.flush(30)
    assert _messages(db) == ["first"] + [f"while stuck {i}" for i in range(count)]
