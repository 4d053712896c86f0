"""Tests for importing legacy JSONL logs into real databases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.db import MigratedDatabase
from tradelog._legacy_import import LegacyImporter


def write(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for item in lines:
            handle.write(item if isinstance(item, bytes) else json.dumps(item).encode())
            handle.write(b"\n")
    return path


def event(
    minute: int,
    message: str = "tick",
    level: str = "INFO",
    user_id: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "timestamp": f"2024-01-05T09:{minute:02d}:00",
        "level": level,
        "module": "sell_monitor",
        "message": message,
        "context": {"symbol": "TCS", **extra},
    }
    if user_id is not None:
        data["user_id"] = user_id
    return data


def test_import_then_reimport_is_idempotent(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Rows land once with IST naive times converted; a second run imports nothing."""
    alice, bob = users["alice"], users["bob"]
    root = tmp_path / "old"
    write(
        root / "users" / f"user_{alice}" / "service_20240105.jsonl",
        [
            event(5, "pre-market retry", order_id="A1"),
            event(6),
            event(6),  # a genuine repeat in the file: both copies import
            b"{broken",
            b"",
            event(7, level="ERROR", user_id=alice),
        ],
    )
    write(
        root / "users" / f"user_{bob}" / "service_20240106.jsonl",
        [event(15, "sell placed", user_id=bob), event(16, user_id=alice)],
    )
    progress: list[tuple[int, int]] = []
    importer = LegacyImporter(db.engine, batch_size=2)
    result = importer.run(root, progress=lambda d, t: progress.append((d, t)))
    assert (result.files, result.lines, result.imported, result.duplicates, result.bad) == (
        2,
        7,
        5,
        0,
        2,
    )
    assert [str(b).split("/")[-1] for b in result.bad_lines] == [
        "service_20240105.jsonl:4: not JSON (Expecting property name enclosed in double quotes "
        "at column 2)",
        f"service_20240106.jsonl:2: user_id {alice} does not match the directory user_{bob}",
    ]
    total = sum(p.stat().st_size for p in root.rglob("*.jsonl"))
    assert progress[-1] == (total, total)
    assert all(done <= total for done, _ in progress)
    rows = db.rows("SELECT user_id, level, module, message, context FROM service_logs ORDER BY id")
    assert [(r["user_id"], r["message"]) for r in rows] == [
        (alice, "pre-market retry"),
        (alice, "tick"),
        (alice, "tick"),
        (alice, "tick"),
        (bob, "sell placed"),
    ]
    first = rows[0]["context"]
    first = json.loads(first) if isinstance(first, str) else first
    assert first == {"symbol": "TCS", "order_id": "A1"}
    with db.session() as session:
        from tradelog._db.models import ServiceLog

        stamps = [r.timestamp for r in session.query(ServiceLog).order_by(ServiceLog.id)]
    assert stamps[0] == datetime(2024, 1, 5, 3, 35, tzinfo=UTC)

    again = importer.run(root)
    assert (again.imported, again.duplicates, again.bad) == (0, 5, 2)
    assert db.scalar("SELECT count(*) FROM service_logs") == 5


def test_missing_context_is_sql_null(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A line without context (or with ``null``) stores SQL NULL, like the live log writer."""
    alice = users["alice"]
    plain = {k: v for k, v in event(1).items() if k != "context"}
    write(
        tmp_path / "users" / f"user_{alice}" / "service_20240105.jsonl",
        [plain, {**event(2), "context": None}, event(3)],
    )
    assert LegacyImporter(db.engine).run(tmp_path).imported == 3
    nulls = db.rows("SELECT context IS NULL AS missing FROM service_logs ORDER BY id")
    assert [bool(r["missing"]) for r in nulls] == [True, True, False]


def test_partial_previous_import_completes(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A file that grew (or an import that stopped half way) gets only the missing rows."""
    alice = users["alice"]
    path = tmp_path / "users" / f"user_{alice}" / "service_20240105.jsonl"
    write(path, [event(1), event(2)])
    importer = LegacyImporter(db.engine, chunk_lines=1)
    assert importer.run(tmp_path).imported == 2
    write(path, [event(1), event(2), event(2), event(3), event(3)])
    result = importer.run(tmp_path)
    assert (result.imported, result.duplicates) == (3, 2)
    assert db.scalar("SELECT count(*) FROM service_logs") == 5
    assert importer.run(tmp_path).imported == 0


def test_repeats_across_chunks_import_every_copy(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Identical lines split over chunks are all imported once, then never again."""
    alice = users["alice"]
    write(tmp_path / f"user_{alice}" / "service_20240105.jsonl", [event(1)] * 5)
    importer = LegacyImporter(db.engine, chunk_lines=2, batch_size=1)
    assert importer.run(tmp_path / f"user_{alice}").imported == 5
    assert importer.run(tmp_path / f"user_{alice}").duplicates == 5
    assert db.scalar("SELECT count(*) FROM service_logs") == 5


def test_missing_users_are_reported_not_created(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Lines of an unknown user are counted and skipped; other users still import."""
    write(tmp_path / "users" / "user_9999" / "service_20240105.jsonl", [event(1), b"", event(2)])
    write(tmp_path / "users" / "user_9999" / "service_20240106.jsonl", [event(1)])
    write(tmp_path / "users" / f"user_{users['bob']}" / "service_20240105.jsonl", [event(3)])
    (tmp_path / "users" / "user_9999" / "README").write_text("old notes")
    result = LegacyImporter(db.engine).run(tmp_path)
    assert result.missing_users == {9999: 3}
    assert result.skipped_missing_users == 3
    assert result.imported == 1
    assert result.lines == 4
    assert [p.name for p in result.ignored_files] == ["README"]
    summary = result.to_dict()
    assert summary["missing_users"] == {"9999": 3}
    assert db.scalar("SELECT count(*) FROM users WHERE id = 9999") == 0


def test_other_timezone_for_naive_times(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """naive_timezone changes how offset-less times are read."""
    alice = users["alice"]
    write(tmp_path / f"user_{alice}" / "service_20240105.jsonl", [event(5)])
    LegacyImporter(db.engine, naive_timezone="UTC").run(tmp_path)
    with db.session() as session:
        from tradelog._db.models import ServiceLog

        row = session.query(ServiceLog).one()
    assert row.timestamp == datetime(2024, 1, 5, 9, 5, tzinfo=UTC)
