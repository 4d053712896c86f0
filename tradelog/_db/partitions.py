"""Day partitions of ``service_logs`` on PostgreSQL (opt-in: ``TRADELOG_PARTITION_LOGS=day``).

A month of logs for hundreds of users is tens of millions of rows; deleting a day of them row by
row takes minutes and leaves the table to vacuum. Partitioned by day, the expired days are
dropped whole: retention detaches and drops one table per day, in milliseconds.

Layout (all in tradelog's schema)::

    service_logs                    PARTITION BY RANGE ("timestamp"), primary key (id, timestamp)
      service_logs_p20260105        [2026-01-05 00:00 UTC, 2026-01-06 00:00 UTC)
      ...                           one per UTC day, created ahead of time
      service_logs_default          rows of a day without a partition (late or far-future rows)

PostgreSQL needs the partition key in every unique constraint, hence the primary key
``(id, timestamp)``; ids still come from one sequence and stay unique. Indexes and the foreign
key are declared on ``service_logs`` and exist on every partition.

- :func:`convert` turns the plain table into the partitioned one (``tradelog db partition-logs``):
  one transaction holding an exclusive lock on ``service_logs`` while every row is copied
  (log writers spool meanwhile and replay after); run it outside market hours.
- :func:`ensure_partitions` adds the partitions of the coming days (the retention run does,
  daily). A partition is created as a plain table, filled with the rows of its day that waited
  in the default partition, and attached: attaching locks ``service_logs`` only against other
  schema changes, never against inserts.
- :func:`drop_expired` detaches and drops the partitions wholly before a cut-off. Detaching
  takes an exclusive lock on ``service_logs`` for an instant; ``lock_timeout`` bounds the wait
  behind a long transaction (the run raises and the next run retries).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from sqlalchemy import Connection, text

__all__ = [
    "DEFAULT_PARTITION",
    "PARTITION_MODES",
    "DroppedPartitions",
    "convert",
    "drop_expired",
    "ensure_partitions",
    "is_partitioned",
    "partition_days",
    "partition_name",
]

PARTITION_MODES: Final = ("off", "day")
"""Values of ``TRADELOG_PARTITION_LOGS``."""
DEFAULT_PARTITION: Final = "service_logs_default"
_NAME: Final = re.compile(r"^service_logs_p(\d{8})$")
_LOCK_TIMEOUT: Final = "5s"


def partition_name(day: date) -> str:
    """``service_logs_pYYYYMMDD``: the partition holding UTC day ``day``."""
    return f"service_logs_p{day:%Y%m%d}"


def _day_of(name: str) -> date | None:
    match = _NAME.match(name)
    return datetime.strptime(match[1], "%Y%m%d").date() if match else None  # noqa: DTZ007


def _bound(day: date) -> str:
    return datetime.combine(day, datetime.min.time(), UTC).isoformat()


def is_partitioned(connection: Connection) -> bool:
    """``service_logs`` (in the connection's current schema) is a partitioned table."""
    if connection.dialect.name != "postgresql":
        return False
    found = connection.execute(
        text(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = 'service_logs' AND n.nspname = current_schema()"
        )
    ).scalar()
    return found == "p"


def partition_days(connection: Connection) -> list[date]:
    """The UTC days that have a partition, oldest first."""
    names = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'service_logs'::regclass"
        )
    ).scalars()
    return sorted(day for day in (_day_of(name) for name in names) if day is not None)


def ensure_partitions(connection: Connection, today: date, *, ahead: int = 7) -> list[str]:
    """Create the partitions of ``today`` and the ``ahead`` days after it that are missing
    (moving rows of those days out of the default partition); returns the names created."""
    existing = set(partition_days(connection))
    created = []
    connection.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
    for offset in range(ahead + 1):
        day = today + timedelta(days=offset)
        if day in existing:
            continue
        name = partition_name(day)
        low, high = _bound(day), _bound(day + timedelta(days=1))
        connection.execute(text(f'CREATE TABLE "{name}" (LIKE service_logs INCLUDING DEFAULTS)'))
        connection.execute(
            text(
                f'WITH moved AS (DELETE FROM "{DEFAULT_PARTITION}" WHERE "timestamp" >= :low'
                ' AND "timestamp" < :high RETURNING *)'
                f' INSERT INTO "{name}" SELECT * FROM moved'
            ),
            {"low": low, "high": high},
        )
        connection.execute(
            text(
                f'ALTER TABLE service_logs ATTACH PARTITION "{name}"'
                f" FOR VALUES FROM ('{low}') TO ('{high}')"
            )
        )
        created.append(name)
    return created


