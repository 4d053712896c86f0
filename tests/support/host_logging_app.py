"""A host module with its own structlog configuration - JSON lines on stdout, ``tradelog.processor``
in the chain - that re-runs it whenever it is imported or asked to (as many services do at the
top of every worker). Used by the spawned-child test."""

from __future__ import annotations

import sys

import structlog

import tradelog


def configure_host_logging() -> None:
    """The host's chain: contextvars, level, tradelog, exceptions, timestamp, JSON."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            tradelog.processor,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


configure_host_logging()


def work(user_id: int) -> int:
    """A pool task: configure logging again (as the host's worker entry point does), log."""
    configure_host_logging()
    with tradelog.bind_user(user_id):
        structlog.get_logger().info("child task ran", task=user_id)
    tradelog.flush(10)
    return user_id
