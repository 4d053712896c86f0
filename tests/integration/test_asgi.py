"""The ASGI middleware in a real FastAPI application served by uvicorn over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

import tradelog
from tests.support import clients
from tests.support.asgi_server import serve
from tests.support.db import MigratedDatabase
from tests.support.logs import running
from tradelog.asgi import TradelogMiddleware
from tradelog.audit import current_request, record_audit

SECRETS = ("COOKIE-SECRET-1", "AUTH-SECRET-2", "BODY-SECRET-3", "QUERY-SECRET-4")


def _account(request: Request) -> int | None:
    raw = request.headers.get("x-account")
    if raw == "explode":
        raise LookupError("account service down")
    return int(raw) if raw else None


def _app() -> FastAPI:
    app = FastAPI()
    log = tradelog.get_logger("web")

    @app.get("/ok")
    async def ok() -> dict[str, Any]:
        log.info("served async")
        request = current_request()
        bound = structlog.contextvars.get_contextvars()
        return {"request_id": bound.get("request_id"), "ip": request and request.ip_address}

    @app.get("/sync")
    def sync_endpoint() -> dict[str, str]:
        log.info("served in the thread pool")
        return {"ok": "yes"}

    @app.post("/boom")
    async def boom(request: Request) -> None:
        await request.body()
        raise RuntimeError("order book unavailable")

    @app.get("/late")
    async def late() -> StreamingResponse:
        async def chunks() -> Any:
            yield b"first part"
            raise ValueError("stream broke")

        return StreamingResponse(chunks())

    @app.put("/settings")
    def settings() -> dict[str, str]:
        with tradelog.session() as session:
            record_audit(
                session, user_id=7, action="update", resource_type="settings", resource_id=1
            )
            session.commit()
        return {"ok": "yes"}

    app.add_middleware(TradelogMiddleware, user=_account)
    return app


def _errors(db: MigratedDatabase) -> list[dict[str, Any]]:
    rows = db.rows("SELECT * FROM error_logs ORDER BY id")
    for row in rows:
        if isinstance(row["context"], str):
            row["context"] = json.loads(row["context"])
    return rows


def test_requests_are_bound_and_crashes_recorded(
    db: MigratedDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Request ids (kept or made), the resolved user on log rows, and one error row per
    unhandled exception with method, path, status and request id - no body, cookie,
    authorization header or query string anywhere in it."""
    with db.session() as session:
        tradelog.ensure_user(7, email="seven@example.com", session=session)
        session.commit()
    with running(db.url, tmp_path) as runtime, serve(_app()) as base:
        with clients.client(base_url=base) as client:
            given = client.get("/ok", headers={"X-Account": "7", "X-Request-ID": "req-abc.1"})
            made = client.get("/sync", headers={"X-Account": "7"})
            odd = client.get("/ok", headers={"X-Request-ID": "bad id\twith space"})
            crash = client.post(
                f"/boom?token={SECRETS[3]}",
                headers={
                    "X-Account": "7",
                    "X-Request-ID": "crash-42",
                    "Authorization": f"Bearer {SECRETS[1]}",
                    "Cookie": f"session={SECRETS[0]}",
                },
                content=SECRETS[2],
            )
        assert runtime.flush(10)
    assert given.headers["x-request-id"] == "req-abc.1"
    assert given.json() == {"request_id": "req-abc.1", "ip": "127.0.0.1"}
    assert len(made.headers["x-request-id"]) == 32
    assert odd.headers["x-request-id"] != "bad id\twith space"
    assert crash.status_code == 500
    logs = db.rows(
        "SELECT user_id, message, context FROM service_logs WHERE module = 'web' ORDER BY id"
    )
    assert [(r["user_id"], r["message"]) for r in logs] == [
        (7, "served async"),
        (7, "served in the thread pool"),
    ]
    assert "req-abc.1" in str(logs[0]["context"])
    [error] = _errors(db)
    assert error["user_id"] == 7
    assert error["error_type"] == "RuntimeError"
    context = error["context"]
    assert context["source"] == "asgi"
    assert (context["method"], context["path"], context["status"]) == ("POST", "/boom", 500)
    assert context["request_id"] == "crash-42"  # (the 500 itself is the server's response)
    stored = json.dumps([error, db.rows("SELECT * FROM service_logs")], default=str)
    for secret in SECRETS:
        assert secret not in stored


def test_a_crash_after_the_response_started_keeps_its_status(
    db: MigratedDatabase, tmp_path: Path
) -> None:
    """A streaming response that fails half-way is recorded with the status already sent."""
    with running(db.url, tmp_path) as runtime, serve(_app()) as base:
        with clients.client(base_url=base) as client, pytest.raises(httpx.HTTPError):
            client.get("/late").read()
        assert runtime.flush(10)
    [error] = _errors(db)
    assert (error["error_type"], error["context"]["status"]) == ("ValueError", 200)


def test_a_failing_user_resolver_is_recorded_and_the_request_served(
    db: MigratedDatabase, tmp_path: Path
) -> None:
    """The resolver raising: recorded, and the request is served without a user."""
    with running(db.url, tmp_path) as runtime, serve(_app()) as base:
        response = clients.request("GET", f"{base}/ok", headers={"X-Account": "explode"})
        assert runtime.flush(10)
    assert response.status_code == 200
    [error] = _errors(db)
    assert error["error_type"] == "LookupError"
    assert error["context"]["source"] == "asgi.user_resolver"
    # no user: the endpoint's event went to the system file only
    assert db.scalar("SELECT count(*) FROM service_logs WHERE module = 'web'") == 0


def test_audit_rows_carry_the_requests_ip_and_user_agent(
    db: MigratedDatabase, tmp_path: Path
) -> None:
    """record_audit inside a request takes the client's address and user agent."""
    with db.session() as session:
        tradelog.ensure_user(7, session=session)
        session.commit()
    with running(db.url, tmp_path), serve(_app()) as base:
        response = clients.request(
            "PUT", f"{base}/settings", headers={"X-Account": "7", "User-Agent": "desk-terminal/2.1"}
        )
    assert response.status_code == 200
    rows = db.rows("SELECT user_id, ip_address, user_agent FROM audit_logs")
    assert rows == [{"user_id": 7, "ip_address": "127.0.0.1", "user_agent": "desk-terminal/2.1"}]
