"""Rendering the pages: the Jinja2 templates shipped in ``tradelog/web/templates``, their filters,
and the static files (the vendored htmx and one stylesheet).

Templates escape everything they print (``autoescape``): a log message or a notification title
is text, never markup. Times are shown in the acting user's timezone (``local``: ``14 May 2026,
10:42:05 IST``). Links are built from route names (``url('tradelog.ui.inbox')``), so the pages
work under whatever prefix the host mounts the router at.
"""

from __future__ import annotations

import json
from datetime import datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from jinja2.runtime import Context

__all__ = ["STATIC_FILES", "render", "static_file"]

STATIC_FILES: Final = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "tradelog.css": "text/css; charset=utf-8",
}
_CONTEXT_LIMIT: Final = 300


def _zone(context: Context) -> ZoneInfo:
    zone = context.get("zone")
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("UTC")


@pass_context
def _local(context: Context, value: datetime | None) -> str:
    """``14 May 2026, 10:42:05 IST`` in the page's timezone; ``-`` for nothing."""
    if value is None:
        return "-"
    return value.astimezone(_zone(context)).strftime("%d %b %Y, %H:%M:%S %Z")


@pass_context
def _local_short(context: Context, value: datetime | None) -> str:
    """``14 May, 10:42`` in the page's timezone."""
    if value is None:
        return "-"
    return value.astimezone(_zone(context)).strftime("%d %b, %H:%M")


def _compact(value: Any) -> str:
    """A context dict on one line, cut at a few hundred characters."""
    text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= _CONTEXT_LIMIT else text[: _CONTEXT_LIMIT - 1] + "\u2026"


def _query(**params: Any) -> str:
    """A query string of the parameters that have a value."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


_ENVIRONMENT = Environment(
    loader=PackageLoader("tradelog.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENVIRONMENT.filters.update(local=_local, local_short=_local_short, compact=_compact)
_ENVIRONMENT.globals.update(query=_query)


def render(
    request: Request,
    template: str,
    values: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render ``template`` with ``values``, ``url(name, **params)`` (a path) and ``request``."""

    def url(route: str, /, **params: Any) -> str:
        return str(request.url_for(route, **{k: str(v) for k, v in params.items()}).path)

    page = _ENVIRONMENT.get_template(template).render(request=request, url=url, **values)
    return HTMLResponse(page, status_code=status_code, headers=headers)


def static_file(name: str) -> bytes:
    """The content of one of :data:`STATIC_FILES`."""
    return resources.files("tradelog.web").joinpath("static", name).read_bytes()
