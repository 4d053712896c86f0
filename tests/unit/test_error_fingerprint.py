"""Error fingerprints: stable across line shifts and messages, distinct across code paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tradelog._errors.fingerprint import (
    exception_chain,
    fingerprint,
    frame_signature,
    in_app_tier,
    qualified_name,
)

SOURCE = """
def parse(payload):
    return int(payload["qty"])

def place(payload):
    return parse(payload)
"""


def _load(source: str, tmp_path: Path, name: str) -> dict[str, Any]:
    """Execute ``source`` as module ``shop.orders`` from its own file, like a second checkout."""
    path = tmp_path / name / "orders.py"
    path.parent.mkdir()
    path.write_text(source)
    namespace: dict[str, Any] = {"__name__": "shop.orders"}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace


def _raised(fn: Callable[..., Any], *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def _innermost_line(exc: BaseException) -> int:
    tb = exc.__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_lineno


def test_fingerprint_is_stable_when_lines_shift(tmp_path: Path) -> None:
    """Inserting lines above the failing code (and moving the file) keeps the fingerprint."""
    before = _load(SOURCE, tmp_path, "v1")
    shifted = "\n\n# a new comment\nimport os\n\n" + SOURCE.replace(
        "def place", "CONSTANT = 1\n\n\ndef place"
    )
    after = _load(shifted, tmp_path, "v2")
    first = _raised(before["place"], {"qty": "x"})
    second = _raised(after["place"], {"qty": "y"})
    lines = {_innermost_line(first), _innermost_line(second)}
    assert len(lines) == 2
    assert fingerprint(first) == fingerprint(second)
    assert len(fingerprint(first)) == 64


def test_fingerprint_ignores_message_values(tmp_path: Path) -> None:
    """The same failure with different values in the message groups together."""
    namespace = _load(SOURCE, tmp_path, "v1")
    assert fingerprint(_raised(namespace["place"], {"qty": "abc"})) == fingerprint(
        _raised(namespace["place"], {"qty": "12.5"})
    )


def test_fingerprint_differs_by_type_and_path(tmp_path: Path) -> None:
    """Another exception type, or another call path, is another group."""
    namespace = _load(SOURCE, tmp_path, "v1")
    value_error = _raised(namespace["place"], {"qty": "x"})
    key_error = _raised(namespace["place"], {})
    direct = _raised(namespace["parse"], {"qty": "x"})
    assert len({fingerprint(value_error), fingerprint(key_error), fingerprint(direct)}) == 3


def test_fingerprint_includes_the_chain() -> None:
    """An error raised from another differs from the same error raised alone."""

    def plain() -> None:
        raise RuntimeError("x")

    def chained() -> None:
        try:
            plain()
        except RuntimeError as exc:
            raise ValueError("y") from exc

    def alone() -> None:
        raise ValueError("y")

    chained_exc = _raised(chained)
    assert [type(e) for e in exception_chain(chained_exc)] == [RuntimeError, ValueError]
    assert fingerprint(chained_exc) != fingerprint(_raised(alone))


def test_suppressed_context_and_cycles_are_handled() -> None:
    """``raise ... from None`` hides the context; a cyclic chain terminates."""

    def hide() -> None:
        try:
            raise KeyError("a")
        except KeyError:
            raise ValueError("b") from None

    exc = _raised(hide)
    assert exception_chain(exc) == [exc]
    first, second = ValueError("1"), ValueError("2")
    first.__context__, second.__context__ = second, first
    assert len(exception_chain(first)) == 2


def test_recursion_depth_does_not_change_the_fingerprint() -> None:
    """Consecutive repeats of a frame collapse, so recursion depth does not matter."""

    def recurse(n: int) -> None:
        if n == 0:
            raise ValueError("bottom")
        recurse(n - 1)

    assert fingerprint(_raised(recurse, 3)) == fingerprint(_raised(recurse, 30))
    signature = frame_signature(_raised(recurse, 5).__traceback__)
    assert signature[-1].endswith('recurse:raise ValueError("bottom")')
    assert signature[-2].endswith("recurse:recurse(n - 1)")
    assert signature.count(signature[-2]) == 1


def test_two_call_sites_in_one_function_are_two_groups() -> None:
    """The same failing call made from two places of one function: the source lines differ."""

    def place(symbol: str) -> None:
        raise ConnectionError(f"broker refused {symbol}")

    def session(which: int) -> None:
        if which == 1:
            place("INFY")
        else:
            place("TCS")

    first, second = _raised(session, 1), _raised(session, 2)
    same_site = [_raised(place, s) for s in ("A", "B")]
    assert fingerprint(first) != fingerprint(second)
    assert fingerprint(same_site[0]) == fingerprint(same_site[1])


def test_library_frames_are_not_in_app() -> None:
    """Standard library frames drop out when application frames exist."""
    exc = _raised(json.loads, "{")
    signature = frame_signature(exc.__traceback__)
    assert signature
    assert all(not entry.startswith("json") for entry in signature)
    assert in_app_tier(json.__file__) == 0
    assert in_app_tier(pytest.__file__) == 1
    assert in_app_tier(__file__) == 2
    assert in_app_tier("<frozen importlib._bootstrap>") == 0
    assert in_app_tier("<string>") == 2


def test_only_library_frames_still_fingerprint() -> None:
    """An exception whose traceback is all library code still gets a usable fingerprint."""
    exc = _raised(json.loads, "{")
    inner = exc.__traceback__
    while (
        inner is not None
        and inner.tb_next is not None
        and "json" not in (inner.tb_frame.f_code.co_filename)
    ):
        inner = inner.tb_next
    only_library = exc.with_traceback(inner)
    assert frame_signature(only_library.__traceback__)
    assert frame_signature(None) == []


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (ValueError, "ValueError"),
        (json.JSONDecodeError, "json.decoder.JSONDecodeError"),
    ],
)
def test_qualified_name(kind: type[BaseException], expected: str) -> None:
    """Built-ins stay short, everything else is module-qualified."""
    assert qualified_name(kind) == expected


def test_qualified_name_of_a_nested_class() -> None:
    """Nested classes keep their qualified name."""

    class Outer:
        class Problem(Exception):
            pass

    assert qualified_name(Outer.Problem).endswith(
        "test_qualified_name_of_a_nested_class.<locals>.Outer.Problem"
    )


def test_the_traceback_at_capture_time_decides() -> None:
    """An exception's traceback grows as it propagates; the traceback taken when it was
    captured gives the fingerprint it had then, however far it went since."""
    captured: dict[str, Any] = {}

    def inner() -> None:
        raise ValueError("x")

    def middle() -> None:
        try:
            inner()
        except ValueError as exc:
            captured["tb"] = exc.__traceback__
            captured["early"] = fingerprint(exc)
            raise

    def outer() -> None:
        middle()

    try:
        outer()
    except ValueError as exc:
        late = fingerprint(exc)
        pinned = fingerprint(exc, captured["tb"])
    assert late != captured["early"]
    assert pinned == captured["early"]
