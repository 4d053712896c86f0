"""Reading service logs: user-scoped queries with filters and keyset paging, and following.

Writing is structlog's (``tradelog.get_logger``); this module reads what was written. A user
reads only their own rows, an admin anyone's::

    with tradelog.session() as s:
        page = tradelog.logs.query_logs(s, actor, tradelog.logs.LogFilter(min_level="WARNING"))
        older = tradelog.logs.query_logs(s, actor, filters, cursor=page.next_cursor)
"""

from __future__ import annotations

from tradelog._logs.query import (
    Cursor,
    LogEntry,
    LogFilter,
    LogPage,
    follow_logs,
    parse_moment,
    query_logs,
)

__all__ = [
    "Cursor",
    "LogEntry",
    "LogFilter",
    "LogPage",
    "follow_logs",
    "parse_moment",
    "query_logs",
]
