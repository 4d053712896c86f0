"""The pages in a real browser: headless Chromium (Debian's package) over the DevTools protocol.

The inbox shows a notification the moment another process sends it and marking it read
lowers the badge; the admin console resolves a group; every page is saved as a screenshot in
the test's folder and checked not to be blank. Chromium is installed by ``.ci/ensure-chromium``
(``make test`` runs it); where it cannot be installed these tests skip, saying so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import Page, chromium, find_chromium, ink_ratio
from tests.web.conftest import Notifier, Web

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INK = 0.02
"""A page whose pixels are more than 98% one colour counts as blank."""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's executable, installed by ``.ci/ensure-chromium`` when missing."""
    found = find_chromium()
    if found is None:
        subprocess.run(["bash", str(REPO / ".ci" / "ensure-chromium")], check=False, timeout=900)
        found = find_chromium()
    if found is None:
        pytest.skip(
            "Chromium is not installed and .ci/ensure-chromium could not install it "
            "(it needs root and Debian's package archive)"
        )
    return found


def _browser(chromium_path: str, web: Web, who: str) -> Iterator[Page]:
    with chromium(chromium_path) as page:
        page.headers(Authorization=f"Bearer {who}")
        yield page


@pytest.fixture
def alice_browser(chromium_path: str, web: Web) -> Iterator[Page]:
    yield from _browser(chromium_path, web, "alice")


@pytest.fixture
def admin_browser(chromium_path: str, web: Web) -> Iterator[Page]:
    yield from _browser(chromium_path, web, "admin")


def _shot(page: Page, folder: Path, name: str) -> Path:
    path = page.screenshot(folder / f"{name}.png")
    ratio = ink_ratio(page.capture(scale=0.25))
    assert ratio > INK, f"{path} looks blank ({ratio:.3%} ink)"
    return path


BADGE = "document.getElementById('unread-badge').textContent.trim()"


def test_the_inbox_is_live_and_marking_read_updates_the_badge(
    web: Web, notifier: Notifier, alice_browser: Page, tmp_path: Path
) -> None:
    """A notification from another process appears in the open inbox with the badge raised;
    "Mark read" lowers it and the row turns read."""
    page = alice_browser
    page.open(web.url("/ui/inbox"))
    assert page.wait_for(f"{BADGE} === '3'")
    assert page.js("document.querySelectorAll('#inbox-rows tr.unread').length") == 3
    page.wait_for("window.htmx !== undefined")
    sent = notifier.notify(web.ids["alice"], "NIFTY crossed 22,500")
    row = f"#notification-{sent['id']}"
    page.wait_for(f"document.querySelector('{row}') !== null", timeout=10)
    assert page.wait_for(f"{BADGE} === '4'")
    assert "NIFTY crossed 22,500" in page.js(f"document.querySelector('{row}').innerText")
    assert page.js("document.querySelector('#inbox-rows tr').id") == row[1:]  # newest on top
    _shot(page, tmp_path, "inbox-live")
    page.click(f"{row} button")
    assert page.wait_for(f"{BADGE} === '3'")
    page.wait_for(f"!document.querySelector('{row}').classList.contains('unread')")
    assert page.js(f"document.querySelector('{row} button')") is None
    unread = web.db.scalar(
        "SELECT count(*) FROM notifications WHERE user_id = :u AND NOT read", u=web.ids["alice"]
    )
    assert unread == 3
    page.click("#read-all")
    assert page.wait_for(f"{BADGE} === '0'")
    page.wait_for("document.getElementById('flash').textContent.includes('Marked 3')")
    _shot(page, tmp_path, "inbox")


def test_preferences_and_logs_pages(web: Web, alice_browser: Page, tmp_path: Path) -> None:
    """The preferences form saves (and shows an error it cannot save); the log viewer filters
    and shows levels in colour."""
    page = alice_browser
    page.open(web.url("/ui/preferences"))
    page.wait_for("window.htmx !== undefined")
    page.js("document.querySelector('input[name=quiet_hours_start]').value = '22:00'")
    page.click("button[type=submit]")
    page.wait_for("document.querySelector('#prefs-card .flash.bad') !== null")
    assert "quiet_hours" in page.js("document.querySelector('#prefs-card .flash').innerText")
    page.js("document.querySelector('input[name=quiet_hours_end]').value = '07:00'")
    page.click("button[type=submit]")
    page.wait_for("document.querySelector('#prefs-card .flash.ok') !== null")
    row = web.db.rows(
        "SELECT quiet_hours_start, quiet_hours_end FROM user_notification_preferences "
        "WHERE user_id = :u",
        u=web.ids["alice"],
    )
    assert [str(v)[:5] for v in row[0].values()] == ["22:00", "07:00"]
    _shot(page, tmp_path, "preferences")
    page.open(web.url("/ui/logs?min_level=WARNING"))
    texts = page.js("[...document.querySelectorAll('tbody tr')].map(r => r.innerText)")
    assert len(texts) == 2
    assert "alice log 2" in texts[0]
    colour = page.js("getComputedStyle(document.querySelector('.level-error')).color")
    assert colour == "rgb(180, 35, 24)"
    _shot(page, tmp_path, "logs")


def test_the_admin_console_resolves_a_group(web: Web, admin_browser: Page, tmp_path: Path) -> None:
    """The console lists both groups; "Resolve" resolves alice's (every occurrence, in the
    database) and the row says so; the group page lists its occurrences."""
    page = admin_browser
    page.open(web.url("/ui/admin/errors"))
    alice = f"#group-{web.fingerprints['alice']}"
    assert page.js("document.querySelectorAll('tbody tr').length") == 2
    _shot(page, tmp_path, "error-console")
    page.wait_for("window.htmx !== undefined")
    page.click(f"{alice} button")
    page.wait_for(f"document.querySelector('{alice} .status-resolved') !== null")
    flash = page.wait_for("document.getElementById('flash').textContent")
    assert "Resolved 2 occurrences" in flash
    resolved = web.db.scalar(
        "SELECT count(*) FROM error_logs WHERE resolved AND user_id = :u", u=web.ids["alice"]
    )
    assert resolved == 2
    _shot(page, tmp_path, "error-console-resolved")
    page.open(web.url(f"/ui/admin/errors/{web.fingerprints['bob']}"))
    assert page.js("document.querySelectorAll('tr[id^=occurrence-]').length") == 2
    _shot(page, tmp_path, "error-group")
