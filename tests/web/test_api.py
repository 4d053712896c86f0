"""What the JSON routes promise beyond who sees what: problem details with the right status,
paging and filters, audited changes with the request's address, the outbox, atomic resolution,
and pages that escape and show the user's time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header

import tradelog.web
from tests.support import clients
from tests.support.web import serving
from tests.web.conftest import Web
from tradelog import Runtime, Settings
from tradelog._db.models import NotificationDelivery
from tradelog._notify.dispatch import dispatch
from tradelog.audit import request_context


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return dict(body)


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/notifications?limit=101", None, "limit"),
        ("GET", "/notifications?limit=zero", None, "limit"),
        ("GET", "/notifications?since=last%20tuesday", None, "since"),
        ("GET", "/notifications?cursor=not-a-cursor", None, "cursor"),
        ("GET", "/notifications?level=loud", None, "level"),
        ("GET", "/logs?level=LOUD", None, "level"),
        ("GET", "/logs?level=INFO&min_level=ERROR", None, "min_level"),
        ("GET", "/errors?until=soon", None, "until"),
        ("PATCH", "/preferences", {"favourite_colour": "red"}, "favourite_colour"),
        ("PATCH", "/preferences", {"telegram_enabled": "yes"}, "telegram_enabled"),
        ("PATCH", "/preferences", {"telegram_enabled": True}, "telegram_enabled"),
        ("PATCH", "/preferences", {"quiet_hours_end": "07:00"}, "quiet_hours_start"),
        ("PATCH", "/preferences", {"email_address": "not an address"}, "email_address"),
        ("PATCH", "/preferences", {}, None),
        ("PATCH", "/config", {"rsi_period": 500}, "rsi_period"),
        ("PATCH", "/config", {"rsi_period": "10"}, "rsi_period"),
        ("PATCH", "/config", {"no_such_field": 1}, "no_such_field"),
        ("GET", "/admin/errors/groups?status=forgotten", None, "status"),
        ("GET", "/admin/errors?fingerprint=xyz", None, "fingerprint"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    web: Web, method: str, path: str, body: Any, field: str | None
) -> None:
    """Query parameters, headers and body fields: 400 with ``errors[].field`` naming it."""
    with web.client("admin") as client:
        response = client.request(method, "/api" + path, json=body)
    problem = _problem(response, 400)
    assert problem["errors"][0]["field"] == field
    if field:
        assert field in problem["detail"] or field.replace("_", " ") in problem["detail"]


def test_malformed_json_is_a_400(web: Web) -> None:
    """A body that is not JSON is refused as such."""
    with web.client("alice", **{"Content-Type": "application/json"}) as client:
        response = client.patch("/api/preferences", content=b"{not json")
    _problem(response, 400)


def test_not_found_and_conflict(web: Web) -> None:
    """Unknown ids are 404; resolving what is resolved is 409 and changes nothing."""
    with web.client("admin") as client:
        assert _problem(client.post("/api/notifications/999999/read"), 404)
        assert _problem(client.post("/api/admin/errors/999999/resolve"), 404)
        assert _problem(client.post(f"/api/admin/errors/groups/{'c' * 64}/resolve"), 404)
        first = client.post(f"/api/admin/errors/{web.errors['alice'][0]}/resolve")
        assert first.json() == {"resolved": [web.errors["alice"][0]], "changed": 1}
        again = _problem(client.post(f"/api/admin/errors/{web.errors['alice'][0]}/resolve"), 409)
    assert "already resolved" in again["detail"]


def _unreachable_app(url: str) -> tuple[FastAPI, Runtime]:
    runtime = Runtime(Settings(database_url=url, console=False))
    router = tradelog.web.create_router(actor=lambda: 1, runtime=runtime)
    app = FastAPI()
    app.include_router(router)
    return app, runtime


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@127.0.0.1:1/nothing", "sqlite:////nonexistent-dir/tradelog.db"],
    ids=["postgresql", "sqlite"],
)
def test_storage_unavailable_is_a_503(url: str) -> None:
    """A database that cannot be reached: 503 with ``Retry-After`` on JSON routes and pages,
    never the driver's message or a stack trace."""
    app, runtime = _unreachable_app(url)
    try:
        with serving(app) as server, clients.client(base_url=server.url) as client:
            for path in ("/notifications", "/admin/services", "/preferences"):
                response = client.get(path)
                problem = _problem(response, 503)
                assert response.headers["retry-after"] == "5"
                assert problem["detail"] == "the database is unavailable; try again shortly"
                assert "127.0.0.1:1" not in response.text
                assert "nonexistent" not in response.text
            page = client.get("/ui/inbox")
            assert page.status_code == 503
            assert "Storage unavailable" in page.text
    finally:
        runtime.shutdown()


