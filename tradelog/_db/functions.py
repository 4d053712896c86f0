"""SQL expressions that give the same answer on SQLite and PostgreSQL.

``lower()`` does not: SQLite's folds only ASCII letters, PostgreSQL's follows the database's
``LC_CTYPE`` (all of Unicode under a UTF-8 locale, ASCII only under ``C``). :class:`ascii_lower`
folds ``A``-``Z`` and nothing else on both backends - SQLite's own ``lower()``, PostgreSQL's
``translate()`` - so a case-insensitive match built on it selects the same rows everywhere.
Letters outside ASCII then match only in the case they are written in, on both backends alike.
"""

from __future__ import annotations

import string
from typing import Any, Final

from sqlalchemy import ColumnElement, String, and_, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["LIKE_ESCAPE", "ascii_lower", "ascii_lower_text", "before_keyset", "like_escape"]

LIKE_ESCAPE: Final = "\\"
_UPPER: Final = string.ascii_uppercase
_LOWER: Final = string.ascii_lowercase
_FOLD: Final = str.maketrans(_UPPER, _LOWER)


class ascii_lower(FunctionElement[str]):  # noqa: N801 - used like a SQL function
    """``A``-``Z`` folded to ``a``-``z`` in a text expression, identically on every backend."""

    type = String()
    inherit_cache = True
    name = "ascii_lower"


@compiles(ascii_lower)
def _default(element: ascii_lower, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(ascii_lower, "postgresql")
def _postgresql(element: ascii_lower, compiler: Any, **kw: Any) -> str:
    return f"translate({compiler.process(element.clauses, **kw)}, '{_UPPER}', '{_LOWER}')"


def ascii_lower_text(text: str) -> str:
    """What :class:`ascii_lower` makes of ``text``, in Python."""
    return text.translate(_FOLD)


def like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards and the escape character escaped (``ESCAPE '\\'``)."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def before_keyset(
    moment_column: Any, id_column: Any, moment: Any, ident: int
) -> ColumnElement[bool]:
    """Rows after ``(moment, ident)`` in ``(time, id)`` descending order (the next page).

    Written as a range on the time column plus a tie-break, ``time <= moment AND (time <
    moment OR id < ident)``, rather than ``time < moment OR (time = moment AND id < ident)``:
    the same rows, but an index on the time column serves the range directly, so a later
    page reads as few rows as the first (SQLite otherwise merges two index searches and
    sorts everything before the cursor).
    """
    return and_(moment_column <= moment, or_(moment_column < moment, id_column < ident))
