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
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tradelog.cli import config as config_commands
from tradelog.cli import db as db_commands
from tradelog.cli import errors as errors_commands
from tradelog.cli import importer as import_commands
from tradelog.cli import logs as logs_commands
from tradelog.cli import notify as notify_commands
from tradelog.cli import prefs as prefs_commands
from tradelog.cli import retention as retention_commands
from tradelog.cli import status as status_commands
from tradelog.cli import worker as worker_commands
from tradelog.cli._common import CommandError, Context, add_global_options
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
    notify_commands,
    prefs_commands,
    worker_commands,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        context = Context.from_args(args)
        result: int | None = args.handler(args, context)
        return int(result or 0)
    except CommandError as exc:
        print(f"tradelog: {exc}", file=sys.stderr)
        return exc.exit_code
    except TradelogError as exc:
        print(f"tradelog: error: {exc}", file=sys.stderr)
        for kind, code in _EXIT_CODES:
            if isinstance(exc, kind):
                return code
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