def test_an_unexpected_failure_is_a_500_recorded_not_shown(web: Web, tmp_path: Path) -> None:
    """A bug (here in the host's dependency) answers 500 "internal error" without its message
    and is recorded in ``error_logs``."""

    def broken() -> int:
        raise RuntimeError("kaboom with a detail")

    router = tradelog.web.create_router(actor=broken, runtime=web.runtime)
    app = FastAPI()
    app.include_router(router)
    with serving(app) as server, clients.client(base_url=server.url) as client:
        problem = _problem(client.get("/notifications"), 500)
        page = client.get("/ui/inbox")
    assert problem["detail"] == "internal error"
    assert "kaboom" not in page.text
    assert page.status_code == 500
    assert web.runtime.errors.flush(10)
    rows = web.db.rows("SELECT error_type, error_message, context FROM error_logs")
    recorded = [r for r in rows if r["error_message"] == "kaboom with a detail"]
    assert len(recorded) == 2
    assert all(r["error_type"] == "RuntimeError" for r in recorded)


def test_pages_of_notifications_cover_everything_once(web: Web) -> None:
    """Keyset pages of 2 cover alice's inbox exactly once; filters narrow it."""
    with web.db.session() as session:
        for i in range(5):
            dispatch(session, web.ids["alice"], "service", "error", f"extra {i}", "x")
        session.commit()
    seen: list[int] = []
    with web.client("alice") as client:
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/api/notifications", params=params).json()
            assert page["unread"] == 8
            seen += [n["id"] for n in page["data"]]
            assert page["has_more"] == (page["next"] is not None)
            cursor = page["next"]
            if cursor is None:
                break
        errors = client.get("/api/notifications", params={"level": "error"}).json()["data"]
        service = client.get("/api/notifications", params={"type": "service"}).json()["data"]
        client.post("/api/notifications/read-all")
        read = client.get("/api/notifications", params={"read": "true"}).json()["data"]
        unread = client.get("/api/notifications", params={"read": "false"}).json()["data"]
        recent = client.get("/api/notifications", params={"since": "1m"}).json()["data"]
    assert len(seen) == len(set(seen)) == 8
    assert seen == sorted(seen, reverse=True)
    assert [n["title"] for n in errors] == [f"extra {i}" for i in reversed(range(5))]
    assert len(service) == 5
    assert len(read) == 8
    assert unread == []
    assert {n["title"] for n in recent} == {f"extra {i}" for i in range(5)}


def test_log_filters(web: Web) -> None:
    """Level, minimum level, module fragment and keyword select the user's own rows."""
    with web.client("alice") as client:

        def messages(**params: Any) -> list[str]:
            return [e["message"] for e in client.get("/api/logs", params=params).json()["data"]]

        assert messages() == ["alice log 2", "alice log 1", "alice log 0"]
        assert messages(level="warning") == ["alice log 1"]
        assert messages(min_level="WARNING") == ["alice log 2", "alice log 1"]
        assert messages(module="ALICE") == ["alice log 2", "alice log 1", "alice log 0"]
        assert messages(module="bob") == []
        assert messages(keyword="log 0") == ["alice log 0"]
        page = client.get("/api/logs", params={"limit": 2}).json()
        rest = client.get("/api/logs", params={"limit": 2, "cursor": page["next"]}).json()
    assert [e["message"] for e in rest["data"]] == ["alice log 0"]
    assert rest["has_more"] is False


