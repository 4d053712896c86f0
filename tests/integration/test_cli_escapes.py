"""Stored text cannot drive the operator's terminal: every CLI command, human-readable output.

Hostile text (clear screen, window title, OSC 52 clipboard write, BEL, CR, backspace, DEL, an
8-bit CSI, a right-to-left override) is stored everywhere a command can show it: log rows,
error rows, resolution notes, notifications, delivery errors, trading configs, writer
statistics, legacy log lines, file paths. Every command of the CLI then runs; its stdout and
stderr must hold no terminal control character but newlines, and the hostile text must be
visible, escaped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tradelog._cli import build_parser, main
from tradelog._logs.stats import save
from tradelog._notify.channels.base import OutgoingMessage, Progress, SendReceipt
from tradelog._notify.preferences import update_preferences
from tradelog._notify.worker import DeliveryWorker
from tradelog.config import Settings
from tradelog.exceptions import PermanentDeliveryError
from tradelog.ml import mark_running, start_job
from tradelog.trading_config import update_config

HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;cGF5bG9hZA==\x07\rover\x08\x7f\x9b31m\u202eevil"
SHORT = "\x1b[2J\x1b]52;c;eA==\x07\r\x9b1m\u202e"  # for fields of at most 32 characters
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class RefusingChannel:
    """Refuses every message with the hostile text as the reason."""

    name = "telegram"

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        raise PermanentDeliveryError(f"refused: {HOSTILE}")

    async def aclose(self) -> None:
        return None


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = any(isinstance(a, argparse._SubParsersAction) for a in child._actions)
                yield from _commands(child, (*prefix, name)) if nested else [(*prefix, name)]


@pytest.fixture
def bot_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBotApi]:
    """A Bot API for `tradelog worker` and `notify test-channel` (configured by TRADELOG_*)."""
    with FakeBotApi() as api:
        monkeypatch.setenv("TRADELOG_TELEGRAM_BOT_TOKEN", api.token)
        monkeypatch.setenv("TRADELOG_TELEGRAM_API_URL", api.api_url)
        yield api


@pytest.fixture
def hostile_data(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bot_api: FakeBotApi,
) -> dict[str, object]:
    alice, admin = users["alice"], users["admin"]
    log_dir = tmp_path / f"logs{HOSTILE[:4]}"
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(log_dir))
    monkeypatch.setenv("TRADELOG_LOG_FILES_RETENTION_DAYS", "1")
    runtime = tradelog.configure(
        database_url=db.url, log_dir=log_dir, console=False, flush_interval=0.05, worker=False
    )
    tradelog.get_logger(f"mod{HOSTILE}", user_id=alice).warning(HOSTILE, detail=HOSTILE)
    try:
        raise RuntimeError(HOSTILE)
    except RuntimeError as exc:
        tradelog.capture_exception(exc, user_id=alice, note=HOSTILE)
    with db.session() as session:
        update_preferences(session, alice, alice, telegram_chat_id="42", telegram_enabled=True)
        update_config(session, admin, alice, task_schedule={"note": HOSTILE})
        session.commit()
    tradelog.notify(alice, "trading", "warning", f"title {HOSTILE}", f"body {HOSTILE}")
    assert runtime.flush(20)
    runtime.shutdown()
    refusing = DeliveryWorker(
        db.engine, Settings(database_url=db.url), channels={"telegram": RefusingChannel()}
    )
    asyncio.run(refusing.run_once())
    save(log_dir, {"pid": 999_999, "host": HOSTILE, "last_error": HOSTILE, "updated_at": "x"})
    old = log_dir / "users" / str(alice) / "service-2020-01-01.jsonl"
    old.write_text("{}\n")
    os.utime(old, (0, 0))
    legacy = tmp_path / "legacy" / "users" / f"user_{alice}" / "service_20240105.jsonl"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(
        json.dumps({"timestamp": "2024-01-05T09:00:00", "message": HOSTILE}) + "\n" + HOSTILE + "\n"
    )
    error_id = int(str(db.scalar("SELECT min(id) FROM error_logs")))
    fingerprint = str(db.scalar("SELECT fingerprint FROM error_logs WHERE id = :i", i=error_id))
    with db.session() as session:
        job = start_job(session, admin, model_type="m", algorithm=SHORT, training_data_path=HOSTILE)
        mark_running(session, admin, job.id)
        session.commit()
        job_id = job.id
    logs = tmp_path / "train.log"
    logs.write_text(HOSTILE)
    return {
        "alice": alice,
        "admin": admin,
        "legacy": legacy.parent.parent.parent,
        "error": error_id,
        "fingerprint": fingerprint,
        "job": job_id,
        "job_logs": logs,
    }


@pytest.mark.slow
def test_no_command_writes_control_characters(
    db: MigratedDatabase,
    hostile_data: dict[str, object],
    capsys: pytest.CaptureFixture[str],
) -> None:
    alice, admin, error, fingerprint, job, job_logs = (
        str(hostile_data[k]) for k in ("alice", "admin", "error", "fingerprint", "job", "job_logs")
    )
    as_admin = ["--as", admin]
    accounts = Path(job_logs).parent / "accounts.jsonl"
    accounts.write_text(json.dumps({"id": 78, "name": HOSTILE}) + "\n")
    runs: dict[tuple[str, ...], list[str]] = {
        ("db", "upgrade"): ["db", "upgrade"],
        ("db", "downgrade"): ["db", "downgrade", "head"],
        ("db", "current"): ["db", "current"],
        ("db", "check"): ["db", "check"],
        # without TRADELOG_PARTITION_LOGS=day it refuses (exit 2); test_log_partitions converts
        ("db", "partition-logs"): ["db", "partition-logs"],
        # the state only: test_search_index turns the indexes off and on
        ("db", "search-index"): ["db", "search-index"],
        ("logs",): ["logs", "--limit", "50"],
        ("config", "show"): ["config", "show", "--user", alice],
        ("config", "set"): ["config", "set", "--user", alice, "--as", admin, "task_schedule={}"],
        ("retention", "run"): ["retention", "run", "--dry-run"],
        ("import-legacy",): ["import-legacy", str(hostile_data["legacy"])],
        ("errors", "list"): ["errors", "list"],
        ("errors", "show"): ["errors", "show", error],
        ("errors", "groups"): ["errors", "groups"],
        ("errors", "ignore"): ["errors", "ignore", fingerprint, *as_admin],
        ("errors", "reopen"): ["errors", "reopen", fingerprint, *as_admin],
        ("errors", "resolve"): ["errors", "resolve", error, "--as", admin, "--notes", HOSTILE],
        ("status",): ["status"],
        ("notify", "send"): [
            "notify",
            "send",
            "--user",
            alice,
            "--type",
            "system",
            "--title",
            HOSTILE,
        ],
        ("notify", "list"): ["notify", "list", "--user", alice],
        ("notify", "unread"): ["notify", "unread", "--user", alice],
        ("notify", "read"): ["notify", "read", "--user", alice, "--all"],
        ("notify", "deliveries"): ["notify", "deliveries"],
        ("notify", "retry"): ["notify", "retry", "--all-failed"],
        ("notify", "test-channel"): ["notify", "test-channel", "--user", alice],
        ("prefs", "show"): ["prefs", "show", "--user", alice],
        ("prefs", "set"): ["prefs", "set", "--user", alice, "--timezone", "Asia/Kolkata"],
        ("worker",): ["worker", "--once"],
        ("audit",): ["audit"],
        ("users", "add"): ["users", "add", "77", "--name", HOSTILE, *as_admin],
        ("users", "sync"): ["users", "sync", str(accounts), *as_admin],
        ("users", "list"): ["users", "list"],
        ("ml", "complete"): [
            "ml",
            "complete",
            job,
            "--accuracy",
            "0.9",
            "--model-path",
            HOSTILE,
            "--logs",
            job_logs,
            *as_admin,
        ],
        ("ml", "register"): [
            "ml",
            "register",
            "--type",
            "m",
            "--version",
            "v1",
            "--path",
            HOSTILE,
            "--job",
            job,
            *as_admin,
        ],
        ("ml", "activate"): ["ml", "activate", "--type", "m", "--version", "v1", *as_admin],
        ("ml", "start"): [
            "ml",
            "start",
            "--type",
            "m",
            "--algorithm",
            SHORT,
            "--data",
            HOSTILE,
            *as_admin,
        ],
        ("ml", "running"): ["ml", "running", str(int(job) + 1), *as_admin],
        ("ml", "fail"): ["ml", "fail", str(int(job) + 1), "--error", HOSTILE, *as_admin],
        ("ml", "jobs"): ["ml", "jobs"],
        ("ml", "job"): ["ml", "job", job],
        ("ml", "models"): ["ml", "models"],
        ("ml", "active"): ["ml", "active", "--type", "m"],
        ("ml", "effective"): ["ml", "effective", "--user", alice, "--type", "m"],
        ("ml", "deactivate"): ["ml", "deactivate", "--type", "m", *as_admin],
        # without TRADELOG_WEB_ADMIN_TOKEN serve refuses (exit 2); serving is in tests/web
        ("serve",): ["serve", "--port", "1"],
    }
    assert set(runs) == set(_commands(build_parser()))  # every command of the CLI
    shown = []
    codes = {}
    for name, argv in runs.items():
        capsys.readouterr()
        codes[name] = main(["--database-url", db.url, *argv])
        captured = capsys.readouterr()
        text = captured.out + captured.err
        assert CONTROL.search(text) is None, (name, CONTROL.findall(text), text[:400])
        shown.append(text)
    assert codes.pop(("serve",)) == 2
    assert codes.pop(("db", "partition-logs")) == 2
    failed = {name: code for name, code in codes.items() if code not in (0, 1)}
    assert failed == {}  # every command ran (1: found a problem, e.g. a refused delivery)
    everything = "\n".join(shown)
    assert "\\x1b[2J" in everything  # the hostile text is there, escaped
    assert "\\x1b]52;c;cGF5bG9hZA==\\x07" in everything
    assert "\\u202eevil" in everything
