"""JSON-safe conversion of arbitrary values: table cases, limits, markers and properties."""

from __future__ import annotations

import enum
import json
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradelog._logs.sanitize import (
    CYCLE_MARKER,
    DEPTH_MARKER,
    TRUNCATED_KEY,
    TRUNCATION_MARKER,
    JSONValue,
    clean_text,
    to_jsonable,
    truncate,
)

IST = timezone(timedelta(hours=5, minutes=30))


class Side(enum.Enum):
    """An enum with string values."""

    BUY = "buy"


class Level(enum.IntEnum):
    """An int enum."""

    HIGH = 3


class Pair(enum.Enum):
    """An enum with tuple values."""

    NIFTY = ("NSE", 26000)


@dataclass
class Order:
    """A small dataclass."""

    symbol: str
    qty: int
    price: Decimal
    tags: list[str] = field(default_factory=list)


@dataclass
class Node:
    """A dataclass that can point at itself."""

    name: str
    next: Node | None = None


class BadRepr:
    """An object whose repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadStrError(Exception):
    """An exception whose str raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")


class BrokenMapping(Mapping[str, int]):
    """A mapping whose iteration fails."""

    def __getitem__(self, key: str) -> int:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("broken")

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "BrokenMapping()"


CASES: list[tuple[object, JSONValue]] = [
    (None, None),
    (True, True),
    (False, False),
    (0, 0),
    (-(2**70), -(2**70)),
    (1.5, 1.5),
    (-0.0, -0.0),
    (float("nan"), "NaN"),
    (float("inf"), "Infinity"),
    (float("-inf"), "-Infinity"),
    ("plain", "plain"),
    ("a\x00b\x00", "ab"),
    ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    ("pair \ud83d\ude00 joined", "pair \U0001f600 joined"),
    (b"bytes", "bytes"),
    (b"\xff\x00ok", "\ufffdok"),
    (bytearray(b"array"), "array"),
    (memoryview(b"view"), "view"),
    (Decimal("0.1000000000000000000000001"), "0.1000000000000000000000001"),
    (Decimal("NaN"), "NaN"),
    (Decimal("-Infinity"), "-Infinity"),
    (datetime(2024, 5, 1, 9, 15, 0, 123456, tzinfo=IST), "2024-05-01T09:15:00.123456+05:30"),
    (datetime(2024, 5, 1, 9, 15, tzinfo=UTC), "2024-05-01T09:15:00+00:00"),
    (datetime(2024, 5, 1, 9, 15), "2024-05-01T09:15:00"),
    (date(2024, 5, 1), "2024-05-01"),
    (time(9, 15, 30), "09:15:30"),
    (time(9, 15, tzinfo=IST), "09:15:00+05:30"),
    (timedelta(minutes=1, milliseconds=500), 60.5),
    (timedelta(days=-1), -86400.0),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    (Side.BUY, "buy"),
    (Level.HIGH, 3),
    (Pair.NIFTY, ["NSE", 26000]),
    (Path("/var/log/x.jsonl"), "/var/log/x.jsonl"),
    (PurePosixPath("a/b"), "a/b"),
    (PureWindowsPath("C:/logs/x"), "C:\\logs\\x"),
    ({3, 1, 2}, [1, 2, 3]),
    (frozenset({"b", "a"}), ["a", "b"]),
    ((1, "a"), [1, "a"]),
    ([1, [2, (3,)]], [1, [2, [3]]]),
    (deque([1, 2]), [1, 2]),
    (range(3), [0, 1, 2]),
    (OrderedDict(b=1, a=2), {"b": 1, "a": 2}),
    ({"k\x00": "v\x00"}, {"k": "v"}),
    (
        {1: "int", None: "none", 2.5: "float", (1, 2): "tuple", Side.BUY: "enum"},
        {"1": "int", "null": "none", "2.5": "float", "[1, 2]": "tuple", "buy": "enum"},
    ),
    (
        {True: "yes", False: "no", Level.HIGH: "level", Decimal("1.5"): "decimal"},
        {"true": "yes", "false": "no", "3": "level", "1.5": "decimal"},
    ),
    ({float("nan"): 1}, {"NaN": 1}),
    (
        Order("RELIANCE", 10, Decimal("2500.50"), ["x"]),
        {"symbol": "RELIANCE", "qty": 10, "price": "2500.50", "tags": ["x"]},
    ),
    (ValueError("bad price"), "ValueError: bad price"),
    (KeyError("qty"), "KeyError: 'qty'"),
    (RuntimeError(), "RuntimeError"),
    (BadStrError(), "BadStrError: <unprintable message>"),
    (BadRepr(), "<unrepresentable BadRepr>"),
    (Fraction(1, 4), 0.25),
    (BrokenMapping(), "BrokenMapping()"),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_conversions(value: object, expected: JSONValue) -> None:
    """Each kind of value converts to the documented JSON form."""
    assert to_jsonable(value) == expected


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_conversions_dump_strictly(value: object, expected: JSONValue) -> None:
    """Every converted value passes ``json.dumps(..., allow_nan=False)`` and UTF-8 encoding."""
    json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 1.25, 10, "s"],
)
def test_float_subclasses_and_scalars_have_plain_types(value: object) -> None:
    """Scalar results are plain built-in types, not subclasses."""

    class F(float):
        __slots__ = ()

    converted = to_jsonable(F(value) if isinstance(value, float) else value)
    assert type(converted) in {str, int, float}


