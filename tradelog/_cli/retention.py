"""``tradelog retention run [--dry-run]``: delete expired logs, files and resolved errors."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tradelog._cli._common import CommandError, Context, print_table, safe_text
from tradelog._cli._progress import ProgressBar
from tradelog.retention import DEFAULT_BATCH_SIZE, RetentionJob, RetentionPolicy

_LABELS = {"service_logs": "service_logs", "error_logs": "error_logs", "log_files": "log files"}


def register(subparsers: Any) -> None:
    """Add the ``retention`` command group."""
    parser = subparsers.add_parser(
        "retention", help="delete logs, log files and resolved errors past their retention"
    )
    commands = parser.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run = commands.add_parser(
        "run",
        help="apply the retention periods now",
        description=(
            "Delete service_logs rows older than TRADELOG_SERVICE_LOGS_RETENTION_DAYS, per-user "
            "log files older than TRADELOG_LOG_FILES_RETENTION_DAYS and resolved errors "
            "TRADELOG_RESOLVED_ERRORS_RETENTION_DAYS after resolution. Rows go in batches, "
            "one short transaction each."
        ),
    )
    run.add_argument("--dry-run", action="store_true", help="only count and list what would go")
    run.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})",
    )
    run.add_argument("--log-dir", type=Path, help="log directory (default TRADELOG_LOG_DIR)")
    run.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1", exit_code=2)
    job = RetentionJob(
        context.engine,
        args.log_dir or settings.log_dir,
        RetentionPolicy.from_settings(settings),
        batch_size=args.batch_size,
    )
    verb = "counting" if args.dry_run else "deleting"
    with ProgressBar(f"{verb} service_logs") as bar:

        def progress(category: str, done: int, total: int) -> None:
            bar.update(done, total, label=f"{verb} {_LABELS[category]}")

        result = job.run_once(datetime.now(UTC), dry_run=args.dry_run, progress=progress)
    if context.json:
        json.dump(result.to_dict(), context.out)
        context.out.write("\n")
        return 0
    zone = settings.zone
    cutoffs = {
        "service_logs": f"{result.service_logs_cutoff.astimezone(zone):%Y-%m-%d %H:%M %Z}",
        "error_logs": (
            f"{result.resolved_errors_cutoff.astimezone(zone):%Y-%m-%d %H:%M %Z} (resolved)"
        ),
        "log_files": f"{result.log_files_cutoff} ({settings.timezone} date)",
    }
    column = "would delete" if result.dry_run else "deleted"
    rows = [
        {"what": _LABELS[name], "older than": cutoffs[name], column: count}
        for name, count in result.counts().items()
    ]
    print_table(rows, ["what", "older than", column], context.out)
    if result.files:
        context.out.write(f"\nlog files{' that would go' if result.dry_run else ' removed'}:\n")
        for path in result.files:
            context.out.write(f"  {safe_text(str(path))}\n")
    for problem in result.file_errors:
        context.out.write(f"could not remove {safe_text(str(problem))}\n")
    return 1 if result.file_errors else 0
