"""``tradelog worker``: deliver outbox notifications until stopped (or once with ``--once``),
and watch heartbeats: a service stale past ``TRADELOG_STALE_HEARTBEAT_SECONDS`` alerts the
operators and its owner once per episode (checked every ``TRADELOG_STALE_CHECK_INTERVAL``).

Channels come from the environment: Telegram needs ``TRADELOG_TELEGRAM_BOT_TOKEN``, email
``TRADELOG_SMTP_HOST`` and friends. With neither the command refuses to start (exit 2). A
worker sends only what it is configured for; deliveries on a channel no worker sends fail with
the reason once due for ``TRADELOG_UNSERVED_DELIVERY_TIMEOUT`` seconds (default 900).
Run as many workers as you like against PostgreSQL; SIGTERM or Ctrl-C stops claiming, lets
deliveries in flight finish and hands the rest back.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from tradelog._cli._common import Context, emit, positive_float, positive_int
from tradelog._health.stale import StaleMonitor
from tradelog._notify.service import NotificationService
from tradelog._notify.wakeup import Wakeups
from tradelog._notify.worker import DeliveryWorker
from tradelog.exceptions import ConfigurationError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``worker`` command."""
    parser = subparsers.add_parser("worker", help="deliver queued Telegram and email notifications")
    parser.add_argument(
        "--once", action="store_true", help="deliver what is due now, print counts and exit"
    )
    parser.add_argument("--concurrency", type=positive_int, help="deliveries in flight (default 8)")
    parser.add_argument("--poll-interval", type=positive_float, help="seconds between outbox polls")
    parser.add_argument(
        "--lease",
        type=positive_float,
        help="claim lease in seconds, renewed while held (default TRADELOG_WORKER_LEASE, 30)",
    )
    parser.add_argument("--name", help="worker name recorded on claimed deliveries")
    parser.set_defaults(handler=_worker)


def _log_to_stderr() -> None:
    notify_logger = logging.getLogger("tradelog.notify")
    if not notify_logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        notify_logger.addHandler(handler)
        notify_logger.setLevel(logging.INFO)


async def _run_forever(worker: DeliveryWorker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop, 0)
    await worker.run()


def _worker(args: argparse.Namespace, context: Context) -> int:
    _log_to_stderr()
    worker = DeliveryWorker(
        context.engine,
        context.settings,
        name=args.name,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        lease=args.lease,
    )
    if not worker.channels:
        raise ConfigurationError(
            "nothing to deliver: set TRADELOG_TELEGRAM_BOT_TOKEN (Telegram) and/or "
            "TRADELOG_SMTP_HOST (email)",
            variable="TRADELOG_TELEGRAM_BOT_TOKEN",
        )
    settings = context.settings
    wakeups = Wakeups()
    stale = StaleMonitor(
        context.engine,
        send=NotificationService(context.engine, wakeups).notify,
        threshold=settings.stale_heartbeat_seconds,
        interval=settings.stale_check_interval,
        operators=settings.ops_user_ids,
    )
    if args.once:
        check = stale.run_check()
        asyncio.run(worker.run_once())
        opened = len(check.opened) if check else 0
    else:
        logging.getLogger("tradelog.notify").info(
            "delivery worker %s started (channels: %s)",
            worker.name,
            ", ".join(sorted(worker.channels)) or "none",
        )
        unsubscribe = wakeups.subscribe(worker.wake)
        stale.start()
        try:
            asyncio.run(_run_forever(worker))
        finally:
            stale.stop()
            unsubscribe()
        opened = 0
    emit(context, [{"worker": worker.name, **worker.stats, "stale_opened": opened}])
    return 0