def test_unsortable_set_keeps_all_items() -> None:
    """A set of incomparable items becomes a list with every item."""
    result = to_jsonable({1, "a", None})
    assert isinstance(result, list)
    assert sorted(map(repr, result)) == sorted(map(repr, [1, "a", None]))


def test_huge_int_becomes_marker() -> None:
    """An int too long to print becomes a marker instead of breaking json.dumps."""
    result = to_jsonable(10**5000)
    assert isinstance(result, str)
    assert result.startswith("<int: ")
    json.dumps(result)


def test_generators_are_not_consumed() -> None:
    """Iterators are described by repr, never iterated."""
    items = iter([1, 2, 3])
    result = to_jsonable(items)
    assert isinstance(result, str)
    assert list(items) == [1, 2, 3]


def test_self_referencing_list_and_dict() -> None:
    """Cycles are replaced by the cycle marker where they recur."""
    loop: list[Any] = [1]
    loop.append(loop)
    table: dict[str, Any] = {"a": 1}
    table["self"] = table
    assert to_jsonable(loop) == [1, CYCLE_MARKER]
    assert to_jsonable(table) == {"a": 1, "self": CYCLE_MARKER}


def test_self_referencing_dataclass() -> None:
    """A dataclass pointing at itself ends in the cycle marker."""
    node = Node("a")
    node.next = node
    assert to_jsonable(node) == {"name": "a", "next": CYCLE_MARKER}


def test_shared_references_are_repeated() -> None:
    """The same container referenced twice (not a cycle) is converted twice."""
    shared = [1]
    assert to_jsonable({"a": shared, "b": shared}) == {"a": [1], "b": [1]}


def _nest(depth: int) -> object:
    """Return ``depth`` lists nested around the int 1."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("depth", "max_depth", "expected"),
    [
        (0, 0, 1),
        (1, 0, DEPTH_MARKER),
        (1, 1, [1]),
        (2, 1, [DEPTH_MARKER]),
        (3, 2, [[DEPTH_MARKER]]),
        (8, 8, _nest(8)),
    ],
)
def test_max_depth(depth: int, max_depth: int, expected: JSONValue) -> None:
    """Containers at ``max_depth`` levels below the top are replaced by the depth marker."""
    assert to_jsonable(_nest(depth), max_depth=max_depth) == expected


def test_very_deep_nesting_never_raises() -> None:
    """Nesting far past the recursion limit still converts, with default or huge limits."""
    deep = _nest(100_000)
    assert json.dumps(to_jsonable(deep), allow_nan=False).count(DEPTH_MARKER) == 1
    json.dumps(to_jsonable(deep, max_depth=1_000_000), allow_nan=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([1, 2, 3, 4], [1, 2, "<2 more items>"]),
        ((1, 2), [1, 2]),
        ({4, 3, 2, 1}, [1, 2, "<2 more items>"]),
        ({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, TRUNCATED_KEY: "<1 more items>"}),
        ({"a": 1, "b": 2}, {"a": 1, "b": 2}),
    ],
)
def test_max_items(value: object, expected: JSONValue) -> None:
    """Only the first ``max_items`` items are kept, followed by a marker."""
    assert to_jsonable(value, max_items=2) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("x" * 30, "x" * 8 + TRUNCATION_MARKER),
        (b"y" * 30, "y" * 8 + TRUNCATION_MARKER),
        ("z" * 20, "z" * 20),
        ({"k" * 30: 1}, {"k" * 8 + TRUNCATION_MARKER: 1}),
        (ValueError("m" * 40), "ValueErr" + TRUNCATION_MARKER),
    ],
)
def test_max_str(value: object, expected: JSONValue) -> None:
    """Long strings (values, keys, bytes, descriptions) are cut to ``max_str`` with a marker."""
    assert to_jsonable(value, max_str=20) == expected


def test_huge_bytes_decode_only_what_is_kept() -> None:
    """Large binary payloads are cut to ``max_str`` characters."""
    result = to_jsonable(b"\x00\xff" * 1_000_000, max_str=100)
    assert isinstance(result, str)
    assert len(result) == 100
    assert result.endswith(TRUNCATION_MARKER)


@pytest.mark.parametrize(
    ("text", "limit", "marker", "expected"),
    [
        ("short", 10, TRUNCATION_MARKER, "short"),
        ("exact", 5, "…", "exact"),
        ("abcdefghij", 5, "…", "abcd…"),
        ("abcdefghij", 6, "[cut]", "a[cut]"),
        ("abcdefghij", 5, "[cut]", "[cut]"),
        ("abcdefghij", 3, "[cut]", "[cu"),
        ("abcdefghij", 0, "…", ""),
        ("abcdefghij", -5, "…", ""),
        ("abcdefghij", 4, "", "abcd"),
        ("", 0, "…", ""),
    ],
)
def test_truncate(text: str, limit: int, marker: str, expected: str) -> None:
    """Text is cut to at most ``limit`` characters with the marker at the end."""
    assert truncate(text, limit, marker) == expected


@given(st.text(), st.integers(min_value=-5, max_value=60), st.text(max_size=15))
def test_truncate_properties(text: str, limit: int, marker: str) -> None:
    """The result never exceeds the limit, and shows the marker whenever text was cut."""
    result = truncate(text, limit, marker)
    assert len(result) <= max(limit, 0)
    if len(text) <= limit:
        assert result == text
    elif limit >= len(marker):
        assert result.endswith(marker)
        assert result[: limit - len(marker)] == text[: limit - len(marker)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("plain", "plain"),
        ("\x00", ""),
        ("a\x00b\x00c", "abc"),
        ("tab\tnew\nline", "tab\tnew\nline"),
        ("\u00e9\x00\u00e9", "\u00e9\u00e9"),
        ("\udc80", "\ufffd"),
        ("\ud83d\ude00", "\U0001f600"),
    ],
)
def test_clean_text(text: str, expected: str) -> None:
    """NULs are removed and lone surrogates replaced; everything else is kept."""
    assert clean_text(text) == expected


def test_clean_text_returns_same_object_when_clean() -> None:
    """Clean text is returned without copying."""
    text = "already clean \u00e9"
    assert clean_text(text) is text


def _strings(value: JSONValue) -> Iterator[str]:
    """Yield every string (keys included) inside a converted value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)


