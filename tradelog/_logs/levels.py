"""Log levels: names, numbers and the mapping from logger method names.

tradelog stores the five standard level names (``DEBUG`` ... ``CRITICAL``). Whatever a caller
uses - a structlog method name (``warn``, ``exception``, ``fatal``), a stdlib level number
(including custom ones such as 25) or a name in any case - is mapped onto one of them.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = [
    "LEVEL_NAMES",
    "LEVEL_NUMBERS",
    "METHOD_LEVELS",
    "level_name",
    "level_number",
    "levels_from",
]

LEVEL_NAMES: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""The stored level names, lowest first."""

LEVEL_NUMBERS: Final[dict[str, int]] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

METHOD_LEVELS: Final[dict[str, str]] = {
    "debug": "DEBUG",
    "info": "INFO",
    "msg": "INFO",
    "warning": "WARNING",
    "warn": "WARNING",
    "error": "ERROR",
    "exception": "ERROR",
    "critical": "CRITICAL",
    "fatal": "CRITICAL",
}
"""structlog method name -> stored level name."""

_ALIASES: Final[dict[str, str]] = {
    **{name: name for name in LEVEL_NAMES},
    "WARN": "WARNING",
    "FATAL": "CRITICAL",
    "EXCEPTION": "ERROR",
    "MSG": "INFO",
}


def level_number(level: int | str) -> int:
    """Return the stdlib number of ``level`` (a number or a name, any case).

    Raises :class:`ValueError` for an unknown name.
    """
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = _ALIASES.get(str(level).strip().upper())
    if name is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVEL_NAMES)}")
    return LEVEL_NUMBERS[name]


def level_name(level: int | str) -> str:
    """Return the stored level name for ``level``; never raises.

    Numbers map to the highest standard level at or below them (25 -> ``INFO``, 5 ->
    ``DEBUG``); unknown names map to ``INFO``.
    """
    if isinstance(level, int) and not isinstance(level, bool):
        found = "DEBUG"
        for name in LEVEL_NAMES:
            if LEVEL_NUMBERS[name] <= level:
                found = name
        return found
    return _ALIASES.get(str(level).strip().upper(), "INFO")


def levels_from(minimum: int | str) -> tuple[str, ...]:
    """Return the stored level names at or above ``minimum`` (for "minimum level" filters)."""
    floor = level_number(minimum)
    return tuple(name for name in LEVEL_NAMES if LEVEL_NUMBERS[name] >= floor)
