"""A fresh, migrated PostgreSQL database for one benchmark run, dropped afterwards.

Not a benchmark itself; the benchmarks that write to PostgreSQL use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tradelog._db import migrate


@contextmanager
def postgres_database(admin_url: str, tag: str = "bench") -> Iterator[str]:
    """A new database ``tradelog_<tag>_<pid>`` beside ``admin_url``'s, migrated to head."""
    name = f"tradelog_{tag}_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_size=1)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
