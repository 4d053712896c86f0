"""No secret reaches any sink: rows, files, console, spool, dead letters, observers."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy.engine import make_url

import tradelog
from tests.support import clients
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tests.support.logs import everything_written, running

PASSWORD = "hunter2-ZX81"
BOT_TOKEN = "987654321:AAH-fakeTokenFakeTokenFakeToken1234567"
BEARER = "eyJhbGciOiJIUzI1NiJ9.fakePayload.fakeSig"
DSN_PASSWORD = "s3cr3t-Pa55"
API_KEY = "AKIAFAKEKEY123456"
MPIN = "482913"
TOTP = "775511"
COOKIE = "abcDEF123456cookie"
SMTP_PASSWORD = "smtp-Pw-0042"

SECRETS = [PASSWORD, BOT_TOKEN, BEARER, DSN_PASSWORD, API_KEY, MPIN, TOTP, COOKIE, SMTP_PASSWORD]
BOT_SECRET_PART = BOT_TOKEN.split(":")[1]


def _log_everything(log_dir: Path, user_id: int) -> None:
    log = tradelog.get_logger("broker.session", user_id=user_id)
    log.info("login", password=PASSWORD, api_key=API_KEY, mpin=MPIN, totp_code=TOTP)
    log.info(
        "request",
        headers={"Authorization": f"Bearer {BEARER}", "Cookie": f"sessionid={COOKIE}"},
        nested=[{"deeper": {"client_secret": PASSWORD}}],
    )
    log.warning(f"HTTP Request: POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage")
    log.info("connecting", dsn=f"postgresql://trader:{DSN_PASSWORD}@db:5432/prod")
    log.info(f"retrying with Authorization: Bearer {BEARER}")
    log.info("raw bytes", payload=f"token={API_KEY}".encode())
    try:
        raise RuntimeError(f"auth failed: password={PASSWORD} mpin={MPIN}")
    except RuntimeError:
        log.exception("broker login failed", totp=TOTP)
    logging.getLogger("httpx").info(
        'HTTP Request: %s %s "HTTP/1.1 200 OK"',
        "POST",
        f"https://api.telegram.org/bot{BOT_TOKEN}/getUpdates",
    )
    logging.getLogger("broker.std").error(
        "std login", extra={"user_id": user_id, "password": PASSWORD, "api_key": API_KEY}
    )
    runtime = tradelog._runtime.current()
    assert runtime is not None
    log.info("configured with", settings=runtime.settings)
    log.info("unknown user", user_id=987_654_321, password=PASSWORD)
    log.info("bad user", user_id="nobody", mpin=MPIN)
    tradelog.get_logger("system").info(f"bot {BOT_TOKEN} started", smtp_password=SMTP_PASSWORD)


def _assert_clean(text: str, where: str) -> None:
    for secret in [*SECRETS, BOT_SECRET_PART]:
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_no_secret_reaches_any_sink(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Log secrets in every shape (with the console on, during an outage, for bad users) and
    search every sink for them."""
    observed: list[str] = []

    def observer(exc_info: Any, event: Any) -> None:
        observed.append(json.dumps(dict(event), default=str))

    spool_text = ""
    with running(
        db.url,
        tmp_path,
        console=True,
        db_write_timeout=0.3,
        unknown_users="reject",  # the unknown user's row goes to the dead-letter file
        smtp_password=SMTP_PASSWORD,
        telegram_bot_token=BOT_TOKEN,
    ) as runtime:
        runtime.add_exception_observer(observer)
        _log_everything(tmp_path, users["alice"])
        assert not runtime.flush(20)  # the unknown user's row is in the dead-letter file
        assert runtime.flush(20)  # and nothing else is missing from the database
        if db.backend == "sqlite":
            # Once more while the database is locked, so the rows go through the spool.
            path = make_url(db.url).database
            assert path is not None
            blocker = sqlite3.connect(path, isolation_level=None, timeout=10)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                _log_everything(tmp_path, users["bob"])
                assert not runtime.flush(1.0)
                assert runtime.stats()["spooled"] > 0
                spool_text = everything_written(tmp_path / "_spool")
            finally:
                blocker.execute("COMMIT")
                blocker.close()
            assert spool_text
            assert not runtime.flush(20)  # this round's unknown-user row: dead-lettered again
        assert runtime.flush(20)
        stats = runtime.stats()

    assert stats["dead_lettered"] >= 2
    rows = db.rows("SELECT * FROM service_logs")
    assert len(rows) >= 9
    _assert_clean(json.dumps(rows, default=str), "service_logs rows")
    files = everything_written(tmp_path)
    assert "broker login failed" in files
    _assert_clean(files, "files (log, dead-letter, runtime)")
    _assert_clean(spool_text, "the spool")
    console = capsys.readouterr()
    assert "broker login failed" in console.err
    _assert_clean(console.err + console.out, "the console")
    assert observed
    _assert_clean("\n".join(observed), "exception observers")


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_real_http_client_logging_never_shows_the_bot_token(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    level: str,
) -> None:
    """httpx logs every request URL - with the bot token in it - at INFO, httpcore and
    python-telegram-bot more at DEBUG; an HTTP error names the URL. After configure none of
    it shows the token in a row, a file or on the console (httpx and httpcore taken in at
    every level here: by default TRADELOG_LOGGER_LEVELS keeps them at WARNING)."""
    telegram = pytest.importorskip("telegram")
    with FakeBotApi() as fake:
        token = fake.token
        secret = token.split(":", 1)[1]
        with running(db.url, tmp_path, console=True, level=level, logger_levels="") as runtime:
            structlog.contextvars.bind_contextvars(user_id=users["alice"])
            try:
                assert clients.request("GET", fake.method_url("getMe")).status_code == 200
                try:
                    clients.request("GET", fake.method_url("noSuchMethod")).raise_for_status()
                except httpx.HTTPStatusError:
                    tradelog.get_logger("bot").exception("Bot API call failed")

                async def send() -> None:
                    bot = telegram.Bot(
                        token, base_url=fake.base_url, base_file_url=fake.base_file_url
                    )
                    async with bot:
                        await bot.send_message(chat_id=42, text="order filled")

                asyncio.run(send())
            finally:
                structlog.contextvars.clear_contextvars()
            assert runtime.flush(20)
        assert [m.text for m in fake.sent_messages(42)] == ["order filled"]
    rows = db.rows("SELECT module, message, context FROM service_logs")
    requests = [r["message"] for r in rows if r["module"] == "httpx"]
    assert any("/bot123456789:[REDACTED]/sendMessage" in m for m in requests), requests
    assert any("noSuchMethod" in json.dumps(r["context"], default=str) for r in rows)
    console = capsys.readouterr()
    for where, text in [
        ("service_logs rows", json.dumps(rows, default=str)),
        ("files", everything_written(tmp_path)),
        ("the console", console.err + console.out),
    ]:
        assert "sendMessage" in text, where
        assert secret not in text, f"the bot token leaked into {where}"


