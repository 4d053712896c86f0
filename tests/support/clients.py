"""HTTP clients for the tests, sharing one TLS context per process.

``httpx.Client()`` builds a verifying TLS context each time it is made, loading the system's
CA store: about 40 ms a client on a busy 2-core machine, which several hundred clients (one per
call in the web matrix) turn into most of a web test's time. These clients share one.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from tradelog._notify.channels.tls import shared_context

__all__ = ["client", "request"]


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared TLS context."""
    kwargs.setdefault("verify", shared_context(ssl.create_default_context))
    return httpx.Client(**kwargs)


def request(method: str, url: str, *, timeout: float = 5.0, **kwargs: Any) -> httpx.Response:
    """One request on a client of its own, as ``httpx.request`` (same default timeout)."""
    with client(timeout=timeout) as one:
        return one.request(method, url, **kwargs)
