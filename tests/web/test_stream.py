"""The live inbox stream over real HTTP: notifications from another process arrive, a client
that reconnects with ``Last-Event-ID`` gets what it missed exactly once, pings keep it alive,
and a deactivated account's stream ends."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time

import pytest
from sqlalchemy import update

from tests.support.web import EventStream
from tests.web.conftest import Notifier, Web
from tradelog._db.models import User
from tradelog._notify.dispatch import dispatch
from tradelog.web._hub import LISTENER_NAME, QUEUE_LIMIT, Subscription

pytestmark = pytest.mark.slow


def _stream(web: Web, who: str, **headers: str) -> EventStream:
    headers["Authorization"] = f"Bearer {who}"
    return EventStream(web.url("/notifications/stream"), headers).open()


def test_a_notification_from_another_process_arrives_within_a_second(
    web: Web, notifier: Notifier
) -> None:
    """Five notifications committed by another process each reach alice's stream once, in
    order, the median within a second of the commit; bob's stream gets none of them."""
    alice, bob = _stream(web, "alice"), _stream(web, "bob")
    try:
        assert alice.status == 200
        assert alice.content_type is not None
        assert alice.content_type.startswith("text/event-stream")
        delays, ids = [], []
        for i in range(5):
            sent = notifier.notify(web.ids["alice"], f"live-{i}")
            event = alice.next(timeout=10)
            body = event.json()
            assert event.id == str(sent["id"])
            assert body["id"] == sent["id"]
            assert body["title"] == f"live-{i}"
            assert body["read"] is False
            delays.append(event.received - sent["at"])
            ids.append(body["id"])
        assert statistics.median(delays) <= 1.0, delays
        own = notifier.notify(web.ids["bob"], "for bob")
        assert bob.next(timeout=10).json()["id"] == own["id"]
        with pytest.raises(TimeoutError):
            alice.next(timeout=1.5)  # nothing more, and no duplicate
    finally:
        alice.close()
        bob.close()


def test_reconnecting_with_last_event_id_replays_what_was_missed_once(
    web: Web, notifier: Notifier
) -> None:
    """Disconnect after one event, miss two, reconnect with ``Last-Event-ID``: the two come
    first, once each and in order, then live ones again."""
    first = _stream(web, "alice")
    seen = notifier.notify(web.ids["alice"], "before")
    assert first.next().json()["id"] == seen["id"]
    first.close()
    missed = [notifier.notify(web.ids["alice"], f"missed-{i}")["id"] for i in range(2)]
    notifier.notify(web.ids["bob"], "not alice's")
    again = _stream(web, "alice", **{"Last-Event-ID": str(seen["id"])})
    try:
        replayed = [again.next().json()["id"] for _ in missed]
        assert replayed == missed
        live = notifier.notify(web.ids["alice"], "after")
        assert again.next().json()["id"] == live["id"]
        with pytest.raises(TimeoutError):
            again.next(timeout=2.0)  # the hub's look-back never repeats an event
    finally:
        again.close()


def test_a_stream_starts_after_the_id_it_is_given(web: Web, notifier: Notifier) -> None:
    """``?after=`` (what a page already shows) replays the rest; an older id than everything
    replays the user's own notifications only."""
    notes = web.notifications["alice"]
    headers = {"Authorization": "Bearer alice"}
    stream = EventStream(web.url(f"/notifications/stream?after={notes[0]}"), headers).open()
    try:
        assert [stream.next().json()["id"] for _ in notes[1:]] == notes[1:]
        with pytest.raises(TimeoutError):
            stream.next(timeout=1.5)
    finally:
        stream.close()


def test_a_page_replays_what_arrived_before_its_stream_connected(
    web: Web, notifier: Notifier
) -> None:
    """The stream a page opens starts after what the page was rendered with: a notification
    committed between the page and the browser connecting arrives, once."""
    with web.client("alice") as client:
        page = client.get("/api/ui/inbox")
    assert page.status_code == 200
    found = re.search(r"new EventSource\((\"[^\"]+\")\)", page.text)
    assert found, "the page opens no stream"
    stream_path = json.loads(found.group(1))
    early = notifier.notify(web.ids["alice"], "before the stream connected")
    stream = EventStream(web.server.url + stream_path, {"Authorization": "Bearer alice"}).open()
    try:
        assert stream.next(timeout=10).json()["id"] == early["id"]
        with pytest.raises(TimeoutError):
            stream.next(timeout=1.5)
    finally:
        stream.close()


