"""tradelog beside the host's own logging: ``take_over=False`` with ``tradelog.processor`` and
``tradelog.Handler``, the take-over that keeps the host's structlog chain, console and root
level, per-logger levels, a later ``dictConfig``, and events before ``configure()``."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import tradelog
from tests.support import clients
from tests.support.db import MigratedDatabase
from tests.support.logs import file_records, running

REPO = Path(__file__).resolve().parents[2]
HERE = __name__


def _rows(db: MigratedDatabase) -> list[tuple[Any, ...]]:
    return [
        (r["user_id"], r["level"], r["module"], r["message"])
        for r in db.rows("SELECT user_id, level, module, message FROM service_logs ORDER BY id")
    ]


def _host_chain(out: io.StringIO, *, with_tradelog: bool) -> list[Any]:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if with_tradelog:
        processors.append(tradelog.processor)
    processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    return processors


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}:{record.getMessage()}")


@pytest.fixture
def host_root() -> Iterator[_ListHandler]:
    """The host's own root configuration: a handler of its own, level WARNING."""
    root = logging.getLogger()
    handler = _ListHandler()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    yield handler
    root.removeHandler(handler)


def test_take_over_false_leaves_the_hosts_logging_alone(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, host_root: _ListHandler
) -> None:
    """configure(take_over=False) changes neither structlog's configuration nor the root
    logger; the host's chain with ``tradelog.processor`` prints exactly what it printed
    without it, and ``tradelog.Handler`` from dictConfig feeds the same pipeline."""
    alice = users["alice"]
    plain, fed = io.StringIO(), io.StringIO()
    _host_chain(plain, with_tradelog=False)
    structlog.get_logger("orders").info("placed", user_id=alice, qty=3)
    processors = _host_chain(fed, with_tradelog=True)
    config = structlog.get_config()
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.Logger.callHandlers)
    with running(db.url, tmp_path, take_over=False, console=True) as runtime:
        assert structlog.get_config() == config
        assert structlog.get_config()["processors"] is processors
        assert (list(root.handlers), root.level, logging.Logger.callHandlers) == before
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"tradelog": {"class": "tradelog.Handler", "level": "INFO"}},
                "loggers": {"legacy": {"level": "INFO", "handlers": ["tradelog"]}},
            }
        )
        structlog.get_logger("orders").info("placed", user_id=alice, qty=3)
        logging.getLogger("legacy.feed").info("stdlib via dictConfig", extra={"user_id": alice})
        try:
            raise ValueError("broker rejected")
        except ValueError:
            structlog.get_logger("orders").exception("order failed", user_id=alice)
        assert runtime.flush(10)
    assert fed.getvalue().splitlines()[0] == plain.getvalue().strip()
    assert json.loads(fed.getvalue().splitlines()[1])["exception"].startswith("Traceback")
    # PrintLogger has no name (structlog drops "orders"): the module is the calling module
    assert _rows(db) == [
        (alice, "INFO", HERE, "placed"),
        (alice, "INFO", "legacy.feed", "stdlib via dictConfig"),
        (alice, "ERROR", HERE, "order failed"),
    ]
    assert db.scalar("SELECT error_type FROM error_logs WHERE user_id = :u", u=alice) == (
        "ValueError"
    )
    # the host's own configuration decides what its handlers get (legacy is at INFO)
    assert host_root.messages == ["legacy.feed:stdlib via dictConfig"]


def test_take_over_keeps_a_hosts_structlog_chain(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Structlog configured by the host before configure(): tradelog joins its chain (before
    the renderer), the host's JSON lines stay as they were, tradelog prints no second line,
    and its processor leaves the chain at shutdown."""
    out = io.StringIO()
    _host_chain(out, with_tradelog=False)
    processors = structlog.get_config()["processors"]
    early = structlog.get_logger("cached")
    early.info("cached before configure")  # structlog caches this logger's processors
    with running(db.url, tmp_path, console=True) as runtime:
        assert structlog.get_config()["processors"] is processors
        assert len(processors) == 5
        early.info("cached logger", user_id=users["bob"])
        structlog.get_logger().warning("unnamed", user_id=users["bob"])
        assert runtime.flush(10)
    assert len(processors) == 4  # the feed left with the runtime
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "cached before configure",
        "cached logger",
        "unnamed",
    ]
    assert lines[1] == {"user_id": users["bob"], "event": "cached logger", "level": "info"}
    assert _rows(db) == [
        (users["bob"], "INFO", HERE, "cached logger"),
        (users["bob"], "WARNING", HERE, "unnamed"),
    ]
    assert "cached logger" not in capsys.readouterr().err


def test_take_over_console_lines_are_never_doubled(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host handler printing to stderr: each stdlib line appears once (the host's). Without
    one: once (tradelog's), and Python's last-resort output does not repeat a warning."""
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("HOST %(name)s %(message)s"))
    with running(db.url, tmp_path, console=True):
        root.addHandler(console)
        try:
            logging.getLogger("app").warning("printed by the host")
        finally:
            root.removeHandler(console)
        logging.getLogger("app").warning("printed by tradelog")
    err = capsys.readouterr().err
    assert err.count("printed by the host") == 1
    assert "HOST app printed by the host" in err
    assert err.count("printed by tradelog") == 1


