"""A TCP proxy between tradelog and PostgreSQL that a test controls: the network's faults on
demand.

Modes (:meth:`TcpProxy.set_mode`):

``pass``
    bytes flow both ways.
``reset``
    every open connection is closed with a TCP reset; new connections are accepted and reset
    at once (a server or firewall refusing).
``black_hole``
    connections are accepted and nothing flows in either direction (a network partition: the
    peer never answers, no error either). Leaving this mode resets the connections it held.
``stall``
    like ``black_hole``, but leaving it lets the held bytes flow on as if the network had only
    paused (a commit sent during the stall then happens *after* the client gave up on it).
``delay``
    each chunk is forwarded ``delay`` seconds after it was read.
``ack_loss``
    bytes flow until the client sends ``COMMIT`` (read from the PostgreSQL wire protocol, so
    a log message saying "COMMIT" does not count): the commit is forwarded, the server's reply
    is withheld, and after ``hold`` seconds (time for the server to commit) both sides are
    reset. The client cannot know whether its transaction committed. ``times`` commits are
    lost this way, then the proxy passes again. With ``after`` (a statement's first word,
    e.g. ``b"COPY"``) only commits of transactions that ran such a statement count.

Counters: ``connections`` accepted and ``acks_lost``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import Final

from sqlalchemy.engine import make_url

__all__ = ["TcpProxy"]

_MODES: Final = frozenset({"pass", "reset", "black_hole", "stall", "delay", "ack_loss"})
_CHUNK: Final = 65536
_POLL: Final = 0.02
_SSL_REQUEST: Final = 80877103
_GSS_REQUEST: Final = 80877104
_CANCEL_REQUEST: Final = 80877102


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (linger 0) rather than a clean FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _CommitFinder:
    """Follows the client's PostgreSQL messages and says when one is a ``COMMIT``."""

    def __init__(self) -> None:
        self._buffer = b""
        self._started = False
        self.last = b""
        """The last query seen (for a test's messages)."""
        self.seen: set[bytes] = set()
        """First words of the statements sent since the last commit."""

    def feed(self, data: bytes, after: bytes | None = None) -> bool:
        """Whether ``data`` completes a ``COMMIT`` (of a transaction that ran ``after``)."""
        self._buffer += data
        found = False
        while True:
            if not self._started:
                if len(self._buffer) < 8:
                    return found
                length, code = struct.unpack("!ii", self._buffer[:8])
                if len(self._buffer) < length:
                    return found
                self._buffer = self._buffer[length:]
                if code not in (_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST):
                    self._started = True
                continue
            if len(self._buffer) < 5:
                return found
            kind = self._buffer[:1]
            (length,) = struct.unpack("!i", self._buffer[1:5])
            if len(self._buffer) < 1 + length:
                return found
            body = self._buffer[5 : 1 + length]
            self._buffer = self._buffer[1 + length :]
            if kind == b"Q":
                query = body.rstrip(b"\x00").strip().upper()
            elif kind == b"P":
                name_end = body.index(b"\x00")
                query_end = body.index(b"\x00", name_end + 1)
                query = body[name_end + 1 : query_end].strip().upper()
            else:
                continue
            self.last = query
            if query.startswith(b"COMMIT") or query.endswith(b"COMMIT"):
                found = found or after is None or after in self.seen
                self.seen.clear()
            else:
                self.seen.add(query.split(None, 1)[0] if query else b"")


class _Link:
    """One proxied connection: the client's socket, the server's, and their pumps."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = threading.Event()
        self.opened_in = proxy.mode
        self.withhold_replies = False
        self.finder = _CommitFinder()

    def start(self) -> None:
        for source, target, upstream in (
            (self.client, self.server, True),
            (self.server, self.client, False),
        ):
            threading.Thread(
                target=self._pump, args=(source, target, upstream), daemon=True
            ).start()

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            _reset(self.client)
            _reset(self.server)
        self.proxy._forget(self)

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        proxy = self.proxy
        try:
            while not self.closed.is_set():
                if proxy.mode in ("black_hole", "stall") or (
                    self.withhold_replies and not upstream
                ):
                    time.sleep(_POLL)
                    continue
                ready, _, _ = select.select([source], [], [], _POLL)
                if not ready:
                    continue
                data = source.recv(_CHUNK)
                if not data:
                    break
                while proxy.mode in ("black_hole", "stall") and not self.closed.is_set():
                    time.sleep(_POLL)  # read just as the stall began: held like the rest
                if self.withhold_replies and not upstream:
                    continue  # read after the commit went up: never delivered
                if proxy.mode == "delay":
                    time.sleep(proxy.delay)
                if upstream and self.finder.feed(data, proxy.after) and proxy._take_ack_loss():
                    self.withhold_replies = True  # before the commit can be answered
                    proxy.lost_after.append(self.finder.last)
                    threading.Thread(target=self._lose_ack, daemon=True).start()
                target.sendall(data)
        except OSError:
            pass
        self.close()

    def _lose_ack(self) -> None:
        time.sleep(self.proxy.hold)
        self.close()


class TcpProxy:
    """Listen on 127.0.0.1 (a free port) and forward to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.delay = 0.0
        self.hold = 0.2
        self.after: bytes | None = None
        self.connections = 0
        self.acks_lost = 0
        self.lost_after: list[bytes] = []
        """The commit statements whose acknowledgement was withheld."""
        self._ack_losses_left = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy in front of the server ``url`` names."""
        parsed = make_url(url)
        return cls(parsed.host or "127.0.0.1", parsed.port or 5432)

    def url(self, url: str) -> str:
        """``url`` pointed at this proxy instead of the server."""
        parsed = make_url(url).set(host="127.0.0.1", port=self.port)
        return parsed.render_as_string(hide_password=False)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(2.0)
        for link in self._snapshot():
            link.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_mode(
        self,
        mode: str,
        *,
        delay: float = 0.0,
        hold: float = 0.2,
        times: int = 1_000_000,
        after: bytes | None = None,
    ) -> None:
        """Switch to ``mode`` (see the module docstring); applies to open connections too."""
        if mode not in _MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        with self._lock:
            previous, self.mode = self.mode, mode
            self.delay = delay
            self.hold = hold
            self.after = after
            self._ack_losses_left = times if mode == "ack_loss" else 0
        if mode == "reset" or (previous == "black_hole" and mode != "black_hole"):
            for link in self._snapshot():
                link.close()

    def _take_ack_loss(self) -> bool:
        with self._lock:
            if self.mode != "ack_loss" or self._ack_losses_left <= 0:
                return False
            self._ack_losses_left -= 1
            self.acks_lost += 1
            if self._ack_losses_left == 0:
                self.mode = "pass"
            return True

    def _snapshot(self) -> list[_Link]:
        with self._lock:
            return list(self._links)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.mode == "reset":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5.0)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            link = _Link(self, client, server)
            with self._lock:
                self._links.add(link)
            link.start()
