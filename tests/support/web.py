"""A real HTTP server for the web tests: uvicorn on 127.0.0.1 in a thread, a host app with
bearer tokens per user, and a Server-Sent Events client that reads the stream off the wire."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Header

import tradelog.web
from tests.support import clients
from tradelog.web import TradelogRouter


@dataclass
class Host:
    """A host app: ``/api`` mounts tradelog's router; ``tokens`` maps bearer tokens to users."""

    app: FastAPI
    router: TradelogRouter
    tokens: dict[str, Any] = field(default_factory=dict)


def host_app(
    runtime: tradelog.Runtime | Callable[[], tradelog.Runtime],
    *,
    ping_interval: float = 15.0,
    prefix: str = "/api",
) -> Host:
    """A FastAPI host whose own auth reads ``Authorization: Bearer <token>``."""
    tokens: dict[str, Any] = {}

    def current_user(authorization: str | None = Header(None)) -> Any:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        return tokens.get(authorization.removeprefix("Bearer ").strip())

    router = tradelog.web.create_router(
        actor=current_user, runtime=runtime, ping_interval=ping_interval
    )
    app = FastAPI(lifespan=router.web_lifespan)
    app.include_router(router, prefix=prefix)
    return Host(app, router, tokens)


class LiveServer:
    """``app`` served by uvicorn on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[LiveServer]:
    """Serve ``app`` for the block."""
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Event:
    """One Server-Sent Event as it came over the wire."""

    event: str
    data: str
    id: str | None
    received: float
    """``time.time()`` when the client read it."""

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """Reads ``url`` as Server-Sent Events on a thread; :meth:`next` hands them over."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.events: queue.Queue[Event | BaseException | None] = queue.Queue()
        self.status: int | None = None
        self.content_type: str | None = None
        self._client = clients.client(timeout=httpx.Timeout(10.0, read=None))
        self._response: httpx.Response | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def open(self) -> EventStream:
        self._thread.start()
        if not self._opened.wait(15):
            raise RuntimeError("the stream did not open")
        return self

    def _read(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self._response = response
                self.status = response.status_code
                self.content_type = response.headers.get("content-type")
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "data" in fields or "event" in fields:
                            self.events.put(
                                Event(
                                    fields.get("event", "message"),
                                    fields.get("data", ""),
                                    fields.get("id"),
                                    time.time(),
                                )
                            )
                        fields = {}
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except BaseException as exc:
            self._opened.set()
            self.events.put(exc)
        else:
            self.events.put(None)

    def next(self, timeout: float = 10.0, *, kind: str | None = "notification") -> Event:
        """The next event (of ``kind``, skipping others); raises on timeout or stream end."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind or 'event'} within {timeout} s")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise EOFError("the stream ended")
            if isinstance(item, BaseException):
                raise item
            if kind is None or item.event == kind:
                return item

    def ended(self, timeout: float) -> bool:
        """Whether the server ends the stream within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is None or isinstance(item, BaseException):
                return True
        return False

    def close(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
        with contextlib.suppress(Exception):
            self._client.close()
        self._thread.join(5)
