"""Every route of the router, as the owner, another user and an admin, over real HTTP.

The matrix below names each route once with what each caller gets (status) and what the body
must show (only the caller's own rows; an admin's views of everyone under ``/admin``). A test
checks the matrix covers every route the router has, so a new route cannot skip it. Anonymous
callers get 401 everywhere, deactivated accounts and unknown users 403 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.web.conftest import Web

pytestmark = pytest.mark.slow

Check = Callable[[Web, str, httpx.Response], None]


@dataclass
class Case:
    """One route: how to call it, the status per caller, and what the body must show."""

    method: str
    path: str
    status: dict[str, int]
    body: Any = None
    check: Check | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def path_for(self, web: Web) -> str:
        return self.path.format(
            alice_note=web.notifications["alice"][0],
            alice_error=web.errors["alice"][0],
            alice_print=web.fingerprints["alice"],
            bob_print=web.fingerprints["bob"],
        )


ALL_200 = {"alice": 200, "bob": 200, "admin": 200}
ADMIN_ONLY = {"alice": 403, "bob": 403, "admin": 200}
OWNER_ONLY = {"alice": 200, "bob": 404, "admin": 404}
HTMX = {"HX-Request": "true"}


def own_notifications(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    assert {n["id"] for n in body["data"]} == set(web.notifications[who])
    assert body["unread"] == len(web.notifications[who])
    assert body["has_more"] is False
    assert body["next"] is None


def own_unread(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json() == {"unread": len(web.notifications[who])}


def marked(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    assert body["id"] == web.notifications["alice"][0]
    assert body["read"] is True
    assert body["unread"] == len(web.notifications["alice"]) - 1


def all_marked(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json() == {"changed": len(web.notifications[who]), "unread": 0}
    if who != "alice":  # alice's inbox is untouched by the others
        with web.client("alice") as client:
            unread = client.get("/api/notifications/unread-count").json()["unread"]
        assert unread == len(web.notifications["alice"])


def event_stream(web: Web, who: str, response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/event-stream")


def own_preferences(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json()["user_id"] == web.ids[who]


def changed_preferences(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json()["user_id"] == web.ids[who]
    assert response.json()["notify_system_events"] is False
    rows = web.db.rows("SELECT user_id, notify_system_events FROM user_notification_preferences")
    changed = {row["user_id"] for row in rows if not row["notify_system_events"]}
    assert web.ids[who] in changed


def own_logs(web: Web, who: str, response: httpx.Response) -> None:
    users = {entry["user_id"] for entry in response.json()["data"]}
    assert users == ({web.ids[who]} if who != "admin" else set())


def own_errors(web: Web, who: str, response: httpx.Response) -> None:
    assert [e["id"] for e in response.json()["data"]] == sorted(
        web.errors.get(who, []), reverse=True
    )
    assert all("traceback" not in e for e in response.json()["data"])


def own_status(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    if who == "admin":
        assert body["service"] is None
        assert body["tasks"] == []
    else:
        assert body["service"]["user_id"] == web.ids[who]
        assert body["service"]["state"] == "running"
        assert [t["task_name"] for t in body["tasks"]] == ["sell_monitor"]


def own_config(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json()["user_id"] == web.ids[who]


def changed_config(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    assert body["config"]["user_id"] == web.ids[who]
    assert body["config"]["rsi_period"] == 14
    assert body["changed"] == {"rsi_period": {"before": 10, "after": 14}}


def everyones_logs(web: Web, who: str, response: httpx.Response) -> None:
    users = {entry["user_id"] for entry in response.json()["data"]}
    assert users == {web.ids["alice"], web.ids["bob"]}


def everyones_errors(web: Web, who: str, response: httpx.Response) -> None:
    found = {e["id"] for e in response.json()["data"]}
    assert found == set(web.errors["alice"]) | set(web.errors["bob"])
    assert all(e["traceback"] for e in response.json()["data"])


def groups(web: Web, who: str, response: httpx.Response) -> None:
    shown = {g["fingerprint"]: g for g in response.json()}
    assert set(shown) == {web.fingerprints["alice"], web.fingerprints["bob"]}
    assert shown[web.fingerprints["alice"]]["count"] == 2
    assert shown[web.fingerprints["alice"]]["status"] == "unresolved"


def resolved_one(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json() == {"resolved": [web.errors["alice"][0]], "changed": 1}


def resolved_group(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json() == {"resolved": sorted(web.errors["bob"]), "changed": 2}


def deliveries(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    assert {"pending", "failed", "recent_failures"} <= set(body["backlog"])
    assert body["data"] == []


def retried(web: Web, who: str, response: httpx.Response) -> None:
    assert response.json() == {"requeued": 0}


def services(web: Web, who: str, response: httpx.Response) -> None:
    body = response.json()
    assert {s["user_id"] for s in body["data"]} == {web.ids["alice"], web.ids["bob"]}
    assert body["stale"] == 0


def audit(web: Web, who: str, response: httpx.Response) -> None:
    assert isinstance(response.json()["data"], list)


def html_page(web: Web, who: str, response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text


def own_inbox_page(web: Web, who: str, response: httpx.Response) -> None:
    html_page(web, who, response)
    for name, ids in web.notifications.items():
        for ident in ids:
            assert (f'id="notification-{ident}"' in response.text) == (name == who), ident


def own_log_page(web: Web, who: str, response: httpx.Response) -> None:
    html_page(web, who, response)
    assert f"{who} log 0" in response.text or who == "admin"
    for other in {"alice", "bob"} - {who}:
        assert (f"{other} log 0" in response.text) == (who == "admin")


def own_rows(web: Web, who: str, response: httpx.Response) -> None:
    for name, ids in web.notifications.items():
        for ident in ids:
            assert (f'id="notification-{ident}"' in response.text) == (name == who), ident


def ui_marked(web: Web, who: str, response: httpx.Response) -> None:
    row = f'id="notification-{web.notifications["alice"][0]}"'
    assert row in response.text
    assert "Mark read" not in response.text.split(row)[1][:600]
    assert 'id="unread-badge" hx-swap-oob="true"' in response.text
    assert ">2</span>" in response.text


def ui_all_marked(web: Web, who: str, response: httpx.Response) -> None:
    count = len(web.notifications[who])
    assert f"Marked {count} notification{'' if count == 1 else 's'} read." in response.text
    assert ">0</span>" in response.text


def ui_saved(web: Web, who: str, response: httpx.Response) -> None:
    assert "Saved." in response.text
    rows = web.db.rows(
        "SELECT notify_trading_events FROM user_notification_preferences WHERE user_id = :u",
        u=web.ids[who],
    )
    assert [bool(r["notify_trading_events"]) for r in rows] == [False]  # unchecked box


def ui_resolved(web: Web, who: str, response: httpx.Response) -> None:
    assert "Resolved 2 occurrences of aaaaaaaaaaaa." in response.text
    assert "status-resolved" in response.text


def row_fragment(web: Web, who: str, response: httpx.Response) -> None:
    assert f'id="notification-{web.notifications["alice"][0]}"' in response.text


def static_file(web: Web, who: str, response: httpx.Response) -> None:
    assert response.text.startswith("/*! htmx 2")


MATRIX: list[Case] = [
    Case("GET", "/notifications", ALL_200, check=own_notifications),
    Case("GET", "/notifications/unread-count", ALL_200, check=own_unread),
    Case("POST", "/notifications/{alice_note}/read", OWNER_ONLY, check=marked),
    Case("POST", "/notifications/read-all", ALL_200, check=all_marked),
    Case("GET", "/notifications/stream", ALL_200, check=event_stream),
    Case("GET", "/preferences", ALL_200, check=own_preferences),
    Case(
        "PATCH",
        "/preferences",
        ALL_200,
        body={"notify_system_events": False},
        check=changed_preferences,
    ),
    Case("GET", "/logs", ALL_200, check=own_logs),
    Case("GET", "/errors", ALL_200, check=own_errors),
    Case("GET", "/status", ALL_200, check=own_status),
    Case("GET", "/config", ALL_200, check=own_config),
    Case("PATCH", "/config", ALL_200, body={"rsi_period": 14}, check=changed_config),
    Case("GET", "/admin/logs", ADMIN_ONLY, check=everyones_logs),
    Case("GET", "/admin/errors", ADMIN_ONLY, check=everyones_errors),
    Case("GET", "/admin/errors/groups", ADMIN_ONLY, check=groups),
    Case("POST", "/admin/errors/{alice_error}/resolve", ADMIN_ONLY, check=resolved_one),
    Case("POST", "/admin/errors/groups/{bob_print}/resolve", ADMIN_ONLY, check=resolved_group),
    Case("GET", "/admin/deliveries", ADMIN_ONLY, check=deliveries),
    Case("POST", "/admin/deliveries/retry", ADMIN_ONLY, body={}, check=retried),
    Case("GET", "/admin/services", ADMIN_ONLY, check=services),
    Case("GET", "/admin/audit", ADMIN_ONLY, check=audit),
    Case("GET", "/ui/static/htmx.min.js", ALL_200, check=static_file),
    Case("GET", "/ui/inbox", ALL_200, check=own_inbox_page),
    Case("GET", "/ui/inbox/rows", ALL_200, check=own_rows),
    Case("GET", "/ui/inbox/badge", ALL_200),
    Case("GET", "/ui/notifications/{alice_note}", OWNER_ONLY, check=row_fragment),
    Case("POST", "/ui/notifications/{alice_note}/read", OWNER_ONLY, headers=HTMX, check=ui_marked),
    Case("POST", "/ui/notifications/read-all", ALL_200, headers=HTMX, check=ui_all_marked),
    Case("GET", "/ui/preferences", ALL_200, check=html_page),
    Case(
        "POST",
        "/ui/preferences",
        ALL_200,
        body="timezone=Asia%2FKolkata&quiet_hours_mode=defer&notify_errors=on",
        headers={**HTMX, "Content-Type": "application/x-www-form-urlencoded"},
        check=ui_saved,
    ),
    Case("GET", "/ui/logs", ALL_200, check=own_log_page),
    Case("GET", "/ui/admin/errors", ADMIN_ONLY, check=html_page),
    Case("GET", "/ui/admin/errors/{alice_print}", ADMIN_ONLY, check=html_page),
    Case(
        "POST",
        "/ui/admin/errors/{alice_print}/resolve",
        ADMIN_ONLY,
        headers=HTMX,
        check=ui_resolved,
    ),
]
"""Callers go in the order bob, admin, alice: a change by the first two must not touch
alice's rows, which alice's own call then finds as seeded."""

ORDER = ("bob", "admin", "alice")


def _call(web: Web, case: Case, who: str | None) -> httpx.Response:
    with web.client(who, **case.headers) as client:
        path = "/api" + case.path_for(web)
        if case.path.endswith("/stream"):
            with client.stream(case.method, path) as response:
                response.read() if response.status_code != 200 else None
                return response
        if isinstance(case.body, str):
            return client.request(case.method, path, content=case.body)
        if case.body is not None or case.method in ("PATCH",):
            return client.request(case.method, path, json=case.body)
        return client.request(case.method, path)


def _routes(routes: list[Any], prefix: str = "") -> set[tuple[str, str]]:
    """(method, path) of every route, through included routers (copied into the parent by
    older FastAPI releases, wrapped by newer ones)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, APIRoute):
            found |= {(method, prefix + route.path) for method in route.methods}
        elif hasattr(route, "original_router"):
            inner = getattr(route.include_context, "prefix", "")
            found |= _routes(route.original_router.routes, prefix + inner)
    return found


