"""``tradelog users add | sync | list``: the host's accounts in tradelog's ``users`` table.

* ``add ID [--email E] [--name N] [--role admin|user]`` creates or updates one account with
  the host's own id (an upsert: running it again changes nothing);
* ``sync FILE`` does the same for every account of a CSV (header ``id,email,name,role``), JSON
  array or JSON-lines file (``-``: standard input). The whole file is checked first; with any
  bad line nothing is written (exit 2, each problem with its line). Accounts not in the file are
  left alone;
* ``list`` shows the accounts, placeholders registered for unknown ids marked, and the system
  user.

``--as N`` names the acting user (default: the system administrator account); adding and
syncing take an admin, ``list`` shows a non-admin only their own row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tradelog._access import require_admin
from tradelog._cli._common import CommandError, Context, acting_user, add_actor_option, emit
from tradelog._db.models.users import ROLES
from tradelog._users.accounts_file import parse_accounts
from tradelog._users.store import UserSpec, is_placeholder, upsert_users
from tradelog.users import list_users

__all__ = ["register"]

_SHOWN_PROBLEMS = 20


def register(subparsers: Any) -> None:
    """Add the ``users`` command group."""
    parser = subparsers.add_parser("users", help="the accounts tradelog knows (host ids)")
    commands = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = commands.add_parser("add", help="create or update one account with its own id")
    add.add_argument("id", type=int, help="the host's user id")
    add.add_argument("--email", help="e-mail address (default: a placeholder)")
    add.add_argument("--name", help="display name (default: 'user ID')")
    add.add_argument("--role", choices=ROLES, default="user")
    add.set_defaults(handler=_add)
    sync = commands.add_parser("sync", help="create or update every account of a file")
    sync.add_argument(
        "file", help="CSV (id,email,name,role), JSON array or JSON lines; - for stdin"
    )
    sync.set_defaults(handler=_sync)
    listing = commands.add_parser("list", help="list the accounts")
    listing.set_defaults(handler=_list)
    for sub in (add, sync, listing):
        add_actor_option(sub)


def _add(args: argparse.Namespace, context: Context) -> int:
    try:
        spec = UserSpec(args.id, email=args.email, name=args.name, role=args.role)
    except ValueError as exc:
        raise CommandError(str(exc), exit_code=2) from exc
    with context.session() as session:
        require_admin(acting_user(session, args.actor), "add users")
        result = upsert_users(session, [spec])
        session.commit()
    action = "created" if result.created else "updated" if result.updated else "unchanged"
    emit(context, [{"id": spec.id, "action": action}])
    return 0


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), ""
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}", exit_code=2) from exc


def _sync(args: argparse.Namespace, context: Context) -> int:
    text, name = _read(args.file)
    parsed = parse_accounts(text, name=name)
    if parsed.problems:
        shown = parsed.problems[:_SHOWN_PROBLEMS]
        more = len(parsed.problems) - len(shown)
        listing = "; ".join(shown) + (f"; and {more} more" if more else "")
        raise CommandError(f"nothing written: {listing}", exit_code=2)
    with context.session() as session:
        require_admin(acting_user(session, args.actor), "sync users")
        result = upsert_users(session, parsed.accounts)
        session.commit()
    emit(
        context,
        [
            {
                "created": len(result.created),
                "updated": len(result.updated),
                "unchanged": len(result.unchanged),
            }
        ],
    )
    return 0


def _list(args: argparse.Namespace, context: Context) -> int:
    with context.session() as session:
        actor = acting_user(session, args.actor)
        rows = [
            {
                "id": user.id,
                "email": user.email,
                "name": user.name,
                "role": user.role,
                "active": user.is_active,
                "kind": "system"
                if user.is_system
                else "placeholder"
                if is_placeholder(user.email)
                else "account",
            }
            for user in list_users(session, actor)
        ]
        session.commit()
    emit(context, rows)
    return 0
