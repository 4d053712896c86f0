"""``tradelog logs``: read service logs, filter them, page through them, follow them.

The operator running the CLI has the database URL, so by default they read as an admin (every
user's logs, or one with ``--user``). ``--as USER_ID`` reads as that user instead, with that
user's permissions (their own logs only; the role comes from the database). Times are shown in
the configured timezone (``TRADELOG_TIMEZONE``, default Asia/Kolkata); ``--since``/``--until``
take durations (``15m``, ``2h``, ``1d``), ``today``, ISO dates or datetimes (naive ones in that
timezone).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from tradelog._access import Actor, ActorLike
from tradelog._cli._common import CommandError, Context, emit, safe_text
from tradelog._db.engine import session_factory
from tradelog._logs.levels import LEVEL_NAMES
from tradelog._logs.query import LogEntry, LogFilter, follow_logs, parse_moment, query_logs

__all__ = ["register"]

_OPERATOR = Actor(id=0, is_admin=True)
_COLUMNS = ["id", "time", "user", "level", "module", "message", "context"]


def register(subparsers: Any) -> None:
    """Add the ``logs`` command."""
    parser = subparsers.add_parser(
        "logs",
        help="show service logs (newest first), filter, page or follow them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", type=int, metavar="ID", help="only this user's logs")
    parser.add_argument(
        "--as",
        dest="acting",
        type=int,
        metavar="ID",
        help="read as this user (default: as an admin operator)",
    )
    levels = parser.add_mutually_exclusive_group()
    choices = [name.lower() for name in LEVEL_NAMES]
    levels.add_argument("--level", type=str.lower, choices=choices, help="exactly this level")
    levels.add_argument("--min-level", type=str.lower, choices=choices, help="this level and above")
    parser.add_argument(
        "--module",
        metavar="TEXT",
        help="part of the logger/module name, any case (alpha finds strategy.Alpha; * = anything)",
    )
    parser.add_argument("--since", metavar="TIME", help="from TIME (15m, 2h, 1d, today, ISO)")
    parser.add_argument("--until", metavar="TIME", help="before TIME")
    parser.add_argument("--grep", metavar="TEXT", help="TEXT in the message or the context")
    parser.add_argument("--limit", type=int, default=50, help="entries per page (default 50)")
    parser.add_argument("--cursor", help="continue after a previous page (printed at its end)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --follow"
    )
    parser.add_argument(
        "--follow-timeout",
        type=float,
        metavar="SECONDS",
        help="stop following after SECONDS (default: until interrupted)",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser.set_defaults(handler=_logs)


def _logs(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings
    now = datetime.now(UTC)
    try:
        filters = LogFilter(
            user_id=args.user,
            level=args.level,
            min_level=args.min_level,
            module=args.module,
            since=parse_moment(args.since, now=now, zone=settings.zone) if args.since else None,
            until=parse_moment(args.until, now=now, zone=settings.zone) if args.until else None,
            keyword=args.grep,
        )
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from exc
    if args.limit < 1:
        raise CommandError("--limit must be at least 1", exit_code=2)
    actor: ActorLike = _OPERATOR if args.acting is None else args.acting
    if args.follow:
        return _follow(args, context, actor, filters)
    with context.session() as session:
        try:
            page = query_logs(session, actor, filters=filters, limit=args.limit, before=args.cursor)
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
    if context.json:
        emit(context, [entry.as_dict(settings.zone) for entry in page.entries])
    else:
        emit(context, [_row(entry, context) for entry in page.entries], _COLUMNS)
    if page.next_cursor is not None:
        sys.stderr.write(f"more: tradelog logs ... --cursor {page.next_cursor.encode()}\n")
    return 0


def _follow(
    args: argparse.Namespace, context: Context, actor: ActorLike, filters: LogFilter
) -> int:
    zone = context.settings.zone
    factory = session_factory(context.engine)
    deadline = None if args.follow_timeout is None else time.monotonic() + args.follow_timeout
    out = context.out
    header = False
    for entry in follow_logs(
        factory,
        actor,
        filters=filters,
        backlog=args.limit,
        interval=max(0.05, args.interval),
        should_stop=lambda: deadline is not None and time.monotonic() >= deadline,
    ):
        if context.json:
            out.write(json.dumps(entry.as_dict(zone), default=str) + "\n")
        else:
            if not header:
                out.write("  ".join(c.upper() for c in _COLUMNS) + "\n")
                header = True
            row = _row(entry, context)
            out.write("  ".join(_cell(row[c]) for c in _COLUMNS) + "\n")
        out.flush()
    return 0


def _row(entry: LogEntry, context: Context) -> dict[str, Any]:
    local = entry.timestamp.astimezone(context.settings.zone)
    return {
        "id": entry.id,
        "time": local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}",
        "user": entry.user_id,
        "level": entry.level,
        "module": entry.module,
        "message": entry.message,
        "context": entry.context,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return safe_text(text.replace("\r\n", " ").replace("\n", " "))
