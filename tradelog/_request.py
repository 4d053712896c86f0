"""The web request being served, where the audit trail can read it: :class:`RequestContext`.

The ASGI middleware (:mod:`tradelog.asgi`) binds one per request; any other host binds its own
with :func:`bind_request`. :func:`tradelog.audit.record_audit` fills ``ip_address`` and
``user_agent`` from it when the caller does not pass them. It lives in a context variable, so
each request (each asyncio task, each thread) sees its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

__all__ = ["RequestContext", "bind_request", "request_context"]

_IP_MAX: Final = 45
_AGENT_MAX: Final = 512


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the audit trail and error rows may know about the request being served: never its
    body, cookies or authorization headers."""

    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    method: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.ip_address is not None:
            object.__setattr__(self, "ip_address", str(self.ip_address)[:_IP_MAX] or None)
        if self.user_agent is not None:
            object.__setattr__(self, "user_agent", str(self.user_agent)[:_AGENT_MAX] or None)


_current: ContextVar[RequestContext | None] = ContextVar("tradelog_request", default=None)


def request_context() -> RequestContext | None:
    """The request being served here, or None outside one."""
    return _current.get()


@contextmanager
def bind_request(
    *,
    ip_address: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    method: str | None = None,
    path: str | None = None,
) -> Iterator[RequestContext]:
    """Make a request's details the :func:`request_context` for the block."""
    context = RequestContext(ip_address, user_agent, request_id, method, path)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
