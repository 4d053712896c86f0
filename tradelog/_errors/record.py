"""What one captured error row contains, built from an exception (pure: no I/O, no clock).

* ``error_type``: the exception's qualified class name (``ValueError``,
  ``broker.api.OrderRejected``), at most 128 characters.
* ``error_message``: ``str(exc)`` with secrets scrubbed, cut to 1,024 characters with a marker.
* ``traceback``: :func:`traceback.format_exception` text, chained causes and contexts included,
  scrubbed. Over 8,192 characters the head (where the chain starts) and the tail (the innermost
  frames and the final exception line) are kept around a marker saying how much was left out.
* ``context``: the caller's context (bound log context, explicit keys), made JSON-safe and
  scrubbed with the log redactor *before* long strings are cut
  (:func:`tradelog._logs.redact.redact_jsonable`). Local variables are only included when
  ``capture_locals`` is on, and then scrubbed the same way (names such as ``pw`` or ``creds``
  mask their values), each ``repr`` cut to 200 characters after scrubbing.
* ``fingerprint``: :func:`tradelog._errors.fingerprint.fingerprint`.

Severity (:attr:`ErrorRecord.level`): only an uncaught exception that ends the service
process - ``sys.excepthook``, the main thread's last word - is ``critical``. A thread that
died, an asyncio task nobody awaited, an exception a ``multiprocessing`` pool or a
:func:`~tradelog.guard` caught and handed back to its caller: the process goes on, so they
are ``error`` like any logged or captured exception.

Building a record never raises: an exception whose ``__str__`` or traceback cannot be rendered
still gives a row, with a marker in place of the part that failed.
"""

from __future__ import annotations

import reprlib
import traceback as tb_module
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final

from tradelog._errors.fingerprint import fingerprint, qualified_name
from tradelog._logs.redact import Redactor, redact_jsonable
from tradelog._logs.sanitize import clean_text

__all__ = [
    "LAST_ERROR_LENGTH",
    "MESSAGE_LENGTH",
    "PROCESS_CRASH_SOURCES",
    "TRACEBACK_LENGTH",
    "TYPE_LENGTH",
    "ErrorRecord",
    "build_record",
    "capture_frame_locals",
    "summary",
    "truncate_message",
    "truncate_traceback",
]

TYPE_LENGTH: Final = 128
MESSAGE_LENGTH: Final = 1024
TRACEBACK_LENGTH: Final = 8192
LAST_ERROR_LENGTH: Final = 512
LOCAL_REPR_LENGTH: Final = 200
"""Characters kept of each local variable's ``repr`` (after scrubbing)."""
PROCESS_CRASH_SOURCES: Final = frozenset({"sys.excepthook"})
"""``context["source"]`` values of exceptions that end the process."""
_LOCALS_FRAMES: Final = 3
_LOCALS_PER_FRAME: Final = 50
_TRACEBACK_HEAD: Final = 2048
"""Characters kept from the start of a long traceback (the rest of the budget is the tail)."""

