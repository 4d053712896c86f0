"""Logging never raises into the caller, whatever it is given."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tradelog
from tests.support.logs import file_records, running


class _Hostile:
    """An object whose every dunder used for display fails."""

    def __repr__(self) -> str:
        raise RuntimeError("repr fails")

    def __str__(self) -> str:
        raise RuntimeError("str fails")

    def __format__(self, spec: str) -> str:
        raise RuntimeError("format fails")


class _Mutating(dict[str, Any]):
    """A mapping that changes while it is read."""

    def items(self) -> Any:
        self["later"] = 1
        return super().items()


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.decimals(allow_nan=True),
    st.datetimes(),
    st.builds(_Hostile),
    st.builds(_Mutating, a=st.integers()),
    st.builds(object),
    st.just(datetime.now(UTC)),
    st.just(Decimal("1e-1000")),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers() | st.text(max_size=5), max_size=4),
        st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    ),
    max_leaves=12,
)
keywords = st.dictionaries(
    st.sampled_from(
        ["event", "self", "method_name", "level", "user_id", "module", "exc_info", "stack_info"]
    )
    | st.text(min_size=1, max_size=10),
    values,
    max_size=5,
)
methods = st.sampled_from(
    ["debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"]
)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_logging_never_raises(db_url: str, tmp_path: Path) -> None:
    """Arbitrary events, arguments and keywords: every call returns, nothing is counted as an
    internal failure, and every event reaches a file."""
    calls = 0
    with running(db_url, tmp_path, level="DEBUG", console=True) as runtime:
        log = tradelog.get_logger("fuzz")

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            method=methods,
            event=values,
            args=st.lists(values, max_size=2),
            kw=keywords,
            level=st.integers(min_value=-5, max_value=100) | st.text(max_size=3),
        )
        def check(method: str, event: Any, args: list[Any], kw: dict[str, Any], level: Any) -> None:
            nonlocal calls
            getattr(log, method)(event, *args, **kw)
            log.log(level, event, *args, **kw)
            logging.getLogger("fuzz.std").warning(event, *args)
            # (structlog's lazy proxy itself takes ``self`` as bind()'s first parameter)
            bound = log.bind(**{k: v for k, v in kw.items() if k != "self"})
            bound.bind(**kw).info("bound")
            calls += 3

        # pytest's own capture handler re-raises formatting errors: test ours alone.
        root = logging.getLogger()
        others = list(root.handlers)
        for handler in others:
            root.removeHandler(handler)
        try:
            check()
        finally:
            for handler in others:
                root.addHandler(handler)
        runtime.flush(30)  # False when some of the odd events were dead-lettered
        assert runtime.flush(10)
        stats = runtime.stats()
    assert stats["internal_errors"] == 0
    assert stats["dropped"] == 0
    assert stats["enqueued"] >= calls
    assert stats["file_lines"] == stats["enqueued"]
    assert len(file_records(tmp_path)) == stats["file_lines"]
