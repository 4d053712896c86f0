"""Day partitions of ``service_logs`` on PostgreSQL: conversion, partitions ahead, retention by
dropping whole days, and reads through the query functions on the partitioned table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.support.db import MigratedDatabase
from tradelog._cli import main
from tradelog._db import partitions
from tradelog._db.models import ServiceLog
from tradelog.logs import query_logs
from tradelog.retention import RetentionJob

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def add_logs(db: MigratedDatabase, user_id: int, moments: list[datetime]) -> None:
    with db.session() as session:
        session.add_all(
            ServiceLog(user_id=user_id, level="INFO", module="t", message=f"m{n}", timestamp=moment)
            for n, moment in enumerate(moments)
        )
        session.commit()


def tables(db: MigratedDatabase) -> list[str]:
    return sorted(
        str(row["relname"])
        for row in db.rows(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'service_logs'::regclass"
        )
    )


def convert(db: MigratedDatabase, ahead: int = 3) -> int:
    with db.engine.begin() as connection:
        return partitions.convert(connection, NOW.date(), ahead=ahead)


def test_convert_keeps_rows_ids_indexes_and_key(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Every row survives under its id; one partition per day from the oldest row to 3 days
    ahead plus the default; the primary key is (id, timestamp); indexes and the foreign key
    are kept; new rows continue the id sequence."""
    alice = users["alice"]
    add_logs(db, alice, [NOW - timedelta(days=d, hours=1) for d in (5, 4, 4, 0)])
    before = db.rows("SELECT id, message, timestamp FROM service_logs ORDER BY id")
    assert convert(db) == 9  # 5 days back .. 3 days ahead
    assert db.scalar("SELECT relkind FROM pg_class WHERE relname = 'service_logs'") == "p"
    assert db.rows("SELECT id, message, timestamp FROM service_logs ORDER BY id") == before
    assert tables(db) == sorted(
        [partitions.DEFAULT_PARTITION]
        + [partitions.partition_name((NOW + timedelta(days=d)).date()) for d in range(-5, 4)]
    )
    key = db.scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'service_logs'::regclass AND contype = 'p'"
    )
    assert key == 'PRIMARY KEY (id, "timestamp")'
    indexes = {
        str(row["indexname"])
        for row in db.rows("SELECT indexname FROM pg_indexes WHERE tablename = 'service_logs'")
    }
    assert {
        "ix_service_logs_user_id",
        "ix_service_logs_timestamp",
        "ix_service_logs_user_timestamp_level",
        "ix_service_logs_message_trgm",
        "ix_service_logs_context_trgm",
    } <= indexes
    with pytest.raises(Exception, match="foreign key"):
        db.execute(
            "INSERT INTO service_logs (user_id, level, module, message, timestamp)"
            " VALUES (999999, 'INFO', 't', 'x', now())"
        )
    add_logs(db, alice, [NOW])
    newest = db.scalar("SELECT max(id) FROM service_logs")
    assert isinstance(newest, int)
    assert newest > max(int(str(row["id"])) for row in before)
    assert convert(db) == 0  # already partitioned


