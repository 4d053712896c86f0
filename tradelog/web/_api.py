"""The user's JSON routes: their inbox (and its live stream), preferences, logs, errors, service
status and trading configuration.

Every route acts for the user the host's ``actor`` dependency names and reads only that user's
own rows, admins included (an admin reads other users' rows under ``/admin``). Someone else's
notification is ``404``, exactly like one that does not exist. Mutations return what changed
and, for the inbox, the new unread count.

This module does not use ``from __future__ import annotations``: FastAPI reads the route
signatures at runtime, and they refer to this function's local dependencies.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tradelog._db.base import utcnow
from tradelog._notify import inbox
from tradelog._notify.preferences import (
    EDITABLE_FIELDS,
    get_preferences,
    preferences_dict,
    update_preferences,
)
from tradelog.errors import list_errors
from tradelog.exceptions import NotFound, PermissionDenied
from tradelog.logs import query_logs
from tradelog.trading_config import as_dict, get_config, update_config
from tradelog.web._context import WebContext, WebUser
from tradelog.web._hub import StreamHub
from tradelog.web._inputs import field_in, log_filter, moment, naming
from tradelog.web._problems import PROBLEM_RESPONSES, BadRequest, ProblemRoute
from tradelog.web._reads import latest_id, own_service
from tradelog.web._schemas import (
    ConfigChangeOut,
    ConfigOut,
    ConfigUpdate,
    ErrorPageOut,
    LogPageOut,
    MarkedAllRead,
    MarkedRead,
    NotificationLevel,
    NotificationPage,
    NotificationType,
    PreferencesOut,
    PreferencesUpdate,
    ServiceOut,
    StatusOut,
    UnreadCount,
    error_out,
    log_out,
    notification_out,
    task_out,
)

__all__ = ["user_routes"]

Limit = Annotated[int, Query(ge=1, le=100, description="rows per page (1-100)")]
Cursor = Annotated[str | None, Query(description="the `next` of the previous page")]
Since = Annotated[
    str | None,
    Query(description="from (inclusive): 15m, 2h, 1d, today, an ISO date or time"),
]
Until = Annotated[str | None, Query(description="until (exclusive), like `since`")]


def user_routes(
    context: WebContext,
    current: Callable[..., WebUser],
    hub: StreamHub,
    *,
    route_class: type[ProblemRoute],
    ping_interval: float,
) -> APIRouter:
    """The user routes of one router (see the module docstring)."""
    router = APIRouter(route_class=route_class, responses=PROBLEM_RESPONSES)
    Me = Annotated[WebUser, Depends(current)]  # noqa: N806 - a type alias

    # -- notifications ---------------------------------------------------------------------

    @router.get(
        "/notifications",
        response_model=NotificationPage,
        name="tradelog.notifications",
        tags=["notifications"],
        summary="The user's notifications, newest first",
    )
    def notifications(
        *,
        me: Me,
        read: Annotated[bool | None, Query(description="only read (true) or unread")] = None,
        type: NotificationType | None = None,
        level: NotificationLevel | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> NotificationPage:
        with context.session() as session:
            with naming("cursor"):
                page = inbox.list_notifications(
                    session,
                    me.actor,
                    user_id=me.id,
                    read=read,
                    type_=type,
                    level=level,
                    since=moment("since", since, me.zone),
                    until=moment("until", until, me.zone),
                    limit=limit,
                    cursor=cursor or None,
                )
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
        return NotificationPage(
            data=[notification_out(row) for row in page.items],
            next=page.next_cursor,
            has_more=page.next_cursor is not None,
            unread=unread,
        )

    @router.get(
        "/notifications/unread-count",
        response_model=UnreadCount,
        name="tradelog.unread_count",
        tags=["notifications"],
        summary="How many of the user's notifications are unread",
    )
    def unread_count(*, me: Me) -> UnreadCount:
        with context.session() as session:
            return UnreadCount(unread=inbox.unread_count(session, me.actor, user_id=me.id))

    @router.post(
        "/notifications/{notification_id}/read",
        response_model=MarkedRead,
        name="tradelog.mark_read",
        tags=["notifications"],
        summary="Mark one notification read; returns the new unread count",
    )
    def mark_read(*, me: Me, notification_id: int) -> MarkedRead:
        with context.session() as session:
            try:
                row = inbox.mark_read(session, me.actor, notification_id)
            except PermissionDenied:
                raise NotFound(f"no notification with id {notification_id}") from None
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
            session.commit()
            return MarkedRead(id=row.id, read=True, read_at=row.read_at, unread=unread)

    @router.post(
        "/notifications/read-all",
        response_model=MarkedAllRead,
        name="tradelog.mark_all_read",
        tags=["notifications"],
        summary="Mark every unread notification read; returns how many and the unread count",
    )
    def mark_all_read(*, me: Me) -> MarkedAllRead:
        with context.session() as session:
            changed = inbox.mark_all_read(session, me.actor)
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
            session.commit()
        return MarkedAllRead(changed=changed, unread=unread)

    @router.get(
        "/notifications/stream",
        name="tradelog.stream",
        tags=["notifications"],
        summary="New notifications as Server-Sent Events",
        description=(
            "Each new notification is an event `notification` whose `id` is the notification "
            f"id and whose `data` is the notification as JSON. An event `ping` comes every "
            f"{ping_interval:g} s. A client that reconnects with `Last-Event-ID` (browsers do "
            "so by themselves) first receives what it missed, once; without it the stream "
            "starts after `after` (a notification id), else with what arrives from now on."
        ),
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "the stream"}},
    )
    async def stream(
        *,
        request: Request,
        me: Me,
        last_event_id: Annotated[str | None, Header(description="resume after this id")] = None,
        after: Annotated[int | None, Query(ge=0, description="start after this id")] = None,
    ) -> StreamingResponse:
        if last_event_id is not None and last_event_id.strip():
            with naming("Last-Event-ID"):
                start = int(last_event_id.strip())
        elif after is not None:
            start = after
        else:
            start = await run_in_threadpool(_latest, context)
        subscription = hub.subscribe(me.id, start)

        async def events() -> AsyncIterator[str]:
            sent: set[int] = set()
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(subscription.queue.get(), ping_interval)
                    except TimeoutError:
                        if not await run_in_threadpool(_still_allowed, context, me):
                            return
                        yield f"event: ping\ndata: {json.dumps({'at': utcnow().isoformat()})}\n\n"
                        continue
                    if event is None:
                        return
                    if event["id"] in sent:
                        continue
                    sent.add(event["id"])
                    yield f"id: {event['id']}\nevent: notification\ndata: {json.dumps(event)}\n\n"
            finally:
                hub.unsubscribe(subscription)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- preferences -----------------------------------------------------------------------

    @router.get(
        "/preferences",
        response_model=PreferencesOut,
        name="tradelog.preferences",
        tags=["preferences"],
        summary="The user's notification preferences",
    )
    def preferences(*, me: Me) -> PreferencesOut:
        with context.session() as session:
            shown = preferences_dict(get_preferences(session, me.actor, me.id))
            session.commit()
        return PreferencesOut(**shown)

    @router.patch(
        "/preferences",
        response_model=PreferencesOut,
        name="tradelog.update_preferences",
        tags=["preferences"],
        summary="Change some preferences (validated and audited like `tradelog prefs set`)",
    )
    def change_preferences(
        *, request: Request, me: Me, changes: Annotated[PreferencesUpdate, Body()]
    ) -> PreferencesOut:
        given = changes.model_dump(exclude_unset=True)
        if not given:
            raise BadRequest(None, "nothing to change: give at least one field")
        with context.session() as session, context.audited(request):
            try:
                row = update_preferences(session, me.actor, me.id, **given)
            except ValueError as exc:
                raise BadRequest(field_in(str(exc), EDITABLE_FIELDS), str(exc)) from None
            session.commit()
            shown = preferences_dict(row)
        return PreferencesOut(**shown)

    # -- logs, errors, status ----------------------------------------------------------------

    @router.get(
        "/logs",
        response_model=LogPageOut,
        name="tradelog.logs",
        tags=["logs"],
        summary="The user's service logs, newest first",
    )
    def logs(
        *,
        me: Me,
        level: Annotated[str | None, Query(description="exactly this level")] = None,
        min_level: Annotated[str | None, Query(description="this level and above")] = None,
        module: Annotated[str | None, Query(description="part of the module name")] = None,
        keyword: Annotated[str | None, Query(description="in the message or context")] = None,
        since: Since = None,
        until: Until = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Cursor = None,
    ) -> LogPageOut:
        filters = log_filter(
            me.zone,
            user_id=me.id,
            level=level,
            min_level=min_level,
            module=module,
            since=since,
            until=until,
            keyword=keyword,
        )
        with context.session() as session, naming("cursor"):
            page = query_logs(
                session, me.actor, filters=filters, limit=limit, before=cursor or None
            )
        return LogPageOut(
            data=[log_out(entry) for entry in page.entries],
            next=page.next_cursor.encode() if page.next_cursor else None,
            has_more=page.next_cursor is not None,
        )

    @router.get(
        "/errors",
        response_model=ErrorPageOut,
        name="tradelog.errors",
        tags=["errors"],
        summary="The user's captured errors, newest first",
    )
    def errors(
        *,
        me: Me,
        resolved: bool | None = None,
        type: Annotated[str | None, Query(description="exception type name")] = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 20,
        cursor: Cursor = None,
    ) -> ErrorPageOut:
        with context.session() as session, naming("cursor"):
            page = list_errors(
                session,
                me.actor,
                user_id=me.id,
                resolved=resolved,
                error_type=type,
                since=moment("since", since, me.zone),
                until=moment("until", until, me.zone),
                limit=limit,
                cursor=cursor or None,
            )
        return ErrorPageOut(
            data=[error_out(row) for row in page.items],
            next=page.next_cursor,
            has_more=page.next_cursor is not None,
        )

    @router.get(
        "/status",
        response_model=StatusOut,
        name="tradelog.status",
        tags=["status"],
        summary="The user's service (running, stale or stopped) and its latest task runs",
    )
    def status(*, me: Me) -> StatusOut:
        threshold = context.runtime.settings.stale_heartbeat_seconds
        with context.session() as session:
            service, runs = own_service(session, me.id, utcnow(), threshold)
        return StatusOut(
            service=ServiceOut(**service) if service is not None else None,
            stale_after_seconds=threshold,
            tasks=[task_out(run) for run in runs],
        )

    # -- trading config ------------------------------------------------------------------

    @router.get(
        "/config",
        response_model=ConfigOut,
        name="tradelog.config",
        tags=["config"],
        summary="The user's trading configuration",
    )
    def config(*, me: Me) -> Any:
        with context.session() as session:
            values = as_dict(get_config(session, me.actor, me.id))
            session.commit()
        return ConfigOut(user_id=me.id, **values)

    @router.patch(
        "/config",
        response_model=ConfigChangeOut,
        name="tradelog.update_config",
        tags=["config"],
        summary="Change some trading configuration fields (validated and audited)",
    )
    def change_config(
        *,
        request: Request,
        me: Me,
        changes: Annotated[ConfigUpdate, Body()],  # type: ignore[valid-type]
    ) -> ConfigChangeOut:
        given = changes.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        if not given:
            raise BadRequest(None, "nothing to change: give at least one field")
        with context.session() as session, context.audited(request):
            changed = update_config(session, me.actor, me.id, **given)
            values = as_dict(get_config(session, me.actor, me.id))
            session.commit()
        return ConfigChangeOut(config=ConfigOut(user_id=me.id, **values), changed=changed)

    return router


def _latest(context: WebContext) -> int:
    with context.session() as session:
        return latest_id(session)


def _still_allowed(context: WebContext, me: WebUser) -> bool:
    """Whether the account behind a stream may still read it (not deactivated meanwhile)."""
    try:
        context.resolve_again(me)
    except (PermissionDenied, NotFound):
        return False
    except Exception:
        return True  # the database is briefly away: keep the stream, the next ping checks
    return True
