"""The secrets matrix: every shape a secret arrives in, against every place tradelog writes.

Each shape carries its own secret (and a visible marker next to it, so the test also checks
that the value really reached the sink, scrubbed). The sinks: the console, the host's own
logging handlers (root and the HTTP libraries at DEBUG), the log files (rotated ``.gz``
segments included), the spool and the error spill files (written while the database is
unreachable), the dead letters, the ``_runtime`` files, every database table, the output of
the CLI commands that show stored text, the requests the Bot API received and the mail the
SMTP server received. A leak is reported as (shape, sink).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.fake_bot_api import FakeBotApi
from tests.support.logs import everything_written
from tests.support.smtp_server import SmtpServer
from tradelog._cli import main
from tradelog._db.base import Base
from tradelog._notify.channels.base import OutgoingMessage, Progress, SendReceipt
from tradelog._notify.dispatch import dispatch
from tradelog._notify.preferences import update_preferences
from tradelog._notify.worker import DeliveryWorker
from tradelog.audit import record_audit
from tradelog.config import Settings
from tradelog.errors import resolve
from tradelog.trading_config import update_config

SMTP_PASSWORD = "smtpPw-Q7v!x2"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0cmFkZXI3In0.c2lnbmF0dXJlLWp3dC0wMDQ"
PGP_BODY = "lQOYBGXtradelogPGPsecretBODY0005"
TRUNCATED_TOKEN = "555666777:AAtruncTESTsecretPART0000000000000000"

SHAPES: dict[str, str] = {
    "bot token in a URL": "AAbotURLsecret0001aaaaaaaaaaaaaaaaaaaa",
    "password key, nested": "nestedPw-0002",
    "exception args tuple": "argsApiKey0003",
    "header list": "hdrToken0004",
    "header list api key": "hdrApiKey0004b",
    "bare JWT": JWT.split(".")[2],
    "jwt key": "jwtValue0006a",
    "auth_code key": "authCode0006b",
    "signing_key key": "signKey0006c",
    "twofa key": "twofa0006d",
    "free text API Key": "freeApiKey0007",
    "=> pair": "rubyPw0008",
    "lowercase bearer": "lowerbearersecret0009xyzab",
    "PGP private key": PGP_BODY,
    "URL password with /": "url/pass0011",
    "password with punctuation": "Tr0ub;REST0012",
    "passphrase with spaces": "correct horse battery0012",
    "local pw": "localPw0013",
    "local creds": "localCreds0013",
    "user_id Bearer": "userIdBearer0014secretxyz",
    "notify title": "titleTok0015",
    "notify message": "msgPw0015",
    "audit password": "auditPw0016",
    "audit nested token": "auditTok0016",
    "resolution notes": "notesPw0017",
    "task_schedule key": "schedKey0018",
    "task_schedule text": "schedTok0018",
    "worker unexpected error": "workerErrPw0019",
    "token cut by truncation": TRUNCATED_TOKEN.split(":")[1][:12],
    "task error cut by truncation": "taskCut0020Secret",
    "SMTP password setting": SMTP_PASSWORD,
}


class BrokerError(Exception):
    """An exception whose args hold a key and its value."""


class ExplodingChannel:
    """A channel whose send fails in a way the worker does not expect."""

    name = "telegram"

    async def send(
        self, message: OutgoingMessage, *, start_part: int = 0, progress: Progress | None = None
    ) -> SendReceipt:
        raise RuntimeError(f"broker said password={SHAPES['worker unexpected error']}")

    async def aclose(self) -> None:
        return None


def _log_shapes(user_id: int, bot_token: str) -> None:
    """Log every log-borne shape once (M markers prove the lines arrived)."""
    log = tradelog.get_logger("broker.matrix", user_id=user_id)
    log.info(f"M01 polling https://api.telegram.org/bot{bot_token}/getUpdates")
    log.info("M02 login", creds={"password": SHAPES["password key, nested"]})
    try:
        raise BrokerError("api_key", SHAPES["exception args tuple"])
    except BrokerError:
        log.exception("M03 broker call failed")
    log.info(
        "M04 request",
        headers=[
            ("Authorization", f"Token {SHAPES['header list']}"),
            ("X-Api-Key", SHAPES["header list api key"]),
        ],
    )
    log.info(f"M05 session {JWT} opened")
    log.info(
        "M06 keys",
        jwt=SHAPES["jwt key"],
        auth_code=SHAPES["auth_code key"],
        signing_key=SHAPES["signing_key key"],
        twofa=SHAPES["twofa key"],
    )
    log.info(f"M07 API Key: {SHAPES['free text API Key']}")
    log.info(f"M08 {{'password' => '{SHAPES['=> pair']}'}}")
    log.info(f"M09 retry with bearer {SHAPES['lowercase bearer']}")
    log.info(
        f"M10 key -----BEGIN PGP PRIVATE KEY BLOCK-----\n{PGP_BODY}\n"
        "-----END PGP PRIVATE KEY BLOCK-----"
    )
    log.info(f"M11 dsn postgresql://trader:{SHAPES['URL password with /']}@db/prod")
    log.info(
        f"M12 password={SHAPES['password with punctuation']} "
        f"passphrase: {SHAPES['passphrase with spaces']}"
    )
    log.info("M14 odd user", user_id=f"Bearer {SHAPES['user_id Bearer']}")
    logging.getLogger("broker.std").warning(
        "M12 std password=%s", SHAPES["password with punctuation"]
    )


def _capture_shapes(user_id: int) -> None:
    """Errors whose locals, context and truncated text hold secrets."""

    def place_order() -> None:
        pw = SHAPES["local pw"]
        creds = {"user": "trader", "value": SHAPES["local creds"]}
        raise BrokerError("order refused", pw[:0], creds["user"])

    try:
        place_order()
    except BrokerError as exc:
        tradelog.capture_exception(exc, user_id=user_id, note="M13 locals")
    try:
        raise ValueError("M20 cut")
    except ValueError as exc:
        tradelog.capture_exception(exc, user_id=user_id, blob="x" * 2040 + TRUNCATED_TOKEN)
    with pytest.raises(RuntimeError), tradelog.track_task(user_id, "M20 task"):
        raise RuntimeError("y" * 500 + f" token={SHAPES['task error cut by truncation']}")


def _table_text(db: MigratedDatabase) -> dict[str, str]:
    texts = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = [dict(r._mapping) for r in connection.execute(select(table))]
            texts[f"table {table.name}"] = json.dumps(rows, default=str, ensure_ascii=False)
    return texts


def _cli_text(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str], error_ids: list[int]
) -> str:
    commands = [
        ["logs", "--limit", "500"],
        ["--json", "logs", "--limit", "500"],
        ["errors", "list"],
        *[["errors", "show", str(i)] for i in error_ids],
        ["--json", "errors", "list"],
        ["notify", "list"],
        ["notify", "deliveries"],
        ["--json", "notify", "deliveries"],
        ["status"],
        ["--json", "status"],
    ]
    capsys.readouterr()
    outputs = []
    for argv in commands:
        main(["--database-url", db.url, *argv])
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    return "\n".join(outputs)


@pytest.fixture
def servers() -> Iterator[tuple[FakeBotApi, SmtpServer]]:
    with (
        FakeBotApi() as api,
        SmtpServer(security="none", auth_required=True, password=SMTP_PASSWORD) as smtp,
    ):
        yield api, smtp


def test_no_secret_in_any_sink(  # noqa: PLR0917 - the fixtures this scenario needs
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    servers: tuple[FakeBotApi, SmtpServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api, smtp = servers
    alice, bob, admin = users["alice"], users["bob"], users["admin"]
    bot_secret = api.token.split(":", 1)[1]
    secrets = {**SHAPES, "configured bot token": bot_secret}
    with db.session() as session:
        update_preferences(
            session,
            alice,
            alice,
            telegram_chat_id="4242",
            telegram_enabled=True,
            email_address="alice@example.com",
            email_enabled=True,
        )
        update_preferences(session, bob, bob, telegram_chat_id="4343", telegram_enabled=True)
        session.commit()

    host_records: list[str] = []

    class HostHandler(logging.Handler):
        """The host's own handler: what tradelog and the libraries it drives log reaches it
        (the host's own ``broker.*`` lines are the host's business and not collected)."""

        def emit(self, record: logging.LogRecord) -> None:
            if not record.name.startswith("broker."):
                host_records.append(self.format(record))

    host = HostHandler(level=logging.DEBUG)
    host.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(host)
    library_levels = {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "telegram")}
    for name in library_levels:
        logging.getLogger(name).setLevel(logging.DEBUG)
    log_dir = tmp_path / "logs"
    monkeypatch.setenv("TRADELOG_LOG_DIR", str(log_dir))
    try:
        runtime = tradelog.configure(
            database_url=db.url,
            log_dir=log_dir,
            console=True,
            capture_locals=True,
            file_max_bytes=1024,
            flush_interval=0.05,
            telegram_bot_token=api.token,
            telegram_api_url=api.api_url,
            smtp_host=smtp.host,
            smtp_port=smtp.port,
            smtp_security="none",
            smtp_username=smtp.username,
            smtp_password=SMTP_PASSWORD,
            smtp_from="alerts@tradelog.example",
        )
        root.setLevel(logging.DEBUG)
        _log_shapes(alice, api.token)
        _capture_shapes(alice)
        result = tradelog.notify(
            alice,
            "error",
            "error",
            f"M15 order failed token={SHAPES['notify title']}",
            f"M15 broker said password={SHAPES['notify message']} while placing",
        )
        assert result.created
        api.wait_for_messages(1, chat_id="4242", timeout=20)
        smtp.wait_for_messages(1, timeout=20)
        with tradelog.session() as session:
            record_audit(
                session,
                user_id=admin,
                action="M16",
                resource_type="broker_account",
                changes={
                    "password": SHAPES["audit password"],
                    "nested": {"deeper": [{"token": SHAPES["audit nested token"]}]},
                },
            )
            update_config(
                session,
                admin,
                alice,
                task_schedule={
                    "broker": {"api_key": SHAPES["task_schedule key"]},
                    "note": f"M18 token={SHAPES['task_schedule text']}",
                },
            )
            session.commit()
        runtime.flush(20)  # False: rows of unknown users among the shapes are dead letters
        assert runtime.flush(5)
        with tradelog.session() as session:
            error_ids = [
                int(i) for i in session.scalars(select(Base.metadata.tables["error_logs"].c.id))
            ]
            resolve(
                session, error_ids[0], admin, f"M17 rotated password={SHAPES['resolution notes']}"
            )
            session.commit()
        tradelog.shutdown()

        # The worker's unexpected failure, recorded and logged (to the host's handlers too).
        with db.session() as session:
            dispatch(session, bob, "trading", "info", "M19", "exploding channel")
            session.commit()
        explode = DeliveryWorker(
            db.engine, Settings(database_url=db.url), channels={"telegram": ExplodingChannel()}
        )
        import asyncio

        asyncio.run(explode.run_once())

        # While the database is unreachable: rows to the spool, error rows to the spill file.
        outage = tradelog.configure(
            database_url="postgresql://tradelog@127.0.0.1:9/nowhere",
            log_dir=log_dir,
            console=False,
            capture_locals=True,
            db_write_timeout=0.3,
        )
        _log_shapes(alice, api.token)
        _capture_shapes(alice)
        outage.flush(2.0)
        outage.shutdown(3.0)
    finally:
        root.removeHandler(host)
        for name, level in library_levels.items():
            logging.getLogger(name).setLevel(level)

    console = capsys.readouterr()
    sinks: dict[str, str] = {
        "console": console.err + console.out,
        "host handlers": "\n".join(host_records),
        "log files (with .gz)": everything_written(log_dir),
        "spool": everything_written(log_dir / "_spool"),
        "dead letters": everything_written(log_dir / "_dead_letter"),
        "_runtime": everything_written(log_dir / "_runtime"),
        **_table_text(db),
        "CLI": _cli_text(db, capsys, error_ids),
        "Bot API requests": json.dumps(
            [r.params for r in api.requests], default=str, ensure_ascii=False
        ),
        "SMTP messages": "\n".join(m.raw.decode("utf-8", "replace") for m in smtp.messages),
    }

    # The shapes reached the sinks (so a leak would have shown).
    assert list(log_dir.rglob("*.jsonl.gz")), "no rotated segment was written"
    for marker in ("M01", "M03", "M06", "M10", "M12"):
        assert marker in sinks["log files (with .gz)"], marker
        assert marker in sinks["table service_logs"], marker
        assert marker in sinks["spool"], marker
    assert "M14" in sinks["dead letters"]
    assert "M13" in sinks["table error_logs"]
    assert "M20" in sinks["table error_logs"]
    assert "errors-unwritten-" in " ".join(p.name for p in (log_dir / "_runtime").iterdir())
    for sink in ("Bot API requests", "SMTP messages", "table notifications", "CLI"):
        assert "M15" in sinks[sink], sink
    assert "M16" in sinks["table audit_logs"]
    assert "task_schedule" in sinks["table audit_logs"]
    assert "M17" in sinks["table error_logs"]
    assert "M18" in sinks["table user_trading_config"]
    assert "broker said" in sinks["table notification_deliveries"]
    assert "HTTP Request" in sinks["host handlers"]
    assert "unexpected error" in sinks["host handlers"]
    assert smtp.auth_attempts
    assert smtp.auth_attempts[0].success

    leaks = sorted(
        (shape, sink)
        for shape, secret in secrets.items()
        for sink, text in sinks.items()
        if secret in text
    )
    assert leaks == [], f"secrets leaked (shape, sink): {leaks}"
    matrix = {(shape, sink) for shape in secrets for sink in sinks}
    assert len(matrix) == len(secrets) * len(sinks) >= 30 * 10
