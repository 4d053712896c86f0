"""The web surface: the inbox, preferences, logs, errors, status and trading config as JSON
routes, the admin's console, and HTML pages, for a FastAPI host to mount (extra ``web``).

::

    from fastapi import FastAPI, Depends
    import tradelog, tradelog.web

    tradelog.configure()
    router = tradelog.web.create_router(actor=current_user_id)   # your auth: returns a user id
    app = FastAPI(lifespan=router.web_lifespan)
    app.include_router(router, prefix="/tradelog")

Closed by default: every route needs ``actor``; a user reads only their own rows; admin routes
(``/admin/...``) refuse anyone else (403); another user's notification is 404. Errors are JSON
problem details. ``tradelog serve`` runs :func:`create_app`: the router behind a bearer token
(``TRADELOG_WEB_ADMIN_TOKEN``) that acts as the system admin.
"""

from __future__ import annotations

from tradelog.web._app import create_app
from tradelog.web._router import TradelogRouter, create_router

__all__ = ["TradelogRouter", "create_app", "create_router"]
