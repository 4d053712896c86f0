"""Turning queued records into rows and file lines."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradelog._logs.redact import Redactor
from tradelog._logs.rows import MESSAGE_MAX, MODULE_MAX, Prepared, RowBuilder

# 2025-01-15 18:45:00.25 UTC is 2025-01-16 00:15 in Asia/Kolkata.
T = datetime(2025, 1, 15, 18, 45, 0, 250000, tzinfo=UTC).timestamp()


@pytest.fixture
def builder() -> RowBuilder:
    return RowBuilder(Redactor(), ZoneInfo("Asia/Kolkata"))


def build(builder: RowBuilder, event: dict[Any, Any], name: str | None = "app") -> Prepared:
    return builder.build((T, "INFO", name, event))


def test_row_and_line(builder: RowBuilder) -> None:
    """A user event gives a row and a line with the same content."""
    prepared = build(builder, {"event": "filled", "user_id": 7, "qty": 50, "module": "oms"})
    assert prepared.row == (7, "INFO", "oms", "filled", '{"qty":50}', "2025-01-15 18:45:00.250000")
    assert prepared.file_key == (7, "2025-01-16")
    line = json.loads(prepared.line)
    assert line == {
        "timestamp": "2025-01-15T18:45:00.250000+00:00",
        "level": "INFO",
        "user_id": 7,
        "module": "oms",
        "message": "filled",
        "context": {"qty": 50},
    }
    assert prepared.line.endswith("\n")
    assert prepared.reject is None


def test_system_event_has_no_row(builder: RowBuilder) -> None:
    """Without a user_id the event goes to the system file only."""
    prepared = build(builder, {"event": "boot"}, name=None)
    assert prepared.row is None
    assert prepared.file_key == (None, "2025-01-16")
    assert json.loads(prepared.line)["module"] == "root"


@pytest.mark.parametrize("user_id", ["42", 42])
def test_numeric_user_ids_are_accepted(builder: RowBuilder, user_id: object) -> None:
    """An id given as digits is the same user."""
    prepared = build(builder, {"event": "x", "user_id": user_id})
    assert prepared.row is not None
    assert prepared.row[0] == 42
    assert prepared.reject is None


@pytest.mark.parametrize("user_id", [2**31 - 1, str(2**31 - 1)])
def test_the_largest_user_id_is_accepted(builder: RowBuilder, user_id: object) -> None:
    """``users.id`` is an INTEGER: 2,147,483,647 is the last id a row can carry."""
    prepared = build(builder, {"event": "x", "user_id": user_id})
    assert prepared.row is not None
    assert prepared.row[0] == 2**31 - 1


@pytest.mark.parametrize("user_id", [2**31, 2**40, str(2**31), 2**63 - 1])
def test_a_user_id_beyond_the_column_is_rejected_with_the_bound(
    builder: RowBuilder, user_id: object
) -> None:
    """An id PostgreSQL's INTEGER cannot hold never reaches the database (its insert would fail
    for the whole batch): dead-lettered, with the bound in the reason."""
    prepared = build(builder, {"event": "x", "user_id": user_id})
    assert prepared.reject is not None
    assert prepared.reject.endswith("user ids go up to 2147483647")
    assert prepared.file_key[0] is None


@pytest.mark.parametrize("user_id", ["alice", -3, 0, True, 2.5, 2**70])
def test_unusable_user_ids_are_rejected(builder: RowBuilder, user_id: object) -> None:
    """A user_id that is not a positive integer goes to the system file and the dead letters."""
    prepared = build(builder, {"event": "x", "user_id": user_id})
    assert prepared.reject is not None
    assert "invalid user_id" in prepared.reject
    assert prepared.file_key[0] is None
    line = json.loads(prepared.line)
    assert line["user_id"] is None
    assert "user_id" in line["context"]


def test_secrets_are_scrubbed_before_encoding(builder: RowBuilder) -> None:
    """Secret keys at any depth and secrets inside text never reach the row or line."""
    prepared = build(
        builder,
        {
            "event": "login with password=hunter2",
            "user_id": 1,
            "api_key": "k-1",
            "nested": {"deep": [{"mpin": "9876"}]},
            "url": "https://api.telegram.org/bot123456:AAEabcdefghijklmnopqrstuvwxyz0123456/x",
            "exception": "Traceback ... token=abc123",
        },
    )
    text = prepared.line + repr(prepared.row)
    for secret in ("hunter2", "k-1", "9876", "AAEabcdef", "abc123"):
        assert secret not in text


def test_columns_are_cut_but_the_line_keeps_everything(builder: RowBuilder) -> None:
    """message/module fit their columns with a marker; the line is complete."""
    prepared = build(builder, {"event": "m" * 2000, "user_id": 1, "module": "x" * 200})
    assert prepared.row is not None
    assert len(prepared.row[3]) == MESSAGE_MAX
    assert len(prepared.row[2]) == MODULE_MAX
    line = json.loads(prepared.line)
    assert line["message"] == "m" * 2000
    assert line["module"] == "x" * 200


def test_long_context_strings_are_cut_after_scrubbing(builder: RowBuilder) -> None:
    """A secret that straddles the cut is still scrubbed (redaction runs first)."""
    token = "123456:" + "A" * 40
    value = "x" * 8180 + f" bot{token} tail"
    nested = {"inner": value}
    prepared = build(builder, {"event": "e", "user_id": 1, "value": value, "nested": nested})
    context = json.loads(prepared.line)["context"]
    assert "AAAAAAAAAA" not in prepared.line
    assert len(context["value"]) <= 8192
    assert len(context["nested"]["inner"]) <= 8192


def test_non_string_messages_and_keys(builder: RowBuilder) -> None:
    """Whatever the event and keys are, the output is text and valid JSON."""
    prepared = build(builder, {"event": {"password": "p", "a": 1}, "user_id": 1, 5: "five"})
    line = json.loads(prepared.line)
    assert json.loads(line["message"]) == {"password": "[REDACTED]", "a": 1}
    assert line["context"] == {"5": "five"}


def test_big_ints_and_floats(builder: RowBuilder) -> None:
    """Ints JSON cannot print and non-finite floats become markers instead of failing."""
    prepared = build(
        builder, {"event": "e", "user_id": 1, "big": 10**5000, "nan": float("nan"), "ok": 1.5}
    )
    context = json.loads(prepared.line)["context"]
    assert context["big"].startswith("<int:")
    assert context["nan"] == "NaN"
    assert context["ok"] == 1.5


def test_plans_are_cached_per_event_shape(builder: RowBuilder) -> None:
    """Events of the same shape reuse one plan; a new shape gets its own."""
    build(builder, {"event": "a", "user_id": 1, "secret": "s"})
    build(builder, {"event": "b", "user_id": 1, "secret": "t"})
    build(builder, {"event": "c", "user_id": 1, "other": "u"})
    assert len(builder._plans) == 2


_PLAIN = st.one_of(
    st.text(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),  # not plain: the dict path
)
_KEYS = st.one_of(
    st.sampled_from(["symbol", "qty", "price", "password", "api_key", "exception", "note"]),
    st.text(max_size=12),
    st.integers(min_value=-3, max_value=3),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _PLAIN, max_size=8))
def test_a_plan_writes_the_json_the_encoder_writes(fields: dict[Any, Any]) -> None:
    """The context JSON a plan writes itself is the JSON the encoder writes for the plan's
    dict, byte for byte; a plan leaves it to the encoder only for a value that is not plain
    (a container, a non-finite float) or two keys written alike."""
    builder = RowBuilder(Redactor(), ZoneInfo("Asia/Kolkata"))
    event = {**fields, "event": "e", "user_id": 1}
    plan = builder._plan(tuple(event))
    written = plan.json_of(event)
    context = plan.context_of(event)
    expected = json.dumps(context, ensure_ascii=False, separators=(",", ":"))
    own = [key for key in fields if key not in ("event", "user_id", "module")]
    plain = len(context) == len(own) and all(  # no two keys written alike
        type(fields[key]) is str
        or (
            key not in ("exception", "stack")  # these keep text only
            and (
                type(fields[key]) in (int, bool, type(None))
                or (type(fields[key]) is float and math.isfinite(fields[key]))
            )
        )
        for key in own
    )
    if plain or written is not None:  # a plain context is always written by the plan
        assert written == expected
