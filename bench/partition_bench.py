"""Retention on day partitions: drop a month of ``service_logs`` (DESTRUCTIVE for the database).

    createdb -T tradelog_bench tradelog_bench_part       # a copy of the seeded database
    TRADELOG_PARTITION_LOGS=day tradelog --database-url URL db partition-logs
    python bench/query_bench.py --url URL                 # the same reads, partitioned
    python bench/partition_bench.py --url URL [--after-days 31]

Runs :class:`tradelog.retention.RetentionJob` with ``partition_logs="day"`` as if "now" were
``--after-days`` days after the newest row, so every seeded day is past the 30-day cut-off:
the expired days are detached and dropped whole, the coming days' partitions created, the rows
of the cut-off's own day deleted by batches. Prints the rows removed, the seconds taken and the
load average (the machine may be shared: say so with the figures).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

from sqlalchemy import func, select

from tradelog._db import partitions
from tradelog._db.engine import create_tradelog_engine
from tradelog._db.models import ServiceLog
from tradelog.retention import RetentionJob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--after-days", type=float, default=31.0)
    args = parser.parse_args()
    engine = create_tradelog_engine(args.url)
    with engine.connect() as connection:
        if not partitions.is_partitioned(connection):
            raise SystemExit("service_logs is not partitioned: run `tradelog db partition-logs`")
        newest = connection.execute(select(func.max(ServiceLog.timestamp))).scalar_one()
        before = connection.execute(select(func.count()).select_from(ServiceLog)).scalar_one()
        days_before = len(partitions.partition_days(connection))
    now = newest + timedelta(days=args.after_days)
    load = os.getloadavg()
    began = time.perf_counter()
    result = RetentionJob(engine, None, partition_logs="day").run_once(now)
    seconds = time.perf_counter() - began
    with engine.connect() as connection:
        after = connection.execute(select(func.count()).select_from(ServiceLog)).scalar_one()
        days_after = len(partitions.partition_days(connection))
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores, shared)\n"
        f"service_logs rows {before:,} -> {after:,}: {result.service_logs:,} removed in"
        f" {seconds:.1f} s (the whole retention run, every category);"
        f" day partitions {days_before} -> {days_after}"
    )
    engine.dispose()


if __name__ == "__main__":
    main()
