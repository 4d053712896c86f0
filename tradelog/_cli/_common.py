"""What every command shares: global options, settings, engines and output (tables or JSON).

Human-readable output never passes stored text to the terminal raw: control characters (ESC,
BEL, CR, backspace, DEL, the C1 range that some terminals read as escape sequences) and the
Unicode controls that reorder or break lines are shown escaped (``\x1b``, ``\r``,
``\u202e``) by :func:`safe_text`, so a log message cannot recolour, rewrite or retitle the
operator's terminal or set its clipboard (OSC 52). JSON output escapes them by itself.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Final, TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tradelog._access import Actor, resolve_actor
from tradelog._db.engine import DbBounds, check_connection, create_tradelog_engine, session_factory
from tradelog._users.store import system_user_id
from tradelog.config import Settings

__all__ = [
    "CommandError",
    "Context",
    "accept_global_options_anywhere",
    "acting_user",
    "add_actor_option",
    "add_global_options",
    "emit",
    "positive_float",
    "positive_int",
    "print_table",
    "safe_text",
]

Handler = Callable[[argparse.Namespace, "Context"], int | None]

_BIDI_AND_BREAKS: Final = "\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_BREAKS}]")
_UNSAFE_IN_BLOCK: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_AND_BREAKS}]")
_NAMED: Final = {"\r": "\\r", "\t": "\\t", "\n": "\\n", "\x1b": "\\x1b"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str, *, lines: bool = False) -> str:
    """``text`` with every terminal control character shown escaped; ``lines=True`` keeps
    newlines and tabs (tracebacks and other multi-line text)."""
    return (_UNSAFE_IN_BLOCK if lines else _UNSAFE).sub(_escape, text)


class CommandError(Exception):
    """A user-facing failure: printed on one line, process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above 0 (seconds, for example)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def acting_user(session: Session, given: int | None) -> Actor:
    """Who a command acts as: ``--as USER_ID`` (its role and active flag read from the
    database), else the system administrator account, which acts as an admin (whoever runs
    the CLI against the database already holds everything it could show)."""
    if given is not None:
        return resolve_actor(session, given)
    return Actor(system_user_id(session), is_admin=True)


def add_global_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """Options every command accepts. ``suppress``: for a command's own parser, where an option
    that is not given must leave the value parsed before the command alone."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    known = parser._option_string_actions
    if "--database-url" not in known:
        parser.add_argument(
            "--database-url",
            help="database URL (beats TRADELOG_DATABASE_URL; default sqlite:///tradelog.db)",
            **extra,
        )
    if "--json" not in known:
        parser.add_argument(
            "--json", action="store_true", help="print JSON instead of tables", **extra
        )


def accept_global_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let every command (and action) of ``parser`` take the global options after its name
    too: ``tradelog db upgrade --database-url X`` is ``tradelog --database-url X db upgrade``."""
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_global_options(child, suppress=True)
                accept_global_options_anywhere(child)


def add_actor_option(parser: argparse.ArgumentParser) -> None:
    """``--as USER_ID``: the acting user (see :func:`acting_user`)."""
    parser.add_argument(
        "--as",
        dest="actor",
        type=int,
        metavar="USER_ID",
        help="act as this user (default: the system administrator account)",
    )


@dataclass
class Context:
    """Settings and lazily opened database handles for one command run."""

    settings: Settings
    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        overrides: dict[str, Any] = {}
        if getattr(args, "database_url", None):
            overrides["database_url"] = args.database_url
        return cls(Settings.from_env(**overrides), json=bool(getattr(args, "json", False)))

    @cached_property
    def engine(self) -> Engine:
        settings = self.settings
        bounds = DbBounds(settings.db_connect_timeout, settings.db_statement_timeout)
        engine = create_tradelog_engine(
            settings.database_url, schema=settings.db_schema, bounds=bounds
        )
        check_connection(engine)
        return engine

    def session(self) -> Session:
        return session_factory(self.engine)()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit(
    context: Context, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Print ``rows`` as a table (or JSON lines-free array with ``--json``)."""
    if context.json:
        json.dump(
            [{k: _plain(v) for k, v in row.items()} for row in rows], context.out, default=str
        )
        context.out.write("\n")
        return
    print_table(rows, columns, context.out)


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[str] | None, out: TextIO) -> None:
    """Render ``rows`` as an aligned text table."""
    rows = list(rows)
    if not rows:
        out.write("(no rows)\n")
        return
    cols = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(safe_text(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    out.write(
        "  ".join(safe_text(c.upper()).ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()
        + "\n"
    )
    for r in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    text = safe_text(text.replace("\r\n", " ").replace("\n", " "))
    return text if len(text) <= 80 else text[:79] + "…"
