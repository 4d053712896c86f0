"""``tradelog audit``: the audit trail, newest first, filtered and paged.

Acts as ``--as USER_ID`` (a user reads the rows of their own actions, an admin everyone's);
without ``--as`` the command acts as the system administrator account, which reads everything.
``--user`` narrows to the actions of one user. Times are shown in the configured timezone;
``--since``/``--until`` take durations (``15m``, ``2h``, ``7d``), ``today``, ISO dates or
datetimes (naive ones in that timezone).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from tradelog._cli._common import CommandError, Context, acting_user, emit, positive_int
from tradelog._db.models import AuditLog
from tradelog._logs.query import parse_moment
from tradelog.audit import query_audit

__all__ = ["register"]

_COLUMNS = ["id", "time", "user", "action", "resource", "resource_id", "changes", "ip"]


def register(subparsers: Any) -> None:
    """Add the ``audit`` command."""
    parser = subparsers.add_parser(
        "audit",
        help="the audit trail: who changed what, newest first",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--user", type=int, metavar="ID", help="only actions of this user")
    parser.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="ID",
        help="read as this user (default: the system administrator account)",
    )
    parser.add_argument("--action", help="only this action (update, resolve, activate, ...)")
    parser.add_argument(
        "--resource", metavar="TYPE", help="only this resource type (user_trading_config, ...)"
    )
    parser.add_argument("--resource-id", type=int, metavar="ID", help="only this resource id")
    parser.add_argument("--since", metavar="TIME", help="from TIME (15m, 2h, 7d, today, ISO)")
    parser.add_argument("--until", metavar="TIME", help="before TIME")
    parser.add_argument("--limit", type=positive_int, default=50, help="rows per page (default 50)")
    parser.add_argument("--cursor", help="continue after a previous page (printed at its end)")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser.set_defaults(handler=_audit)


def _when(text: str | None, context: Context) -> datetime | None:
    if not text:
        return None
    try:
        return parse_moment(text, now=datetime.now(UTC), zone=context.settings.zone)
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from exc


def _row(row: AuditLog, context: Context) -> dict[str, Any]:
    return {
        "id": row.id,
        "time": row.timestamp.astimezone(context.settings.zone),
        "user": row.user_id,
        "action": row.action,
        "resource": row.resource_type,
        "resource_id": row.resource_id,
        "changes": row.changes,
        "ip": row.ip_address,
        "user_agent": row.user_agent,
    }


def _audit(args: argparse.Namespace, context: Context) -> int:
    since, until = _when(args.since, context), _when(args.until, context)
    with context.session() as session:
        actor = acting_user(session, args.actor)
        try:
            page = query_audit(
                session,
                actor,
                user_id=args.user,
                action=args.action,
                resource_type=args.resource,
                resource_id=args.resource_id,
                since=since,
                until=until,
                limit=args.limit,
                cursor=args.cursor,
            )
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
        rows = [_row(row, context) for row in page.items]
        session.commit()
    if context.json:
        payload = {"items": rows, "next_cursor": page.next_cursor}
        json.dump(payload, context.out, default=_plain)
        context.out.write("\n")
        return 0
    emit(context, rows, _COLUMNS)
    if page.next_cursor:
        sys.stderr.write(f"more: tradelog audit ... --cursor {page.next_cursor}\n")
    return 0


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)
