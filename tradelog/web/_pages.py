"""The HTML pages under ``/ui``: the inbox (live), preferences, the log viewer and the admin's
error console, server-rendered from the same functions as the JSON routes.

The pages use htmx (vendored, one static file) for the parts that change without a reload:
marking read (the row and the unread badge), loading older rows, saving preferences, resolving
a group. Every page opens the inbox stream (``EventSource``) so the badge - and on the inbox
page the list - update when a notification arrives.

Changes (``POST``) are accepted only from htmx (the ``HX-Request`` header, which a form on
another site cannot send without the browser asking this server first) and never from a
request the browser marks as cross-site (``Sec-Fetch-Site``): a host that signs users in with
a cookie is not open to cross-site request forgery through these pages.

This module does not use ``from __future__ import annotations``: FastAPI reads the route
signatures at runtime, and they refer to this function's local dependencies.
"""

from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from tradelog._db.models import Notification
from tradelog._notify import inbox
from tradelog._notify.preferences import (
    EDITABLE_FIELDS,
    get_preferences,
    preferences_dict,
    update_preferences,
)
from tradelog.errors import error_groups, expand_fingerprint, list_errors, resolve
from tradelog.exceptions import NotFound, PermissionDenied
from tradelog.logs import query_logs
from tradelog.web._admin import require_admin_user
from tradelog.web._context import WebContext, WebUser
from tradelog.web._inputs import field_in, log_filter, naming
from tradelog.web._problems import BadRequest, PageRoute, Problem, problem_for
from tradelog.web._reads import latest_id
from tradelog.web._schemas import notification_out
from tradelog.web._templates import STATIC_FILES, render, static_file

__all__ = ["page_routes", "problem_page"]

_SWITCHES = (
    "telegram_enabled",
    "email_enabled",
    "notify_service_events",
    "notify_trading_events",
    "notify_system_events",
    "notify_errors",
)
_TEXTS = ("telegram_chat_id", "email_address", "timezone", "quiet_hours_mode")
_PAGE_SIZE = 25
Filter = Literal["all", "unread", "read"]


def _changes_only_from_htmx(request: Request) -> None:
    """Refuse a change that htmx did not send, or that the browser says is cross-site."""
    if request.headers.get("hx-request") != "true":
        raise PermissionDenied("changes are accepted from the tradelog pages only")
    if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
        raise PermissionDenied("cross-site changes are refused")


async def _form(request: Request) -> dict[str, str]:
    """The fields of an ``application/x-www-form-urlencoded`` body."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


class _Pages:
    """Rendering with what every page shows: the user, their unread count, the stream URL."""

    def __init__(self, context: WebContext) -> None:
        self.context = context

    def page(
        self,
        request: Request,
        template: str,
        me: WebUser | None,
        values: dict[str, Any],
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        shown: dict[str, Any] = {"me": me, "zone": me.zone if me else None, "page": None}
        if me is not None:
            with self.context.session() as session:
                # The page's stream starts after the newest id read before anything the page
                # shows (its badge here, its rows in the handler: ``stream_after``), so what is
                # committed before the browser connects is replayed, not lost; the page
                # ignores a replayed row it already shows.
                newest = values.get("stream_after")
                if newest is None:
                    newest = latest_id(session)
                shown["unread"] = inbox.unread_count(session, me.actor, user_id=me.id)
            shown["zone_name"] = me.zone.key
            stream = str(request.url_for("tradelog.stream").path)
            shown["stream_url"] = f"{stream}?after={newest}"
        shown.update(values)
        return render(request, template, shown, status_code=status_code, headers=headers)

    def fragment(
        self, request: Request, template: str, me: WebUser | None, values: dict[str, Any]
    ) -> HTMLResponse:
        shown = {"me": me, "zone": me.zone if me else None, **values}
        return render(request, template, shown)


def problem_page(context: WebContext) -> Callable[[Request, Problem, dict[str, str]], Response]:
    """How a page shows a problem: a message in the page's flash area for htmx, else a page."""
    pages = _Pages(context)

    def show(request: Request, problem: Problem, headers: dict[str, str]) -> Response:
        me = getattr(request.state, "tradelog_user", None)
        if request.headers.get("hx-request") == "true":
            headers = {**headers, "HX-Retarget": "#flash", "HX-Reswap": "outerHTML"}
            return render(
                request,
                "_flash.html",
                {"problem": problem, "me": me},
                status_code=problem.status,
                headers=headers,
            )
        try:
            return pages.page(
                request,
                "problem.html",
                me,
                {"problem": problem},
                status_code=problem.status,
                headers=headers,
            )
        except Exception:  # the database is away too: a page without the badge
            return render(
                request,
                "problem.html",
                {"problem": problem, "me": None},
                status_code=problem.status,
                headers=headers,
            )

    return show


