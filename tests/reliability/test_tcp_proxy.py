"""The fault proxy itself: each mode does to a PostgreSQL client what it says."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.support.db import MigratedDatabase
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def _dsn(proxy: TcpProxy, db: MigratedDatabase) -> str:
    return proxy.url(db.url).replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.parametrize("backend", ["postgresql"])
def test_pass_reset_and_black_hole(proxy: TcpProxy, db: MigratedDatabase) -> None:
    """Pass answers; reset refuses at once; a black hole lets the connect time out."""
    with psycopg.connect(_dsn(proxy, db), connect_timeout=3) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    proxy.set_mode("reset")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_dsn(proxy, db), connect_timeout=3)
    proxy.set_mode("black_hole")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_dsn(proxy, db), connect_timeout=1)
    assert 0.9 < time.monotonic() - started < 5


@pytest.mark.parametrize("backend", ["postgresql"])
def test_ack_loss_commits_on_the_server_and_fails_on_the_client(
    proxy: TcpProxy, db: MigratedDatabase
) -> None:
    """The client's COMMIT reaches the server, the client sees an error anyway."""
    conn = psycopg.connect(_dsn(proxy, db), connect_timeout=3)
    conn.execute("CREATE TABLE probe (note text)")
    conn.commit()
    conn.execute("INSERT INTO probe VALUES ('COMMIT inside a value is not a commit')")
    proxy.set_mode("ack_loss", hold=0.3, times=1)
    with pytest.raises(psycopg.OperationalError):
        conn.commit()
    assert proxy.acks_lost == 1
    assert proxy.mode == "pass"
    assert db.scalar("SELECT count(*) FROM probe") == 1


@pytest.mark.parametrize("backend", ["postgresql"])
def test_stall_lets_held_bytes_through_afterwards(proxy: TcpProxy, db: MigratedDatabase) -> None:
    """A stall holds a statement; when it ends the statement runs after all."""
    conn = psycopg.connect(_dsn(proxy, db), connect_timeout=3, autocommit=True)
    conn.execute("CREATE TABLE probe (note text)")
    proxy.set_mode("stall")
    conn.pgconn.send_query(b"INSERT INTO probe VALUES ('late')")
    time.sleep(0.3)
    assert db.scalar("SELECT count(*) FROM probe") == 0
    proxy.set_mode("pass")
    deadline = time.monotonic() + 5
    while db.scalar("SELECT count(*) FROM probe") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.scalar("SELECT count(*) FROM probe") == 1
    conn.close()
