"""``tradelog retention run [--dry-run]``: delete everything past its retention period."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tradelog._cli._common import CommandError, Context, print_table, safe_text
from tradelog._cli._progress import ProgressBar
from tradelog.retention import DEFAULT_BATCH_SIZE, RetentionJob, RetentionPolicy

_LABELS = {
    "service_logs": "service_logs",
    "error_logs": "error_logs (resolved)",
    "deliveries": "deliveries (finished)",
    "read_notifications": "notifications (read)",
    "unread_notifications": "notifications (unread)",
    "task_executions": "service_task_execution",
    "stale_episodes": "stale episodes (ended)",
    "audit_logs": "audit_logs",
    "write_batches": "write batch ids",
    "log_files": "log files",
    "dead_letters": "dead-letter files",
    "spill_files": "spill files",
}
_SETTINGS = {
    "service_logs": "SERVICE_LOGS",
    "error_logs": "RESOLVED_ERRORS",
    "deliveries": "DELIVERIES",
    "read_notifications": "READ_NOTIFICATIONS",
    "unread_notifications": "UNREAD_NOTIFICATIONS",
    "task_executions": "TASK_EXECUTIONS",
    "stale_episodes": "TASK_EXECUTIONS",
    "audit_logs": "AUDIT_LOGS",
    "write_batches": "SPILL_FILES",
    "log_files": "LOG_FILES",
    "dead_letters": "DEAD_LETTER",
    "spill_files": "SPILL_FILES",
}


def register(subparsers: Any) -> None:
    """Add the ``retention`` command group."""
    parser = subparsers.add_parser(
        "retention",
        help="delete logs, errors, notifications, deliveries, task rows, audit rows and files "
        "past their retention",
    )
    commands = parser.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    run = commands.add_parser(
        "run",
        help="apply the retention periods now",
        description=(
            "Delete what is older than its TRADELOG_<NAME>_RETENTION_DAYS: service_logs rows, "
            "resolved errors (after resolution), finished deliveries, read and unread "
            "notifications (with nothing left to deliver), task executions, audit rows, "
            "per-user log files, dead-letter files and abandoned spill files. Rows go in "
            "batches, one short transaction each."
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


def _cutoff(value: datetime | date, zone: ZoneInfo, timezone: str) -> str:
    if isinstance(value, datetime):
        return f"{value.astimezone(zone):%Y-%m-%d %H:%M %Z}"
    return f"{value} ({timezone} date)"


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
    column = "would delete" if result.dry_run else "deleted"
    rows = [
        {
            "what": _LABELS[name],
            "older than": _cutoff(result.cutoffs[name], zone, settings.timezone),
            column: count,
            "setting": f"TRADELOG_{_SETTINGS[name]}_RETENTION_DAYS",
        }
        for name, count in result.counts().items()
    ]
    print_table(rows, ["what", "older than", column, "setting"], context.out)
    files = [*result.files, *(item.path for item in result.runtime_files)]
    if files:
        context.out.write(f"\nfiles{' that would go' if result.dry_run else ' removed'}:\n")
        for path in files:
            context.out.write(f"  {safe_text(str(path))}\n")
    for problem in result.file_errors:
        context.out.write(f"could not remove {safe_text(str(problem))}\n")
    return 1 if result.file_errors else 0
