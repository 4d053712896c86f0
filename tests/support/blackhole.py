"""A TCP port that accepts connections and never answers: the database of a network black hole.

The kernel completes every TCP handshake (the listen backlog) and ACKs what the client sends,
so a client only notices through its own timeouts - exactly what a silently dropped route or a
hung server looks like from tradelog's side.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["black_hole"]


@contextmanager
def black_hole() -> Iterator[int]:
    """Listen on a free local port, accept every connection, never send a byte; yields the port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)  # kept open, never read, never written

    thread = threading.Thread(target=accept, name="black-hole", daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()
