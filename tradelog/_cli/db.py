"""``tradelog db``: upgrade, downgrade, check and show the schema revision; partition the logs;
turn the keyword-search indexes on or off."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tradelog._cli._common import CommandError, Context, emit
from tradelog._db import migrate, partitions, search_index


def register(subparsers: Any) -> None:
    """Add the ``db`` command group."""
    parser = subparsers.add_parser("db", help="database schema migrations")
    commands = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = commands.add_parser("upgrade", help="upgrade the schema (default: to the newest revision)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=_upgrade)
    down = commands.add_parser("downgrade", help="downgrade the schema to REVISION (base: empty)")
    down.add_argument("revision")
    down.set_defaults(handler=_downgrade)
    commands.add_parser("current", help="print the schema revision").set_defaults(handler=_current)
    commands.add_parser("check", help="compare the schema with the models").set_defaults(
        handler=_check
    )
    part = commands.add_parser(
        "partition-logs",
        help="partition service_logs by day (PostgreSQL, TRADELOG_PARTITION_LOGS=day)",
        description=(
            "Convert service_logs into a table partitioned by UTC day, copying every row under"
            " an exclusive lock (log writers spool meanwhile): run it outside market hours."
            " Retention then creates partitions ahead and drops expired days whole."
        ),
    )
    part.add_argument("--ahead", type=int, default=7, help="days of partitions to create ahead")
    part.set_defaults(handler=_partition_logs)
    search = commands.add_parser(
        "search-index",
        help="show, or turn on or off, the keyword-search indexes of service_logs (PostgreSQL)",
        description=(
            "The two trigram indexes that make keyword searches of service_logs fast cost every"
            " inserted row (one PostgreSQL process took 82,725 rows/s with them and 141,222"
            " without). 'off' drops them (keyword searches then read the user's rows in the time"
            " range); 'on' builds them. Either blocks writes to service_logs while it runs (log"
            " writers spool meanwhile): run it outside market hours. No argument: the state."
        ),
    )
    search.add_argument("switch", nargs="?", choices=["on", "off"])
    search.set_defaults(handler=_search_index)


def _migrate(step: Callable[[Any, str], None], context: Context, revision: str) -> None:
    # Imported here, as in tradelog._db.migrate: only a migration needs Alembic.
    from alembic.util import CommandError as AlembicCommandError  # noqa: PLC0415

    try:
        step(context.engine, revision)
    except AlembicCommandError as exc:  # unknown or ambiguous revision
        raise CommandError(str(exc), exit_code=2) from exc


def _upgrade(args: argparse.Namespace, context: Context) -> int:
    _migrate(migrate.upgrade, context, args.revision)
    _report(context, "upgraded")
    return 0


def _downgrade(args: argparse.Namespace, context: Context) -> int:
    _migrate(migrate.downgrade, context, args.revision)
    _report(context, "downgraded")
    return 0


def _current(args: argparse.Namespace, context: Context) -> int:
    _report(context, "current")
    return 0


def _report(context: Context, action: str) -> None:
    revision = migrate.current(context.engine)
    emit(
        context,
        [{"action": action, "revision": revision or "(empty)", "head": migrate.head()}],
    )


def _check(args: argparse.Namespace, context: Context) -> int:
    revision = migrate.current(context.engine)
    if revision != migrate.head():
        raise CommandError(
            f"database is at {revision or '(empty)'}, newest is {migrate.head()}: "
            "run `tradelog db upgrade`",
            exit_code=1,
        )
    diffs = migrate.check(context.engine)
    if diffs:
        emit(context, [{"difference": repr(d)} for d in diffs])
        raise CommandError(f"{len(diffs)} difference(s) between the database and the models")
    emit(context, [{"revision": revision, "status": "schema matches the models"}])
    return 0


def _partition_logs(args: argparse.Namespace, context: Context) -> int:
    if context.settings.partition_logs != "day":
        raise CommandError(
            "set TRADELOG_PARTITION_LOGS=day first (retention then keeps the partitions)",
            exit_code=2,
        )
    if context.engine.dialect.name != "postgresql":
        raise CommandError("day partitions need PostgreSQL", exit_code=2)
    began = time.perf_counter()
    with context.engine.begin() as connection:
        if partitions.is_partitioned(connection):
            created = 0
        else:
            created = partitions.convert(
                connection, datetime.now(UTC).date(), ahead=max(args.ahead, 0)
            )
    emit(
        context,
        [
            {
                "action": "partitioned" if created else "already partitioned",
                "partitions": created,
                "seconds": round(time.perf_counter() - began, 1),
            }
        ],
    )
    return 0


def _search_index(args: argparse.Namespace, context: Context) -> int:
    began = time.perf_counter()
    with context.engine.begin() as connection:
        if args.switch == "off":
            changed = search_index.drop(connection)
        elif args.switch == "on":
            try:
                changed = search_index.build(connection)
            except search_index.SearchIndexUnavailable as exc:
                raise CommandError(str(exc), exit_code=2) from exc
        else:
            changed = []
        current = search_index.state(connection)
    emit(
        context,
        [
            {
                "search_index": current,
                "changed": ", ".join(changed) or "-",
                "seconds": round(time.perf_counter() - began, 1),
            }
        ],
    )
    return 0
