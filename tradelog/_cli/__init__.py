"""The ``tradelog`` command line (also ``python -m tradelog``).

Each command group lives in its own module exposing ``register(subparsers)``; this module wires
them together, turns tradelog errors into one-line messages on stderr and exit codes:

====  ==========================================
0     success
1     the command ran and found a problem (e.g. ``db check`` saw drift)
2     usage error (bad arguments, invalid configuration)
3     storage error (database unreachable or refused)
4     permission denied
5     not found
6     conflict with the current state
====  ==========================================

Anything else that goes wrong is still one line on stderr: a database error (for example a
schema that was never migrated) exits 3 with a hint, an unexpected error exits 1.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from tradelog._cli import audit as audit_commands
from tradelog._cli import config as config_commands
from tradelog._cli import db as db_commands
from tradelog._cli import errors as errors_commands
from tradelog._cli import importer as import_commands
from tradelog._cli import logs as logs_commands
from tradelog._cli import ml as ml_commands
from tradelog._cli import notify as notify_commands
from tradelog._cli import prefs as prefs_commands
from tradelog._cli import retention as retention_commands
from tradelog._cli import serve as serve_commands
from tradelog._cli import status as status_commands
from tradelog._cli import users as users_commands
from tradelog._cli import worker as worker_commands
from tradelog._cli._common import (
    CommandError,
    Context,
    accept_global_options_anywhere,
    add_global_options,
    safe_text,
)
from tradelog._db.engine import mask_url
from tradelog._logs.redact import redact_text
from tradelog.exceptions import (
    ConfigurationError,
    ConflictError,
    NotFound,
    PermissionDenied,
    StorageError,
    TradelogError,
)

__all__ = ["build_parser", "main"]

_GROUPS = [
    db_commands,
    logs_commands,
    config_commands,
    retention_commands,
    import_commands,
    errors_commands,
    status_commands,
    users_commands,
    notify_commands,
    prefs_commands,
    worker_commands,
    audit_commands,
    ml_commands,
    serve_commands,
]

_EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (ConfigurationError, 2),
    (StorageError, 3),
    (PermissionDenied, 4),
    (NotFound, 5),
    (ConflictError, 6),
    (TradelogError, 1),
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="tradelog",
        description="Logs, errors, service health and notifications of a trading service.",
    )
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in _GROUPS:
        group.register(subparsers)
    accept_global_options_anywhere(parser)
    _plain_descriptions(parser)
    return parser


def _plain_descriptions(parser: argparse.ArgumentParser) -> None:
    """Show docstring-sourced descriptions without their reStructuredText literal markup."""
    if parser.description:
        parser.description = parser.description.replace("``", "`")
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _plain_descriptions(child)


@functools.cache
def _shared_parser() -> argparse.ArgumentParser:
    """The parser :func:`main` uses, built once per process (parsing never changes it)."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = _shared_parser()
    args = parser.parse_args(argv)
    context: Context | None = None
    try:
        context = Context.from_args(args)
        result: int | None = args.handler(args, context)
        return int(result or 0)
    except CommandError as exc:
        _fail(str(exc))
        return exc.exit_code
    except TradelogError as exc:
        _fail(str(exc))
        for kind, code in _EXIT_CODES:
            if isinstance(exc, kind):
                return code
        return 1
    except SQLAlchemyError as exc:
        url = mask_url(context.settings.database_url) if context else "the database"
        _fail(_database_error(exc, url))
        return 3
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``tradelog logs | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        _fail(f"unexpected {type(exc).__name__}: {_first_line(exc)}")
        return 1


def _fail(message: str) -> None:
    print(f"tradelog: error: {safe_text(redact_text(message))}", file=sys.stderr)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


_SCHEMA_MISSING = ("no such table", "no such column", "has no column", "does not exist")


def _database_error(exc: SQLAlchemyError, url: str) -> str:
    reason = _first_line(getattr(exc, "orig", None) or exc)
    if any(marker in reason.lower() for marker in _SCHEMA_MISSING):
        return (
            f"database {url} does not have the tradelog schema ({reason}): "
            "run `tradelog db upgrade`"
        )
    return f"database {url}: {reason}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
