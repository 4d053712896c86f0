"""``tradelog import-legacy PATH``: the previous system's per-user JSONL logs into service_logs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tradelog._cli._common import CommandError, Context, print_table, safe_text
from tradelog._cli._progress import ProgressBar
from tradelog._legacy_import import LegacyImporter

#: Bad lines listed for people (all of them are in --json, up to the importer's cap).
SHOWN_BAD_LINES = 20


def register(subparsers: Any) -> None:
    """Add the ``import-legacy`` command."""
    parser = subparsers.add_parser(
        "import-legacy",
        help="import users/user_<id>/service_YYYYMMDD.jsonl files into service_logs",
        description=(
            "Import the old per-user JSONL log files. Safe to run again: lines already imported "
            "are skipped. Timestamps without an offset are read in --naive-timezone. Bad lines "
            "and unknown users are reported, never fatal; the exit code is 1 when there were any."
        ),
    )
    parser.add_argument("path", type=Path, help="the old log root, its users/ dir, or one file")
    parser.add_argument(
        "--naive-timezone",
        default="Asia/Kolkata",
        help="timezone of timestamps written without an offset (default Asia/Kolkata)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per insert")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser.set_defaults(handler=_import)


def _import(args: argparse.Namespace, context: Context) -> int:
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1", exit_code=2)
    try:
        importer = LegacyImporter(
            context.engine, naive_timezone=args.naive_timezone, batch_size=args.batch_size
        )
    except (KeyError, ValueError) as exc:
        raise CommandError(f"invalid --naive-timezone {args.naive_timezone!r}", 2) from exc
    with ProgressBar("importing", unit="bytes") as bar:
        result = importer.run(args.path, progress=bar.update)
    if context.json:
        json.dump(result.to_dict(), context.out)
        context.out.write("\n")
    else:
        summary = result.to_dict()
        keys = ["files", "lines", "imported", "duplicates", "bad", "skipped_missing_users"]
        print_table([{k: summary[k] for k in keys}], keys, context.out)
        for user_id, lines in sorted(result.missing_users.items()):
            context.out.write(f"user {user_id} does not exist: {lines} line(s) skipped\n")
        for bad in result.bad_lines[:SHOWN_BAD_LINES]:
            context.out.write(f"bad line {safe_text(str(bad))}\n")
        if result.bad > SHOWN_BAD_LINES:
            context.out.write(f"... and {result.bad - SHOWN_BAD_LINES} more bad line(s)\n")
        if result.ignored_files:
            context.out.write(f"{len(result.ignored_files)} other file(s) ignored\n")
    return 1 if result.bad or result.missing_users else 0