@dataclass(frozen=True)
class DroppedPartitions:
    """What :func:`drop_expired` removed: partition names and the rows they held."""

    names: list[str]
    rows: int


def drop_expired(connection: Connection, cutoff: datetime) -> DroppedPartitions:
    """Detach and drop every partition whose whole day is before ``cutoff`` (UTC)."""
    limit = cutoff.astimezone(UTC)
    names = []
    rows = 0
    connection.execute(text(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'"))
    for day in partition_days(connection):
        if datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) > limit:
            break
        name = partition_name(day)
        rows += int(connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one())
        connection.execute(text(f'ALTER TABLE service_logs DETACH PARTITION "{name}"'))
        connection.execute(text(f'DROP TABLE "{name}"'))
        names.append(name)
    return DroppedPartitions(names, rows)


def convert(connection: Connection, today: date, *, ahead: int = 7) -> int:
    """Turn the plain ``service_logs`` into one partitioned by day (in the caller's
    transaction); returns the number of partitions created. Every row is copied, the indexes,
    the foreign key and the id sequence are kept under their names."""
    if connection.dialect.name != "postgresql":
        raise ValueError("day partitions need PostgreSQL")
    if is_partitioned(connection):
        return 0
    # Copying every row takes minutes on a large table, longer than the statement bound of
    # tradelog's engines (TRADELOG_DB_STATEMENT_TIMEOUT): lifted for this transaction only.
    connection.execute(text("SET LOCAL statement_timeout = 0"))
    connection.execute(text("LOCK TABLE service_logs IN ACCESS EXCLUSIVE MODE"))
    indexes = list(
        connection.execute(
            text(
                "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
                " WHERE i.indrelid = 'service_logs'::regclass AND NOT i.indisprimary"
            )
        ).scalars()
    )
    constraints = [
        (str(name), str(definition))
        for name, definition in connection.execute(
            text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'service_logs'::regclass AND contype IN ('f', 'c')"
            )
        )
    ]
    primary = connection.execute(
        text(
            "SELECT conname FROM pg_constraint"
            " WHERE conrelid = 'service_logs'::regclass AND contype = 'p'"
        )
    ).scalar_one()
    sequence = connection.execute(
        text("SELECT pg_get_serial_sequence('service_logs', 'id')")
    ).scalar_one()
    first = connection.execute(text('SELECT min("timestamp") FROM service_logs')).scalar()
    connection.execute(
        text(
            "CREATE TABLE service_logs_partitioned (LIKE service_logs INCLUDING DEFAULTS)"
            ' PARTITION BY RANGE ("timestamp")'
        )
    )
    connection.execute(
        text(f'CREATE TABLE "{DEFAULT_PARTITION}" PARTITION OF service_logs_partitioned DEFAULT')
    )
    start = first.astimezone(UTC).date() if first is not None else today
    day = min(start, today)
    created = 0
    while day <= today + timedelta(days=ahead):
        connection.execute(
            text(
                f'CREATE TABLE "{partition_name(day)}" PARTITION OF service_logs_partitioned'
                f" FOR VALUES FROM ('{_bound(day)}') TO ('{_bound(day + timedelta(days=1))}')"
            )
        )
        created += 1
        day += timedelta(days=1)
    connection.execute(text("INSERT INTO service_logs_partitioned SELECT * FROM service_logs"))
    if sequence is not None:
        connection.execute(text(f"ALTER SEQUENCE {sequence} OWNED BY NONE"))
    connection.execute(text("DROP TABLE service_logs"))
    connection.execute(text("ALTER TABLE service_logs_partitioned RENAME TO service_logs"))
    if sequence is not None:
        connection.execute(text(f"ALTER SEQUENCE {sequence} OWNED BY service_logs.id"))
    connection.execute(
        text(f'ALTER TABLE service_logs ADD CONSTRAINT "{primary}" PRIMARY KEY (id, "timestamp")')
    )
    for name, definition in constraints:
        connection.execute(text(f'ALTER TABLE service_logs ADD CONSTRAINT "{name}" {definition}'))
    for definition in indexes:
        connection.execute(text(definition))
    connection.execute(text("ANALYZE service_logs"))
    return created
