"""Turn arbitrary Python values into JSON-safe data for JSON columns and JSONL files.

:func:`to_jsonable` never raises, and ``json.dumps(to_jsonable(x), allow_nan=False)`` always
succeeds. The conversions:

==========================  =====================================================================
input                       output
==========================  =====================================================================
``str``                     NUL characters removed (PostgreSQL rejects them in text and json),
                            lone surrogates replaced by U+FFFD, cut to ``max_str`` characters
``bytes``, ``bytearray``,   decoded as UTF-8 with U+FFFD for undecodable bytes, then as ``str``
``memoryview``
``bool``, ``int``, ``None`` unchanged (an ``int`` too long to print becomes a ``"<int: N bits>"``
                            marker)
``float``                   unchanged when finite; NaN, +inf and -inf become the strings
                            ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the spellings Python's
                            own JSON encoder uses), so the reading stays visible and distinct
                            from a missing value
``Decimal``                 ``str`` (keeps every digit; ``"NaN"``/``"Infinity"`` as above)
``datetime``, ``date``,     ISO 8601; aware datetimes and times keep their UTC offset
``time``
``timedelta``               total seconds as a float
``UUID``, ``Path``          ``str``
``Enum``                    its ``value``, converted
``dict`` / mappings         ``dict`` with ``str`` keys: string keys cleaned, other keys converted
                            and, if not a string, JSON-encoded (``1`` -> ``"1"``, ``True`` ->
                            ``"true"``); keys that collide keep the last value
``list``, ``tuple``,        ``list``
other sequences
``set``, ``frozenset``      sorted ``list`` when the items are comparable, else iteration order
dataclass instances         ``dict`` of their fields
exceptions                  ``"TypeName: message"`` (or just ``"TypeName"``)
other numbers               ``int`` for integral types (e.g. NumPy integers), ``float`` for real
                            ones
anything else               ``repr()``; ``"<unrepresentable TypeName>"`` if that raises
==========================  =====================================================================

Limits: a container that would sit ``max_depth`` or more levels below the top is replaced by
:data:`DEPTH_MARKER`; a container that contains itself is replaced by :data:`CYCLE_MARKER` where
it recurs; only the first ``max_items`` items of a container are kept, followed by a
``"<N more items>"`` element (lists) or a :data:`TRUNCATED_KEY` entry (dicts); every string
produced from the input (values, keys, reprs, ISO dates) is cut to ``max_str`` characters with
:func:`truncate`. The fixed markers are short and not cut.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from itertools import islice
from pathlib import PurePath
from typing import Any, Final, TypeAlias
from uuid import UUID

__all__ = [
    "CYCLE_MARKER",
    "DEPTH_MARKER",
    "TRUNCATED_KEY",
    "TRUNCATION_MARKER",
    "JSONValue",
    "clean_text",
    "to_jsonable",
    "truncate",
]

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None
"""A value :func:`json.dumps` accepts as is (with ``allow_nan=False`` when made here)."""

CYCLE_MARKER: Final = "<cycle>"
"""Replaces a container where it recurs inside itself."""

DEPTH_MARKER: Final = "<max depth>"
"""Replaces a container nested ``max_depth`` or more levels deep."""

TRUNCATED_KEY: Final = "<truncated>"
"""Key of the entry that says how many items of a dict were dropped."""

TRUNCATION_MARKER: Final = "…[truncated]"
"""Appended to text cut by :func:`truncate`."""

_NON_FINITE: Final[dict[str, str]] = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_BYTES_PER_CHAR: Final = 4
"""At most this many bytes per character are decoded before cutting, bounding the work."""


def clean_text(s: str) -> str:
    """Return ``s`` without NUL characters and with lone surrogates replaced by U+FFFD.

    A high surrogate directly followed by a low one is joined into the character they encode.
    PostgreSQL rejects NULs in text and json columns, and surrogates cannot be written to a
    UTF-8 file.
    """
    if "\x00" in s:
        s = s.replace("\x00", "")
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return s


def truncate(text: str, limit: int, marker: str = TRUNCATION_MARKER) -> str:
    """Return ``text`` cut to at most ``limit`` characters, ending in ``marker`` when cut.

    Text that fits is returned unchanged. When ``limit`` is shorter than the marker itself,
    the marker alone is cut to ``limit`` characters; a negative ``limit`` counts as zero.
    """
    if len(text) <= limit:
        return text
    if limit <= len(marker):
        return marker[: max(limit, 0)]
    return text[: limit - len(marker)] + marker


def to_jsonable(
    value: object, *, max_depth: int = 8, max_items: int = 1000, max_str: int = 8192
) -> JSONValue:
    """Return a JSON-safe copy of ``value``; never raises (see the module docstring)."""
    try:
        return _Converter(max_depth, max_items, max_str).convert(value, 0)
    except Exception:
        return "<unconvertible>"


class _Converter:
    """One conversion run: the limits and the containers currently being converted."""

    __slots__ = ("active", "max_depth", "max_items", "max_str")

    def __init__(self, max_depth: int, max_items: int, max_str: int) -> None:
        self.max_depth = max_depth
        self.max_items = max(max_items, 0)
        self.max_str = max(max_str, 0)
        self.active: set[int] = set()

    def convert(self, value: object, depth: int) -> JSONValue:
        """Convert ``value`` found ``depth`` containers below the top; never raises."""
        try:
            return self._convert(value, depth)
        except Exception:
            return self._fallback(value)

    def text(self, s: str) -> str:
        """Clean and cut a string."""
        if len(s) <= self.max_str and s.isascii() and "\x00" not in s:
            return s
        return truncate(clean_text(s), self.max_str)

    def _convert(self, value: object, depth: int) -> JSONValue:
        """Dispatch on the type of ``value``."""
        if type(value) is str:
            return self.text(value)
        if value is None or type(value) is bool:
            return value
        if type(value) is int:
            return _integer(value)
        if type(value) is float:
            return _real(value)
        if type(value) is dict or type(value) is list or type(value) is tuple:
            return self._container(value, depth)
        if isinstance(value, Enum):
            return self.convert(value.value, depth)
        if isinstance(value, str):
            return self.text(str.__str__(value))
        if isinstance(value, int):
            return _integer(int(value))
        if isinstance(value, float):
            return _real(float(value))
        if isinstance(value, bytes | bytearray | memoryview):
            return self.text(self._decode(value))
        if isinstance(value, Decimal):
            return self.text(str(value))
        if isinstance(value, datetime | date | time):
            return self.text(value.isoformat())
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, UUID):
            return self.text(str(value))
        if isinstance(value, PurePath):
            return self.text(str(value))
        if isinstance(value, BaseException):
            return self.text(_describe_exception(value))
        if isinstance(value, Mapping | AbstractSet | list | tuple):
            return self._container(value, depth)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._container(value, depth)
        if isinstance(value, numbers.Integral):
            return _integer(int(value))
        if isinstance(value, numbers.Real):
            return _real(float(value))
        if isinstance(value, Sequence):
            return self._container(value, depth)
        return self.text(_safe_repr(value))

    def _container(self, value: object, depth: int) -> JSONValue:
        """Convert a container, guarding against depth and cycles."""
        if depth >= self.max_depth:
            return DEPTH_MARKER
        ident = id(value)
        if ident in self.active:
            return CYCLE_MARKER
        self.active.add(ident)
        try:
            if isinstance(value, dict | Mapping):
                return self._mapping(value.items(), len(value), depth + 1)
            if isinstance(value, AbstractSet):
                return self._sequence(_sorted_if_possible(value), depth + 1)
            if isinstance(value, Sequence):
                return self._sequence(value, depth + 1)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                fields = [
                    (field.name, getattr(value, field.name, None))
                    for field in dataclasses.fields(value)
                ]
                return self._mapping(fields, len(fields), depth + 1)
            return self.text(_safe_repr(value))
        finally:
            self.active.discard(ident)

    def _mapping(self, items: Any, size: int, depth: int) -> dict[str, JSONValue]:
        """Convert mapping items (``(key, value)`` pairs), keeping at most ``max_items``."""
        result: dict[str, JSONValue] = {}
        for count, (key, item) in enumerate(items):
            if count >= self.max_items:
                result[TRUNCATED_KEY] = f"<{size - count} more items>"
                break
            result[self._key(key, depth)] = self.convert(item, depth)
        return result

    def _sequence(self, items: Sequence[object], depth: int) -> list[JSONValue]:
        """Convert sequence items, keeping at most ``max_items``."""
        result = [self.convert(item, depth) for item in islice(items, self.max_items)]
        if len(items) > self.max_items:
            result.append(f"<{len(items) - self.max_items} more items>")
        return result

    def _key(self, key: object, depth: int) -> str:
        """Convert a mapping key to a string."""
        if type(key) is str:
            return self.text(key)
        converted = self.convert(key, depth)
        if isinstance(converted, str):
            return converted
        return self.text(json.dumps(converted, allow_nan=False, ensure_ascii=False))

    def _decode(self, value: bytes | bytearray | memoryview) -> str:
        """Decode at most enough bytes for ``max_str`` characters as UTF-8."""
        limit = (self.max_str + 1) * _BYTES_PER_CHAR
        if isinstance(value, memoryview):
            if value.nbytes > limit and value.c_contiguous:
                value = value.cast("B")[:limit]
            value = value.tobytes()
        return bytes(value[:limit]).decode("utf-8", "replace")

    def _fallback(self, value: object) -> JSONValue:
        """Describe a value whose conversion failed; never raises."""
        try:
            return self.text(_safe_repr(value))
        except Exception:
            return "<unrepresentable>"


def _integer(value: int) -> int | str:
    """Return ``value`` unless it has too many digits to be printed (and so JSON-encoded)."""
    if -(2**63) <= value < 2**64:
        return value
    try:
        str(value)
    except ValueError:
        return f"<int: {value.bit_length()} bits>"
    return value


def _real(value: float) -> float | str:
    """Return a finite float unchanged and NaN or an infinity as its JSON-ish spelling."""
    if math.isfinite(value):
        return value
    return _NON_FINITE[repr(value)]


def _sorted_if_possible(items: AbstractSet[object]) -> list[object]:
    """Return the set's items sorted, or in iteration order when they cannot be compared."""
    result: list[Any] = list(items)
    try:
        result.sort()
    except Exception:
        return list(items)
    return result


def _describe_exception(exc: BaseException) -> str:
    """Return ``"TypeName: message"``, or ``"TypeName"`` when the message is empty."""
    name = _type_name(exc)
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable message>"
    return f"{name}: {message}" if message else name


def _safe_repr(value: object) -> str:
    """Return ``repr(value)``, or a marker naming the type when ``repr`` raises."""
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {_type_name(value)}>"


def _type_name(value: object) -> str:
    """Return the name of the type of ``value``; never raises."""
    try:
        return str(type(value).__name__)
    except Exception:
        return "object"