def test_changes_are_audited_with_the_request_address(web: Web) -> None:
    """Preference and config changes write audit rows carrying the client's address and user
    agent; a request context the host already set wins."""
    headers = {"User-Agent": "desk-app/2.1"}
    with web.client("alice", **headers) as client:
        client.patch("/api/preferences", json={"timezone": "Europe/London"}).raise_for_status()
        client.patch("/api/config", json={"rsi_period": 21}).raise_for_status()
    rows = web.db.rows(
        "SELECT resource_type, ip_address, user_agent, user_id FROM audit_logs ORDER BY id"
    )
    assert [r["resource_type"] for r in rows] == ["notification_preferences", "user_trading_config"]
    assert {(r["ip_address"], r["user_agent"], r["user_id"]) for r in rows} == {
        ("127.0.0.1", "desk-app/2.1", web.ids["alice"])
    }

    async def behind_a_proxy(scope: Any, receive: Any, send: Any) -> None:
        with request_context(ip_address="203.0.113.9", user_agent="proxy-seen"):
            await web.host.app(scope, receive, send)

    with serving(behind_a_proxy) as server:
        clients.request(
            "PATCH",
            f"{server.url}/api/preferences",
            json={"timezone": "Asia/Kolkata"},
            headers={"Authorization": "Bearer alice"},
        ).raise_for_status()
    last = web.db.rows("SELECT ip_address, user_agent FROM audit_logs ORDER BY id DESC LIMIT 1")
    assert last == [{"ip_address": "203.0.113.9", "user_agent": "proxy-seen"}]


def _failed_delivery(web: Web) -> int:
    with web.db.session() as session:
        row = NotificationDelivery(
            notification_id=web.notifications["bob"][0],
            user_id=web.ids["bob"],
            channel="telegram",
            status="failed",
            attempts=8,
            last_error="chat not found",
        )
        session.add(row)
        session.commit()
        return row.id


def test_the_outbox_backlog_failures_and_retry(web: Web) -> None:
    """Failed deliveries show in the backlog and the list; retry queues them again (once);
    retrying what did not fail is 409, an unknown id 404."""
    failed = _failed_delivery(web)
    with web.client("admin") as client:
        listing = client.get("/api/admin/deliveries", params={"status": "failed"}).json()
        assert listing["backlog"]["failed"] == 1
        assert [d["id"] for d in listing["data"]] == [failed]
        assert listing["data"][0]["last_error"] == "chat not found"
        assert client.post(
            "/api/admin/deliveries/retry", json={"delivery_ids": [failed]}
        ).json() == {"requeued": 1}
        _problem(client.post("/api/admin/deliveries/retry", json={"delivery_ids": [failed]}), 409)
        _problem(client.post("/api/admin/deliveries/retry", json={"delivery_ids": [10**9]}), 404)
        pending = client.get("/api/admin/deliveries", params={"status": "pending"}).json()
    assert [d["id"] for d in pending["data"]] == [failed]
    assert pending["data"][0]["next_attempt_at"] is not None
    assert (
        web.db.scalar("SELECT attempts FROM notification_deliveries WHERE id = :i", i=failed) == 0
    )


def test_resolving_a_group_is_atomic_under_concurrency(web: Web) -> None:
    """Two admins resolve the same group at once: one gets every row, the other 409, and the
    group is audited once."""
    path = f"/api/admin/errors/groups/{web.fingerprints['alice']}/resolve"
    answers: list[httpx.Response] = []
    start = threading.Barrier(2)

    def resolve() -> None:
        with web.client("admin") as client:
            start.wait()
            answers.append(client.post(path, json={"notes": "fixed in 1.4"}))

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 409]
    winner = next(r for r in answers if r.status_code == 200).json()
    assert winner == {"resolved": sorted(web.errors["alice"]), "changed": 2}
    audited = web.db.scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'resolve' AND resource_type = 'error_group'"
    )
    assert audited == 1
    notes = web.db.rows("SELECT DISTINCT resolution_notes FROM error_logs WHERE resolved")
    assert notes == [{"resolution_notes": "fixed in 1.4"}]


