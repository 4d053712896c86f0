"""Log levels: names, numbers and the mapping from logger method names.

tradelog stores the five standard level names (``DEBUG`` ... ``CRITICAL``). Whatever a caller
uses - a structlog method name (``warn``, ``exception``, ``fatal``), a stdlib level number
(including custom ones such as 25) or a name in any case - is mapped onto one of them.
:class:`LoggerLevels` is the minimum level per logger name (``TRADELOG_LOGGER_LEVELS``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

__all__ = [
    "LEVEL_NAMES",
    "LEVEL_NUMBERS",
    "METHOD_LEVELS",
    "LoggerLevels",
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


class LoggerLevels:
    """The minimum level per logger name: ``minimum`` unless a configured name is the logger
    or one of its parents (``httpx`` covers ``httpx`` and ``httpx.client``; the longest match
    wins). Lookups are cached per name."""

    _CACHE_SIZE: Final = 4096

    def __init__(self, minimum: int, overrides: Iterable[tuple[str, int | str]] = ()) -> None:
        self.minimum = minimum
        self.overrides = tuple(
            sorted(((name, level_number(level)) for name, level in overrides), key=_longest)
        )
        self.lowest = min([minimum, *(level for _, level in self.overrides)])
        """The lowest level any logger takes (what records must be created at)."""
        self._cache: dict[str | None, int] = {}

    def __call__(self, name: str | None) -> int:
        """The minimum level of logger ``name``."""
        found = self._cache.get(name)
        if found is not None:
            return found
        found = self.minimum
        if name:
            for prefix, level in self.overrides:
                if name == prefix or name.startswith(prefix + "."):
                    found = level
                    break
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[name] = found
        return found


def _longest(item: tuple[str, int]) -> int:
    return -len(item[0])
