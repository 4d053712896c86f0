"""Fixtures of the reliability tests: a fault proxy in front of the test PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.db import MigratedDatabase
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def proxy(db: MigratedDatabase) -> Iterator[TcpProxy]:
    """A :class:`TcpProxy` in front of this test's PostgreSQL database (mode ``pass``)."""
    with TcpProxy.for_url(db.url) as running:
        yield running
