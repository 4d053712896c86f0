"""Several ``tradelog worker`` processes sharing one outbox and one bot's rate limits, and a
worker killed while its sends are in flight."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi, delay
from tradelog._notify import outbox
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog.users import create_user

# Untraced by coverage (no_cover): the volume repeats paths the unit and integration tests cover.
pytestmark = [pytest.mark.slow, pytest.mark.no_cover]

REPO = Path(__file__).resolve().parents[2]
USERS = 50
PER_USER = 2


def start_worker(
    db: MigratedDatabase, api: FakeBotApi, name: str, **extra: str
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TRADELOG_DATABASE_URL": db.url,
        "TRADELOG_TELEGRAM_BOT_TOKEN": api.token,
        "TRADELOG_TELEGRAM_API_URL": api.api_url,
        "TRADELOG_WORKER_POLL_INTERVAL": "0.05",
        "TRADELOG_WORKER_CONCURRENCY": "6",
        # Paced well under Telegram's 30/s so a loaded test machine cannot push a late message
        # into the next second; three unshared limiters would still send 60/s and be refused.
        "TRADELOG_TELEGRAM_RATE": "20",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tradelog", "--json", "worker", "--name", name],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_three_workers_send_each_delivery_exactly_once(db: MigratedDatabase) -> None:
    """100 deliveries, 3 processes: every one sent once, Telegram's limits never exceeded."""
    user_ids = []
    with db.session() as session:
        for i in range(USERS):
            user = create_user(session, email=f"trader{i}@example.com", name=f"T{i}")
            update_preferences(
                session, user.id, user.id, telegram_chat_id=str(1000 + i), telegram_enabled=True
            )
            user_ids.append(user.id)
        session.commit()
    with FakeBotApi(enforce_limits=True) as api:
        workers = [start_worker(db, api, f"worker-{n}") for n in range(3)]
        try:
            time.sleep(1.0)  # let all three start polling before the burst lands
            with db.session() as session:
                for round_ in range(PER_USER):
                    for user_id in user_ids:
                        dispatch(
                            session, user_id, "trading", "info", f"fill {round_}", f"u{user_id}"
                        )
                session.commit()
            api.wait_for_messages(USERS * PER_USER, timeout=60)
            time.sleep(0.5)
        finally:
            outputs = []
            for process in workers:
                process.send_signal(signal.SIGTERM)
            for process in workers:
                out, err = process.communicate(timeout=30)
                outputs.append((process.returncode, out, err))
    for code, _out, err in outputs:
        assert code == 0, err
    sent = api.sent_messages()
    keys = Counter((m.chat_id, (m.text or "").split("\n")[0], (m.text or "")) for m in sent)
    assert len(sent) == USERS * PER_USER
    assert max(keys.values()) == 1
    assert api.limit_violations == 0
    stats = [json.loads(out)[0] for _code, out, _err in outputs]
    assert sum(s["sent"] for s in stats) == USERS * PER_USER
    rows = db.rows("SELECT status, attempts, claimed_by FROM notification_deliveries")
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["attempts"] for r in rows} == {1}
    by_worker = Counter(str(r["claimed_by"]) for r in rows)
    assert set(by_worker) <= {"worker-0", "worker-1", "worker-2"}
    for chat in {m.chat_id for m in sent}:
        times = [m.processed_monotonic for m in api.sent_messages(chat)]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def _users(db: MigratedDatabase, count: int) -> list[int]:
    ids = []
    with db.session() as session:
        for i in range(count):
            user = create_user(session, email=f"k{i}@example.com", name=f"K{i}")
            update_preferences(
                session, user.id, user.id, telegram_chat_id=str(2000 + i), telegram_enabled=True
            )
            ids.append(user.id)
        session.commit()
    return ids


def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_killed_worker_leaves_its_claims_for_another_within_one_lease(
    db: MigratedDatabase,
) -> None:
    """A worker SIGKILLed while its requests are out (the Bot API answers only after 1.5 s):
    ``status`` shows its unrenewed claims as stuck and exits 1; once the 2 s lease ran out
    another worker sends them. Every message arrives; the only copies are the ones whose
    request was already out when the worker died (the README's at-least-once window); none
    fails."""
    count = 12
    user_ids = _users(db, count)
    with FakeBotApi() as api:
        for i in range(count):
            api.script(chat_id=2000 + i, method="sendMessage", responses=[delay(1.5)])
        lease = {"TRADELOG_WORKER_LEASE": "2", "TRADELOG_WORKER_CONCURRENCY": "4"}
        first = start_worker(db, api, "doomed", **lease)
        try:
            with db.session() as session:
                for user_id in user_ids:
                    dispatch(session, user_id, "trading", "info", "fill", f"u{user_id}")
                session.commit()
            _wait_for(lambda: _count(db, "sending") >= 4, timeout=30)
            time.sleep(0.3)  # the requests are on their way
            in_flight = _count(db, "sending")
        finally:
            first.kill()
            first.communicate(timeout=30)
        _wait_for(lambda: _stuck(db) > 0, timeout=10)
        status = subprocess.run(
            [sys.executable, "-m", "tradelog", "--database-url", db.url, "--json", "status"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 1, status.stderr
        assert json.loads(status.stdout)["outbox"]["stuck"] >= 1
        second = start_worker(db, api, "rescuer", **lease)
        try:
            _wait_for(lambda: _count(db, "sent") == count, timeout=60)
            time.sleep(2.0)  # any late answer to the dead worker's requests lands too
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=30)
        copies = Counter(m.chat_id for m in api.sent_messages())
    assert len(copies) == count  # received: every message
    duplicated = sum(n - 1 for n in copies.values())
    assert duplicated <= in_flight  # only the requests that were out when it died
    assert _count(db, "failed") == 0
    assert {r["claimed_by"] for r in db.rows("SELECT claimed_by FROM notification_deliveries")} <= {
        "doomed",
        "rescuer",
    }


def _count(db: MigratedDatabase, status: str) -> int:
    return int(
        str(db.scalar("SELECT count(*) FROM notification_deliveries WHERE status = :s", s=status))
    )


def _stuck(db: MigratedDatabase) -> int:
    with db.session() as session:
        return int(outbox.backlog_summary(session)["stuck"])