def test_the_hosts_handlers_see_what_they_saw_before(
    db: MigratedDatabase,
    users: dict[str, int],
    tmp_path: Path,
    host_root: _ListHandler,
) -> None:
    """With the host's root at WARNING, tradelog takes INFO from stdlib loggers without any
    of it - httpx's request lines above all - reaching the host's handlers; the root level is
    the host's again after shutdown, and once the host sets it, it stays the host's."""
    alice = users["alice"]
    with running(db.url, tmp_path, level="DEBUG") as runtime:
        logging.getLogger("httpx").info("HTTP Request: POST https://api.example/bot1:x/send")
        logging.getLogger("httpcore.connection").debug("connect_tcp.started")
        logging.getLogger("app").info("info for tradelog only", extra={"user_id": alice})
        logging.getLogger("app").warning("warning for both", extra={"user_id": alice})
        logging.getLogger().setLevel(logging.INFO)  # the host changes its mind
        logging.getLogger("app").info("now the host's too", extra={"user_id": alice})
        logging.getLogger().setLevel(logging.WARNING)
        assert runtime.flush(10)
    assert host_root.messages == ["app:warning for both", "app:now the host's too"]
    assert logging.getLogger().level == logging.WARNING
    assert [row[3] for row in _rows(db)] == [
        "info for tradelog only",
        "warning for both",
        "now the host's too",
    ]
    assert not [r for r in file_records(tmp_path) if r["module"].startswith(("httpx", "httpc"))]


def test_per_logger_levels(db: MigratedDatabase, users: dict[str, int], tmp_path: Path) -> None:
    """TRADELOG_LOGGER_LEVELS sets the minimum per logger and its children, for stdlib and
    structlog loggers, above or below TRADELOG_LEVEL."""
    alice = users["alice"]
    with running(
        db.url, tmp_path, level="INFO", logger_levels="noisy=ERROR,app.sql=DEBUG"
    ) as runtime:
        with tradelog.bind_user(alice):
            logging.getLogger("noisy.child").warning("dropped")
            logging.getLogger("noisy").error("kept: error")
            logging.getLogger("noisyneighbour").info("kept: another logger")
            logging.getLogger("app.sql").debug("kept: debug")
            logging.getLogger("app.web").debug("dropped")
            tradelog.get_logger("noisy").warning("dropped")
            tradelog.get_logger("app.sql.pool").debug("kept: structlog debug")
        assert runtime.flush(10)
    assert [row[3] for row in _rows(db)] == [
        "kept: error",
        "kept: another logger",
        "kept: debug",
        "kept: structlog debug",
    ]
    with pytest.raises(tradelog.ConfigurationError, match="TRADELOG_LOGGER_LEVELS"):
        tradelog.Settings(logger_levels="httpx")
    with pytest.raises(tradelog.ConfigurationError, match="TRADELOG_LOGGER_LEVELS"):
        tradelog.Settings(logger_levels="httpx=LOUD")


def test_the_take_over_survives_a_later_dictconfig(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """dictConfig after configure() replaces the root's handlers and level: records still
    reach tradelog, once each - also with ``tradelog.Handler`` in that configuration."""
    alice = users["alice"]
    stream = io.StringIO()
    with running(db.url, tmp_path) as runtime:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(name)s %(message)s"}},
                "handlers": {
                    "mine": {
                        "class": "logging.StreamHandler",
                        "stream": stream,
                        "formatter": "plain",
                    },
                    "tradelog": {"class": "tradelog.Handler"},
                },
                "root": {"level": "INFO", "handlers": ["mine", "tradelog"]},
            }
        )
        logging.getLogger("app").info("after dictConfig", extra={"user_id": alice})
        assert runtime.flush(10)
    assert _rows(db) == [(alice, "INFO", "app", "after dictConfig")]
    assert stream.getvalue() == "app after dictConfig\n"


