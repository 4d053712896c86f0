"""Putting the routes together: :func:`create_router` and the router it returns.

One router = one :class:`~tradelog.web._context.WebContext` (the runtime, the acting user), one
:class:`~tradelog.web._hub.StreamHub` (the live streams) and three groups of routes: the user's
JSON routes, the admin's under ``/admin`` and the pages under ``/ui``. The acting-user
dependency is also a dependency of the router itself, so no route (the static files included)
answers without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Engine

from tradelog._runtime import Runtime
from tradelog.web._admin import admin_routes
from tradelog.web._api import user_routes
from tradelog.web._context import WebContext, WebUser
from tradelog.web._hub import StreamHub
from tradelog.web._pages import page_routes, problem_page
from tradelog.web._problems import PageRoute, ProblemRoute
from tradelog.web._schemas import notification_out

__all__ = ["TradelogRouter", "create_router"]


class TradelogRouter(APIRouter):
    """The router :func:`create_router` returns: an ``APIRouter`` that also owns the live
    streams' hub (:meth:`close` ends them; :meth:`web_lifespan` does so when the app stops)."""

    hub: StreamHub

    def close(self) -> None:
        """End every open stream and stop the hub's thread (it starts again when needed)."""
        self.hub.close()

    @contextlib.asynccontextmanager
    async def web_lifespan(self, app: Any) -> AsyncIterator[None]:
        """A FastAPI ``lifespan`` that closes the streams when the app shuts down."""
        try:
            yield
        finally:
            self.close()


def create_router(
    *,
    actor: Callable[..., Any],
    runtime: Runtime | Callable[[], Runtime] | None = None,
    ping_interval: float = 15.0,
    poll_interval: float | None = None,
) -> TradelogRouter:
    """The routes of the inbox, preferences, logs, errors, status, trading config, the admin
    routes and the pages, for a FastAPI host to include under its own prefix.

    ``actor`` is a FastAPI dependency (it may take its own parameters and dependencies) that
    returns the id of the user making the request, from the host's own authentication; None
    means nobody is signed in (401). It may also return a :class:`tradelog.users.Actor`, which
    is taken as vouched for (a service account). ``runtime``: read from this runtime instead of
    the configured one; or a function returning the runtime, called for each request (one app
    serving a runtime that changes: a test suite that builds the app once and a runtime per
    test; call :meth:`TradelogRouter.close` when it changes, ending the open streams).
    ``ping_interval``: seconds between the pings of the live stream; ``poll_interval``:
    seconds between the stream's polls of the database when nothing wakes it (default
    ``TRADELOG_WEB_POLL_INTERVAL``).
    """
    context = WebContext(runtime)
    current = context.dependency(actor)

    def record(request: Request, exc: BaseException) -> None:
        user: WebUser | None = getattr(request.state, "tradelog_user", None)
        context.runtime.errors.capture(
            exc,
            user_id=user.id if user is not None else None,
            context={"source": "web", "method": request.method, "path": request.url.path},
        )

    api_route = cast(
        "type[ProblemRoute]",
        type("TradelogApiRoute", (ProblemRoute,), {"on_error": staticmethod(record)}),
    )
    page_route = cast(
        "type[PageRoute]",
        type(
            "TradelogPageRoute",
            (PageRoute,),
            {"on_error": staticmethod(record), "page": staticmethod(problem_page(context))},
        ),
    )

    def engine() -> Engine:
        return context.runtime.engines.app()

    hub = StreamHub(
        context.session,
        engine,
        serialize=lambda row: notification_out(row).model_dump(mode="json"),
        wakeups=lambda: context.runtime.wakeups,
        poll_interval=lambda: poll_interval or context.runtime.settings.web_poll_interval,
        listen=lambda: context.runtime.settings.listen,
    )
    router = TradelogRouter(dependencies=[Depends(current)])
    router.hub = hub
    router.include_router(
        user_routes(context, current, hub, route_class=api_route, ping_interval=ping_interval)
    )
    router.include_router(admin_routes(context, current, route_class=api_route))
    router.include_router(page_routes(context, current, route_class=page_route))
    return router
