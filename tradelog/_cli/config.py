"""``tradelog config show | set``: a user's trading configuration."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy.orm import Session

from tradelog._access import ActorLike
from tradelog._cli._common import CommandError, Context, acting_user, emit
from tradelog.trading_config import FIELDS, as_dict, get_config, parse_value, update_config


def register(subparsers: Any) -> None:
    """Add the ``config`` command group."""
    parser = subparsers.add_parser("config", help="a user's trading configuration")
    commands = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = commands.add_parser("show", help="print a user's trading config")
    set_ = commands.add_parser(
        "set",
        help="change fields of a user's trading config (audited)",
        description="Values are validated; `null` clears an optional field. Example: "
        "tradelog config set --user 3 rsi_period=14 default_product=MIS ml_enabled=true",
    )
    set_.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    for sub, handler in ((show, _show), (set_, _set)):
        sub.add_argument("--user", type=int, required=True, help="whose config")
        sub.add_argument(
            "--as",
            dest="actor",
            type=int,
            help="act as this user id (default: the system administrator account)",
        )
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        sub.set_defaults(handler=handler)


def _actor(session: Session, args: argparse.Namespace) -> ActorLike:
    return acting_user(session, args.actor)


def _show(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        values = as_dict(get_config(session, _actor(session, args), args.user))
        session.commit()
    if context.json:
        json.dump(values, context.out)
        context.out.write("\n")
    else:
        emit(
            context,
            [
                {"field": name, "value": value, "accepts": FIELDS[name].describe()}
                for name, value in values.items()
            ],
        )
    return 0


def _parse_changes(items: list[str]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise CommandError(f"expected FIELD=VALUE, got {item!r}", exit_code=2)
        changes[name.strip()] = parse_value(name.strip(), raw)
    return changes


def _set(args: argparse.Namespace, context: Context) -> int:
    changes = _parse_changes(args.changes)
    with context.session() as session:
        changed = update_config(session, _actor(session, args), args.user, **changes)
        session.commit()
    if context.json:
        json.dump(changed, context.out)
        context.out.write("\n")
    elif changed:
        emit(
            context,
            [{"field": k, "before": v["before"], "after": v["after"]} for k, v in changed.items()],
        )
    else:
        context.out.write("nothing changed\n")
    return 0
