"""Import the previous system's per-user JSONL log files into ``service_logs``.

The old layout is ``users/user_{id}/service_YYYYMMDD.jsonl``, one JSON object per line with the
fields ``timestamp``, ``level``, ``module``, ``message``, ``context`` and ``user_id``.

Decisions, so that an import can be run, checked and run again safely:

* **Naive timestamps are IST.** The old system wrote ``datetime.now().isoformat()`` on servers
  set to India time, so a timestamp without an offset is read in ``naive_timezone`` (default
  ``Asia/Kolkata``) and converted to UTC. Timestamps with an offset (or ``Z``) are honoured;
  numbers are Unix epoch seconds.
* **Idempotent.** A line is skipped when ``service_logs`` already holds a row with the same
  ``(user_id, timestamp, level, module, message)`` as the line would produce. The existing keys
  are loaded with one query per file (per chunk of ``chunk_lines`` for very large files) for
  that user and the file's time range, and counted as a multiset, so a file that legitimately
  repeats a line imports every copy once and a re-run imports nothing.
* **Never fatal, never silent.** A line that cannot be imported (not UTF-8, not JSON, not an
  object, no usable timestamp, unknown level, no message, a ``user_id`` that contradicts its
  directory) is counted and reported with its file, line number and reason; the lines around
  it are imported. Blank lines are ignored.
* **Users are not created.** The ``user_{id}`` directory names a row of the host's ``users``
  table; when it does not exist, that directory's lines are counted under ``missing_users``
  and skipped. Create the accounts, then run the import again.
* Rows get the same treatment as live logs: secrets scrubbed (key and text rules), NULs and bad
  surrogates removed, ``module``/``message`` cut to their column sizes with a marker, context
  made JSON-safe. Unknown extra fields of a line are kept in ``context``.
* Rows are inserted in batches of ``batch_size`` and committed per batch.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, null, select
from sqlalchemy.orm import Session

from tradelog._db.engine import session_factory
from tradelog._db.models import ServiceLog, User
from tradelog._logs.redact import Redactor
from tradelog._logs.sanitize import clean_text, to_jsonable, truncate
from tradelog.exceptions import NotFound

__all__ = [
    "FILE_PATTERN",
    "USER_DIR_PATTERN",
    "BadLine",
    "ImportResult",
    "LegacyImporter",
    "LineError",
    "discover",
    "parse_line",
]

USER_DIR_PATTERN: Final = re.compile(r"^user_(?P<id>\d+)$")
FILE_PATTERN: Final = re.compile(r"^service_(?P<date>\d{8})\.jsonl$")
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LEVEL_ALIASES: Final = {"WARN": "WARNING", "FATAL": "CRITICAL", "CRIT": "CRITICAL"}
_KNOWN_FIELDS: Final = frozenset({"timestamp", "level", "module", "message", "context", "user_id"})
MODULE_LENGTH: Final = 128
MESSAGE_LENGTH: Final = 1024
DEFAULT_MODULE: Final = "legacy"
MAX_REPORTED_BAD_LINES: Final = 1000

#: ``progress(done_bytes, total_bytes)``, called after each batch and file.
Progress = Callable[[int, int], None]


class LineError(ValueError):
    """Why one line cannot be imported."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was not imported, and why."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class ImportResult:
    """Counts of one import run."""

    files: int = 0
    lines: int = 0
    imported: int = 0
    duplicates: int = 0
    bad: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    missing_users: dict[int, int] = field(default_factory=dict)
    ignored_files: list[Path] = field(default_factory=list)

    @property
    def skipped_missing_users(self) -> int:
        """Lines skipped because their user does not exist."""
        return sum(self.missing_users.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "files": self.files,
            "lines": self.lines,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "bad": self.bad,
            "skipped_missing_users": self.skipped_missing_users,
            "missing_users": {str(k): v for k, v in sorted(self.missing_users.items())},
            "bad_lines": [
                {"path": str(b.path), "line": b.line, "reason": b.reason} for b in self.bad_lines
            ],
            "ignored_files": [str(p) for p in self.ignored_files],
        }


