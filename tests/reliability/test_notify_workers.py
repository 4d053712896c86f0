"""Several ``tradelog worker`` processes sharing one outbox and one bot's rate limits."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog.users import create_user

REPO = Path(__file__).resolve().parents[2]
USERS = 50
PER_USER = 2


def start_worker(db: MigratedDatabase, api: FakeBotApi, name: str) -> subprocess.Popen[str]:
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
    busy = [s for s in stats if s["sent"] > 0]
    assert len(busy) >= 2, stats
    rows = db.rows("SELECT status, attempts, claimed_by FROM notification_deliveries")
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["attempts"] for r in rows} == {1}
    by_worker = Counter(str(r["claimed_by"]) for r in rows)
    assert set(by_worker) <= {"worker-0", "worker-1", "worker-2"}
    for chat in {m.chat_id for m in sent}:
        times = [m.processed_monotonic for m in api.sent_messages(chat)]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))
