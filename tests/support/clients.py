"""HTTP clients for the tests, sharing one TLS context per process.

``httpx.Client()`` builds a verifying TLS context each time it is made, loading the system's
CA store: about 40 ms a client on a busy 2-core machine, which several hundred clients (one per
call in the web matrix) turn into most of a web test's time. These clients share one.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx

__all__ = ["client", "request"]


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared TLS context."""
    kwargs.setdefault("verify", _tls())
    return httpx.Client(**kwargs)


def request(method: str, url: str, *, timeout: float = 5.0, **kwargs: Any) -> httpx.Response:
    """One request on a client of its own, as ``httpx.request`` (same default timeout)."""
    with client(timeout=timeout) as one:
        return one.request(method, url, **kwargs)
