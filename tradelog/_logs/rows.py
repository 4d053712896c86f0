"""From a queued log record to what the sinks write: a ``service_logs`` row and a JSONL line.

This runs on the background writer, once per event, so it is written for speed: the shape of
an event (its keys) is analysed once and cached as a *plan*; string values get the cheap
pre-checks of :mod:`tradelog._logs.sanitize` and :mod:`tradelog._logs.redact` before any real
work; timestamps are formatted once per second. A plan writes the context's JSON itself when
every value is a plain one (text, int, finite float, bool, None), with the key prefixes made
once and the same quoting and number formats as the ``json`` encoder, so the usual event builds
no context dict and makes no encoder call (the build of a 4-key event went from 3.3 to 2.6 µs);
any other value takes the dict and the encoder.

Plans are compiled only for shapes of at most :data:`COMPILE_MAX_KEYS` keys and only by the
writer's own builder (``compile_plans=True``); the builder that runs on a caller's thread when
the queue is full, and every wider shape, use the same rules through a plain loop
(:meth:`RowBuilder._context_loop`), so no compilation ever holds the GIL for long or runs on a
caller's thread. The plan cache is bounded in bytes (:data:`PLAN_CACHE_BYTES`, an estimate of
what each compiled plan holds), oldest plans leaving first.

What it guarantees for every record, whatever it holds:

* secrets are scrubbed (:class:`~tradelog._logs.redact.Redactor`) before anything is encoded;
* every value is JSON-safe (NUL characters removed, lone surrogates replaced, NaN/Infinity
  spelled as strings, containers converted by :func:`~tradelog._logs.sanitize.to_jsonable`);
* the database row fits its columns: ``message`` and ``module`` are cut to 1024 and 128
  characters with a visible marker, while the file line keeps the full text;
* a ``user_id`` that is not a positive integer up to ``USER_ID_MAX`` (``users.id`` is an
  INTEGER) does not reach the database: the event goes to the system file and the row to the
  dead-letter file with the reason.

:meth:`RowBuilder.build` never raises.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Final, NamedTuple, TypeAlias
from zoneinfo import ZoneInfo

from tradelog._db.base import USER_ID_MAX
from tradelog._logs.redact import REDACT_MARGIN, Redactor, redact_jsonable
from tradelog._logs.sanitize import clean_text, to_jsonable, truncate

__all__ = [
    "COMPILE_MAX_KEYS",
    "MESSAGE_MAX",
    "MODULE_MAX",
    "PLAN_CACHE_BYTES",
    "DbRow",
    "FileKey",
    "Prepared",
    "Record",
    "RowBuilder",
    "row_as_dict",
]

Record: TypeAlias = tuple[float, str, "str | None", dict[Any, Any], bool]
"""What the caller thread queues: (unix time, level name, logger name, event dict, whether the
console shows it). The builder reads only the first four items."""

DbRow: TypeAlias = tuple[Any, str, str, str, "str | None", str]
"""One ``service_logs`` row: (user_id, level, module, message, context JSON or None,
timestamp as ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC)."""

FileKey: TypeAlias = tuple["int | None", str]
"""Where a line goes: (user id or None for the system file, local date ``YYYY-MM-DD``)."""

MESSAGE_MAX: Final = 1024
MODULE_MAX: Final = 128
CONTEXT_STR_MAX: Final = 8192
"""Longest string kept inside ``context`` (longer ones are cut with a marker)."""
LONG_STR_MAX: Final = 32768
"""Longest ``exception``/``stack`` text kept inside ``context``."""
FILE_MESSAGE_MAX: Final = 1 << 20
"""The file keeps the full message up to this many characters (a bound on memory only)."""

_MEMO_LENGTH: Final = 256
"""Strings up to this long are remembered once cleaned (messages, modules, symbols...)."""
_MEMO_SIZE: Final = 8192
_RECHECK_SIZE: Final = 2 * CONTEXT_STR_MAX
"""An encoded context longer than this is converted again so nested strings get cut."""
COMPILE_MAX_KEYS: Final = 16
"""Shapes with more keys than this are never compiled (they take the loop): compiling one
holds the GIL in a single call, about 0.2 ms per key."""
PLAN_CACHE_BYTES: Final = 8 * 1024 * 1024
"""Bound on the estimated memory of the compiled plans one builder keeps."""
_PLAN_BYTES_BASE: Final = 2560
_PLAN_BYTES_PER_KEY: Final = 1664
"""Estimated bytes of a compiled plan (its two functions): measured ~1.5 KiB per key plus
~2 KiB (tracemalloc, 40 plans of 15 keys: 1,007,270 bytes)."""
_KEY_MEMO_SIZE: Final = 8192
_RESERVED: Final = frozenset({"event", "user_id", "module"})
_LONG_KEYS: Final = frozenset({"exception", "stack"})


class Prepared(NamedTuple):
    """One record, ready for the sinks."""

    row: DbRow | None
    """The ``service_logs`` row; None for system events and rejected rows."""
    file_key: FileKey
    line: str
    """The JSONL line, newline included."""
    reject: str | None = None
    """Why ``row`` must go to the dead-letter file instead of the database (else None)."""


def row_as_dict(row: DbRow) -> dict[str, Any]:
    """A database row as a JSON-friendly dict (for the dead-letter file)."""
    user_id, level, module, message, context, timestamp = row
    return {
        "user_id": user_id,
        "level": level,
        "module": module,
        "message": message,
        "context": context,
        "timestamp": timestamp,
    }


_prepared: Final = tuple.__new__


def _refuse(value: object) -> Any:
    raise TypeError(f"not JSON-safe: {type(value).__name__}")


def _make_encoder() -> Callable[[Any, int], Any]:
    """The C JSON encoder bound once (compact, UTF-8, no NaN), or the pure-Python one."""
    if c_make_encoder is not None:  # pragma: no branch - CPython
        return c_make_encoder(  # type: ignore[no-any-return]
            None, _refuse, encode_basestring, None, ":", ",", False, False, False
        )
    encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return lambda value, _level: (encoder.encode(value),)  # pragma: no cover


class RowBuilder:
    """Turn queued records into :class:`Prepared` rows and lines (one instance per writer)."""

    def __init__(self, redactor: Redactor, zone: ZoneInfo, *, compile_plans: bool = True) -> None:
        self._redactor = redactor
        self._compile = compile_plans
        self._redact_text: Callable[[str], str] = redactor.redact_text
        self._mask = redactor.mask
        self._zone = zone
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._plan_sizes: dict[tuple[Any, ...], int] = {}
        self.plan_bytes = 0
        """Estimated bytes held by the compiled plans (at most :data:`PLAN_CACHE_BYTES`)."""
        self._keys: dict[Any, tuple[Any, bool]] = {}
        self._seen: dict[str, str] = {}
        self._shown: dict[str, tuple[str, str]] = {}
        self._encode = _make_encoder()
        self._second = -1
        self._db_second = ""
        self._iso_second = ""
        self._local_date = ""

    def build(self, record: Record) -> Prepared:
        """Prepare one record; never raises (a broken record becomes a system line)."""
        try:
            return self._build(record)
        except Exception as exc:  # pragma: no cover - defensive: _build handles every value
            return self._broken(record, exc)

    def _build(self, record: Record) -> Prepared:
        ts, level, name, event = record[0], record[1], record[2], record[3]
        encoded: str | None = None
        context: dict[str, Any] | None
        plan: _Plan | None = None
        if len(event) > COMPILE_MAX_KEYS or not self._compile:
            context = self._context_loop(event)
        else:
            keys = tuple(event)
            plan = self._plans.get(keys)
            if plan is None:
                plan = self._plan(keys)
            # The plan writes the context's JSON itself when every value is a plain one (the
            # usual case); the dict is built only when something needs it.
            try:
                encoded = plan.json_of(event)
            except ValueError:  # an int too long to print: the dict path marks it
                encoded = None
            context = plan.context_of(event) if encoded is None else None

        message = event.get("event")
        shown = self._shown.get(message) if type(message) is str else None
        if shown is None:
            shown = self._show(message)
        message, message_json = shown
        module = event.get("module")
        if module is None:
            module = name or "root"
        shown = self._shown.get(module) if type(module) is str else None
        if shown is None:
            shown = self._show(module)
        module, module_json = shown

        context_json: str | None = None
        if encoded is not None and len(encoded) <= _RECHECK_SIZE:
            if encoded != "{}":
                context_json = encoded
        elif context or encoded is not None:
            if context is None:
                assert plan is not None  # encoded came from it
                context = plan.context_of(event)
            try:
                encoded = "".join(self._encode(context, 0))
            except (TypeError, ValueError):
                context = self._safe_context(context)
                encoded = "".join(self._encode(context, 0))
            if len(encoded) > _RECHECK_SIZE:
                context = self._safe_context(context)
                encoded = "".join(self._encode(context, 0))
            context_json = encoded

        second = int(ts)
        if second != self._second:
            self._new_second(second)
        micros = str(1_000_000 + int((ts - second) * 1_000_000))[1:]

        user_id = event.get("user_id")
        if user_id is not None and not (type(user_id) is int and 0 < user_id <= USER_ID_MAX):
            if context is None:
                assert plan is not None  # the dict is only left out on the compiled path
                context = plan.context_of(event)
            return self._odd_user(event, level, (module, message), context, micros)
        line = (
            f'{{"timestamp":"{self._iso_second}.{micros}+00:00","level":"{level}",'
            f'"user_id":{"null" if user_id is None else user_id},"module":{module_json},'
            f'"message":{message_json},"context":{context_json or "{}"}}}\n'
        )
        if user_id is None:
            return _prepared(Prepared, (None, (None, self._local_date), line, None))
        if len(message) > MESSAGE_MAX:
            message = truncate(message, MESSAGE_MAX)
        if len(module) > MODULE_MAX:
            module = truncate(module, MODULE_MAX)
        row = (user_id, level, module, message, context_json, f"{self._db_second}.{micros}")
        return _prepared(Prepared, (row, (user_id, self._local_date), line, None))

    def _odd_user(
        self,
        event: dict[Any, Any],
        level: str,
        texts: tuple[str, str],
        context: dict[str, Any],
        micros: str,
    ) -> Prepared:
        """An event whose ``user_id`` is not a plain positive int: accept digits, else reject."""
        module, message = texts
        raw = event.get("user_id")
        user_id, reject = _user_id(raw, self._redact_text)
        if reject is not None:
            raw = self._redactor(to_jsonable(raw))
            context = {**context, "user_id": raw}
        context_json = "".join(self._encode(context, 0)) if context else None
        line = (
            f'{{"timestamp":"{self._iso_second}.{micros}+00:00","level":"{level}",'
            f'"user_id":{"null" if user_id is None else user_id},'
            f'"module":{encode_basestring(module)},"message":{encode_basestring(message)},'
            f'"context":{context_json or "{}"}}}\n'
        )
        row: DbRow = (
            user_id if reject is None else raw,
            level,
            truncate(module, MODULE_MAX),
            truncate(message, MESSAGE_MAX),
            context_json,
            f"{self._db_second}.{micros}",
        )
        return Prepared(row, (user_id, self._local_date), line, reject)

    def _string(self, value: str) -> str:
        """A context string, cleaned and scrubbed (short ones are remembered)."""
        result = self._text(value, CONTEXT_STR_MAX)
        if len(value) <= _MEMO_LENGTH:
            seen = self._seen
            if len(seen) >= _MEMO_SIZE:
                seen.clear()
            seen[value] = result
        return result

    def _show(self, value: object) -> tuple[str, str]:
        """A message or module as clean text and as a JSON string (short ones remembered)."""
        text = self._text(value, FILE_MESSAGE_MAX) if type(value) is str else self._other(value)
        result = (text, encode_basestring(text))
        if type(value) is str and len(value) <= _MEMO_LENGTH:
            shown = self._shown
            if len(shown) >= _MEMO_SIZE:
                shown.clear()
            shown[value] = result
        return result

    def _text(self, value: str, limit: int) -> str:
        """Clean, scrub and cut one string (redaction first, so a cut never splits a secret;
        only the first ``limit`` + ``REDACT_MARGIN`` characters are looked at)."""
        if len(value) > limit + REDACT_MARGIN:
            value = value[: limit + REDACT_MARGIN]
        if "\x00" in value or not value.isascii():
            value = clean_text(value)
        value = self._redact_text(value)
        if len(value) > limit:
            value = truncate(value, limit)
        return value

    def _deep(self, value: object) -> Any:
        """Scrub a container (the caller made it JSON-safe when it queued the event).

        Long strings inside it are cut when the encoded context turns out large.
        """
        return self._redactor(value)

    def _safe_context(self, context: dict[str, Any]) -> dict[str, Any]:
        """Make a context JSON-safe and bounded, scrubbing again what conversion produced."""
        scrubbed = redact_jsonable(context, max_str=CONTEXT_STR_MAX, redactor=self._redactor)
        return scrubbed if isinstance(scrubbed, dict) else {}

    def _other(self, value: object) -> str:
        """Render a non-string message or module as text (scrubbed before it is encoded)."""
        converted = self._redactor(to_jsonable(value))
        if not isinstance(converted, str):
            converted = "".join(self._encode(to_jsonable(converted), 0))
        return self._text(converted, FILE_MESSAGE_MAX)

    def _plan(self, keys: tuple[Any, ...]) -> _Plan:
        """Compile the context builder for a new event shape (its keys, in order).

        The keys are classified once (secret, long text, plain) and turned into a small
        straight-line function, so each event costs a few dictionary lookups and type checks
        instead of a loop over generic rules. The generated code only refers to keys through
        names bound in its namespace; no event data ends up in the source.
        """
        namespace: dict[str, Any] = {
            "_seen": self._seen.get,
            "_string": self._string,
            "_text": self._text,
            "_deep": self._deep,
            "_isfinite": math.isfinite,
            "_jsonable": to_jsonable,
            "_mask": self._mask,
            "_LONG": LONG_STR_MAX,
        }
        namespace["_quote"] = encode_basestring
        namespace["_int"] = int.__repr__
        namespace["_float"] = float.__repr__
        namespace["_MASKED"] = encode_basestring(self._mask)
        lines = ["def context_of(event):", "    context = {}"]
        json_lines = ["def json_of(event):"]
        parts: list[str] = []
        outs: set[str] = set()
        distinct = True
        for index, key in enumerate(keys):
            if key in _RESERVED:
                continue
            if isinstance(key, str):
                out = self._redact_text(clean_text(key))
                sensitive = self._redactor.is_sensitive_key(key)
            else:
                converted = to_jsonable(key)
                out = (
                    converted if isinstance(converted, str) else "".join(self._encode(converted, 0))
                )
                sensitive = False
            namespace[f"K{index}"] = key
            namespace[f"O{index}"] = out
            namespace[f"P{index}"] = encode_basestring(out) + ":"
            distinct = distinct and out not in outs  # else the dict keeps the last: use it
            outs.add(out)
            lines.extend(_context_code(index, sensitive=sensitive, long=key in _LONG_KEYS))
            json_lines.extend(_json_code(index, sensitive=sensitive, long=key in _LONG_KEYS))
            parts.append(f"{{P{index}}}{{v{index}}}")
        lines.append("    return context")
        json_lines.append(f'    return f"{{{{{",".join(parts)}}}}}"')
        if not distinct:
            json_lines = ["def json_of(event):", "    return None"]
        code = compile("\n".join(lines + json_lines), "<tradelog context builder>", "exec")
        exec(code, namespace)  # noqa: S102 - generated from fixed templates, see above
        built = _Plan(namespace["context_of"], namespace["json_of"])
        size = _PLAN_BYTES_BASE + sum(
            _PLAN_BYTES_PER_KEY + len(str(key)) + len(str(namespace.get(f"O{index}", "")))
            for index, key in enumerate(keys)
        )
        plans, sizes = self._plans, self._plan_sizes
        while plans and self.plan_bytes + size > PLAN_CACHE_BYTES:
            oldest = next(iter(plans))
            del plans[oldest]
            self.plan_bytes -= sizes.pop(oldest)
        if size <= PLAN_CACHE_BYTES:
            plans[keys] = built
            sizes[keys] = size
            self.plan_bytes += size
        return built

    def _key(self, key: Any) -> tuple[Any, bool]:
        """A context key as written (scrubbed text) and whether its value is a secret."""
        known = self._keys.get(key)
        if known is not None:
            return known
        if isinstance(key, str):
            out: Any = self._redact_text(clean_text(key[: CONTEXT_STR_MAX + REDACT_MARGIN]))
            if len(out) > CONTEXT_STR_MAX:
                out = truncate(out, CONTEXT_STR_MAX)
            result = (out, self._redactor.is_sensitive_key(key))
        else:
            converted = to_jsonable(key)
            out = converted if isinstance(converted, str) else "".join(self._encode(converted, 0))
            result = (out, False)
        if not isinstance(key, str) or len(key) <= _MEMO_LENGTH:
            if len(self._keys) >= _KEY_MEMO_SIZE:
                self._keys.clear()
            self._keys[key] = result
        return result

    def _context_loop(self, event: dict[Any, Any]) -> dict[str, Any]:
        """The context of an event by the same rules as a compiled plan, as a plain loop (wide
        shapes, and the builder that runs on a caller's thread)."""
        context: dict[Any, Any] = {}
        seen = self._seen.get
        for key, x in event.items():
            if key in _RESERVED:
                continue
            out, sensitive = self._key(key)
            if sensitive:
                context[out] = None if x is None else self._mask
            elif key in _LONG_KEYS:
                context[out] = self._text(x, LONG_STR_MAX) if type(x) is str else self._deep(x)
            else:
                t = type(x)
                if t is str:
                    y = seen(x)
                    context[out] = y if y is not None else self._string(x)
                elif t is int or t is bool or x is None:
                    context[out] = x
                elif t is float:
                    context[out] = x if math.isfinite(x) else to_jsonable(x)
                else:
                    context[out] = self._deep(x)
        return context

    def _new_second(self, second: int) -> None:
        moment = datetime.fromtimestamp(second, UTC)
        self._second = second
        self._db_second = moment.strftime("%Y-%m-%d %H:%M:%S")
        self._iso_second = moment.strftime("%Y-%m-%dT%H:%M:%S")
        self._local_date = moment.astimezone(self._zone).date().isoformat()

    def _broken(self, record: object, exc: BaseException) -> Prepared:  # pragma: no cover
        """Last resort for a record the builder could not handle."""
        try:
            description = self._redact_text(clean_text(repr(record)))[:CONTEXT_STR_MAX]
        except Exception:
            description = "<unrepresentable record>"
        now = datetime.now(UTC)
        line = json.dumps(
            {
                "timestamp": now.isoformat(),
                "level": "ERROR",
                "user_id": None,
                "module": "tradelog.logs",
                "message": "a log record could not be prepared",
                "context": {"error": type(exc).__name__, "record": description},
            },
            ensure_ascii=False,
        )
        return Prepared(None, (None, now.astimezone(self._zone).date().isoformat()), line + "\n")


def _context_code(index: int, *, sensitive: bool, long: bool) -> list[str]:
    """Source lines that put key ``K{index}`` of ``event`` into ``context`` as ``O{index}``."""
    key, out = f"K{index}", f"O{index}"
    if sensitive:
        return [f"    context[{out}] = None if event[{key}] is None else _mask"]
    if long:
        return [
            f"    x = event[{key}]",
            f"    context[{out}] = _text(x, _LONG) if type(x) is str else _deep(x)",
        ]
    return [
        f"    x = event[{key}]",
        "    t = type(x)",
        "    if t is str:",
        "        y = _seen(x)",
        f"        context[{out}] = y if y is not None else _string(x)",
        "    elif t is int or t is bool or x is None:",
        f"        context[{out}] = x",
        "    elif t is float:",
        f"        context[{out}] = x if _isfinite(x) else _jsonable(x)",
        "    else:",
        f"        context[{out}] = _deep(x)",
    ]


def _json_code(index: int, *, sensitive: bool, long: bool) -> list[str]:
    """Source lines that put the JSON of key ``K{index}``'s value in ``v{index}``, or return
    None (the caller encodes the dict instead) for a value that is not a plain one."""
    key, value = f"K{index}", f"v{index}"
    if sensitive:
        return [f'    {value} = "null" if event[{key}] is None else _MASKED']
    if long:
        return [
            f"    x = event[{key}]",
            "    if type(x) is not str:",
            "        return None",
            f"    {value} = _quote(_text(x, _LONG))",
        ]
    return [
        f"    x = event[{key}]",
        "    t = type(x)",
        "    if t is str:",
        "        y = _seen(x)",
        f"        {value} = _quote(y if y is not None else _string(x))",
        "    elif t is int:",
        f"        {value} = _int(x)",
        "    elif t is float and _isfinite(x):",
        f"        {value} = _float(x)",
        "    elif x is None:",
        f'        {value} = "null"',
        "    elif t is bool:",
        f'        {value} = "true" if x else "false"',
        "    else:",
        "        return None",
    ]


class _Plan(NamedTuple):
    """The compiled builders of one event shape."""

    context_of: Callable[[dict[Any, Any]], dict[str, Any]]
    """The context as a dict (scrubbed, cleaned)."""
    json_of: Callable[[dict[Any, Any]], str | None]
    """The same context's JSON, written directly; None when a value is not a plain one."""


def _user_id(value: object, redact: Callable[[str], str]) -> tuple[int | None, str | None]:
    """Return ``(user_id, None)`` for a usable id, else ``(None, reason)`` (the value shown in
    the reason is scrubbed with ``redact`` before it is cut)."""
    candidate: int | None = None
    if isinstance(value, bool):
        candidate = None
    elif isinstance(value, numbers.Integral):
        candidate = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 20:
        candidate = int(value.strip())
    if candidate is not None and 0 < candidate <= USER_ID_MAX:
        return candidate, None
    try:
        shown = truncate(redact(clean_text(repr(value)[:4096])), 64)
    except Exception:
        shown = f"<{type(value).__name__}>"
    if candidate is not None and candidate > USER_ID_MAX:
        return None, f"invalid user_id {shown}: user ids go up to {USER_ID_MAX}"
    return None, f"invalid user_id {shown}: expected a positive integer"
