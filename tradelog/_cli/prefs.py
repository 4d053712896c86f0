"""``tradelog prefs show | set``: a user's notification preferences.

``--user N`` names whose preferences; ``--as N`` the acting user (default: the system
administrator account). A non-admin may only show or change their own (exit 4 otherwise).
``set`` validates every value (chat id, email address, quiet hours given as ``22:00-07:00`` or
``off``, IANA timezone, quiet-hours mode) and records the change, with the acting user, in the
audit trail.
"""

from __future__ import annotations

import argparse
from typing import Any

from sqlalchemy.orm import Session

from tradelog._access import Actor
from tradelog._cli._common import CommandError, Context, acting_user, emit
from tradelog._notify.policy import QUIET_MODES
from tradelog._notify.preferences import get_preferences, preferences_dict, update_preferences

__all__ = ["register"]

_SWITCHES = {
    "telegram": "telegram_enabled",
    "email": "email_enabled",
    "service": "notify_service_events",
    "trading": "notify_trading_events",
    "system": "notify_system_events",
    "errors": "notify_errors",
}


def register(subparsers: Any) -> None:
    """Add the ``prefs`` command group."""
    parser = subparsers.add_parser("prefs", help="notification preferences of a user")
    commands = parser.add_subparsers(dest="prefs_command", metavar="ACTION", required=True)

    show = commands.add_parser("show", help="print a user's preferences")
    set_ = commands.add_parser("set", help="change a user's preferences (validated, audited)")
    for sub in (show, set_):
        sub.add_argument("--user", type=int, required=True, help="whose preferences")
        sub.add_argument(
            "--as",
            dest="actor",
            type=int,
            metavar="USER_ID",
            help="act as this user (default: the system administrator account)",
        )
    show.set_defaults(handler=_show)
    for switch, field in _SWITCHES.items():
        set_.add_argument(f"--{switch}", type=str.lower, choices=("on", "off"), dest=field)
    set_.add_argument("--chat-id", dest="telegram_chat_id", help="Telegram chat id ('' clears)")
    set_.add_argument("--email-address", dest="email_address", help="address ('' clears)")
    set_.add_argument("--quiet-hours", help="START-END in the user's timezone, or 'off'")
    set_.add_argument("--timezone", help="IANA name such as Asia/Kolkata")
    set_.add_argument("--quiet-mode", dest="quiet_hours_mode", type=str.lower, choices=QUIET_MODES)
    set_.set_defaults(handler=_set)


def _actor(session: Session, args: argparse.Namespace) -> Actor:
    return acting_user(session, args.actor)


def _show(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        row = get_preferences(session, _actor(session, args), args.user)
        session.commit()
        shown = preferences_dict(row)
    emit(
        context,
        [{"field": k, "value": v} for k, v in shown.items()] if not context.json else [shown],
    )
    return 0


def _quiet_hours(text: str) -> tuple[str | None, str | None]:
    if text.strip().lower() in ("off", "none", ""):
        return None, None
    start, sep, end = text.partition("-")
    if not sep:
        raise CommandError(f"--quiet-hours expects START-END such as 22:00-07:00, got {text!r}", 2)
    return start.strip(), end.strip()


def _set(args: argparse.Namespace, context: Context) -> int:
    changes: dict[str, Any] = {}
    for field in _SWITCHES.values():
        value = getattr(args, field)
        if value is not None:
            changes[field] = value == "on"
    for field in ("telegram_chat_id", "email_address", "timezone", "quiet_hours_mode"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.quiet_hours is not None:
        changes["quiet_hours_start"], changes["quiet_hours_end"] = _quiet_hours(args.quiet_hours)
    if not changes:
        raise CommandError("nothing to change: give at least one option (see --help)", 2)
    with context.session() as session:
        try:
            row = update_preferences(session, _actor(session, args), args.user, **changes)
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
        session.commit()
        shown = preferences_dict(row)
    emit(
        context,
        [{"field": k, "value": v} for k, v in shown.items()] if not context.json else [shown],
    )
    return 0
