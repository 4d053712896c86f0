"""tradelog.configure(worker=True) delivers notifications from a background thread."""

from __future__ import annotations

import threading
from pathlib import Path

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tradelog._notify.preferences import update_preferences


def test_configured_worker_delivers_and_stops(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """notify() after configure(worker=True) reaches Telegram; shutdown stops the worker."""
    alice = users["alice"]
    with db.session() as session:
        update_preferences(session, alice, alice, telegram_chat_id="42", telegram_enabled=True)
        session.commit()
    with FakeBotApi() as api:
        tradelog.configure(
            database_url=db.url,
            log_dir=tmp_path,
            console=False,
            worker=True,
            telegram_bot_token=api.token,
            telegram_api_url=api.api_url,
        )
        try:
            result = tradelog.notify(alice, "trading", "info", "Filled", "INFY x5")
            assert result.created
            api.wait_for_messages(1, chat_id="42", timeout=10)
        finally:
            tradelog.shutdown()
    assert not any(t.name == "tradelog-delivery" for t in threading.enumerate())
    assert db.scalar("SELECT status FROM notification_deliveries") == "sent"
    assert db.scalar("SELECT telegram_sent FROM notifications") in (True, 1)
