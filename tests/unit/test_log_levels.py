"""Level names and numbers."""

from __future__ import annotations

import logging

import pytest

from tradelog._logs.levels import level_name, level_number, levels_from


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("debug", logging.DEBUG),
        ("Info", logging.INFO),
        ("warn", logging.WARNING),
        ("FATAL", logging.CRITICAL),
        ("exception", logging.ERROR),
        (25, 25),
    ],
)
def test_level_number(given: int | str, expected: int) -> None:
    """Names in any case and aliases map to stdlib numbers; numbers pass through."""
    assert level_number(given) == expected


def test_unknown_level_name_is_refused() -> None:
    """A typo in a level name is an error, not a silent default."""
    with pytest.raises(ValueError, match="unknown log level"):
        level_number("verbose")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, "DEBUG"),
        (10, "DEBUG"),
        (25, "INFO"),
        (45, "ERROR"),
        (99, "CRITICAL"),
        ("warn", "WARNING"),
    ],
)
def test_level_name(given: int | str, expected: str) -> None:
    """Any number maps to the highest standard level at or below it."""
    assert level_name(given) == expected


def test_level_name_never_raises() -> None:
    """Unknown names fall back to INFO."""
    assert level_name("nonsense") == "INFO"


def test_levels_from() -> None:
    """A minimum level expands to itself and everything above."""
    assert levels_from("warning") == ("WARNING", "ERROR", "CRITICAL")
    assert levels_from(logging.DEBUG)[0] == "DEBUG"
