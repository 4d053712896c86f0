"""The admin's JSON routes under ``/admin``: every user's logs, error groups and occurrences,
resolving one error or a whole group, the delivery outbox, services and the audit trail.

A non-admin (a deactivated admin included) gets ``403`` from every route here. Resolving is
one transaction: the rows it changed (returned), the group's status and the audit rows land
together or not at all; resolving what is already resolved is ``409``.

This module does not use ``from __future__ import annotations``: FastAPI reads the route
signatures at runtime, and they refer to this function's local dependencies.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request

from tradelog._db.base import utcnow
from tradelog._db.models.outbox import DELIVERY_STATUSES
from tradelog._health.status import service_overview
from tradelog._notify.outbox import backlog_summary, check_retryable, requeue_failed
from tradelog.audit import query_audit
from tradelog.errors import error_groups, expand_fingerprint, list_errors, resolve
from tradelog.exceptions import PermissionDenied
from tradelog.logs import query_logs
from tradelog.web._api import Cursor, Since, Until
from tradelog.web._context import WebContext, WebUser
from tradelog.web._inputs import log_filter, moment, naming
from tradelog.web._problems import PROBLEM_RESPONSES, ProblemRoute
from tradelog.web._reads import list_deliveries
from tradelog.web._schemas import (
    AuditPageOut,
    DeliveriesOut,
    ErrorGroupOut,
    LogPageOut,
    OccurrencePageOut,
    ResolvedOut,
    ResolveIn,
    RetryIn,
    RetryOut,
    ServiceOut,
    ServicesOut,
    audit_out,
    delivery_out,
    group_out,
    log_out,
    occurrence_out,
)

__all__ = ["admin_routes", "require_admin_user"]


def require_admin_user(current: Callable[..., WebUser]) -> Callable[..., WebUser]:
    """A dependency giving the acting user when they are an (active) admin, else ``403``."""

    def admin(me: WebUser = Depends(current)) -> WebUser:  # noqa: B008 - FastAPI's way
        if not me.is_admin:
            raise PermissionDenied(f"only an admin may do this (user {me.id} is not an admin)")
        return me

    return admin


def admin_routes(
    context: WebContext, current: Callable[..., WebUser], *, route_class: type[ProblemRoute]
) -> APIRouter:
    """The admin routes of one router (see the module docstring)."""
    router = APIRouter(
        prefix="/admin", route_class=route_class, responses=PROBLEM_RESPONSES, tags=["admin"]
    )
    Admin = Annotated[WebUser, Depends(require_admin_user(current))]  # noqa: N806 - a type alias
    UserId = Annotated[int | None, Query(description="only this user's rows")]  # noqa: N806
    Limit = Annotated[int, Query(ge=1, le=500)]  # noqa: N806

    @router.get(
        "/logs", response_model=LogPageOut, name="tradelog.admin.logs", summary="Any user's logs"
    )
    def logs(
        *,
        admin: Admin,
        user_id: UserId = None,
        level: str | None = None,
        min_level: str | None = None,
        module: str | None = None,
        keyword: str | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> LogPageOut:
        filters = log_filter(
            admin.zone,
            user_id=user_id,
            level=level,
            min_level=min_level,
            module=module,
            since=since,
            until=until,
            keyword=keyword,
        )
        with context.session() as session, naming("cursor"):
            page = query_logs(
                session, admin.actor, filters=filters, limit=limit, before=cursor or None
            )
        return LogPageOut(
            data=[log_out(entry) for entry in page.entries],
            next=page.next_cursor.encode() if page.next_cursor else None,
            has_more=page.next_cursor is not None,
        )

    @router.get(
        "/errors",
        response_model=OccurrencePageOut,
        name="tradelog.admin.errors",
        summary="Error occurrences of every user (a group's with `fingerprint`)",
    )
    def errors(
        *,
        admin: Admin,
        user_id: UserId = None,
        fingerprint: Annotated[str | None, Query(description="a group (6+ digits)")] = None,
        resolved: bool | None = None,
        type: str | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> OccurrencePageOut:
        with context.session() as session:
            full = None
            if fingerprint:
                with naming("fingerprint"):
                    full = expand_fingerprint(session, admin.actor, fingerprint)
            with naming("cursor"):
                page = list_errors(
                    session,
                    admin.actor,
                    user_id=user_id,
                    fingerprint=full,
                    resolved=resolved,
                    error_type=type,
                    since=moment("since", since, admin.zone),
                    until=moment("until", until, admin.zone),
                    limit=limit,
                    cursor=cursor or None,
                )
        return OccurrencePageOut(
            data=[occurrence_out(row) for row in page.items],
            next=page.next_cursor,
            has_more=page.next_cursor is not None,
        )

    @router.get(
        "/errors/groups",
        response_model=list[ErrorGroupOut],
        name="tradelog.admin.error_groups",
        summary="Errors grouped by fingerprint, with status and counts, most recent first",
    )
    def groups(
        *,
        admin: Admin,
        status: Annotated[str | None, Query(pattern="^(unresolved|resolved|ignored)$")] = None,
        user_id: UserId = None,
        type: str | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 50,
    ) -> list[ErrorGroupOut]:
        with context.session() as session:
            found = error_groups(
                session,
                admin.actor,
                user_id=user_id,
                error_type=type,
                since=moment("since", since, admin.zone),
                until=moment("until", until, admin.zone),
                status=status,
                limit=limit,
            )
            session.commit()  # groups missing for old rows are created on first read
        return [group_out(group) for group in found]

    @router.post(
        "/errors/{error_id}/resolve",
        response_model=ResolvedOut,
        name="tradelog.admin.resolve_error",
        summary="Resolve one error (409 when it already is)",
    )
    def resolve_error(
        *,
        request: Request,
        admin: Admin,
        error_id: int,
        body: Annotated[ResolveIn | None, Body()] = None,
    ) -> ResolvedOut:
        with context.session() as session, context.audited(request):
            ids = resolve(session, error_id, admin.actor, body.notes if body else None)
            session.commit()
        return ResolvedOut(resolved=ids, changed=len(ids))

    @router.post(
        "/errors/groups/{fingerprint}/resolve",
        response_model=ResolvedOut,
        name="tradelog.admin.resolve_group",
        summary="Resolve every unresolved occurrence of a group at once (409 when none is left)",
    )
    def resolve_group(
        *,
        request: Request,
        admin: Admin,
        fingerprint: str,
        body: Annotated[ResolveIn | None, Body()] = None,
    ) -> ResolvedOut:
        with context.session() as session, context.audited(request):
            with naming("fingerprint"):
                full = expand_fingerprint(session, admin.actor, fingerprint)
            ids = resolve(session, full, admin.actor, body.notes if body else None)
            session.commit()
        return ResolvedOut(resolved=ids, changed=len(ids))

    @router.get(
        "/deliveries",
        response_model=DeliveriesOut,
        name="tradelog.admin.deliveries",
        summary="The delivery outbox: backlog, failures, and deliveries newest first",
    )
    def deliveries(
        *,
        admin: Admin,
        user_id: UserId = None,
        status: Annotated[
            str | None, Query(pattern="^(" + "|".join(DELIVERY_STATUSES) + ")$")
        ] = None,
        channel: Annotated[str | None, Query(pattern="^(telegram|email)$")] = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> DeliveriesOut:
        overdue = context.runtime.settings.unserved_delivery_timeout or 900.0
        with context.session() as session:
            backlog = backlog_summary(session, overdue_after=overdue)
            with naming("cursor"):
                page = list_deliveries(
                    session,
                    admin.actor,
                    user_id=user_id,
                    status=status,
                    channel=channel,
                    limit=limit,
                    cursor=cursor or None,
                )
        return DeliveriesOut(
            backlog=backlog,
            data=[delivery_out(row) for row in page.items],
            next=page.next_cursor,
            has_more=page.next_cursor is not None,
        )

    @router.post(
        "/deliveries/retry",
        response_model=RetryOut,
        name="tradelog.admin.retry_deliveries",
        summary="Queue failed deliveries again (the named ones, or every failed one)",
    )
    def retry(*, admin: Admin, body: Annotated[RetryIn, Body()]) -> RetryOut:
        with context.session() as session:
            ids = list(dict.fromkeys(body.delivery_ids)) if body.delivery_ids else None
            if ids is not None:
                check_retryable(session, admin.actor, ids)
            changed = requeue_failed(session, delivery_ids=ids, user_id=body.user_id)
            session.commit()
        return RetryOut(requeued=changed)

    @router.get(
        "/services",
        response_model=ServicesOut,
        name="tradelog.admin.services",
        summary="Every user's service: running, stale or stopped, and the last heartbeat",
    )
    def services(*, admin: Admin) -> ServicesOut:
        threshold = context.runtime.settings.stale_heartbeat_seconds
        with context.session() as session:
            rows = service_overview(session, admin.actor, utcnow(), threshold)
        shown = [
            ServiceOut(
                user_id=row["user_id"],
                state=row["state"],
                last_heartbeat=row["last_heartbeat"],
                last_task=row["last_task"],
                error_count=row["error_count"],
                last_error=row["last_error"],
            )
            for row in rows
        ]
        stale = sum(1 for row in shown if row.state == "stale")
        return ServicesOut(stale_after_seconds=threshold, stale=stale, data=shown)

    @router.get(
        "/audit",
        response_model=AuditPageOut,
        name="tradelog.admin.audit",
        summary="The audit trail, newest first",
    )
    def audit(
        *,
        admin: Admin,
        user_id: Annotated[int | None, Query(description="who acted")] = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_id: int | None = None,
        since: Since = None,
        until: Until = None,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> AuditPageOut:
        with context.session() as session, naming("cursor"):
            page = query_audit(
                session,
                admin.actor,
                user_id=user_id,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                since=moment("since", since, admin.zone),
                until=moment("until", until, admin.zone),
                limit=limit,
                cursor=cursor or None,
            )
        return AuditPageOut(
            data=[audit_out(row) for row in page.items],
            next=page.next_cursor,
            has_more=page.next_cursor is not None,
        )

    return router
