"""Everything tradelog creates on disk is owner-only, whatever the umask, and symbolic links
planted where it writes are not followed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tradelog._db import migrate
from tradelog._db.engine import create_tradelog_engine
from tradelog.users import create_user


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
    }


def _produce_everything(db_url: str, log_dir: Path, user_ids: list[int]) -> None:
    """Log files for several users (rotated and compressed), dead letters, writer stats."""
    runtime = tradelog.configure(
        database_url=db_url,
        log_dir=log_dir,
        console=False,
        file_max_bytes=1024,
        flush_interval=0.05,
        unknown_users="reject",  # the unknown user's row goes to the dead-letter file
    )
    for batch in range(4):  # several writes per file: segments rotate and are compressed
        for user_id in user_ids:
            log = tradelog.get_logger("modes", user_id=user_id)
            for i in range(10):
                log.info("fill", batch=batch, i=i, note="x" * 60)
        assert runtime.flush(20)
    tradelog.get_logger("modes").info("system event")
    tradelog.get_logger("modes").info("unknown user", user_id=987_654)
    assert not runtime.flush(20)  # the unknown user's row is a dead letter, not in the table
    assert runtime.flush(5)
    runtime.shutdown()


def _produce_spool_and_spill(log_dir: Path) -> None:
    """Rows and error rows kept on disk while the database is unreachable."""
    runtime = tradelog.configure(
        database_url="postgresql://tradelog@127.0.0.1:9/nowhere",
        log_dir=log_dir,
        console=False,
        db_write_timeout=0.3,
    )
    tradelog.get_logger("modes", user_id=1).info("while the database is away")
    try:
        raise ValueError("while the database is away")
    except ValueError as exc:
        tradelog.capture_exception(exc)
    runtime.flush(1.5)
    runtime.shutdown(3.0)


def test_log_tree_is_owner_only_under_umask_022(
    db: MigratedDatabase, tmp_path: Path, umask_022: None
) -> None:
    """Under umask 022 (which would make files 0644 and folders 0755): logs/, logs/users/,
    each user's folder, rotated .gz segments, the dead-letter file, _runtime/ and its files,
    the spool and the error spill file are 0700 folders and 0600 files."""
    with db.session() as session:
        ids = [create_user(session, email=f"m{i}@example.com", name="M").id for i in range(3)]
        session.commit()
    log_dir = tmp_path / "var" / "logs"
    _produce_everything(db.url, log_dir, ids)
    _produce_spool_and_spill(log_dir)
    modes = _modes(tmp_path / "var")
    names = "\n".join(modes)
    for expected in ("logs/users", "_dead_letter/", "_runtime/", "_spool/spool-", ".jsonl.gz"):
        assert expected in names, expected
    assert any("errors-unwritten-" in name for name in modes)
    for name, mode in modes.items():
        path = tmp_path / "var" / name
        wanted = 0o700 if path.is_dir() else 0o600
        assert mode == wanted, f"{name}: {oct(mode)}"


def test_new_sqlite_database_is_owner_only_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    """A SQLite database tradelog creates (and its -wal and -shm files) is 0600."""
    url = f"sqlite:///{tmp_path / 'tradelog.db'}"
    migrate.upgrade(url)
    engine = create_tradelog_engine(url)
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS probe (x INTEGER)")
        connection.exec_driver_sql("INSERT INTO probe VALUES (1)")
        connection.commit()
        modes = _modes(tmp_path)
    engine.dispose()
    assert set(modes) >= {"tradelog.db", "tradelog.db-wal", "tradelog.db-shm"}
    assert {name: oct(mode) for name, mode in modes.items()} == {name: oct(0o600) for name in modes}


def test_planted_symlink_is_not_followed(
    db: MigratedDatabase, tmp_path: Path, umask_022: None
) -> None:
    """A symbolic link where a user's log file is about to be written (pointing at a file of
    the attacker's choosing) is refused: the target stays untouched, the event still reaches
    the database."""
    with db.session() as session:
        user = create_user(session, email="victim@example.com", name="V").id
        session.commit()
    log_dir = tmp_path / "logs"
    runtime = tradelog.configure(
        database_url=db.url, log_dir=log_dir, console=False, flush_interval=0.05
    )
    tradelog.get_logger("modes", user_id=user).info("first")
    assert runtime.flush(20)
    [current] = (log_dir / "users" / str(user)).glob("service-*.jsonl")
    runtime.shutdown()
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched\n")
    current.unlink()
    current.symlink_to(target)
    runtime = tradelog.configure(
        database_url=db.url, log_dir=log_dir, console=False, flush_interval=0.05
    )
    tradelog.get_logger("modes", user_id=user).info("second")
    runtime.flush(20)
    runtime.shutdown()
    assert target.read_text() == "untouched\n"
    messages = [r["message"] for r in db.rows("SELECT message FROM service_logs ORDER BY id")]
    assert messages == ["first", "second"]