def test_a_group_resolve_returns_only_the_rows_it_changed(web: Web) -> None:
    """One occurrence resolved first: the group's resolve returns the other one only."""
    first, second = web.errors["bob"]
    with web.client("admin") as client:
        client.post(f"/api/admin/errors/{first}/resolve").raise_for_status()
        group = client.post(
            f"/api/admin/errors/groups/{web.fingerprints['bob'][:10]}/resolve"
        ).json()
        listed = client.get("/api/admin/errors/groups", params={"status": "resolved"}).json()
    assert group == {"resolved": [second], "changed": 1}
    assert [g["fingerprint"] for g in listed] == [web.fingerprints["bob"]]


def test_the_openapi_description_is_typed(web: Web) -> None:
    """Every JSON route has a typed response model and declares its problem responses; the
    stream is described as ``text/event-stream``."""
    spec = clients.request("GET", f"{web.server.url}/openapi.json").json()
    paths = spec["paths"]
    inbox = paths["/api/notifications"]["get"]["responses"]
    assert inbox["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/NotificationPage"
    )
    assert set(inbox) >= {"200", "400", "401", "403", "404", "409", "503"}
    assert (
        "text/event-stream"
        in paths["/api/notifications/stream"]["get"]["responses"]["200"]["content"]
    )
    schemas = spec["components"]["schemas"]
    assert set(schemas["NotificationPage"]["properties"]) == {"data", "next", "has_more", "unread"}
    assert "Problem" in schemas
    for path, operations in paths.items():
        assert not path.startswith("/api/ui"), path
        for method, operation in operations.items():
            assert "200" in operation["responses"], (method, path)


def test_pages_escape_text_and_show_the_users_time(web: Web) -> None:
    """Stored text is shown as text (no markup runs); times are in the user's timezone."""
    with web.db.session() as session:
        dispatch(session, web.ids["alice"], "trading", "info", "<script>alert(1)</script>", "&")
        session.commit()
    with web.client("alice") as client:
        kolkata = client.get("/api/ui/inbox").text
        client.patch("/api/preferences", json={"timezone": "America/New_York"})
        new_york = client.get("/api/ui/inbox").text
    assert "<script>alert(1)</script>" not in kolkata
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in kolkata
    assert " IST</td>" in kolkata
    assert "times in Asia/Kolkata" in kolkata
    assert " IST</td>" not in new_york
    assert ("EST</td>" in new_york) or ("EDT</td>" in new_york)


@pytest.mark.parametrize(
    "headers",
    [{}, {"HX-Request": "true", "Sec-Fetch-Site": "cross-site"}],
    ids=["not-htmx", "cross-site"],
)
def test_page_changes_only_from_the_pages(web: Web, headers: dict[str, str]) -> None:
    """A form post from elsewhere cannot change anything through the pages."""
    note = web.notifications["alice"][0]
    with web.client("alice", **headers) as client:
        response = client.post(f"/api/ui/notifications/{note}/read")
        assert response.status_code == 403
        assert client.get("/api/notifications/unread-count").json()["unread"] == 3


@pytest.fixture
def header_app(web: Web) -> Iterator[str]:
    """The router under a host whose dependency reads ``X-User`` (its own parameters)."""

    def user_from_header(x_user: int | None = Header(None)) -> int | None:
        return x_user

    router = tradelog.web.create_router(actor=user_from_header, runtime=web.runtime)
    app = FastAPI()
    app.include_router(router, prefix="/v1/tradelog")
    with serving(app) as server:
        yield server.url


def test_the_host_dependency_may_take_its_own_parameters(web: Web, header_app: str) -> None:
    """The actor dependency is a FastAPI dependency like any other; pages link under the
    host's prefix."""
    response = clients.request(
        "GET", f"{header_app}/v1/tradelog/notifications", headers={"X-User": str(web.ids["bob"])}
    )
    assert {n["id"] for n in response.json()["data"]} == set(web.notifications["bob"])
    page = clients.request(
        "GET", f"{header_app}/v1/tradelog/ui/inbox", headers={"X-User": str(web.ids["bob"])}
    )
    assert 'href="/v1/tradelog/ui/preferences"' in page.text
    assert '"/v1/tradelog/notifications/stream?after=' in page.text