def discover(path: Path | str) -> tuple[list[tuple[int, Path]], list[Path]]:
    """Find legacy files under ``path``: ``([(user_id, file), ...], ignored_files)``.

    ``path`` may be the old log root (holding ``users/``), the ``users`` directory itself, one
    ``user_{id}`` directory or a single ``service_YYYYMMDD.jsonl`` file inside one.
    Raises :class:`NotFound` when ``path`` does not exist or holds no legacy layout.
    """
    root = Path(path)
    if not root.exists():
        raise NotFound(f"{root} does not exist")
    if root.is_file():
        match = USER_DIR_PATTERN.match(root.parent.name)
        if match is None or FILE_PATTERN.match(root.name) is None:
            raise NotFound(
                f"{root} is not a legacy log file (expected users/user_<id>/service_YYYYMMDD.jsonl)"
            )
        return [(int(match["id"]), root)], []
    if USER_DIR_PATTERN.match(root.name):
        user_dirs = [root]
    else:
        base = root / "users" if (root / "users").is_dir() else root
        user_dirs = sorted(
            p for p in base.iterdir() if p.is_dir() and USER_DIR_PATTERN.match(p.name)
        )
        if not user_dirs:
            raise NotFound(f"no user_<id> directories under {base}")
    found: list[tuple[int, Path]] = []
    ignored: list[Path] = []
    for directory in sorted(user_dirs, key=lambda p: int(p.name.split("_", 1)[1])):
        user_id = int(directory.name.split("_", 1)[1])
        for child in sorted(directory.iterdir()):
            if child.is_file() and FILE_PATTERN.match(child.name):
                found.append((user_id, child))
            else:
                ignored.append(child)
    return found, ignored


