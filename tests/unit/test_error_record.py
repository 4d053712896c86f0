"""Error row content: type names, scrubbed and truncated messages and tracebacks, context."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tradelog._errors.record import (
    LAST_ERROR_LENGTH,
    MESSAGE_LENGTH,
    TRACEBACK_LENGTH,
    build_record,
    capture_frame_locals,
    summary,
    truncate_message,
    truncate_traceback,
)
from tradelog._logs.redact import Redactor

NOW = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
REDACTOR = Redactor()


class BrokerRejected(Exception):
    """A host-defined exception."""


def _build(exc: BaseException, **options: Any) -> Any:
    return build_record(exc, occurred_at=NOW, redactor=REDACTOR, **options)


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_row_fields_for_a_simple_error() -> None:
    """Type, message, traceback, fingerprint and time come from the exception."""
    record = _build(_raise(BrokerRejected("order 42 rejected")), user_id=3)
    assert record.error_type == f"{__name__}.BrokerRejected"
    assert record.error_message == "order 42 rejected"
    assert record.traceback is not None
    assert record.traceback.startswith("Traceback (most recent call last):")
    assert "BrokerRejected: order 42 rejected" in record.traceback
    assert record.user_id == 3
    assert record.occurred_at == NOW
    assert len(record.fingerprint) == 64
    assert record.context is None
    assert record.level == "error"


@pytest.mark.parametrize(
    ("source", "uncaught", "level"),
    [
        ("sys.excepthook", True, "critical"),  # the service process dies
        ("threading.excepthook", True, "error"),  # one thread died; the process goes on
        ("asyncio", True, "error"),
        ("guard", True, "error"),  # a pool worker's exception, handed back to the caller
        ("sys.unraisablehook", False, "error"),
        ("sys.excepthook", False, "error"),
        (None, True, "error"),
    ],
)
def test_only_a_crash_of_the_process_is_critical(
    source: str | None, uncaught: bool, level: str
) -> None:
    context = {"source": source} if source else None
    record = _build(ValueError("x"), uncaught=uncaught, context=context)
    assert record.level == level
    assert record.process_crash is (level == "critical")


def test_chained_causes_and_contexts_are_in_the_traceback() -> None:
    """Both the explicit cause and the implicit context are rendered."""

    def inner() -> None:
        raise KeyError("qty")

    try:
        try:
            inner()
        except KeyError as exc:
            raise ValueError("bad payload") from exc
    except ValueError:
        try:
            raise RuntimeError("while reporting")
        except RuntimeError as last:
            record = _build(last)
    text = record.traceback
    assert "KeyError: 'qty'" in text
    assert "The above exception was the direct cause of the following exception" in text
    assert "During handling of the above exception, another exception occurred" in text
    assert text.index("KeyError") < text.index("ValueError") < text.index("RuntimeError")


def test_long_message_is_truncated_with_a_marker() -> None:
    """Messages over 1,024 characters are cut and say how long they were."""
    record = _build(ValueError("x" * 5000))
    assert len(record.error_message) == MESSAGE_LENGTH
    assert record.error_message.endswith("… [truncated, 5000 characters in all]")
    assert truncate_message("short") == "short"
    assert len(truncate_message("abcdef", 3)) == 3


def test_long_traceback_keeps_head_and_innermost_frames() -> None:
    """A deep traceback is cut to 8,192 characters around a marker, keeping both ends."""

    source = "def level_0():\n    raise ZeroDivisionError('innermost failure')\n" + "".join(
        f"def level_{i}():\n    level_{i - 1}()\n" for i in range(1, 400)
    )
    namespace: dict[str, Any] = {"__name__": "deep"}
    exec(compile(source, "deep.py", "exec"), namespace)
    exc = _raise_from(namespace["level_399"])
    full = "".join(__import__("traceback").format_exception(exc))
    assert len(full) > TRACEBACK_LENGTH
    text = _build(exc).traceback
    assert len(text) <= TRACEBACK_LENGTH
    assert text.startswith("Traceback (most recent call last):")
    assert "characters of traceback omitted" in text
    assert text.rstrip().endswith("ZeroDivisionError: innermost failure")
    assert "in level_0" in text
    assert "in level_399" in text


def _raise_from(fn: Any, *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize("limit", [200, 1000, 8192])
def test_truncate_traceback_respects_the_limit(limit: int) -> None:
    """The result never exceeds the limit and keeps whole lines at the tail."""
    text = "".join(f"line {i:05d}\n" for i in range(5000))
    cut = truncate_traceback(text, limit)
    assert len(cut) <= limit
    assert cut.endswith("line 04999\n")
    assert truncate_traceback("tiny", limit) == "tiny"


def test_secrets_are_scrubbed_from_message_traceback_and_context() -> None:
    """Tokens in messages and source lines, and secret context keys, never reach the row."""

    def login() -> None:
        password = "hunter2-secret"
        raise PermissionError(f"login failed: password={password} token=abc123xyz")

    record = _build(
        _raise_from(login),
        context={"api_key": "k-123", "order_id": 9, "url": "postgresql://u:pw@db/x"},
    )
    assert "hunter2" not in record.error_message
    assert "abc123xyz" not in record.error_message
    assert "hunter2" not in (record.traceback or "")
    assert "abc123xyz" not in (record.traceback or "")
    assert record.context == {
        "api_key": "[REDACTED]",
        "order_id": 9,
        "url": "postgresql://u:[REDACTED]@db/x",
    }


def test_context_is_made_json_safe() -> None:
    """Non-JSON values in context become JSON-safe values."""
    record = _build(ValueError("x"), context={"at": NOW, "items": {1, 2}, "obj": object()})
    assert record.context is not None
    assert record.context["at"] == NOW.isoformat()
    assert record.context["items"] == [1, 2]
    assert record.context["obj"].startswith("<object object")


def test_locals_only_when_captured_and_scrubbed() -> None:
    """Locals appear only when a snapshot is passed, with secret names masked."""

    def trade() -> None:
        quantity = 50
        broker_password = "pw-very-secret"
        raise ValueError(f"cannot trade {quantity} ({len(broker_password)})")

    exc = _raise_from(trade)
    assert _build(exc).context is None
    snapshot = capture_frame_locals(exc)
    record = _build(exc, frame_locals=snapshot)
    frames = record.context["locals"]
    innermost = frames[-1]
    assert innermost["function"].endswith("trade")
    assert innermost["locals"]["quantity"] == "50"
    assert innermost["locals"]["broker_password"] == "[REDACTED]"
    assert "pw-very-secret" not in str(record.context)


def test_unprintable_exceptions_still_give_a_row() -> None:
    """An exception whose ``__str__`` raises is recorded with a marker."""

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    record = _build(_raise(Broken()))
    assert record.error_message == "<unprintable Broken object>"
    assert record.traceback is not None


def test_long_type_names_fit_the_column() -> None:
    """A qualified name over 128 characters keeps its end."""
    kind = type("E" * 200, (Exception,), {})
    record = _build(kind("x"))
    assert len(record.error_type) == 128
    assert record.error_type.endswith("EEEE")


def test_last_error_summary() -> None:
    """``last_error`` is ``Type: message`` on one line, at most 512 characters."""
    record = _build(ValueError("line one\nline two " + "y" * 900))
    assert record.last_error.startswith("ValueError: line one line two")
    assert len(record.last_error) == LAST_ERROR_LENGTH
    assert summary("KeyError", "", 50) == "KeyError"
