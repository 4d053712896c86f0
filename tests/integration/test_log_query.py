"""Reading logs: scoping by the acting user, filters, keyset paging and following."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import running
from tradelog._access import Actor
from tradelog._db.models import ServiceLog
from tradelog._logs.query import LogEntry, LogFilter, follow_logs, query_logs
from tradelog.exceptions import PermissionDenied

T0 = datetime(2025, 1, 15, 3, 45, tzinfo=UTC)  # 09:15 IST


def _row(**fields: Any) -> dict[str, Any]:
    return fields


def _add(db: MigratedDatabase, rows: list[dict[str, Any]]) -> list[int]:
    with db.session() as session:
        objects = [ServiceLog(**row) for row in rows]
        session.add_all(objects)
        session.commit()
        return [obj.id for obj in objects]


@pytest.fixture
def sample(db: MigratedDatabase, users: dict[str, int]) -> dict[str, int]:
    alice, bob = users["alice"], users["bob"]
    _add(
        db,
        [
            _row(
                user_id=alice,
                level="INFO",
                module="strategy",
                message="order placed NIFTY",
                context={"symbol": "NIFTY", "qty": 50},
                timestamp=T0,
            ),
            _row(
                user_id=alice,
                level="WARNING",
                module="broker.kite",
                message="slow response",
                context={"latency_ms": 900},
                timestamp=T0 + timedelta(minutes=1),
            ),
            _row(
                user_id=alice,
                level="ERROR",
                module="broker.kite",
                message="order rejected",
                context={"reason": "margin_100% used"},
                timestamp=T0 + timedelta(minutes=2),
            ),
            _row(
                user_id=bob,
                level="INFO",
                module="strategy",
                message="order placed BANKNIFTY",
                context={"symbol": "BANKNIFTY"},
                timestamp=T0 + timedelta(minutes=3),
            ),
            _row(
                user_id=bob,
                level="CRITICAL",
                module="risk",
                message="kill switch",
                context=None,
                timestamp=T0 + timedelta(minutes=4),
            ),
            _row(
                user_id=alice,
                level="DEBUG",
                module="broker_x",
                message="Heartbeat ok",
                context=None,
                timestamp=T0 + timedelta(minutes=5),
            ),
        ],
    )
    return users


def _messages(entries: list[LogEntry]) -> list[str]:
    return [entry.message for entry in entries]


def test_users_read_their_own_logs_and_admins_everyone(
    db: MigratedDatabase, sample: dict[str, int]
) -> None:
    """Scoping follows the acting user; the role comes from the database."""
    with db.session() as session:
        own = query_logs(session, sample["alice"]).entries
        assert {entry.user_id for entry in own} == {sample["alice"]}
        assert len(own) == 4
        everyone = query_logs(session, sample["admin"]).entries
        assert len(everyone) == 6
        narrowed = query_logs(session, sample["admin"], user_id=sample["bob"]).entries
        assert _messages(narrowed) == ["kill switch", "order placed BANKNIFTY"]
        with pytest.raises(PermissionDenied):
            query_logs(session, sample["alice"], user_id=sample["bob"])
        # An Actor claiming to be a user is just that user.
        assert len(query_logs(session, Actor(sample["bob"])).entries) == 2


def test_filters(db: MigratedDatabase, sample: dict[str, int]) -> None:
    """Level exact or minimum, module exact or wildcard, time range, keyword anywhere."""
    admin = sample["admin"]
    with db.session() as session:

        def find(**options: Any) -> list[str]:
            return _messages(query_logs(session, admin, **options).entries)

        assert find(level="warning") == ["slow response"]
        assert find(min_level="ERROR") == ["kill switch", "order rejected"]
        assert find(module="strategy") == ["order placed BANKNIFTY", "order placed NIFTY"]
        assert find(module="broker.*") == ["order rejected", "slow response"]
        assert find(module="broker_*") == ["Heartbeat ok"]  # "_" is literal, not a wildcard
        assert find(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
            "order rejected",
            "slow response",
        ]
        assert find(keyword="nifty") == ["order placed BANKNIFTY", "order placed NIFTY"]
        assert find(keyword="heartbeat") == ["Heartbeat ok"]
        assert find(keyword="latency_ms") == ["slow response"]  # in the context
        assert find(keyword="100%") == ["order rejected"]  # % is literal
        assert find(keyword="0%") == ["order rejected"]
        assert find(keyword="x%y") == []
        assert find(keyword="NIFTY", min_level="warning") == []
        with pytest.raises(ValueError, match="either level or min_level"):
            find(level="INFO", min_level="ERROR")
        with pytest.raises(ValueError, match="unknown log level"):
            find(level="loud")
        with pytest.raises(ValueError, match="aware"):
            find(since=datetime(2025, 1, 15))


def test_keyset_paging_visits_every_row_once(db: MigratedDatabase, users: dict[str, int]) -> None:
    """Newest first; equal timestamps are ordered by id; pages neither skip nor repeat."""
    alice = users["alice"]
    rows = [
        _row(
            user_id=alice,
            level="INFO",
            module="m",
            message=f"e{i}",
            context=None,
            timestamp=T0 + timedelta(seconds=i // 3),
        )
        for i in range(25)
    ]
    ids = _add(db, rows)
    collected: list[int] = []
    with db.session() as session:
        cursor: Any = None
        pages = 0
        while True:
            page = query_logs(session, alice, limit=4, before=cursor)
            collected.extend(entry.id for entry in page.entries)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor.encode() if pages % 2 else page.next_cursor
    assert pages == 7
    expected = sorted(ids, key=lambda i: (rows[ids.index(i)]["timestamp"], i), reverse=True)
    assert collected == expected


def test_follow_yields_the_backlog_then_new_and_late_rows(
    db: MigratedDatabase, users: dict[str, int]
) -> None:
    """Following picks up new rows, including ones that commit late with an older time."""
    alice = users["alice"]
    now = datetime.now(UTC)
    _add(
        db,
        [
            _row(
                user_id=alice,
                level="INFO",
                module="m",
                message=f"old {i}",
                context=None,
                timestamp=now - timedelta(seconds=30 - i),
            )
            for i in range(5)
        ],
    )
    _add(
        db,
        [
            _row(
                user_id=users["bob"],
                level="INFO",
                module="m",
                message="not alice's",
                context=None,
                timestamp=now,
            )
        ],
    )
    seen: list[str] = []
    polls = 0

    def stop() -> bool:
        return polls >= 6

    def sleep(_: float) -> None:
        nonlocal polls
        polls += 1
        if polls == 2:
            _add(
                db,
                [
                    _row(
                        user_id=alice,
                        level="INFO",
                        module="m",
                        message="new",
                        context=None,
                        timestamp=datetime.now(UTC),
                    )
                ],
            )
        if polls == 4:
            _add(
                db,
                [
                    _row(
                        user_id=alice,
                        level="INFO",
                        module="m",
                        message="late",
                        context=None,
                        timestamp=datetime.now(UTC) - timedelta(seconds=3),
                    )
                ],
            )
        if polls == 5:  # replayed from a spool after an hour-long outage
            _add(
                db,
                [
                    _row(
                        user_id=alice,
                        level="INFO",
                        module="m",
                        message=f"replayed {i}",
                        context=None,
                        timestamp=now - timedelta(hours=1, seconds=-i),
                    )
                    for i in range(2)
                ]
                + [
                    _row(
                        user_id=users["bob"],
                        level="INFO",
                        module="m",
                        message="bob's replayed",
                        context=None,
                        timestamp=now - timedelta(hours=1),
                    )
                ],
            )
        time.sleep(0.01)

    for entry in follow_logs(db.session, alice, backlog=3, should_stop=stop, sleep=sleep):
        seen.append(entry.message)
    assert seen == ["old 2", "old 3", "old 4", "new", "late", "replayed 0", "replayed 1"]


def test_follow_stops_on_request(db: MigratedDatabase, users: dict[str, int]) -> None:
    """An empty log and a stop request end the generator."""
    done = threading.Event()
    done.set()
    entries = list(
        follow_logs(db.session, users["alice"], filters=LogFilter(), should_stop=done.is_set)
    )
    assert entries == []


def test_keyword_finds_context_values_that_json_escapes(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Quotes, backslashes, line breaks and non-ASCII text in the context are found as typed,
    in rows from the log writer and in rows stored with ASCII-only JSON."""
    alice = users["alice"]
    context = {"note": 'said "stop loss" at ₹2,450', "path": "C:\\feeds\\nse", "lines": "a\nb"}
    with running(db.url, tmp_path) as runtime:
        tradelog.get_logger("writer", user_id=alice).info("from the writer", **context)
        assert runtime.flush(10)
    _add(
        db,
        [
            _row(
                user_id=alice,
                level="INFO",
                module="orm",
                message="from the ORM",
                context=context,
                timestamp=datetime.now(UTC),
            )
        ],
    )
    both = ["from the ORM", "from the writer"]
    with db.session() as session:

        def find(keyword: str) -> list[str]:
            return sorted(e.message for e in query_logs(session, alice, keyword=keyword).entries)

        assert find('"stop loss"') == both
        assert find("₹2,450") == both
        assert find("C:\\feeds") == both
        assert find("a\nb") == both
        assert find("stop loss") == both
        assert find("₹9") == []
