"""``tradelog errors list | show | groups | resolve | ignore | reopen``: captured errors, their
groups and their resolution.

Reads act as ``--as USER_ID`` (a user sees their own errors, an admin everyone's); without
``--as`` the command acts as the system administrator account, which sees everything.
Resolving, ignoring and reopening need an explicit admin: ``--as ADMIN_ID`` is recorded as
``resolved_by`` and in the audit trail. ``groups`` shows each fingerprint's status
(unresolved, resolved, ignored) and, while unresolved, its substatus (new, ongoing,
regressed). Times are shown in the configured timezone (``TRADELOG_TIMEZONE``); ``--since``
and ``--until`` take ISO 8601 (a time without an offset is in that timezone) or a duration
back from now such as ``90m``, ``24h`` or ``7d``.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from tradelog._access import ActorLike, require_admin, resolve_actor
from tradelog._cli._common import CommandError, Context, acting_user, emit, positive_int, safe_text
from tradelog._db.base import utcnow
from tradelog._db.models import ErrorLog, User
from tradelog._errors.workflow import (
    GROUP_STATUSES,
    error_groups,
    expand_fingerprint,
    get_error,
    ignore_group,
    list_errors,
    reopen_group,
    resolve,
)
from tradelog.exceptions import NotFound

__all__ = ["parse_when", "register"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """``24h``/``7d``-style durations back from ``now``, or ISO 8601 (naive = ``zone``)."""
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"expected a time such as 2026-03-02T09:15 or a duration such as 24h, got {text!r}",
            exit_code=2,
        ) from None
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


def register(subparsers: Any) -> None:
    """Add the ``errors`` command group."""
    parser = subparsers.add_parser("errors", help="captured errors: list, show, group, resolve")
    commands = parser.add_subparsers(dest="errors_command", metavar="ACTION", required=True)

    list_ = commands.add_parser("list", help="errors, newest first")
    _filters(list_)
    list_.add_argument(
        "--fingerprint", help="only this fingerprint (the 12 digits the tables show will do)"
    )
    list_.add_argument("--limit", type=positive_int, default=50, help="rows per page (default 50)")
    list_.add_argument("--cursor", help="continue after the page that printed this cursor")
    list_.set_defaults(handler=_list)

    show = commands.add_parser("show", help="one error with its traceback and context")
    show.add_argument("error_id", type=int, metavar="ID")
    _actor_option(show)
    show.set_defaults(handler=_show)

    groups = commands.add_parser(
        "groups", help="errors grouped by fingerprint, with each group's status"
    )
    _filters(groups)
    groups.add_argument("--status", choices=GROUP_STATUSES, help="only groups with this status")
    groups.add_argument(
        "--limit", type=positive_int, default=50, help="groups to show (default 50)"
    )
    groups.set_defaults(handler=_groups)

    for name, handler, text in (
        ("ignore", _ignore, "silence a group: still counted, alerts nobody"),
        ("reopen", _reopen, "make a resolved or ignored group unresolved again"),
    ):
        change = commands.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        change.add_argument(
            "fingerprint", metavar="FINGERPRINT", help="the 12 digits the tables show will do"
        )
        change.add_argument(
            "--as", dest="actor", type=int, required=True, metavar="ADMIN_ID", help="the admin"
        )
        change.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        change.set_defaults(handler=handler)

    resolve_ = commands.add_parser(
        "resolve",
        help="mark an error (or every open occurrence of a fingerprint) resolved",
        description="Only admins may resolve; resolving a resolved error is refused (exit 6).",
    )
    target = resolve_.add_mutually_exclusive_group(required=True)
    target.add_argument("error_id", type=int, nargs="?", metavar="ID")
    target.add_argument(
        "--fingerprint",
        help="resolve every unresolved occurrence (the 12 digits the tables show will do)",
    )
    resolve_.add_argument(
        "--as", dest="actor", type=int, required=True, metavar="ADMIN_ID", help="the admin"
    )
    resolve_.add_argument("--notes", help="resolution notes (up to 512 characters)")
    resolve_.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    resolve_.set_defaults(handler=_resolve)


def _actor_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="USER_ID",
        help="act as this user (default: the system administrator account)",
    )
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def _filters(parser: argparse.ArgumentParser) -> None:
    _actor_option(parser)
    parser.add_argument("--user", type=int, help="only this user's errors")
    state = parser.add_mutually_exclusive_group()
    state.add_argument("--resolved", dest="resolved", action="store_const", const=True)
    state.add_argument("--unresolved", dest="resolved", action="store_const", const=False)
    parser.add_argument("--type", dest="error_type", help="exact error type, e.g. ValueError")
    parser.add_argument("--since", help="from this time (ISO 8601 or e.g. 24h)")
    parser.add_argument("--until", help="before this time (ISO 8601 or e.g. 1h)")


def _actor(session: Session, args: argparse.Namespace) -> ActorLike:
    return acting_user(session, args.actor)


def _require_user(session: Session, user_id: int | None) -> None:
    """``--user`` naming nobody is an error, not an empty list."""
    if user_id is not None and session.get(User, user_id) is None:
        raise NotFound(f"no user with id {user_id}")


def _fingerprint(session: Session, actor: ActorLike, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return expand_fingerprint(session, actor, text)
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from exc


def _window(args: argparse.Namespace, context: Context) -> dict[str, datetime | None]:
    now, zone = utcnow(), context.settings.zone
    return {
        "since": parse_when(args.since, now, zone) if args.since else None,
        "until": parse_when(args.until, now, zone) if args.until else None,
    }


def _local(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    return value.astimezone(zone) if value is not None else None


def _summary(row: ErrorLog, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "id": row.id,
        "occurred_at": _local(row.occurred_at, zone),
        "user_id": row.user_id,
        "error_type": row.error_type,
        "message": row.error_message,
        "resolved": row.resolved,
        "fingerprint": row.fingerprint,
    }


def _list(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    with context.session() as session:
        actor = _actor(session, args)
        _require_user(session, args.user)
        try:
            fingerprint = _fingerprint(session, actor, args.fingerprint)
        except NotFound:
            fingerprint = args.fingerprint.strip().lower()  # nothing to list, not an error
        try:
            page = list_errors(
                session,
                actor,
                user_id=args.user,
                resolved=args.resolved,
                error_type=args.error_type,
                fingerprint=fingerprint,
                limit=args.limit,
                cursor=args.cursor,
                **_window(args, context),
            )
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
        session.commit()
    rows = [_summary(row, zone) for row in page.items]
    if context.json:
        payload = {"items": rows, "next_cursor": page.next_cursor}
        json.dump(payload, context.out, default=_json_default)
        context.out.write("\n")
        return 0
    for row in rows:
        row["fingerprint"] = (row["fingerprint"] or "")[:12] or None
    emit(context, rows)
    if page.next_cursor:
        context.out.write(f"more: --cursor {page.next_cursor}\n")
    return 0


def _json_default(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _show(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    with context.session() as session:
        row = get_error(session, _actor(session, args), args.error_id)
        session.commit()
    detail = {
        **_summary(row, zone),
        "resolved_at": _local(row.resolved_at, zone),
        "resolved_by": row.resolved_by,
        "resolution_notes": row.resolution_notes,
        "context": row.context,
        "traceback": row.traceback,
    }
    if context.json:
        json.dump(detail, context.out, default=_json_default)
        context.out.write("\n")
        return 0
    traceback = detail.pop("traceback")
    emit(context, [{"field": key, "value": value} for key, value in detail.items()])
    if traceback:
        context.out.write("\n" + safe_text(traceback.rstrip("\n"), lines=True) + "\n")
    return 0


def _groups(args: argparse.Namespace, context: Context) -> int:
    zone = context.settings.zone
    with context.session() as session:
        actor = _actor(session, args)
        _require_user(session, args.user)
        window = _window(args, context)
        groups = error_groups(
            session,
            actor,
            user_id=args.user,
            resolved=args.resolved,
            error_type=args.error_type,
            status=args.status,
            limit=args.limit,
            since=window["since"],
            until=window["until"],
        )
        session.commit()
    rows: list[dict[str, Any]] = [
        {
            "fingerprint": group.fingerprint,
            "status": group.status,
            "substatus": group.substatus,
            "error_type": group.error_type,
            "count": group.count,
            "users": group.users,
            "unresolved": group.unresolved,
            "first_seen": _local(group.first_seen, zone),
            "last_seen": _local(group.last_seen, zone),
            "sample_message": group.sample_message,
        }
        for group in groups
    ]
    if not context.json:
        for row in rows:
            row["fingerprint"] = (row["fingerprint"] or "")[:12] or None
    emit(context, rows)
    return 0


def _resolve(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        admin = resolve_actor(session, args.actor)
        require_admin(admin, "resolve errors")
        target: int | str = args.error_id
        if args.fingerprint:
            target = str(_fingerprint(session, admin, args.fingerprint))
        ids = resolve(session, target, admin, args.notes, zone=context.settings.zone)
        session.commit()
    emit(
        context,
        [{"resolved": len(ids), "error_ids": ids, "resolved_by": args.actor}],
    )
    return 0


def _change_group(args: argparse.Namespace, context: Context, action: Any) -> int:
    with context.session() as session:
        admin = resolve_actor(session, args.actor)
        require_admin(admin, "change error groups")
        fingerprint = str(_fingerprint(session, admin, args.fingerprint))
        group = action(session, fingerprint, admin)
        row = {
            "fingerprint": group.fingerprint,
            "status": group.status,
            "substatus": group.substatus,
            "by": args.actor,
        }
        session.commit()
    if not context.json:
        row["fingerprint"] = str(row["fingerprint"])[:12]
    emit(context, [row])
    return 0


def _ignore(args: argparse.Namespace, context: Context) -> int:
    return _change_group(args, context, ignore_group)


def _reopen(args: argparse.Namespace, context: Context) -> int:
    return _change_group(args, context, reopen_group)