def test_pings_come_and_a_deactivated_account_is_cut_off(web: Web) -> None:
    """A ping every ``ping_interval`` (1 s here); once the account is deactivated the stream
    ends at the next ping."""
    stream = _stream(web, "bob")
    try:
        ping = stream.next(timeout=5, kind="ping")
        assert "at" in ping.json()
        with web.db.session() as session:
            session.execute(update(User).where(User.id == web.ids["bob"]).values(is_active=False))
            session.commit()
        assert stream.ended(timeout=5)
    finally:
        stream.close()


def test_bad_last_event_id_is_a_400_naming_it(web: Web) -> None:
    """A ``Last-Event-ID`` that is not an id is refused, naming the header."""
    stream = _stream(web, "alice", **{"Last-Event-ID": "yesterday"})
    try:
        assert stream.status == 400
    finally:
        stream.close()


def test_the_stream_survives_losing_its_listener(
    web: Web, notifier: Notifier, backend: str
) -> None:
    """PostgreSQL: when the listening connection is killed, polling still brings notifications
    within a second or two, and the hub listens again."""
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite always polls")
    stream = _stream(web, "alice")
    try:
        first = notifier.notify(web.ids["alice"], "while listening")
        assert stream.next().json()["id"] == first["id"]
        assert web.host.router.hub.listening
        killed = web.db.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name AND datname = current_database()",
            name=LISTENER_NAME,
        )
        assert killed == 1
        sent = notifier.notify(web.ids["alice"], "while deaf")
        event = stream.next(timeout=10)
        assert event.json()["id"] == sent["id"]
        assert event.received - sent["at"] < 3.0
        deadline = time.monotonic() + 15
        while not web.host.router.hub.listening and time.monotonic() < deadline:
            time.sleep(0.1)
        assert web.host.router.hub.listening
    finally:
        stream.close()


def test_notify_is_announced_at_commit_only(web: Web, backend: str) -> None:
    """PostgreSQL: ``notify()`` inside a transaction is heard when it commits, never after a
    rollback."""
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    with web.db.engine.connect() as opened:
        listener = opened.execution_options(isolation_level="AUTOCOMMIT")
        listener.exec_driver_sql('LISTEN "tradelog_notifications"')
        raw = listener.connection.dbapi_connection
        with web.db.session() as session:
            dispatch(session, web.ids["alice"], "trading", "info", "rolled back", "x")
            session.rollback()
            kept = dispatch(session, web.ids["alice"], "trading", "info", "kept", "x")
            assert not list(raw.notifies(timeout=0.5))  # nothing before the commit
            session.commit()
        heard = [n.payload for n in raw.notifies(timeout=2.0, stop_after=1)]
        assert heard == [f"{web.ids['alice']}:{kept.notification_id}"]
        assert not list(raw.notifies(timeout=0.5))


def test_a_client_that_stops_reading_is_ended() -> None:
    """Past the queue limit a stream gets its end marker (its client reconnects and catches up
    from the database) instead of growing without bound."""
    loop = asyncio.new_event_loop()
    subscription = Subscription(1, 0, loop)
    for ident in range(QUEUE_LIMIT):
        subscription.offer({"id": ident})
    assert not subscription.ended
    subscription.offer({"id": QUEUE_LIMIT})
    assert subscription.ended
    assert subscription.queue.qsize() == QUEUE_LIMIT + 1
    items = [subscription.queue.get_nowait() for _ in range(QUEUE_LIMIT + 1)]
    assert items[-1] is None
    loop.close()


def test_a_long_absence_is_caught_up_in_bounded_steps(web: Web) -> None:
    """A client that missed more than the queue holds gets that many, then the stream ends;
    reconnecting from the last one brings the rest - each notification once overall."""
    start = max(web.notifications["alice"])
    with web.db.session() as session:
        made = [
            dispatch(session, web.ids["alice"], "trading", "info", f"bulk {i}", "x").notification_id
            for i in range(QUEUE_LIMIT + 50)
        ]
        session.commit()
    received: list[int] = []
    per_connection: list[int] = []
    last = str(start)
    for _ in range(2):
        stream = _stream(web, "alice", **{"Last-Event-ID": last})
        try:
            while len(received) < len(made):
                try:
                    event = stream.next(timeout=10)
                except EOFError:
                    break
                received.append(int(event.id or 0))
        finally:
            stream.close()
        per_connection.append(len(received) - sum(per_connection))
        last = str(received[-1])
    assert received == made
    assert per_connection == [QUEUE_LIMIT, 50]
