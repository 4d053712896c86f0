"""Helpers for logging tests: configure a runtime on a test database and read what it wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tradelog
from tradelog._logs.file_sink import iter_lines
from tradelog._runtime import Runtime


@contextmanager
def running(
    db_url: str, log_dir: Path, *, shutdown_timeout: float = 5.0, **options: Any
) -> Iterator[Runtime]:
    """A configured runtime for the duration of the block (shut down afterwards)."""
    options.setdefault("console", False)
    options.setdefault("flush_interval", 0.05)
    runtime = tradelog.configure(database_url=db_url, log_dir=log_dir, **options)
    try:
        yield runtime
    finally:
        runtime.shutdown(shutdown_timeout)


def log_files(log_dir: Path, user_id: int | None = None) -> list[Path]:
    """Every log file (plain and compressed) of one user, of the system, or of everyone."""
    if user_id is None:
        folders = [log_dir / "system", *sorted((log_dir / "users").glob("*"))]
    else:
        folders = [log_dir / "users" / str(user_id)]
    return sorted(
        path for folder in folders if folder.is_dir() for path in folder.glob("service-*.jsonl*")
    )


def file_records(log_dir: Path, user_id: int | None = None) -> list[dict[str, Any]]:
    """The JSON lines of :func:`log_files`, parsed."""
    return [json.loads(line) for line in iter_lines(log_files(log_dir, user_id))]


def system_records(log_dir: Path) -> list[dict[str, Any]]:
    """The lines of the system files, parsed."""
    folder = log_dir / "system"
    paths = sorted(folder.glob("service-*.jsonl*")) if folder.is_dir() else []
    return [json.loads(line) for line in iter_lines(paths)]


def dead_letters(log_dir: Path) -> list[dict[str, Any]]:
    """Every dead-letter entry under ``log_dir``."""
    folder = log_dir / "_dead_letter"
    paths = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    return [json.loads(line) for line in iter_lines(paths)]


def everything_written(log_dir: Path) -> str:
    """The text of every file under ``log_dir`` (compressed ones decompressed)."""
    parts = []
    for path in sorted(p for p in log_dir.rglob("*") if p.is_file()):
        if path.name.endswith(".gz"):
            parts.extend(iter_lines([path]))
        else:
            parts.append(path.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(parts)