def _depth(value: JSONValue) -> int:
    """Return how many containers deep a converted value goes."""
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _sizes(value: JSONValue) -> Iterator[int]:
    """Yield the length of every container inside a converted value."""
    if isinstance(value, list):
        yield len(value)
        for item in value:
            yield from _sizes(item)
    elif isinstance(value, dict):
        yield len(value)
        for item in value.values():
            yield from _sizes(item)


def _view(raw: bytes) -> memoryview:
    """Wrap bytes in a memoryview."""
    return memoryview(raw)


hashables = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.decimals(allow_nan=False, allow_infinity=True),
)
leaves = st.one_of(
    hashables,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.sampled_from("\x00a\u00e9 \ud800\udc00\U0001f600")),
    st.floats(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.one_of(st.none(), st.just(UTC), st.just(IST))),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.uuids(),
    st.sampled_from([Side.BUY, Level.HIGH, Pair.NIFTY]),
    st.builds(BadRepr),
    st.builds(ValueError, st.text(max_size=10)),
    st.binary(max_size=10).map(_view),
)
values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.tuples(children, children),
        st.dictionaries(hashables, children, max_size=5),
        st.frozensets(hashables, max_size=5),
        st.builds(Order, st.text(max_size=5), st.integers(), st.decimals(), st.lists(st.text())),
    ),
    max_leaves=30,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_to_jsonable_is_always_json_safe(value: object) -> None:
    """Any nested value converts without raising and dumps strictly, with no NUL or surrogate."""
    converted = to_jsonable(value)
    dumped = json.dumps(converted, allow_nan=False, ensure_ascii=False)
    dumped.encode("utf-8")
    assert "\x00" not in dumped
    assert "\\u0000" not in dumped
    assert json.loads(dumped) == converted


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(0, 4), st.integers(0, 4), st.integers(16, 64))
def test_to_jsonable_respects_limits(
    value: object, max_depth: int, max_items: int, max_str: int
) -> None:
    """Depth, container size and string length stay within the limits given."""
    converted = to_jsonable(value, max_depth=max_depth, max_items=max_items, max_str=max_str)
    assert _depth(converted) <= max_depth
    assert all(size <= max_items + 1 for size in _sizes(converted))
    assert all(len(text) <= max_str for text in _strings(converted))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_to_jsonable_is_stable(value: object) -> None:
    """Converting an already converted value changes nothing."""
    converted = to_jsonable(value)
    assert to_jsonable(converted) == converted