def page_routes(
    context: WebContext, current: Callable[..., WebUser], *, route_class: type[PageRoute]
) -> APIRouter:
    """The page routes of one router (see the module docstring)."""
    router = APIRouter(prefix="/ui", route_class=route_class, include_in_schema=False)
    pages = _Pages(context)
    Me = Annotated[WebUser, Depends(current)]  # noqa: N806 - a type alias
    Admin = Annotated[WebUser, Depends(require_admin_user(current))]  # noqa: N806
    Change = Depends(_changes_only_from_htmx)  # noqa: N806
    Form = Annotated[dict[str, str], Depends(_form)]  # noqa: N806

    @router.get("/static/{name}", name="tradelog.ui.static")
    def static(*, me: Me, name: str) -> Response:
        if name not in STATIC_FILES:
            raise NotFound(f"no static file {name}")
        return Response(
            static_file(name),
            media_type=STATIC_FILES[name],
            headers={"Cache-Control": "private, max-age=3600"},
        )

    # -- inbox -------------------------------------------------------------------------

    def inbox_values(
        session: Session, me: WebUser, which: Filter, cursor: str | None
    ) -> dict[str, Any]:
        read = {"all": None, "unread": False, "read": True}[which]
        with naming("cursor"):
            found = inbox.list_notifications(
                session, me.actor, user_id=me.id, read=read, limit=_PAGE_SIZE, cursor=cursor
            )
        empty = {
            "all": ("No notifications yet", "They appear here the moment they are sent."),
            "unread": ("You are all caught up", "Nothing unread."),
            "read": ("Nothing read yet", "Notifications you mark read are listed here."),
        }[which]
        return {
            "items": [notification_out(row) for row in found.items],
            "next": found.next_cursor,
            "cursor": cursor,
            "filter": which,
            "empty_title": empty[0],
            "empty_hint": empty[1],
        }

    @router.get("/inbox", name="tradelog.ui.inbox")
    def inbox_page(*, request: Request, me: Me, filter: Filter = "all") -> HTMLResponse:
        with context.session() as session:
            after = latest_id(session)  # read before the rows: see _Pages.page
            values = inbox_values(session, me, filter, None) | {"stream_after": after}
        row_url = str(request.url_for("tradelog.ui.notification_row", notification_id="0").path)
        values |= {"page": "inbox", "row_url": row_url[: -len("0")] + "__ID__"}
        return pages.page(request, "inbox.html", me, values)

    @router.get("/inbox/rows", name="tradelog.ui.inbox_rows")
    def inbox_rows(
        *, request: Request, me: Me, filter: Filter = "all", cursor: str | None = None
    ) -> HTMLResponse:
        with context.session() as session:
            values = inbox_values(session, me, filter, cursor)
        return pages.fragment(request, "_inbox_rows.html", me, values)

    @router.get("/inbox/badge", name="tradelog.ui.badge")
    def badge(*, request: Request, me: Me) -> HTMLResponse:
        with context.session() as session:
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
        return pages.fragment(request, "_badge.html", me, {"unread": unread})

    @router.get("/notifications/{notification_id}", name="tradelog.ui.notification_row")
    def notification_row(*, request: Request, me: Me, notification_id: int) -> HTMLResponse:
        with context.session() as session:
            row = session.get(Notification, notification_id)
            if row is None or row.user_id != me.id:
                raise NotFound(f"no notification with id {notification_id}")
            shown = notification_out(row)
        return pages.fragment(request, "_notification_row.html", me, {"n": shown})

    @router.post(
        "/notifications/{notification_id}/read",
        name="tradelog.ui.mark_read",
        dependencies=[Change],
    )
    def mark_read(*, request: Request, me: Me, notification_id: int) -> HTMLResponse:
        with context.session() as session:
            try:
                row = inbox.mark_read(session, me.actor, notification_id)
            except PermissionDenied:
                raise NotFound(f"no notification with id {notification_id}") from None
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
            session.commit()
            shown = notification_out(row)
        return _joined(
            pages.fragment(request, "_notification_row.html", me, {"n": shown}),
            pages.fragment(request, "_badge.html", me, {"unread": unread, "oob": True}),
        )

    @router.post("/notifications/read-all", name="tradelog.ui.mark_all_read", dependencies=[Change])
    def mark_all_read(*, request: Request, me: Me, filter: Filter = "all") -> HTMLResponse:
        with context.session() as session:
            changed = inbox.mark_all_read(session, me.actor)
            session.commit()
            values = inbox_values(session, me, filter, None)
            unread = inbox.unread_count(session, me.actor, user_id=me.id)
        note = f"Marked {changed} notification{'' if changed == 1 else 's'} read."
        return _joined(
            pages.fragment(request, "_inbox_rows.html", me, values),
            pages.fragment(request, "_badge.html", me, {"unread": unread, "oob": True}),
            pages.fragment(request, "_flash.html", me, {"message": note, "oob": True}),
        )

    # -- preferences -------------------------------------------------------------------

    @router.get("/preferences", name="tradelog.ui.preferences")
    def preferences(*, request: Request, me: Me) -> HTMLResponse:
        with context.session() as session:
            shown = preferences_dict(get_preferences(session, me.actor, me.id))
            session.commit()
        values = {"page": "preferences", "prefs": SimpleNamespace(**shown)}
        return pages.page(request, "preferences.html", me, values)

    @router.post("/preferences", name="tradelog.ui.save_preferences", dependencies=[Change])
    def save_preferences(*, request: Request, me: Me, form: Form) -> HTMLResponse:
        changes: dict[str, Any] = {name: form.get(name) == "on" for name in _SWITCHES}
        for name in _TEXTS:
            if name in form:
                changes[name] = form[name].strip() or None
        start = form.get("quiet_hours_start", "").strip() or None
        end = form.get("quiet_hours_end", "").strip() or None
        changes["quiet_hours_start"], changes["quiet_hours_end"] = start, end
        if changes.get("timezone") is None:
            changes.pop("timezone")
        if changes.get("quiet_hours_mode") is None:
            changes.pop("quiet_hours_mode")
        problem: Problem | None = None
        with context.session() as session, context.audited(request):
            try:
                row = update_preferences(session, me.actor, me.id, **changes)
                session.commit()
                shown = preferences_dict(row)
            except ValueError as exc:
                session.rollback()
                bad = BadRequest(field_in(str(exc), EDITABLE_FIELDS), str(exc))
                problem = problem_for(bad)[0]
                shown = preferences_dict(get_preferences(session, me.actor, me.id)) | changes
        values = {
            "prefs": SimpleNamespace(**shown),
            "problem": problem,
            "message": None if problem else "Saved. The next notification follows these.",
        }
        response = pages.fragment(request, "_preferences_form.html", me, values)
        response.status_code = problem.status if problem else 200
        return response

    # -- logs ----------------------------------------------------------------------------

    @router.get("/logs", name="tradelog.ui.logs")
    def logs(
        *,
        request: Request,
        me: Me,
        user_id: str | None = None,
        min_level: str | None = None,
        module: str | None = None,
        keyword: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
    ) -> HTMLResponse:
        form = {
            "user_id": (user_id or "").strip() if me.is_admin else None,
            "min_level": min_level or None,
            "module": module or None,
            "keyword": keyword or None,
            "since": since or None,
            "until": until or None,
        }
        values: dict[str, Any] = {"page": "logs", "form": form, "entries": [], "next": None}
        values["filtered"] = any(form.values())
        values["cursor"] = cursor
        status = 200
        try:
            with naming("user_id"):
                chosen = int(form["user_id"]) if form["user_id"] else None
            filters = log_filter(
                me.zone,
                user_id=chosen if me.is_admin else me.id,
                level=None,
                min_level=min_level,
                module=module,
                since=since,
                until=until,
                keyword=keyword,
            )
            with context.session() as session, naming("cursor"):
                found = query_logs(
                    session, me.actor, filters=filters, limit=50, before=cursor or None
                )
            values["entries"] = found.entries
            values["next"] = found.next_cursor.encode() if found.next_cursor else None
        except BadRequest as exc:
            values["problem"], _ = problem_for(exc)
            status = 400
        return pages.page(request, "logs.html", me, values, status_code=status)

    # -- the admin's error console -----------------------------------------------------

    @router.get("/admin/errors", name="tradelog.ui.admin_errors")
    def admin_errors(
        *,
        request: Request,
        admin: Admin,
        status: Literal["unresolved", "resolved", "ignored", "all"] = "unresolved",
    ) -> HTMLResponse:
        with context.session() as session:
            groups = error_groups(
                session, admin.actor, status=None if status == "all" else status, limit=200
            )
            session.commit()
        values = {"page": "errors", "groups": groups, "status": status}
        return pages.page(request, "admin_errors.html", admin, values)

    @router.get("/admin/errors/{fingerprint}", name="tradelog.ui.admin_group")
    def admin_group(
        *, request: Request, admin: Admin, fingerprint: str, cursor: str | None = None
    ) -> HTMLResponse:
        with context.session() as session:
            with naming("fingerprint"):
                full = expand_fingerprint(session, admin.actor, fingerprint)
            found = error_groups(session, admin.actor, fingerprint=full, limit=1)
            with naming("cursor"):
                page = list_errors(
                    session, admin.actor, fingerprint=full, limit=50, cursor=cursor or None
                )
            session.commit()
        if not found:
            raise NotFound(f"no errors with fingerprint {full}")
        values = {
            "page": "errors",
            "group": found[0],
            "fingerprint": full,
            "occurrences": page.items,
            "next": page.next_cursor,
        }
        return pages.page(request, "admin_group.html", admin, values)

    @router.post(
        "/admin/errors/{fingerprint}/resolve",
        name="tradelog.ui.resolve_group",
        dependencies=[Change],
    )
    def resolve_group(*, request: Request, admin: Admin, fingerprint: str) -> HTMLResponse:
        with context.session() as session, context.audited(request):
            with naming("fingerprint"):
                full = expand_fingerprint(session, admin.actor, fingerprint)
            ids = resolve(session, full, admin.actor, "resolved in the error console")
            session.commit()
            found = error_groups(session, admin.actor, fingerprint=full, limit=1)
        note = f"Resolved {len(ids)} occurrence{'' if len(ids) == 1 else 's'} of {full[:12]}."
        return _joined(
            pages.fragment(request, "_group_row.html", admin, {"g": found[0]}),
            pages.fragment(request, "_flash.html", admin, {"message": note, "oob": True}),
        )

    return router


def _joined(*parts: HTMLResponse) -> HTMLResponse:
    """One response of several fragments (htmx swaps the first, the others ``hx-swap-oob``)."""
    return HTMLResponse(b"\n".join(bytes(part.body) for part in parts))
