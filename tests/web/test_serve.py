"""``tradelog serve`` as an operator runs it: a process, a port, one admin token."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import clients
from tests.support.db import MigratedDatabase
from tradelog._cli.serve import server_url
from tradelog.web._app import SESSION_COOKIE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-for-tests-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(url: str, tmp_path: Path, token: str | None, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADELOG_")}
    env |= {"TRADELOG_LOG_DIR": str(tmp_path / "logs"), "TRADELOG_CONSOLE": "false"}
    if token is not None:
        env["TRADELOG_WEB_ADMIN_TOKEN"] = token
    # A started process inherits an ignored or blocked SIGINT; then Python installs no
    # KeyboardInterrupt handler and Ctrl-C could not end it with 130. Start it with the default.
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tradelog", "--database-url", url, "serve", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _signal_state(pid: int) -> str:
    """The ignored and blocked signal masks of ``pid`` (for a failure message)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return " ".join(line for line in lines if line.startswith(("SigIgn", "SigBlk", "SigCgt")))


@pytest.fixture
def served(db: MigratedDatabase, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``tradelog serve`` on a free port of 127.0.0.1, up and answering."""
    port = _free_port()
    process = _serve(db.url, tmp_path, TOKEN, "--host", "127.0.0.1", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(process.communicate()[1])
        try:
            clients.request("GET", base + "/openapi.json", timeout=1.0)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.2)
    try:
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("token", [None, "", "short-token"])
def test_serve_refuses_to_start_without_a_real_token(
    db: MigratedDatabase, tmp_path: Path, token: str | None
) -> None:
    """No ``TRADELOG_WEB_ADMIN_TOKEN`` (or one under 16 characters): exit 2, naming it."""
    process = _serve(db.url, tmp_path, token, "--port", str(_free_port()))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert "TRADELOG_WEB_ADMIN_TOKEN" in err
    if token:
        assert token not in err


def test_the_token_is_the_system_admin(served: tuple[str, subprocess.Popen[str]]) -> None:
    """The bearer token acts as the system admin; a wrong one or none is 401 (problem
    details), and the token never shows in the server's output."""
    base, process = served
    admin = {"Authorization": f"Bearer {TOKEN}"}
    assert clients.request("GET", base + "/admin/services", headers=admin).status_code == 200
    inbox = clients.request("GET", base + "/notifications", headers=admin)
    assert inbox.status_code == 200
    assert inbox.json()["data"] == []
    wrong = clients.request(
        "GET", base + "/admin/services", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["status"] == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert clients.request("GET", base + "/notifications").status_code == 401
    spec = clients.request("GET", base + "/openapi.json").json()
    assert "/notifications/stream" in spec["paths"]
    assert "/admin/errors/groups/{fingerprint}/resolve" in spec["paths"]
    state = _signal_state(process.pid)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, (state, err)  # Ctrl-C, after a clean shutdown
    assert "Application shutdown complete" in err
    assert f"{base}/ui/admin/errors" in err
    assert TOKEN not in out + err


def test_a_browser_signs_in_once(served: tuple[str, subprocess.Popen[str]]) -> None:
    """Pages redirect to the sign-in form; a wrong token is refused; the right one sets an
    HttpOnly, SameSite=Strict cookie (not the token) that opens the pages."""
    base, _ = served
    with clients.client(base_url=base, timeout=10.0) as browser:
        first = browser.get("/ui/admin/errors?status=all")
        assert first.status_code == 303
        assert first.headers["location"] == "/login?next=/ui/admin/errors%3Fstatus%3Dall"
        assert "Admin token" in browser.get("/login").text
        refused = browser.post("/login", data={"token": "guess", "next": "/ui/inbox"})
        assert refused.status_code == 401
        assert SESSION_COOKIE not in refused.cookies
        signed = browser.post("/login", data={"token": TOKEN, "next": "https://elsewhere.example/"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/ui/admin/errors"  # no open redirect
        cookie = signed.headers["set-cookie"]
        assert re.search(r"HttpOnly", cookie, re.I)
        assert re.search(r"SameSite=strict", cookie, re.I)
        assert TOKEN not in cookie
        page = browser.get("/ui/admin/errors")
        assert page.status_code == 200
        assert "Error console" in page.text
        assert browser.get("/admin/audit").status_code == 200
        browser.post("/logout")
        assert browser.get("/ui/inbox").status_code == 303


def test_server_url_names_what_a_browser_opens() -> None:
    """Listening on every address is opened as 127.0.0.1; IPv6 hosts get brackets."""
    assert server_url("0.0.0.0", 8000) == "http://127.0.0.1:8000"
    assert server_url("::1", 9000) == "http://[::1]:9000"
    assert server_url("localhost", 80) == "http://localhost:80"
