"""Retention: what is old enough to go, and deleting it without getting in the writers' way.

The rules (from the schema spec, each period a setting):

* ``service_logs`` rows older than ``service_logs_retention_days`` (30) by ``timestamp``;
* per-user log files older than ``log_files_retention_days`` (90) by the date in their name:
  ``{log_dir}/users/{id}/service-YYYY-MM-DD.jsonl``, rotated segments
  ``service-YYYY-MM-DD.N.jsonl.gz`` and the same names under ``{log_dir}/system/``. A file dated
  D goes once D is more than the period before today's date in the configured timezone. Files
  with other names are never touched;
* resolved ``error_logs`` rows ``resolved_errors_retention_days`` (90) after ``resolved_at``;
  unresolved errors are kept forever (deleted by :func:`tradelog._errors.workflow.purge_resolved`).

:class:`RetentionPolicy` is pure: it takes ``now`` and answers with cut-offs. :class:`RetentionJob`
applies it: rows go in bounded batches (``batch_size`` ids, one short transaction each, so a log
writer waiting for the database waits for one batch at most), files one by one. ``dry_run``
counts and lists without deleting. :class:`DailyRetention` runs the job once a day in a background
thread; the runtime starts one in a configured process with ``settings.worker`` on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Engine, delete, func, select
from sqlalchemy.orm import Session

from tradelog._db.models import ErrorLog, ServiceLog
from tradelog._errors.workflow import purge_resolved

if TYPE_CHECKING:
    from tradelog.config import Settings

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_DAILY_AT",
    "LOG_FILE_PATTERN",
    "DailyRetention",
    "Progress",
    "RetentionJob",
    "RetentionPolicy",
    "RetentionResult",
    "log_file_date",
    "next_daily_run",
]

DEFAULT_BATCH_SIZE: Final = 5_000
#: Local time (configured timezone) of the daily run: well outside NSE market hours.
DEFAULT_DAILY_AT: Final = time(3, 30)

#: ``service-YYYY-MM-DD.jsonl``, ``service-YYYY-MM-DD.N.jsonl`` and either one gzip-compressed.
LOG_FILE_PATTERN: Final = re.compile(
    r"^service-(?P<date>\d{4}-\d{2}-\d{2})(?:\.(?P<segment>\d+))?\.jsonl(?:\.gz)?$"
)

#: ``progress(category, done, total)``: called after each batch (rows) or file deleted.
Progress = Callable[[str, int, int], None]

_log = logging.getLogger("tradelog.retention")


def log_file_date(name: str) -> date | None:
    """The date in a log file's name, or None when the name is not a tradelog log file."""
    match = LOG_FILE_PATTERN.match(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match["date"])
    except ValueError:  # e.g. service-2024-02-30.jsonl
        return None


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return now.astimezone(UTC)


