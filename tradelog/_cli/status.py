"""``tradelog status``: service health, the notification outbox and the log writers at a glance.

* services: one line per user with a ``service_status`` row: running / stale / stopped, last
  heartbeat, last task, error count and last error. A service is stale when it is marked
  running and sent no heartbeat for ``--threshold`` seconds (default
  ``TRADELOG_STALE_HEARTBEAT_SECONDS``).
* outbox: pending, due, deferred, stuck (claimed by a worker that stopped renewing its lease:
  it died), at their last attempt, failed deliveries, and channels paused because the service
  is unavailable (admins only).
* log writers: the counters each process's background log writer last saved, with its host,
  pid and last error (admins only), among them ``rejected_users``: writes refused because their
  user is unknown (``TRADELOG_UNKNOWN_USERS=reject``), with a line saying so when there are any.
  The figures are published every second by a thread that never touches the database, so
  they stay live while a database call hangs (``database`` then reads ``stalled``, with
  ``stalled_for`` seconds); ``last_error`` is the current problem only (an outage that is
  over shows as ``recovered_error`` in ``--json``).
* waiting in local files: dead letters, unwritten error rows, spooled notifications and
  spooled telemetry (:func:`tradelog._status.local_backlog`), read from ``TRADELOG_LOG_DIR``.
  When the database cannot be read, this section is still printed (or, with ``--json``,
  ``{"database": "unreachable", "backlog": ..., "problems": ...}``) before the error, exit 3.
* users: how many accounts are placeholders registered for unknown ids (admins only).

Sections whose subsystem is not installed show ``n/a``. Exit status 1 when a service is stale,
deliveries are overdue (due for a long time with no worker sending them), stuck, at their last
attempt, or failed for good in the last 24 hours, when log rows are in the dead-letter files or
error rows wait unwritten, or when a live log writer's database is unavailable or stalled - one
line each says which - so the command can drive an alert.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from tradelog._cli._common import Context, acting_user, positive_float, print_table, safe_text
from tradelog._db.base import utcnow
from tradelog._db.models import User
from tradelog._health.status import service_overview
from tradelog._notify.breaker import paused_channels
from tradelog._status import local_backlog
from tradelog._users.store import PLACEHOLDER_DOMAIN
from tradelog.exceptions import StorageError

__all__ = ["register"]

NOT_AVAILABLE = "n/a"
ADMINS_ONLY = "n/a (admins only)"
_WRITER_COLUMNS = (
    "pid",
    "host",
    "alive",
    "updated_at",
    "enqueued",
    "written",
    "spooled",
    "dead_lettered",
    "rejected_users",
    "dropped",
    "queue_depth",
    "spool_pending",
    "database",
    "stalled_for",
    "last_error",
)
"""Writer counters shown in the table (``--json`` prints all of them)."""


def register(subparsers: Any) -> None:
    """Add the ``status`` command."""
    parser = subparsers.add_parser(
        "status",
        help=(
            "service health, notification outbox and log writers "
            "(exit 1 if a service is stale, deliveries are overdue, rows are dead-lettered "
            "or unwritten, or a writer's database is down)"
        ),
    )
    parser.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="USER_ID",
        help="act as this user (default: the system administrator account)",
    )
    parser.add_argument(
        "--threshold",
        type=positive_float,
        help="seconds without a heartbeat before a running service is stale",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    parser.set_defaults(handler=_status)


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    try:
        found: Callable[..., Any] | None = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found


def _local_stamp(value: Any, zone: ZoneInfo) -> Any:
    """An ISO 8601 UTC time (writer files, outbox summary) in the configured timezone."""
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return value
    return stamp.astimezone(zone) if stamp.tzinfo is not None else value


def _status(args: argparse.Namespace, context: Context) -> int:
    try:
        return _full_status(args, context)
    except StorageError:
        _local_status(context)  # what this host holds on disk, before the database error
        raise


def _local_status(context: Context) -> None:
    """The local-files section alone (the database could not be read); never raises."""
    try:
        backlog = local_backlog(context.settings.log_dir)
        problems = _local_problems(backlog, [])
        if context.json:
            json.dump(
                {"database": "unreachable", "backlog": backlog, "problems": problems}, context.out
            )
            context.out.write("\n")
            return
        context.out.write("waiting in local files (the database could not be read)\n")
        _print_backlog(backlog, context.out)
        if problems:
            context.out.write("\n" + "".join(f"{line}\n" for line in problems))
    except Exception:  # noqa: S110 - the database error that follows is what matters
        pass


def _full_status(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings
    threshold = args.threshold if args.threshold is not None else settings.stale_heartbeat_seconds
    now = utcnow()
    with context.session() as session:
        actor = acting_user(session, args.actor)
        services = service_overview(session, actor, now, threshold)
        placeholders: Any = (
            session.scalar(select(func.count()).where(User.email.like(f"%@{PLACEHOLDER_DOMAIN}")))
            if actor.is_admin
            else "n/a (admins only)"
        )
        outbox: Any = NOT_AVAILABLE
        summary = _optional("tradelog._notify.outbox", "backlog_summary")
        if summary is not None:
            outbox = (
                summary(
                    session,
                    now=now,
                    overdue_after=settings.unserved_delivery_timeout or 900.0,
                    max_attempts=settings.max_delivery_attempts,
                )
                if actor.is_admin
                else ADMINS_ONLY
            )
        if isinstance(outbox, dict):
            outbox["paused_channels"] = [
                {
                    "channel": state.scope,
                    "paused_until": datetime.fromtimestamp(state.paused_until, UTC),
                    "failures_in_a_row": state.failures,
                }
                for state in paused_channels(session)
            ]
        session.commit()
    writers: Any = NOT_AVAILABLE if actor.is_admin else ADMINS_ONLY
    read_stats = _optional("tradelog._logs.stats", "read_writer_stats")
    if read_stats is not None and actor.is_admin:
        try:
            writers = list(read_stats(settings.log_dir))
        except OSError as exc:
            writers = f"n/a ({exc.strerror or exc})"
    zone = settings.zone
    for row in services:
        for key in ("last_heartbeat", "last_task"):
            if isinstance(row[key], datetime):
                row[key] = row[key].astimezone(zone)
    if isinstance(writers, list):
        for writer in writers:
            for key in ("started_at", "updated_at"):
                writer[key] = _local_stamp(writer.get(key), zone)
    if isinstance(outbox, dict):
        outbox["oldest_due_at"] = _local_stamp(outbox.get("oldest_due_at"), zone)
        for failure in outbox.get("recent_failures") or []:
            failure["at"] = _local_stamp(failure.get("at"), zone)
        for paused in outbox["paused_channels"]:
            paused["paused_until"] = paused["paused_until"].astimezone(zone)
    backlog = local_backlog(settings.log_dir)
    stale = sum(1 for row in services if row["state"] == "stale")
    rejected = (
        sum(int(w.get("rejected_users") or 0) for w in writers) if isinstance(writers, list) else 0
    )
    problems = _outbox_problems(outbox) if isinstance(outbox, dict) else []
    problems += _local_problems(backlog, writers if isinstance(writers, list) else [])
    code = 1 if stale or problems else 0
    if context.json:
        json.dump(
            {
                "services": services,
                "stale": stale,
                "threshold_seconds": threshold,
                "outbox": outbox,
                "writers": writers,
                "placeholder_users": placeholders,
                "rejected_users": rejected,
                "backlog": backlog,
                "problems": problems,
            },
            context.out,
            default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v),
        )
        context.out.write("\n")
        return code
    out = context.out
    out.write(f"services ({stale} stale, threshold {threshold:g}s)\n")
    print_table(services, None, out)
    out.write("\noutbox\n")
    if isinstance(outbox, dict):
        failures = outbox.get("recent_failures") or []
        metrics = [
            {"metric": key, "value": value}
            for key, value in outbox.items()
            if key not in ("recent_failures", "paused_channels")
        ]
        print_table(metrics, None, out)
        if outbox["paused_channels"]:
            out.write("\npaused channels (service unavailable; probed until it answers)\n")
            print_table(outbox["paused_channels"], None, out)
        if failures:
            out.write("\nrecent delivery failures\n")
            print_table(failures, None, out)
    else:
        out.write(f"{safe_text(str(outbox))}\n")
    out.write("\nlog writers\n")
    if isinstance(writers, list):
        shown = [c for c in _WRITER_COLUMNS if any(c in w for w in writers)] or None
        print_table(writers, shown, out)
    else:
        out.write(f"{safe_text(str(writers))}\n")
    out.write("\nwaiting in local files\n")
    _print_backlog(backlog, out)
    if rejected:
        out.write(
            f"\n{rejected} writes refused for unknown users (TRADELOG_UNKNOWN_USERS=reject); "
            f"log rows are in {safe_text(str(settings.log_dir / '_dead_letter'))}\n"
        )
    if isinstance(placeholders, int) and placeholders:
        out.write(
            f"\n{placeholders} users registered for unknown ids have placeholder e-mails: "
            "give them details with `tradelog users add` or `tradelog users sync`\n"
        )
    if problems:
        out.write("\n" + "".join(f"{line}\n" for line in problems))
    return code


def _print_backlog(backlog: dict[str, int], out: TextIO) -> None:
    print_table([{"kind": key, "records": value} for key, value in backlog.items()], None, out)


def _local_problems(backlog: dict[str, int], writers: list[dict[str, Any]]) -> list[str]:
    """One line per local condition that makes ``status`` exit 1: dead letters, unwritten
    error rows, a live writer whose database is unavailable or stalled."""
    lines = []
    if backlog.get("dead_letters"):
        lines.append(
            f"{backlog['dead_letters']} log rows in the dead-letter files (_dead_letter/): the "
            "database refused them; read the reason in each line"
        )
    if backlog.get("unwritten_errors"):
        lines.append(
            f"{backlog['unwritten_errors']} error rows not yet in error_logs "
            "(_runtime/errors-unwritten-*.jsonl); they are replayed when the database takes them"
        )
    for writer in writers:
        state = writer.get("database")
        if writer.get("alive") and state in ("unavailable", "stalled"):
            reason = safe_text(str(writer.get("last_error") or ""))
            lines.append(f"log writer {writer.get('pid')}: database {state}: {reason}")
    return lines


def _outbox_problems(outbox: dict[str, Any]) -> list[str]:
    """One line per outbox condition that makes ``status`` exit 1."""
    lines = []
    if outbox.get("overdue"):
        lines.append(
            f"{outbox['overdue']} deliveries overdue: "
            "is a worker running with that channel configured?"
        )
    if outbox.get("stuck"):
        lines.append(
            f"{outbox['stuck']} deliveries stuck: the worker that claimed them stopped renewing "
            "its lease (it died); another worker takes them over"
        )
    if outbox.get("last_attempt"):
        lines.append(f"{outbox['last_attempt']} deliveries are at their last attempt")
    if outbox.get("failed_24h"):
        lines.append(
            f"{outbox['failed_24h']} deliveries failed for good in the last 24 hours: "
            "see `tradelog notify deliveries --status failed`, then `tradelog notify retry`"
        )
    return lines
