"""Fixtures of the web tests: a runtime on the test's database, the host app served over HTTP,
users with tokens, and rows of every kind for alice and bob."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.support import clients
from tests.support.db import MigratedDatabase
from tests.support.web import Host, LiveServer, host_app, serving
from tradelog import Runtime, Settings
from tradelog._db.models import (
    ErrorLog,
    ServiceLog,
    ServiceStatus,
    ServiceTaskExecution,
    User,
)
from tradelog._errors.groups import record_occurrences
from tradelog._notify.dispatch import dispatch
from tradelog.users import create_user

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Web:
    """A served host app and what the tests know about its data."""

    server: LiveServer
    runtime: Runtime
    host: Host
    db: MigratedDatabase
    ids: dict[str, int]
    log_dir: Path
    notifications: dict[str, list[int]] = field(default_factory=dict)
    errors: dict[str, list[int]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None, **headers: str) -> httpx.Client:
        """An HTTP client acting as ``who`` (a token name; None: nobody signed in)."""
        if who is not None:
            headers["Authorization"] = f"Bearer {who}"
        return clients.client(base_url=self.server.url, headers=headers, timeout=15.0)

    def url(self, path: str) -> str:
        return f"{self.server.url}/api{path}"


def seed(db: MigratedDatabase, ids: dict[str, int]) -> tuple[dict[str, Any], ...]:
    """Notifications, logs, errors, service rows and a task run for alice and bob, all in
    the last few minutes."""
    now = datetime.now(UTC).replace(microsecond=0)
    notes: dict[str, list[int]] = {}
    errors: dict[str, list[int]] = {}
    prints: dict[str, str] = {}
    with db.session() as session:
        for name, count in (("alice", 3), ("bob", 2), ("admin", 1)):
            notes[name] = []
            for i in range(count):
                result = dispatch(
                    session,
                    ids[name],
                    "trading",
                    "warning" if i == 0 else "info",
                    f"{name} note {i}",
                    f"{name} message {i}",
                    now=now - timedelta(minutes=10 - i),
                )
                assert result.notification_id is not None
                notes[name].append(result.notification_id)
        for name in ("alice", "bob"):
            user = ids[name]
            for i, level in enumerate(("INFO", "WARNING", "ERROR")):
                session.add(
                    ServiceLog(
                        user_id=user,
                        level=level,
                        module=f"strategy.{name}",
                        message=f"{name} log {i}",
                        context={"i": i},
                        timestamp=now - timedelta(minutes=5 - i),
                    )
                )
            print_ = ("a" if name == "alice" else "b") * 64
            prints[name] = print_
            rows = [
                ErrorLog(
                    user_id=user,
                    error_type="BrokerError",
                    error_message=f"{name} broker down {i}",
                    traceback="Traceback (most recent call last): ...",
                    fingerprint=print_,
                    occurred_at=now - timedelta(minutes=4 - i),
                )
                for i in range(2)
            ]
            session.add_all(rows)
            session.flush()
            record_occurrences(session, rows)  # as the error pipeline does
            errors[name] = [row.id for row in rows]
            session.add(
                ServiceStatus(user_id=user, service_running=True, last_heartbeat=now, error_count=2)
            )
            session.add(
                ServiceTaskExecution(
                    user_id=user,
                    task_name="sell_monitor",
                    status="success",
                    duration_seconds=1.5,
                    executed_at=now - timedelta(minutes=1),
                )
            )
        session.commit()
    return notes, errors, prints


@dataclass
class SharedHost:
    """One host app and server per test process, reading from the current test's runtime
    (building the router and starting uvicorn took half of each web test's time)."""

    host: Host
    server: LiveServer
    runtime: Runtime | None = None

    def current(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("no web test is running")
        return self.runtime


@pytest.fixture(scope="session")
def shared_host() -> Iterator[SharedHost]:
    shared: SharedHost | None = None

    def runtime() -> Runtime:
        assert shared is not None
        return shared.current()

    host = host_app(runtime, ping_interval=1.0)
    with serving(host.app) as server:
        shared = SharedHost(host, server)
        yield shared


@pytest.fixture
def web(db: MigratedDatabase, tmp_path: Path, shared_host: SharedHost) -> Iterator[Web]:
    """The host app over HTTP on the test's database, with alice, bob, an admin, an inactive
    user and a deactivated admin, each with a bearer token named after them."""
    with db.session() as session:
        ids = {
            "admin": create_user(session, email="admin@example.com", name="Admin", role="admin").id,
            "alice": create_user(session, email="alice@example.com", name="Alice").id,
            "bob": create_user(session, email="bob@example.com", name="Bob").id,
            "inactive": create_user(session, email="gone@example.com", name="Gone").id,
            "exadmin": create_user(session, email="ex@example.com", name="Ex", role="admin").id,
        }
        session.execute(
            update(User)
            .where(User.id.in_([ids["inactive"], ids["exadmin"]]))
            .values(is_active=False)
        )
        session.commit()
    log_dir = tmp_path / "logs"
    settings = Settings(database_url=db.url, log_dir=log_dir, console=False)
    runtime = Runtime(settings).start(logging_=False, hooks=False, background=False)
    host = shared_host.host
    host.tokens.clear()
    host.tokens.update(ids)
    host.tokens["stranger"] = 987654
    notes, errors, prints = seed(db, ids)
    shared_host.runtime = runtime
    try:
        yield Web(shared_host.server, runtime, host, db, ids, log_dir, notes, errors, prints)
    finally:
        host.router.close()  # ends this test's streams before the runtime goes
        host.tokens.clear()
        shared_host.runtime = None
        runtime.shutdown()


class Notifier:
    """Another process that sends notifications (``tests/support/notifier.py``)."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.notifier", url, str(log_dir)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == {"ready": True}

    def _line(self) -> Any:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the notifier process ended")
        return json.loads(line)

    def notify(self, user_id: int, title: str) -> dict[str, Any]:
        """Notify ``user_id`` from the other process; returns ``{"id", "at"}`` after commit."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{user_id} {title}\n")
        self.process.stdin.flush()
        return dict(self._line())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(30)


@pytest.fixture
def notifier(web: Web) -> Iterator[Notifier]:
    """A second process notifying into the same database."""
    other = Notifier(web.db.url, web.log_dir / "other")
    try:
        yield other
    finally:
        other.close()
