"""One verifying TLS context per CA configuration, shared by the channels' connections.

Building a context loads a CA store: 20-40 ms each, paid on every reconnect and by every
channel object otherwise. A context is kept per value of ``SSL_CERT_FILE``/``SSL_CERT_DIR``
(what decides which CAs it trusts), so a process that changes them gets a new one.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Callable

__all__ = ["shared_context"]


def shared_context(build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """The context ``build`` makes for the CA variables as they are now, made once."""
    return _built(build, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _built(
    build: Callable[[], ssl.SSLContext], cafile: str | None, capath: str | None
) -> ssl.SSLContext:
    return build()
