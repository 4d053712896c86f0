"""ASGI middleware for the host's web application (extra ``web``: Starlette).

::

    from fastapi import FastAPI, Request
    from tradelog.asgi import TradelogMiddleware

    def account_of(request: Request) -> int | None:     # sync or async; None: no user
        return request.state.account_id if hasattr(request.state, "account_id") else None

    app = FastAPI()
    app.add_middleware(TradelogMiddleware, user=account_of)

For each HTTP request :class:`TradelogMiddleware`:

* takes the incoming ``X-Request-ID`` when it is a plain token (letters, digits, ``-._:``; at
  most 128 characters), else makes one, binds it as ``request_id`` for every log event of the
  request and sends it back in the response's ``X-Request-ID``;
* binds the user the ``user`` callable returns for the request (``tradelog.bind_user``: log
  events, ``track_task(name)``, crashes). The callable gets a Starlette ``Request`` that cannot
  read the body; if it raises, that is recorded and the request goes on without a user;
* records every exception that leaves the application in ``error_logs`` - with the method,
  the path (no query string), the status (500 unless a response had started) and the request
  id, never the body, cookies or headers - under that user, then lets it propagate unchanged
  (the server answers 500 as before). The server logging the same exception again does not
  make a second row;
* serves the request inside :func:`tradelog.audit.request_context` with the client's ip
  address and user agent, so ``record_audit`` rows made while serving it carry them.

Other scopes (``lifespan``, ``websocket``) pass through untouched.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import ExitStack
from typing import Any, Final

from tradelog.exceptions import MissingExtraError

try:
    from starlette.datastructures import Headers, MutableHeaders
    from starlette.requests import Request
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingExtraError("web", "starlette") from exc

from structlog.contextvars import bound_contextvars

from tradelog._facade import capture_exception
from tradelog._users.context import bind_user
from tradelog.audit import request_context

__all__ = ["TradelogMiddleware", "UserResolver"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserResolver = Callable[[Request], "int | Awaitable[int | None] | None"]
"""Returns the id of the user a request is for (or None), sync or async."""

_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_HEADER: Final = "x-request-id"


def _no_body() -> Awaitable[Message]:
    raise RuntimeError("the user resolver may not read the request body")


class TradelogMiddleware:
    """Request id, bound user, recorded crashes and the audit request context per request
    (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, user: UserResolver | None = None) -> None:
        self.app = app
        self.user = user

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get(_HEADER)
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        status: list[int] = []

        async def send_with_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
                response_headers = MutableHeaders(scope=message)
                if _HEADER not in response_headers:
                    response_headers.append("X-Request-ID", request_id)
            await send(message)

        client = scope.get("client")
        with ExitStack() as stack:
            stack.enter_context(bound_contextvars(request_id=request_id))
            stack.enter_context(
                request_context(
                    ip_address=client[0] if client else None,
                    user_agent=headers.get("user-agent"),
                )
            )
            user_id = await self._resolve(scope, request_id, method, path)
            if user_id is not None:
                stack.enter_context(bind_user(user_id))
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                capture_exception(
                    exc,
                    user_id=user_id,
                    source="asgi",
                    method=method,
                    path=path,
                    status=status[0] if status else 500,
                    request_id=request_id,
                )
                raise

    async def _resolve(self, scope: Scope, request_id: str, method: str, path: str) -> int | None:
        if self.user is None:
            return None
        try:
            found = self.user(Request(scope, _no_body))
            if inspect.isawaitable(found):
                found = await found
        except Exception as exc:
            capture_exception(
                exc,
                source="asgi.user_resolver",
                method=method,
                path=path,
                request_id=request_id,
            )
            return None
        if isinstance(found, bool) or not isinstance(found, int) or found <= 0:
            return None
        return found