def test_the_matrix_covers_every_route(web: Web) -> None:
    """Every route the router has is in the matrix (method and path)."""
    routes = _routes(web.host.router.routes)
    named = {(case.method, _template(case.path)) for case in MATRIX}
    assert routes == named


def _template(path: str) -> str:
    return (
        path.replace("{alice_note}", "{notification_id}")
        .replace("{alice_error}", "{error_id}")
        .replace("{alice_print}", "{fingerprint}")
        .replace("{bob_print}", "{fingerprint}")
        .replace("htmx.min.js", "{name}")
    )


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: f"{c.method} {c.path}")
def test_route_as_owner_other_user_and_admin(web: Web, case: Case) -> None:
    """Each caller gets the status the matrix names and sees only what it may."""
    for who in ORDER:
        response = _call(web, case, who)
        assert response.status_code == case.status[who], (who, response.text[:300])
        if response.status_code == 200 and case.check is not None:
            case.check(web, who, response)
        elif response.status_code in (403, 404) and not case.path.startswith("/ui/"):
            problem = response.json()
            assert problem["status"] == response.status_code
            assert response.headers["content-type"] == "application/problem+json"
            assert "Traceback" not in response.text


@pytest.mark.parametrize("who", [None, "inactive", "exadmin", "stranger"])
def test_nobody_else_gets_anything(web: Web, who: str | None) -> None:
    """Anonymous: 401 on every route; deactivated accounts (an ex-admin too) and ids without an
    account: 403 on every route. Nothing changes."""
    expected = 401 if who is None else 403
    for case in MATRIX:
        response = _call(web, case, who)
        assert response.status_code == expected, (case.path, response.text[:200])
    with web.client("alice") as client:
        assert client.get("/api/notifications/unread-count").json()["unread"] == 3
    assert web.db.scalar("SELECT count(*) FROM error_logs WHERE resolved") == 0


def test_an_admin_narrows_to_one_user(web: Web) -> None:
    """``user_id`` on admin routes shows one user's rows; users cannot pass it anywhere."""
    with web.client("admin") as client:
        bob = client.get("/api/admin/logs", params={"user_id": web.ids["bob"]}).json()
        errors = client.get("/api/admin/errors", params={"user_id": web.ids["alice"]}).json()
        group = client.get(
            "/api/admin/errors", params={"fingerprint": web.fingerprints["bob"][:8]}
        ).json()
    assert {e["user_id"] for e in bob["data"]} == {web.ids["bob"]}
    assert {e["id"] for e in errors["data"]} == set(web.errors["alice"])
    assert {e["id"] for e in group["data"]} == set(web.errors["bob"])
    with web.client("alice") as client:
        mine = client.get("/api/logs", params={"user_id": web.ids["bob"]}).json()
    assert {e["user_id"] for e in mine["data"]} == {web.ids["alice"]}  # an unknown parameter