def test_convert_is_not_cut_short_by_the_statement_bound(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """The copy runs without the engines' statement_timeout (minutes on a large table)."""
    add_logs(db, users["alice"], [NOW])
    with db.engine.begin() as connection:
        connection.execute(text("SET LOCAL statement_timeout = '1s'"))
        partitions.convert(connection, NOW.date(), ahead=0)
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "0"


def test_partitioned_reads_match_and_prune(db: MigratedDatabase, users: dict[str, int]) -> None:
    """query_logs gives the same pages on the partitioned table, and a time filter reads only
    the partitions of its days."""
    alice = users["alice"]
    add_logs(db, alice, [NOW - timedelta(hours=7 * n) for n in range(40)])
    with db.session() as session:
        plain = query_logs(session, alice, limit=10, keyword="m1")
        plain_week = query_logs(session, alice, limit=50, since=NOW - timedelta(days=2))
    convert(db)
    with db.session() as session:
        assert query_logs(session, alice, limit=10, keyword="m1") == plain
        assert query_logs(session, alice, limit=50, since=NOW - timedelta(days=2)) == plain_week
    plan = "\n".join(
        str(row["QUERY PLAN"])
        for row in db.rows(
            "EXPLAIN SELECT * FROM service_logs WHERE user_id = :u AND timestamp >= :since"
            " ORDER BY timestamp DESC LIMIT 50",
            u=alice,
            since=NOW - timedelta(days=1),
        )
    )
    oldest = partitions.partition_name((NOW - timedelta(days=10)).date())
    assert partitions.partition_name(NOW.date()) in plan
    assert oldest not in plan


def test_retention_creates_ahead_and_drops_whole_days(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A run with partition_logs="day" creates partitions for the next 7 days, drops the days
    wholly before the cut-off (their rows counted) and deletes the older rows of the cut-off's
    day by batches; newer rows stay."""
    alice = users["alice"]
    old_days = [NOW - timedelta(days=d) for d in (33, 32, 31)]
    straddling = NOW - timedelta(days=30, hours=2)  # same UTC day as the cut-off, before it
    kept = NOW - timedelta(days=30) + timedelta(hours=1)
    add_logs(db, alice, [*old_days, *old_days, straddling, kept, NOW])
    convert(db, ahead=0)
    job = RetentionJob(db.engine, None, partition_logs="day", batch_size=1)
    result = job.run_once(NOW)
    assert result.service_logs == 6 + 1  # three dropped days' rows, one deleted by batch
    names = tables(db)
    for d in range(8):
        assert partitions.partition_name((NOW + timedelta(days=d)).date()) in names
    for moment in old_days:
        assert partitions.partition_name(moment.date()) not in names
    remaining = [
        row["timestamp"] for row in db.rows("SELECT timestamp FROM service_logs ORDER BY 1")
    ]
    assert remaining == [kept, NOW]


def test_late_rows_move_out_of_the_default_partition(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """A row for a day without a partition lands in the default partition and moves into the
    day's partition when retention creates it."""
    alice = users["alice"]
    convert(db, ahead=0)
    future = NOW + timedelta(days=3, hours=5)
    add_logs(db, alice, [future])
    assert db.scalar(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}") == 1
    with db.engine.begin() as connection:
        created = partitions.ensure_partitions(connection, NOW.date(), ahead=5)
    assert partitions.partition_name(future.date()) in created
    assert db.scalar(f"SELECT count(*) FROM {partitions.DEFAULT_PARTITION}") == 0
    name = partitions.partition_name(future.date())
    assert db.scalar(f'SELECT count(*) FROM "{name}"') == 1


def test_cli_partition_logs(
    db: MigratedDatabase,
    users: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``tradelog db partition-logs`` refuses without TRADELOG_PARTITION_LOGS=day, converts
    with it, and says so when run again."""
    add_logs(db, users["alice"], [NOW])
    args = ["--json", "--database-url", db.url, "db", "partition-logs"]
    assert main(args) == 2
    assert "TRADELOG_PARTITION_LOGS=day" in capsys.readouterr().err
    monkeypatch.setenv("TRADELOG_PARTITION_LOGS", "day")
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]
    assert first["action"] == "partitioned"
    assert first["partitions"] >= 8
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]
    assert again["action"] == "already partitioned"
    assert db.scalar("SELECT count(*) FROM service_logs") == 1


@pytest.mark.slow
def test_blocked_detach_falls_back_to_batches(db: MigratedDatabase, users: dict[str, int]) -> None:
    """When a long transaction keeps the exclusive lock for detaching away (5 s lock_timeout),
    the run still deletes the expired rows by batches and keeps the partitions for next time."""
    alice = users["alice"]
    old = NOW - timedelta(days=33)
    add_logs(db, alice, [old, old, NOW])
    convert(db, ahead=0)
    with db.engine.connect() as reader:
        reader.execute(text("SELECT count(*) FROM service_logs"))  # holds ACCESS SHARE
        result = RetentionJob(db.engine, None, partition_logs="day").run_once(NOW)
        reader.rollback()
    assert result.service_logs == 2
    assert partitions.partition_name(old.date()) in tables(db)
    assert db.scalar("SELECT count(*) FROM service_logs") == 1