@dataclass(frozen=True, kw_only=True)
class RetentionPolicy:
    """The retention periods and the cut-offs they give at a moment ``now`` (pure)."""

    service_logs_days: int = 30
    log_files_days: int = 90
    resolved_errors_days: int = 90
    timezone: str = "Asia/Kolkata"

    def __post_init__(self) -> None:
        for name in ("service_logs_days", "log_files_days", "resolved_errors_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        ZoneInfo(self.timezone)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        """The policy the settings describe."""
        return cls(
            service_logs_days=settings.service_logs_retention_days,
            log_files_days=settings.log_files_retention_days,
            resolved_errors_days=settings.resolved_errors_retention_days,
            timezone=settings.timezone,
        )

    def service_logs_cutoff(self, now: datetime) -> datetime:
        """Rows with ``timestamp`` strictly before this go."""
        return _aware(now) - timedelta(days=self.service_logs_days)

    def resolved_errors_cutoff(self, now: datetime) -> datetime:
        """Resolved errors with ``resolved_at`` strictly before this go."""
        return _aware(now) - timedelta(days=self.resolved_errors_days)

    def log_files_cutoff(self, now: datetime) -> date:
        """Log files dated strictly before this local date go."""
        today = _aware(now).astimezone(ZoneInfo(self.timezone)).date()
        return today - timedelta(days=self.log_files_days)

    def file_expired(self, name: str, now: datetime) -> bool:
        """True when ``name`` is a tradelog log file dated before the cut-off."""
        day = log_file_date(name)
        return day is not None and day < self.log_files_cutoff(now)


@dataclass
class RetentionResult:
    """What one run deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    now: datetime
    service_logs_cutoff: datetime
    resolved_errors_cutoff: datetime
    log_files_cutoff: date
    service_logs: int = 0
    error_logs: int = 0
    log_files: int = 0
    log_file_bytes: int = 0
    files: list[Path] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows and files per category."""
        return {
            "service_logs": self.service_logs,
            "error_logs": self.error_logs,
            "log_files": self.log_files,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (paths as strings, times ISO 8601)."""
        return {
            "dry_run": self.dry_run,
            "now": self.now.isoformat(),
            "cutoffs": {
                "service_logs": self.service_logs_cutoff.isoformat(),
                "error_logs": self.resolved_errors_cutoff.isoformat(),
                "log_files": self.log_files_cutoff.isoformat(),
            },
            **self.counts(),
            "log_file_bytes": self.log_file_bytes,
            "files": [str(p) for p in self.files],
            "file_errors": list(self.file_errors),
        }


def _noop(category: str, done: int, total: int) -> None:
    return None


class RetentionJob:
    """Apply a :class:`RetentionPolicy` to one database and one log directory."""

    def __init__(
        self,
        engine: Engine,
        log_dir: Path | str | None,
        policy: RetentionPolicy | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.engine = engine
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.policy = policy or RetentionPolicy()
        self.batch_size = batch_size

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engine: Engine,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> RetentionJob:
        """A job for ``engine`` with the policy and log directory the settings give."""
        return cls(
            engine,
            settings.log_dir,
            RetentionPolicy.from_settings(settings),
            batch_size=batch_size,
        )

    def run_once(
        self, now: datetime, *, dry_run: bool = False, progress: Progress | None = None
    ) -> RetentionResult:
        """Delete (or only count, with ``dry_run``) everything the policy says has expired."""
        report = progress or _noop
        result = RetentionResult(
            dry_run=dry_run,
            now=_aware(now),
            service_logs_cutoff=self.policy.service_logs_cutoff(now),
            resolved_errors_cutoff=self.policy.resolved_errors_cutoff(now),
            log_files_cutoff=self.policy.log_files_cutoff(now),
        )
        logs_expired = ServiceLog.timestamp < result.service_logs_cutoff
        errors_expired = ErrorLog.resolved.is_(True) & (
            ErrorLog.resolved_at < result.resolved_errors_cutoff
        )
        result.service_logs = self._rows(
            "service_logs", ServiceLog.id, logs_expired, dry_run, report
        )
        if dry_run:
            result.error_logs = self._rows(
                "error_logs", ErrorLog.id, errors_expired, dry_run, report
            )
        else:
            result.error_logs = self._purge_errors(result.now, report)
        self._files(result, dry_run, report)
        return result

    # rows -----------------------------------------------------------------------------------

    def count(self, id_column: Any, condition: ColumnElement[bool]) -> int:
        """How many rows match ``condition`` (one short read)."""
        with self.engine.connect() as connection:
            query = select(func.count(id_column)).where(condition)
            return int(connection.execute(query).scalar_one())

    def _rows(
        self,
        category: str,
        id_column: Any,
        condition: ColumnElement[bool],
        dry_run: bool,
        report: Progress,
    ) -> int:
        total = self.count(id_column, condition)
        if dry_run or total == 0:
            report(category, total if dry_run else 0, total)
            return total
        return self.delete_in_batches(category, id_column, condition, total, report)

    def delete_in_batches(
        self,
        category: str,
        id_column: Any,
        condition: ColumnElement[bool],
        total: int = 0,
        report: Progress = _noop,
    ) -> int:
        """Delete rows matching ``condition``, ``batch_size`` per committed transaction."""
        table = id_column.table
        done = 0
        while True:
            batch = select(id_column).where(condition).limit(self.batch_size)
            with self.engine.begin() as connection:
                deleted = connection.execute(delete(table).where(id_column.in_(batch))).rowcount
            done += deleted
            report(category, done, max(total, done))
            if deleted < self.batch_size:
                return done

    def _purge_errors(self, now: datetime, report: Progress) -> int:
        """Resolved errors go through the error workflow's own purge (same batching)."""
        with Session(self.engine) as session:
            deleted = purge_resolved(
                session, now, days=self.policy.resolved_errors_days, batch_size=self.batch_size
            )
        report("error_logs", deleted, deleted)
        return deleted

    # files ----------------------------------------------------------------------------------

    def expired_files(self, now: datetime) -> Iterator[Path]:
        """Log files under ``log_dir/users/*/`` and ``log_dir/system/`` past the cut-off."""
        if self.log_dir is None:
            return
        cutoff = self.policy.log_files_cutoff(now)
        directories: list[Path] = []
        users = self.log_dir / "users"
        if users.is_dir():
            directories.extend(sorted(p for p in users.iterdir() if p.is_dir()))
        if (self.log_dir / "system").is_dir():
            directories.append(self.log_dir / "system")
        for directory in directories:
            for path in sorted(directory.iterdir()):
                day = log_file_date(path.name)
                if day is not None and day < cutoff and path.is_file():
                    yield path

    def _files(self, result: RetentionResult, dry_run: bool, report: Progress) -> None:
        candidates = list(self.expired_files(result.now))
        total = len(candidates)
        for path in candidates:
            try:
                size = path.stat().st_size
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:  # removed meanwhile (another process ran retention)
                continue
            except OSError as exc:
                result.file_errors.append(f"{path}: {exc.strerror or exc}")
                continue
            result.files.append(path)
            result.log_files += 1
            result.log_file_bytes += size
            report("log_files", result.log_files, total)
        if total == 0:
            report("log_files", 0, 0)


def next_daily_run(now: datetime, at: time, timezone: str) -> datetime:
    """The first moment strictly after ``now`` whose local time in ``timezone`` is ``at`` (UTC)."""
    zone = ZoneInfo(timezone)
    local = _aware(now).astimezone(zone)
    candidate = datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(UTC)


class DailyRetention:
    """Runs a :class:`RetentionJob` once a day at ``at`` (local time) in a daemon thread."""

    def __init__(
        self,
        job: RetentionJob,
        *,
        at: time = DEFAULT_DAILY_AT,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_done: Callable[[RetentionResult], None] | None = None,
    ) -> None:
        self.job = job
        self.at = at
        self.clock = clock
        self.on_done = on_done
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DailyRetention:
        """Start the background thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="tradelog-retention", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waits up to ``timeout`` for a running pass to finish)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_now(self) -> RetentionResult | None:
        """One pass now; failures are logged and counted, never raised."""
        try:
            result = self.job.run_once(self.clock())
        except Exception:
            self.failures += 1
            _log.exception("retention run failed")
            return None
        self.runs += 1
        _log.info("retention run finished", extra={"counts": result.counts()})
        if self.on_done is not None:
            self.on_done(result)
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            due = next_daily_run(now, self.at, self.job.policy.timezone)
            if self._stop.wait(max(0.0, (due - now).total_seconds())):
                return
            self.run_now()
