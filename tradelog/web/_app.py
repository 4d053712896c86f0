"""The standalone app of ``tradelog serve``: the router behind one admin token.

Whoever presents the token acts as the system admin (:func:`tradelog.users.ensure_system_user`):
programs send it as ``Authorization: Bearer <token>``; a browser signs in once at ``/login``
and keeps an ``HttpOnly``, ``SameSite=Strict`` cookie holding a keyed hash of the token (never
the token itself). Tokens are compared in constant time; a wrong one costs the caller a second.
A page asked for without a token is redirected to the sign-in form; a JSON route answers 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Final
from urllib.parse import parse_qsl, quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tradelog._access import Actor
from tradelog._runtime import Runtime
from tradelog.config import Secret
from tradelog.exceptions import ConfigurationError
from tradelog.users import ensure_system_user
from tradelog.web._context import WebContext
from tradelog.web._router import create_router
from tradelog.web._templates import render

__all__ = ["MIN_TOKEN_LENGTH", "SESSION_COOKIE", "create_app"]

MIN_TOKEN_LENGTH: Final = 16
SESSION_COOKIE: Final = "tradelog_session"
_WRONG_TOKEN_DELAY: Final = 1.0


def _check_token(token: Secret | str | None) -> str:
    value = token.reveal() if isinstance(token, Secret) else (token or "")
    if len(value.strip()) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            "TRADELOG_WEB_ADMIN_TOKEN must be set to a secret of at least "
            f'{MIN_TOKEN_LENGTH} characters (e.g. `python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"`)',
            variable="TRADELOG_WEB_ADMIN_TOKEN",
        )
    return value.strip()


def _safe_next(target: str | None, default: str) -> str:
    """Only a path on this server (never ``//host`` or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def create_app(
    *, token: Secret | str | None, runtime: Runtime | None = None, ping_interval: float = 15.0
) -> FastAPI:
    """The app ``tradelog serve`` runs (see the module docstring). Raises
    :class:`~tradelog.exceptions.ConfigurationError` when ``token`` is missing or shorter
    than :data:`MIN_TOKEN_LENGTH` characters."""
    secret = _check_token(token)
    cookie_value = hmac.new(secret.encode(), b"tradelog web session", hashlib.sha256).hexdigest()
    context = WebContext(runtime)
    system: list[int] = []

    def system_admin() -> Actor:
        if not system:
            with context.session() as session:
                system.append(ensure_system_user(session))
                session.commit()
        return Actor(system[0], is_admin=True)

    def admin_token(request: Request) -> Actor | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            if hmac.compare_digest(given.strip().encode(), secret.encode()):
                return system_admin()
            raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": "Bearer"})
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), cookie_value.encode()):
            return system_admin()
        page = request.url.path.startswith("/ui/") and request.method == "GET"
        if page and request.headers.get("hx-request") != "true":
            where = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            raise HTTPException(303, "sign in first", headers={"Location": f"/login?next={where}"})
        return None

    router = create_router(actor=admin_token, runtime=runtime, ping_interval=ping_interval)
    app = FastAPI(
        title="tradelog",
        summary="Notifications, logs, errors and service health of a trading service",
        lifespan=router.web_lifespan,
    )
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/ui/inbox", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        values = {"me": None, "action": "/login", "next": _safe_next(next, "/ui/admin/errors")}
        return render(request, "login.html", values)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        target = _safe_next(form.get("next"), "/ui/admin/errors")
        given = form.get("token", "").strip().encode()
        if not hmac.compare_digest(given, secret.encode()):
            await asyncio.sleep(_WRONG_TOKEN_DELAY)
            values = {"me": None, "action": "/login", "next": target, "problem": "Wrong token."}
            return render(request, "login.html", values, status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            cookie_value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    return app