BROKER_KEY = "kite_9fQ2xL7vR4mT8wZp"
"""A broker API key with no key word before it where it is logged."""
SMTP_BARE = "smtp-Pw-0042"


@pytest.mark.slow
@pytest.mark.parametrize("log_writer", ["thread", "process"])
def test_known_secret_values_are_masked_wherever_they_stand(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    log_writer: str,
) -> None:
    """A secret logged bare, with no key name before it, is masked when its value is known:
    the host's own (``redact_values``) and tradelog's (the SMTP password); in rows, error rows,
    files and the console, with either writer."""
    with running(
        db.url,
        tmp_path,
        console=True,
        log_writer=log_writer,
        redact_values=[BROKER_KEY],
        smtp_password=SMTP_BARE,
    ) as runtime:
        log = tradelog.get_logger("broker", user_id=users["alice"])
        log.info(f"placing order with key {BROKER_KEY}")
        log.info("order", note=f"signed by {BROKER_KEY} at 09:15", keys=[BROKER_KEY])
        log.warning(f"smtp login as trader with {SMTP_BARE} refused")
        try:
            raise RuntimeError(f"broker refused {BROKER_KEY}")
        except RuntimeError:
            log.exception("order failed")
        assert runtime.flush(20)
    rows = db.rows("SELECT message, context FROM service_logs")
    errors = db.rows("SELECT error_message, traceback, context FROM error_logs")
    assert any(r["message"] == "placing order with key [REDACTED]" for r in rows)
    assert errors
    console = capsys.readouterr()
    for where, text in [
        ("service_logs", json.dumps(rows, default=str)),
        ("error_logs", json.dumps(errors, default=str)),
        ("files", everything_written(tmp_path)),
        ("console", console.err + console.out),
    ]:
        assert BROKER_KEY not in text, f"the broker key leaked into {where}"
        assert SMTP_BARE not in text, f"the SMTP password leaked into {where}"
