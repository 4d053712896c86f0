"""A FastAPI trading service that already has its own logging, with tradelog as a guest.

    .venv/bin/python examples/fastapi_service.py [--dir DIR] [--database-url URL] [--port N]

Serves on 127.0.0.1 (``--port 0``: a free port) and prints ``serving http://127.0.0.1:PORT``
once it accepts requests; Ctrl-C or SIGTERM stops it (a normal exit: tradelog writes what is
queued). Needs the ``web`` extra plus FastAPI
and uvicorn. Then, for example::

    curl -X POST -H 'X-Account: 101' -H 'Content-Type: application/json' \\
         -d '{"symbol": "TCS", "qty": 5}' http://127.0.0.1:PORT/orders
    curl -H 'X-Account: 102' http://127.0.0.1:PORT/fail            # a 500, recorded
    tradelog --database-url URL errors list

What the host keeps and what tradelog adds:

* **the host's logging stays the host's.** structlog renders JSON lines on stdout through the
  host's own chain, with ``tradelog.processor`` added to it; ``logging.config.dictConfig`` gives
  the root a console handler of the host's and a ``tradelog.Handler``. ``tradelog.configure(
  take_over=False)`` changes neither;
* **accounts** are put into tradelog at start-up with the host's own ids (``ensure_users``);
* **per-account tasks**: one asyncio task per account polls quotes every few seconds inside
  ``bind_user``, recorded by ``track_task("quote_poll")``, with a heartbeat;
* **the middleware** resolves the account from the ``X-Account`` header: every log event of a
  request carries the account and a request id, an unhandled exception is one ``error_logs``
  row, and ``record_audit`` rows get the client's address and user agent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel

import tradelog
from tradelog.asgi import TradelogMiddleware
from tradelog.audit import record_audit

ACCOUNTS: list[dict[str, Any]] = [
    {"id": 101, "email": "asha@example.com", "name": "Asha"},
    {"id": 102, "email": "ravi@example.com", "name": "Ravi"},
    {"id": 103, "email": "meera@example.com", "name": "Meera"},
]
POLL_SECONDS = 0.5


def configure_host_logging() -> None:
    """The host's own logging, as it was before tradelog - plus the two tradelog lines."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            tradelog.processor,  # tradelog takes a copy; the chain goes on unchanged
            structlog.processors.format_exc_info,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "plain",
                },
                "tradelog": {"class": "tradelog.Handler", "level": "INFO"},
            },
            "root": {"level": "INFO", "handlers": ["console", "tradelog"]},
            "loggers": {"uvicorn.access": {"level": "WARNING"}},
        }
    )


log = structlog.get_logger("service")
orders_log = logging.getLogger("service.orders")


async def poll_quotes(account_id: int) -> None:
    """One account's background task: poll, record the run, send a heartbeat."""
    async with tradelog.bind_user(account_id):
        while True:
            async with tradelog.track_task("quote_poll") as run:
                run["symbols"] = 3
                log.info("quotes polled", symbols=3)
            await asyncio.to_thread(tradelog.heartbeat)
            await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(poll_quotes(account["id"])) for account in ACCOUNTS]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def account_of(request: Request) -> int | None:
    """The host's own notion of who is calling (a header here; a session in real life)."""
    raw = request.headers.get("x-account", "")
    return int(raw) if raw.isdigit() else None


class Order(BaseModel):
    symbol: str
    qty: int


def build_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/orders")
    def place_order(order: Order, request: Request) -> dict[str, Any]:
        account = account_of(request)
        if account is None:
            raise HTTPException(401, "no account")
        log.info("order placed", symbol=order.symbol, qty=order.qty)  # the account is bound
        orders_log.info("order routed to broker: %s x%d", order.symbol, order.qty)
        with tradelog.session() as session:
            record_audit(
                session,
                user_id=account,
                action="place_order",
                resource_type="order",
                changes={"symbol": order.symbol, "qty": order.qty},
            )
            session.commit()
        tradelog.notify(account, "trading", "info", "Order placed", f"{order.symbol} x{order.qty}")
        return {"placed": order.symbol}

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("broker session expired")

    app.add_middleware(TradelogMiddleware, user=account_of)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a FastAPI service with tradelog as a guest")
    parser.add_argument("--dir", type=Path, help="output directory (default: a temp dir)")
    parser.add_argument("--database-url", help="default: SQLite under --dir")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    base = (args.dir or Path(tempfile.mkdtemp(prefix="tradelog-fastapi-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    url = args.database_url or f"sqlite:///{base / 'service.db'}"

    configure_host_logging()
    tradelog.db.upgrade(url)  # in production: `tradelog db upgrade` at deploy time
    tradelog.configure(database_url=url, log_dir=base / "logs", take_over=False)
    tradelog.ensure_users(ACCOUNTS)

    config = uvicorn.Config(build_app(), host="127.0.0.1", port=args.port, log_config=None)
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            print(f"serving http://127.0.0.1:{port}", flush=True)
        await task

    # SIGTERM (systemd, docker) becomes a normal exit, so tradelog writes what is queued
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C
        asyncio.run(serve())
    tradelog.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
