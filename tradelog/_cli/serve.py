"""``tradelog serve``: the web pages and JSON routes of :mod:`tradelog.web` for operators.

Runs :func:`tradelog.web.create_app` with uvicorn on ``--host``/``--port`` (default
``127.0.0.1:8000``) against the configured database. It refuses to start (exit 2) without
``TRADELOG_WEB_ADMIN_TOKEN``, a secret of at least 16 characters: whoever presents it - as
``Authorization: Bearer <token>``, or by signing in at ``/login`` - acts as the system admin.
Needs the ``web`` extra. Open ``/ui/admin/errors`` (the error console) or ``/docs`` (the API).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tradelog._cli._common import Context, positive_int
from tradelog._runtime import Runtime
from tradelog.exceptions import ConfigurationError, MissingExtraError

__all__ = ["register", "server_url"]

_GRACE_SECONDS = 3


def register(subparsers: Any) -> None:
    """Add the ``serve`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="the web pages and JSON routes for operators (needs TRADELOG_WEB_ADMIN_TOKEN)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=positive_int, default=8000, help="port to listen on")
    parser.set_defaults(handler=_serve)


def server_url(host: str, port: int) -> str:
    """The address a browser opens for ``host`` and ``port``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - naming, not binding
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def _serve(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings
    if not settings.web_admin_token:
        raise ConfigurationError(
            "tradelog serve refuses to start without TRADELOG_WEB_ADMIN_TOKEN (the bearer "
            "token that acts as the system admin; at least 16 characters)",
            variable="TRADELOG_WEB_ADMIN_TOKEN",
        )
    try:
        import uvicorn  # noqa: PLC0415 - the web extra is optional

        from tradelog.web import create_app  # noqa: PLC0415 - needs the web extra
    except ImportError as exc:
        raise MissingExtraError("web", "fastapi, jinja2 or uvicorn") from exc
    context.engine  # noqa: B018 - an unreachable database fails now (exit 3), not per request
    runtime = Runtime(settings).start(logging_=False, hooks=False, background=False)
    try:
        app = create_app(token=settings.web_admin_token, runtime=runtime)
        url = server_url(args.host, args.port)
        print(
            f"tradelog serve: {url}/ui/admin/errors (pages), {url}/docs (API) "
            f"on {settings.redacted_url()}",
            file=sys.stderr,
            flush=True,
        )
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info",
            timeout_graceful_shutdown=_GRACE_SECONDS,
        )
        uvicorn.Server(config).run()
    finally:
        runtime.shutdown()
    return 0
