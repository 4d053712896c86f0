"""``tradelog prefs show | set``: a user's notification preferences.

``set`` validates every value (chat id, email address, quiet hours given as ``22:00-07:00`` or
``off``, IANA timezone, quiet-hours mode) and records the change in the audit trail, acting as
``--as`` (default: the user themself).
"""

from __future__ import annotations

import argparse
from typing import Any

from tradelog.cli._common import CommandError, Context, emit
from tradelog.notify.policy import QUIET_MODES
from tradelog.notify.preferences import get_preferences, preferences_dict, update_preferences

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
    show.add_argument("--user", type=int, required=True)
    show.set_defaults(handler=_show)

    set_ = commands.add_parser("set", help="change a user's preferences (validated, audited)")
    set_.add_argument("--user", type=int, required=True)
    set_.add_argument("--as", dest="actor", type=int, help="acting user (default: --user)")
    for switch, field in _SWITCHES.items():
        set_.add_argument(f"--{switch}", choices=("on", "off"), dest=field)
    set_.add_argument("--chat-id", dest="telegram_chat_id", help="Telegram chat id ('' clears)")
    set_.add_argument("--email-address", dest="email_address", help="address ('' clears)")
    set_.add_argument("--quiet-hours", help="START-END in the user's timezone, or 'off'")
    set_.add_argument("--timezone", help="IANA name such as Asia/Kolkata")
    set_.add_argument("--quiet-mode", dest="quiet_hours_mode", choices=QUIET_MODES)
    set_.set_defaults(handler=_set)


def _show(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        row = get_preferences(session, args.user)
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
            row = update_preferences(
                session, args.actor if args.actor is not None else args.user, args.user, **changes
            )
        except ValueError as exc:
            raise CommandError(str(exc), exit_code=2) from exc
        session.commit()
        shown = preferences_dict(row)
    emit(
        context,
        [{"field": k, "value": v} for k, v in shown.items()] if not context.json else [shown],
    )
    return 0
