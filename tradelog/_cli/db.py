"""``tradelog db``: upgrade, downgrade, check and show the schema revision."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from alembic.util import CommandError as AlembicCommandError

from tradelog._cli._common import CommandError, Context, emit
from tradelog._db import migrate


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


def _migrate(step: Callable[[Any, str], None], context: Context, revision: str) -> None:
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