def _timestamp(value: Any, naive_zone: ZoneInfo) -> datetime:
    if isinstance(value, bool):
        raise LineError("timestamp is not a date/time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise LineError(f"timestamp {value!r} is out of range") from None
    if not isinstance(value, str) or not value.strip():
        raise LineError("missing timestamp" if value in (None, "") else "timestamp is not text")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise LineError(f"unreadable timestamp {value[:40]!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=naive_zone)
    return parsed.astimezone(UTC)


def _level(value: Any) -> str:
    if not isinstance(value, str):
        raise LineError("missing level" if value is None else "level is not text")
    level = value.strip().upper()
    level = _LEVEL_ALIASES.get(level, level)
    if level not in LEVELS:
        raise LineError(f"unknown level {value[:20]!r}")
    return level


def parse_line(
    raw: bytes, user_id: int, naive_zone: ZoneInfo, redactor: Redactor
) -> dict[str, Any] | None:
    """One line to a ``service_logs`` row dict (None for a blank line).

    Raises :class:`LineError` with the reason when the line cannot be imported.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer too long to convert
        raise LineError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LineError(f"not a JSON object but {type(data).__name__}")
    owner = data.get("user_id")
    if owner is not None and (isinstance(owner, bool) or str(owner).strip() != str(user_id)):
        raise LineError(f"user_id {owner!r} does not match the directory user_{user_id}")
    message = data.get("message")
    if message is None or message == "":
        raise LineError("missing message")
    if not isinstance(message, str):
        message = json.dumps(to_jsonable(message), ensure_ascii=False)
    module = data.get("module")
    module = DEFAULT_MODULE if module in (None, "") else str(module)
    context = data.get("context")
    if context is not None and not isinstance(context, dict):
        context = {"context": context}
    extra = {k: v for k, v in data.items() if k not in _KNOWN_FIELDS}
    if extra:
        context = {**extra, **(context or {})}
    return {
        "user_id": user_id,
        "timestamp": _timestamp(data.get("timestamp"), naive_zone),
        "level": _level(data.get("level")),
        "module": truncate(clean_text(redactor.redact_text(module)), MODULE_LENGTH),
        "message": truncate(clean_text(redactor.redact_text(message)), MESSAGE_LENGTH),
        "context": to_jsonable(redactor(context)) if context is not None else None,
    }


def _key(row: dict[str, Any]) -> tuple[datetime, str, str, str]:
    return (row["timestamp"], row["level"], row["module"], row["message"])


class LegacyImporter:
    """Import legacy JSONL files into one database (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        naive_timezone: str = "Asia/Kolkata",
        batch_size: int = 1000,
        chunk_lines: int = 50_000,
        redactor: Redactor | None = None,
    ) -> None:
        if batch_size < 1 or chunk_lines < 1:
            raise ValueError("batch_size and chunk_lines must be at least 1")
        self.engine = engine
        self.naive_zone = ZoneInfo(naive_timezone)
        self.batch_size = batch_size
        self.chunk_lines = chunk_lines
        self.redactor = redactor or Redactor()
        self._sessions = session_factory(engine)

    def run(self, path: Path | str, progress: Progress | None = None) -> ImportResult:
        """Import every legacy file under ``path``; returns the counts."""
        files, ignored = discover(path)
        result = ImportResult(ignored_files=ignored)
        total = sum(f.stat().st_size for _, f in files)
        done = 0
        known: dict[int, bool] = {}
        for user_id, file in files:
            result.files += 1
            if user_id not in known:
                with self._sessions() as session:
                    known[user_id] = session.get(User, user_id) is not None
            if known[user_id]:
                self._import_file(file, user_id, result, done=done, total=total, progress=progress)
            else:
                with file.open("rb") as handle:
                    count = sum(1 for line in handle if line.strip())
                result.lines += count
                result.missing_users[user_id] = result.missing_users.get(user_id, 0) + count
            done += file.stat().st_size
            if progress is not None:
                progress(done, total)
        return result

    def _bad(self, result: ImportResult, path: Path, line: int, reason: str) -> None:
        result.bad += 1
        if len(result.bad_lines) < MAX_REPORTED_BAD_LINES:
            result.bad_lines.append(BadLine(path, line, reason))

    def _chunks(
        self, path: Path, user_id: int, result: ImportResult
    ) -> Iterator[tuple[list[dict[str, Any]], int]]:
        """Parsed rows of ``path`` in chunks, with the bytes read so far."""
        chunk: list[dict[str, Any]] = []
        read = 0
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                read += len(raw)
                try:
                    row = parse_line(raw, user_id, self.naive_zone, self.redactor)
                except LineError as exc:
                    result.lines += 1
                    self._bad(result, path, number, str(exc))
                    continue
                if row is None:
                    continue
                result.lines += 1
                chunk.append(row)
                if len(chunk) >= self.chunk_lines:
                    yield chunk, read
                    chunk = []
        if chunk:
            yield chunk, read

    def _existing(self, session: Session, user_id: int, rows: list[dict[str, Any]]) -> Counter[Any]:
        low = min(r["timestamp"] for r in rows)
        high = max(r["timestamp"] for r in rows)
        query = select(
            ServiceLog.timestamp, ServiceLog.level, ServiceLog.module, ServiceLog.message
        ).where(
            ServiceLog.user_id == user_id,
            ServiceLog.timestamp >= low - timedelta(microseconds=1),
            ServiceLog.timestamp <= high + timedelta(microseconds=1),
        )
        return Counter(tuple(r) for r in session.execute(query))

    def _import_file(
        self,
        path: Path,
        user_id: int,
        result: ImportResult,
        *,
        done: int,
        total: int,
        progress: Progress | None,
    ) -> None:
        seen: Counter[Any] = Counter()
        with self._sessions() as session:
            for rows, read in self._chunks(path, user_id, result):
                existing = self._existing(session, user_id, rows)
                session.rollback()  # end the read before the writes: short transactions
                fresh: list[dict[str, Any]] = []
                for row in rows:
                    key = _key(row)
                    seen[key] += 1
                    if existing[key] >= seen[key]:
                        result.duplicates += 1
                    else:
                        fresh.append(row)
                for start in range(0, len(fresh), self.batch_size):
                    batch = [
                        # no context is SQL NULL, as the log writer stores it, not JSON null
                        row if row["context"] is not None else {**row, "context": null()}
                        for row in fresh[start : start + self.batch_size]
                    ]
                    session.execute(insert(ServiceLog), batch)
                    session.commit()
                    result.imported += len(batch)
                if progress is not None:
                    progress(done + read, total)