_repr = reprlib.Repr()
_repr.maxstring = 2000
_repr.maxother = 2000
_repr.maxlong = 60
"""Wide enough that a secret near the start of a value is whole when it is scrubbed; the
scrubbed text is then cut to :data:`LOCAL_REPR_LENGTH`."""


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One error occurrence, ready to be written to ``error_logs``."""

    user_id: int | None
    error_type: str
    error_message: str
    traceback: str | None
    context: dict[str, Any] | None
    occurred_at: datetime
    fingerprint: str
    uncaught: bool = False

    @property
    def process_crash(self) -> bool:
        """Whether this exception ended the service process (see the module docstring)."""
        source = (self.context or {}).get("source")
        return self.uncaught and source in PROCESS_CRASH_SOURCES

    @property
    def level(self) -> str:
        """Severity: ``critical`` for a crash of the service process, else ``error``."""
        return "critical" if self.process_crash else "error"

    @property
    def last_error(self) -> str:
        """The ``service_status.last_error`` text (``Type: message``, 512 characters)."""
        return summary(self.error_type, self.error_message, LAST_ERROR_LENGTH)


def summary(error_type: str, message: str, limit: int) -> str:
    """``Type: message`` cut to ``limit`` characters with an ellipsis."""
    text = f"{error_type}: {message}" if message else error_type
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def truncate_message(text: str, limit: int = MESSAGE_LENGTH) -> str:
    """Cut ``text`` to ``limit`` characters, ending in a marker that gives the full length."""
    if len(text) <= limit:
        return text
    marker = f"… [truncated, {len(text)} characters in all]"
    return text[: max(limit - len(marker), 0)] + marker[:limit]


def truncate_traceback(text: str, limit: int = TRACEBACK_LENGTH) -> str:
    """Keep the head and the innermost frames of a long traceback around a marker.

    Cuts fall on line boundaries where possible, so every kept line is whole.
    """
    if len(text) <= limit:
        return text
    marker_room = 80
    head = min(_TRACEBACK_HEAD, limit // 4)
    head_end = text.rfind("\n", 0, head) + 1 or head
    tail_budget = limit - head_end - marker_room
    tail_start = len(text) - tail_budget
    newline = text.find("\n", tail_start)
    if newline != -1 and newline + 1 < len(text):
        tail_start = newline + 1
    omitted = tail_start - head_end
    marker = f"\n... [{omitted} characters of traceback omitted] ...\n\n"
    return text[:head_end] + marker + text[tail_start:]


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__} object>"


def _format_traceback(exc: BaseException, tb: TracebackType | None) -> str:
    try:
        return "".join(tb_module.format_exception(type(exc), exc, tb or exc.__traceback__))
    except Exception:
        try:
            return "".join(tb_module.format_exception_only(type(exc), exc))
        except Exception:
            return f"{qualified_name(type(exc))}: <traceback unavailable>\n"


def capture_frame_locals(exc: BaseException) -> list[dict[str, Any]]:
    """``repr``\\ s of the local variables of the innermost frames of ``exc``'s traceback.

    Take this snapshot on the thread that caught the exception, before the frames move on.
    Values are shortened with :mod:`reprlib`; scrubbing, and then the cut to
    :data:`LOCAL_REPR_LENGTH` characters, happen in :func:`build_record`.
    """
    frames = []
    current = exc.__traceback__
    while current is not None:
        frames.append(current)
        current = current.tb_next
    result = []
    for entry in frames[-_LOCALS_FRAMES:]:
        frame = entry.tb_frame
        code = frame.f_code
        names: dict[str, str] = {}
        for count, (name, value) in enumerate(frame.f_locals.items()):
            if count >= _LOCALS_PER_FRAME:
                names["…"] = f"{len(frame.f_locals) - count} more"
                break
            try:
                names[name] = _repr.repr(value)
            except Exception:
                names[name] = f"<unrepresentable {type(value).__name__}>"
        result.append(
            {
                "function": getattr(code, "co_qualname", code.co_name),
                "module": frame.f_globals.get("__name__", "?"),
                "line": entry.tb_lineno,
                "locals": names,
            }
        )
    return result


def build_record(
    exc: BaseException,
    *,
    occurred_at: datetime,
    redactor: Redactor,
    user_id: int | None = None,
    context: Mapping[str, Any] | None = None,
    frame_locals: list[dict[str, Any]] | None = None,
    uncaught: bool = False,
    traceback: TracebackType | None = None,
) -> ErrorRecord:
    """Build the row content for ``exc``; never raises. ``traceback`` is ``exc``'s traceback
    as it was when captured (it grows while the exception propagates; default: as it is now)."""
    kind = type(exc)
    try:
        error_type = qualified_name(kind)
    except Exception:
        error_type = getattr(kind, "__name__", "Exception")
    if len(error_type) > TYPE_LENGTH:
        error_type = "…" + error_type[-(TYPE_LENGTH - 1) :]
    message = truncate_message(clean_text(redactor.redact_text(_safe_str(exc))))
    text = truncate_traceback(clean_text(redactor.redact_text(_format_traceback(exc, traceback))))
    try:
        print_ = fingerprint(exc, traceback)
    except Exception:  # pragma: no cover - fingerprint walks plain attributes
        print_ = "0" * 64
    data: dict[str, Any] = {}
    if context:
        scrubbed_context = redact_jsonable(dict(context), max_str=2048, redactor=redactor)
        if isinstance(scrubbed_context, dict):
            data.update(scrubbed_context)
    if frame_locals is not None:
        data["locals"] = redact_jsonable(
            frame_locals, max_str=LOCAL_REPR_LENGTH, max_items=64, redactor=redactor
        )
    scrubbed = data or None
    return ErrorRecord(
        user_id=user_id,
        error_type=error_type,
        error_message=message,
        traceback=text or None,
        context=scrubbed if isinstance(scrubbed, dict) and scrubbed else None,
        occurred_at=occurred_at,
        fingerprint=print_,
        uncaught=uncaught,
    )