def test_structlog_through_stdlib_is_taken_once(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """A host whose structlog events end as stdlib records (ProcessorFormatter): each event is
    one row, not two."""
    stream = io.StringIO()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[structlog.processors.JSONRenderer()])
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with running(db.url, tmp_path) as runtime:
            structlog.get_logger("orders").info("via stdlib", user_id=users["alice"], qty=2)
            logging.getLogger("plain").info("plain stdlib", extra={"user_id": users["alice"]})
            assert runtime.flush(10)
    finally:
        root.removeHandler(handler)
    assert _rows(db) == [
        (users["alice"], "INFO", "orders", "via stdlib"),
        (users["alice"], "INFO", "plain", "plain stdlib"),
    ]
    assert json.loads(stream.getvalue().splitlines()[0])["qty"] == 2


def test_events_before_configure_are_held_and_replayed(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``tradelog.processor`` / ``tradelog.Handler`` before configure(): the events are held
    and written, in order and with their own time, when configure() runs."""
    out = io.StringIO()
    _host_chain(out, with_tradelog=True)
    handler = tradelog.Handler()
    logger = logging.getLogger("early.std")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        structlog.get_logger("early").info("before configure", user_id=users["alice"])
        logger.info("stdlib before configure", extra={"user_id": users["alice"]})
        with running(db.url, tmp_path, take_over=False) as runtime:
            assert runtime.flush(10)
    finally:
        logger.removeHandler(handler)
    assert [row[3] for row in _rows(db)] == ["before configure", "stdlib before configure"]


@pytest.mark.slow
def test_events_held_without_configure_are_reported_at_exit(tmp_path: Path) -> None:
    """A process that never calls configure() says at exit that what it held was not
    written."""
    script = (
        "import logging, tradelog\n"
        "logging.getLogger('x').addHandler(tradelog.Handler())\n"
        "logging.getLogger('x').warning('lost')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOG_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "configure() was never called" in result.stderr


@pytest.mark.slow
def test_a_spawned_child_rerunning_the_host_configuration_reaches_tradelog(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Pool(initializer=tradelog.configure, initargs=(settings,)) with spawn: the children
    import the host's module, which configures structlog again with tradelog.processor in its
    chain, and every task's event lands."""
    from tests.support import host_logging_app

    settings = tradelog.Settings(
        database_url=db.url, log_dir=tmp_path, console=False, flush_interval=0.05
    )
    with running(db.url, tmp_path):
        context = multiprocessing.get_context("spawn")
        with context.Pool(2, initializer=tradelog.configure, initargs=(settings,)) as pool:
            done = pool.map(host_logging_app.work, [users["alice"], users["bob"]])
            pool.close()
            pool.join()
    assert sorted(done) == sorted([users["alice"], users["bob"]])
    rows = _rows(db)
    assert sorted(rows) == sorted(
        [
            (users["alice"], "INFO", "tests.support.host_logging_app", "child task ran"),
            (users["bob"], "INFO", "tests.support.host_logging_app", "child task ran"),
        ]
    )


def test_http_client_chatter_stays_out_by_default(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, host_root: _ListHandler
) -> None:
    """At DEBUG, real httpx requests write no httpx/httpcore rows (default
    TRADELOG_LOGGER_LEVELS) and nothing of theirs reaches the host's handlers."""

    from tests.support.fake_bot_api import FakeBotApi

    with FakeBotApi() as fake, running(db.url, tmp_path, level="DEBUG") as runtime:
        with tradelog.bind_user(users["alice"]):
            for _ in range(3):
                assert clients.request("GET", fake.method_url("getMe")).status_code == 200
            tradelog.get_logger("bot").debug("three calls made")
        assert runtime.flush(10)
    assert [row[2:] for row in _rows(db)] == [("bot", "three calls made")]
    assert host_root.messages == []


def test_an_unnamed_structlog_logger_is_named_after_the_calling_module(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """``structlog.get_logger()`` without a name (tradelog's own chain): the module column is
    the module that logs, not "root"."""
    with running(db.url, tmp_path) as runtime:
        structlog.get_logger().info("from a plain logger", user_id=users["alice"])
        runtime.get_logger().info("from the runtime's", user_id=users["alice"])
        assert runtime.flush(10)
    assert [row[2] for row in _rows(db)] == [HERE, HERE]
