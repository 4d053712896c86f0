"""A local fake of the Telegram Bot API, served over real HTTP on 127.0.0.1.

The server speaks the wire protocol of ``https://api.telegram.org``: requests go to
``{api_url}/bot<TOKEN>/<method>`` as GET or POST with a query string, a JSON body, a
``application/x-www-form-urlencoded`` body or a ``multipart/form-data`` body, and every
answer is the Bot API envelope ``{"ok": true, "result": ...}`` or
``{"ok": false, "error_code": N, "description": "...", "parameters": {...}}`` with the
matching HTTP status.  File downloads go to ``{api_url}/file/bot<TOKEN>/<file_path>``.

python-telegram-bot builds its URLs as ``base_url + token`` (unless ``base_url`` contains a
``{token}`` placeholder), so a bot is pointed at this server with::

    Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)

where ``fake.base_url == f"{fake.api_url}/bot"`` and
``fake.base_file_url == f"{fake.api_url}/file/bot"``.

Implemented methods: ``getMe``, ``sendMessage`` and ``getFile`` (for files registered with
:meth:`FakeBotApi.add_file`).  Unknown methods answer 404 like Telegram does.

Rate limits
-----------
With ``enforce_limits=True`` each ``sendMessage`` is checked against sliding windows before
it is accepted.  For every limit ``(limit, length)`` the server keeps the processing
instants of the messages it *accepted* under that limit's key and admits a new message at
instant ``t`` only if fewer than ``limit`` accepted messages lie in the half-open interval
``(t - length, t]``.  By induction this guarantees that *every* half-open interval of
``length`` seconds contains at most ``limit`` accepted messages, so the check is exact
and not an approximation by fixed buckets.  Rejected messages answer HTTP 429 with
``parameters.retry_after`` (whole seconds, at least 1, rounded up from the time until the
oldest message in the window leaves it) and do not count against any window.

The limits, each keyed by bot token:

* global: at most ``global_per_second`` messages in any 1 second window;
* per chat: at most ``per_chat_per_second`` messages to one chat in any 1 second window
  (with the default of 1 a second message to the same chat less than 1 second after the
  previous accepted one is rejected);
* per group (optional, off by default): at most ``per_group_per_minute`` messages to one
  group or channel chat (negative id or ``@username``) in any 60 second window.

Instants are ``time.monotonic()`` values taken while holding the server lock, after the
request body was read and after any scripted delay, so they are strictly ordered.  They
are server-side instants: loopback and thread scheduling jitter (usually well under a
millisecond, occasionally more on a loaded machine) shifts them relative to the moment
the client sent the request, so a sender that paces itself exactly at the limit can be
caught.  ``limit_tolerance`` shortens every window by that many seconds to absorb such
jitter when a test wants to check pacing rather than a safety margin.

HTML checking
-------------
With ``validate_html=True`` (the default) ``sendMessage`` with ``parse_mode="HTML"``
applies the rules documented for the Bot API: only the supported tags (``b strong i em
u ins s strike del span class="tg-spoiler" tg-spoiler a tg-emoji code pre blockquote``),
properly nested; only the entities ``&lt; &gt; &amp; &quot;`` and numeric ones; every
other ``<``, ``>`` and ``&`` must be escaped.  Violations answer 400 with a
``can't parse entities`` description.  This is at least as strict as the real service
(which tolerates some stray ``>`` and ``&``), so text that passes here passes there.
The visible text after parsing must be 1 to ``max_text_length`` characters (code points).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import math
import re
import socket
import socketserver
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "DEFAULT_TOKEN",
    "FakeBotApi",
    "RecordedRequest",
    "ScriptedResponse",
    "UploadedFile",
    "bad_request",
    "delay",
    "drop_connection",
    "forbidden",
    "migrate_to_chat",
    "not_found",
    "ok",
    "raw_response",
    "retry_after",
    "server_error",
    "unauthorized",
]

DEFAULT_TOKEN = "123456789:AAFakeBotApiTokenForTests_0123456789"
"""The token a :class:`FakeBotApi` accepts when none are given."""

_TOKEN_RE = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_API_PATH_RE = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)/?$")
_FILE_PATH_RE = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>.+)$")
_INT_RE = re.compile(r"^-?\d+$")
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^<>]*)?)>")
_ENTITY_RE = re.compile(r"&(?:(lt|gt|amp|quot)|#(\d{1,7})|#[xX]([0-9A-Fa-f]{1,6}));")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    }
)
_PARSE_MODES = frozenset({"html", "markdown", "markdownv2"})


# ---------------------------------------------------------------------------
# Scripted responses
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedResponse:
    """One scripted answer for a future request.

    ``status == 200`` without ``raw_body`` means "handle the request normally" (after
    ``delay`` seconds), so :func:`ok` and ``delay(2.0)`` still run validation and rate
    limits and still deliver the message.
    """

    status: int = 200
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    delay: float = 0.0
    raw_body: bytes | None = None
    content_type: str = "application/json"
    drop_connection: bool = False

    @property
    def passthrough(self) -> bool:
        """Whether the request is handled normally once any delay has passed."""
        return self.status == 200 and self.raw_body is None and not self.drop_connection

    def body(self) -> bytes:
        """The response body this entry answers with (when not a passthrough)."""
        if self.raw_body is not None:
            return self.raw_body
        return _error_body(self.status, self.description, self.parameters)


def ok() -> ScriptedResponse:
    """Handle the next request normally."""
    return ScriptedResponse()


def bad_request(description: str = "Bad Request: chat not found") -> ScriptedResponse:
    """Answer 400; python-telegram-bot raises ``telegram.error.BadRequest``."""
    return ScriptedResponse(status=400, description=description)


def forbidden(description: str = "Forbidden: bot was blocked by the user") -> ScriptedResponse:
    """Answer 403; python-telegram-bot raises ``telegram.error.Forbidden``."""
    return ScriptedResponse(status=403, description=description)


def unauthorized(description: str = "Unauthorized") -> ScriptedResponse:
    """Answer 401; python-telegram-bot raises ``telegram.error.InvalidToken``."""
    return ScriptedResponse(status=401, description=description)


def not_found(description: str = "Not Found") -> ScriptedResponse:
    """Answer 404; python-telegram-bot raises ``telegram.error.InvalidToken``."""
    return ScriptedResponse(status=404, description=description)


def retry_after(seconds: int) -> ScriptedResponse:
    """Answer 429 flood control; python-telegram-bot raises ``telegram.error.RetryAfter``."""
    if seconds < 1:
        raise ValueError("Telegram's retry_after is a positive whole number of seconds")
    return ScriptedResponse(
        status=429,
        description=f"Too Many Requests: retry after {seconds}",
        parameters={"retry_after": seconds},
    )


def migrate_to_chat(new_chat_id: int) -> ScriptedResponse:
    """Answer 400 with ``migrate_to_chat_id``; PTB raises ``telegram.error.ChatMigrated``."""
    return ScriptedResponse(
        status=400,
        description="Bad Request: group chat was upgraded to a supergroup chat",
        parameters={"migrate_to_chat_id": new_chat_id},
    )


def server_error(status: int = 502, description: str | None = None) -> ScriptedResponse:
    """Answer a 5xx JSON error; python-telegram-bot raises ``telegram.error.NetworkError``."""
    if not 500 <= status <= 599:
        raise ValueError(f"not a server error status: {status}")
    return ScriptedResponse(status=status, description=description or _phrase(status))


def raw_response(
    status: int, body: bytes, content_type: str = "text/html; charset=utf-8"
) -> ScriptedResponse:
    """Answer with an arbitrary body, e.g. the HTML error page of a proxy."""
    return ScriptedResponse(status=status, raw_body=body, content_type=content_type)


def drop_connection() -> ScriptedResponse:
    """Close the connection without answering; PTB raises ``telegram.error.NetworkError``."""
    return ScriptedResponse(drop_connection=True)


def delay(seconds: float, then: ScriptedResponse | None = None) -> ScriptedResponse:
    """Wait ``seconds`` before answering with ``then`` (default: handle normally).

    A client whose read timeout is shorter raises ``telegram.error.TimedOut``, yet the
    message is still delivered when ``then`` is a passthrough, as with the real service.
    """
    if seconds < 0:
        raise ValueError("delay must not be negative")
    base = then if then is not None else ok()
    return replace(base, delay=base.delay + seconds)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"Error {status}"


def _error_body(
    status: int, description: str | None, parameters: Mapping[str, Any] | None = None
) -> bytes:
    payload: dict[str, Any] = {
        "ok": False,
        "error_code": status,
        "description": description or _phrase(status),
    }
    if parameters:
        payload["parameters"] = dict(parameters)
    return json.dumps(payload).encode()


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a ``multipart/form-data`` request."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the fake answered (or deliberately left unanswered).

    ``params`` holds the parameters as received: values from a query string or a form
    body are strings (python-telegram-bot JSON-encodes non-string values, so ``True``
    arrives as ``"true"`` and ``123`` as ``"123"``), values from a JSON body keep their
    JSON types and file parts are :class:`UploadedFile`.  The typed properties below
    normalise the common ``sendMessage`` fields.
    """

    seq: int
    method: str
    token: str
    params: dict[str, Any]
    http_method: str
    path: str
    content_type: str
    received_monotonic: float
    received_wall: float
    processed_monotonic: float
    status: int | None
    response: dict[str, Any] | None = None
    scripted: bool = False
    limit_violation: str | None = None
    message_id: int | None = None

    @property
    def chat_id(self) -> str | None:
        """The ``chat_id`` parameter as a string (``"42"``, ``"-100123"``, ``"@name"``)."""
        return _chat_key(self.params.get("chat_id"))

    @property
    def text(self) -> str | None:
        """The ``text`` parameter as sent (still containing any markup)."""
        value = self.params.get("text")
        return None if value is None else str(value)

    @property
    def parse_mode(self) -> str | None:
        """The ``parse_mode`` parameter, if any."""
        value = self.params.get("parse_mode")
        return None if value is None else str(value)

    @property
    def disable_notification(self) -> bool:
        """Whether ``disable_notification`` was set to a true value."""
        return _truthy(self.params.get("disable_notification"))

    @property
    def delivered(self) -> bool:
        """Whether this was a ``sendMessage`` the fake accepted (HTTP 200)."""
        return self.method == "sendMessage" and self.status == 200

    @property
    def latency(self) -> float:
        """Seconds between receipt and the decision on the answer."""
        return self.processed_monotonic - self.received_monotonic


def _chat_key(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    text = str(value).strip()
    return text or None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1"}
    return False


# ---------------------------------------------------------------------------
# Sliding window limiter
# ---------------------------------------------------------------------------


class SlidingWindowLimiter:
    """Exact sliding window counter: at most ``limit`` events in any ``(t - length, t]``.

    Callers must pass non-decreasing ``now`` values (the fake takes them under its lock).
    """

    def __init__(self, limit: int, length: float) -> None:
        """Create a limiter admitting ``limit`` events per window of ``length`` seconds."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if length <= 0:
            raise ValueError("window length must be positive")
        self.limit = limit
        self.length = length
        self._events: dict[Hashable, deque[float]] = {}

    def wait_time(self, key: Hashable, now: float) -> float:
        """Seconds until an event for ``key`` would be admitted; ``0.0`` if it is now."""
        events = self._events.get(key)
        if not events:
            return 0.0
        cutoff = now - self.length
        while events and events[0] <= cutoff:
            events.popleft()
        if len(events) < self.limit:
            return 0.0
        return events[0] + self.length - now

    def admit(self, key: Hashable, now: float) -> None:
        """Record an admitted event (call only after :meth:`wait_time` returned 0)."""
        self._events.setdefault(key, deque()).append(now)

    def count(self, key: Hashable, now: float) -> int:
        """Number of admitted events for ``key`` in ``(now - length, now]``."""
        self.wait_time(key, now)
        return len(self._events.get(key, ()))

    def clear(self) -> None:
        """Forget every admitted event."""
        self._events.clear()


# ---------------------------------------------------------------------------
# HTML entity parsing
# ---------------------------------------------------------------------------


class HtmlEntityError(ValueError):
    """Text is not valid Telegram HTML; the message mirrors Telegram's wording."""


def parse_telegram_html(text: str) -> str:
    """Return the visible text of Telegram-HTML ``text`` or raise :class:`HtmlEntityError`."""
    visible: list[str] = []
    stack: list[str] = []
    position = 0
    segment_start = 0
    length = len(text)

    def offset(index: int) -> int:
        return len(text[:index].encode("utf-8"))

    while position < length:
        char = text[position]
        if char == "<":
            visible.append(text[segment_start:position])
            match = _TAG_RE.match(text, position)
            if match is None:
                raise HtmlEntityError(f"Unsupported start tag at byte offset {offset(position)}")
            closing = match.group(1) == "/"
            name, attributes = match.group(2).lower(), match.group(3)
            if closing:
                if not stack or stack[-1] != name:
                    raise HtmlEntityError(f"Unexpected end tag at byte offset {offset(position)}")
                stack.pop()
            else:
                if name not in _HTML_TAGS or attributes.rstrip().endswith("/"):
                    raise HtmlEntityError(
                        f'Unsupported start tag "{name}" at byte offset {offset(position)}'
                    )
                if name == "span" and not re.search(r"""class\s*=\s*["']?tg-spoiler""", attributes):
                    raise HtmlEntityError(
                        f'Unsupported start tag "span" at byte offset {offset(position)}'
                    )
                stack.append(name)
            position = segment_start = match.end()
            continue
        if char == "&":
            visible.append(text[segment_start:position])
            match = _ENTITY_RE.match(text, position)
            if match is None:
                raise HtmlEntityError(f"Unsupported HTML entity at byte offset {offset(position)}")
            named, decimal, hexadecimal = match.groups()
            if named is not None:
                visible.append(_NAMED_ENTITIES[named])
            else:
                code_point = int(decimal) if decimal is not None else int(hexadecimal, 16)
                if code_point > 0x10FFFF or 0xD800 <= code_point <= 0xDFFF:
                    raise HtmlEntityError(
                        f"Invalid character reference at byte offset {offset(position)}"
                    )
                visible.append(chr(code_point))
            position = segment_start = match.end()
            continue
        if char == ">":
            raise HtmlEntityError(f"Unexpected character '>' at byte offset {offset(position)}")
        position += 1
    visible.append(text[segment_start:])
    if stack:
        raise HtmlEntityError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(visible)


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    """Routes every request to the owning :class:`FakeBotApi`."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeBotApi/1.0"
    timeout = 60.0
    server: _HttpServer

    def do_POST(self) -> None:
        self.server.owner._serve(self)

    def do_GET(self) -> None:
        self.server.owner._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class _HttpServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on stop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: FakeBotApi) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the bound address with socket.getfqdn(), a reverse
        # DNS lookup that can take seconds on machines without a resolver; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._open_lock:
            self._open.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.owner._record_server_error(traceback.format_exc())

    def close_open_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size_line = handler.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(65537)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _parse_params(query: str, content_type: str, body: bytes) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if not body:
        return params
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        decoded = json.loads(body)
        if not isinstance(decoded, dict):
            raise ValueError("JSON body must be an object")
        params.update(decoded)
    elif media_type == "application/x-www-form-urlencoded":
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    elif media_type == "multipart/form-data":
        params.update(_parse_multipart(content_type, body))
    else:
        raise ValueError(f"unsupported Content-Type {content_type!r}")
    return params


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("multipart body without parts")
    params: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("multipart part without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            charset = part.get_content_charset() or "utf-8"
            params[name] = data.decode(charset)
        else:
            params[name] = UploadedFile(filename, part.get_content_type(), data)
    return params


@dataclass
class _Outcome:
    status: int | None
    body: bytes = b""
    content_type: str = "application/json"
    response: dict[str, Any] | None = None
    scripted: bool = False
    limit_violation: str | None = None
    message_id: int | None = None


@dataclass
class _Limits:
    global_window: SlidingWindowLimiter
    chat_window: SlidingWindowLimiter
    group_window: SlidingWindowLimiter | None
    violations: list[RecordedRequest] = field(default_factory=list)


# ---------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------


class FakeBotApi:
    """A Telegram Bot API server on ``127.0.0.1`` for tests and benchmarks.

    Example::

        with FakeBotApi() as api:
            bot = telegram.Bot(api.token, base_url=api.base_url,
                               base_file_url=api.base_file_url)
            api.script(chat_id=42, responses=[retry_after(3), ok()])
            ...
            assert [m.text for m in api.sent_messages(42)] == ["hello"]

    All public methods are thread-safe.
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        host: str = "127.0.0.1",
        port: int = 0,
        enforce_limits: bool = False,
        global_per_second: int = 30,
        per_chat_per_second: int = 1,
        per_group_per_minute: int | None = None,
        limit_tolerance: float = 0.0,
        validate_html: bool = True,
        max_text_length: int = 4096,
    ) -> None:
        """Configure the fake; nothing listens until :meth:`start`.

        Args:
            tokens: Bot tokens accepted; a well-formed unknown token answers 401 and a
                malformed one 404, as Telegram does.
            host: Interface to bind.
            port: Port to bind; 0 picks a free one.
            enforce_limits: Answer 429 when a ``sendMessage`` exceeds the limits below.
            global_per_second: Messages per bot token in any 1 second window.
            per_chat_per_second: Messages per bot token and chat in any 1 second window.
            per_group_per_minute: Messages per bot token and group/channel chat in any
                60 second window; ``None`` disables this limit.
            limit_tolerance: Seconds by which every window is shortened (jitter slack).
            validate_html: Check ``parse_mode="HTML"`` texts (see the module docstring).
            max_text_length: Longest accepted visible text, in code points.
        """
        self._lock = threading.Condition(threading.RLock())
        self._tokens: list[str] = []
        for token in tokens:
            self.add_token(token)
        if not self._tokens:
            raise ValueError("at least one token is required")
        if not 0.0 <= limit_tolerance < 1.0:
            raise ValueError("limit_tolerance must be in [0, 1)")
        self._bind = (host, port)
        self.enforce_limits = enforce_limits
        self.validate_html = validate_html
        self.max_text_length = max_text_length
        self.global_per_second = global_per_second
        self.per_chat_per_second = per_chat_per_second
        self.per_group_per_minute = per_group_per_minute
        self.limit_tolerance = limit_tolerance
        self._limits = self._new_limits()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[tuple[str | None, str | None], deque[ScriptedResponse]] = {}
        self._files: dict[str, tuple[str, bytes]] = {}
        self._server_errors: list[str] = []
        self._outage: ScriptedResponse | None = None
        self._seq = 0
        self._next_message_id = 1
        self._stopping = threading.Event()
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind the socket and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("FakeBotApi is already running")
        self._stopping.clear()
        server = _HttpServer(self._bind, self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeBotApi:{server.server_port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed answers and close every connection."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        thread.join()
        server.close_open_connections()
        server.server_close()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    # -- addresses ---------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host."""
        return str(self._require_server().server_address[0])

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._require_server().server_address[1])

    @property
    def api_url(self) -> str:
        """API root, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """Value for python-telegram-bot's ``Bot(base_url=...)``: ``{api_url}/bot``."""
        return f"{self.api_url}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``Bot(base_file_url=...)``: ``{api_url}/file/bot``."""
        return f"{self.api_url}/file/bot"

    @property
    def token(self) -> str:
        """The first accepted token."""
        with self._lock:
            return self._tokens[0]

    @property
    def tokens(self) -> list[str]:
        """All accepted tokens."""
        with self._lock:
            return list(self._tokens)

    def method_url(self, method: str, token: str | None = None) -> str:
        """Full URL of a Bot API method, e.g. for raw HTTP requests."""
        return f"{self.base_url}{token or self.token}/{method}"

    def add_token(self, token: str) -> None:
        """Accept one more bot token."""
        if not _TOKEN_RE.match(token):
            raise ValueError(f"malformed bot token: {token!r}")
        with self._lock:
            if token not in self._tokens:
                self._tokens.append(token)

    def add_file(self, file_id: str, content: bytes, file_path: str | None = None) -> str:
        """Register a file for ``getFile`` and downloads; returns its ``file_path``."""
        path = file_path or f"documents/{file_id}.bin"
        with self._lock:
            self._files[file_id] = (path, content)
        return path

    # -- scripting ---------------------------------------------------------

    def script(
        self,
        chat_id: int | str | None = None,
        responses: Iterable[ScriptedResponse] = (),
        *,
        method: str | None = "sendMessage",
    ) -> None:
        """Queue answers for the next matching requests.

        A request takes the first answer from, in order, the queue for its method and
        chat, for any method and its chat, for its method and any chat, for any method and
        any chat.  ``chat_id=None`` means any chat, ``method=None`` any method.  When every
        matching queue is empty the request is handled normally.
        """
        key = (None if method is None else method.lower(), _chat_key(chat_id))
        with self._lock:
            self._scripts.setdefault(key, deque()).extend(responses)

    def start_outage(self, response: ScriptedResponse | None = None) -> None:
        """Answer every request (any method, any chat, ``getMe`` too) with ``response``
        (default: 502 Bad Gateway) until :meth:`end_outage`; scripts wait meanwhile."""
        with self._lock:
            self._outage = response or server_error(502)

    def end_outage(self) -> None:
        """Serve normally again."""
        with self._lock:
            self._outage = None

    def pending_scripts(self) -> int:
        """Number of scripted answers not consumed yet."""
        with self._lock:
            return sum(len(queue) for queue in self._scripts.values())

    def clear_scripts(self) -> None:
        """Drop every scripted answer not consumed yet."""
        with self._lock:
            self._scripts.clear()

    # -- observations ------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every recorded request, in the order the answers were decided."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, method: str) -> list[RecordedRequest]:
        """Recorded requests of one Bot API method."""
        with self._lock:
            return [r for r in self._requests if r.method.lower() == method.lower()]

    def sent_messages(self, chat_id: int | str | None = None) -> list[RecordedRequest]:
        """Accepted ``sendMessage`` requests (optionally to one chat) in delivery order."""
        key = _chat_key(chat_id)
        with self._lock:
            return [r for r in self._requests if r.delivered and (key is None or r.chat_id == key)]

    @property
    def limit_violations(self) -> int:
        """How many ``sendMessage`` requests were refused by the enforced rate limits."""
        with self._lock:
            return len(self._limits.violations)

    @property
    def violations(self) -> list[RecordedRequest]:
        """The requests refused by the enforced rate limits."""
        with self._lock:
            return list(self._limits.violations)

    @property
    def server_errors(self) -> list[str]:
        """Tracebacks of unexpected errors inside the server (should stay empty)."""
        with self._lock:
            return list(self._server_errors)

    def wait_for_messages(
        self, count: int, *, chat_id: int | str | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least ``count`` messages were delivered; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                messages = self.sent_messages(chat_id)
                if len(messages) >= count:
                    return messages
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(messages)} of {count} messages delivered within {timeout}s"
                    )
                self._lock.wait(remaining)

    def reset(self) -> None:
        """Forget requests, scripts, rate-limit windows and violations; restart ids at 1."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self._server_errors.clear()
            self._outage = None
            self._limits = self._new_limits()
            self._seq = 0
            self._next_message_id = 1

    # -- request handling --------------------------------------------------

    def _new_limits(self) -> _Limits:
        tolerance = self.limit_tolerance
        group = None
        if self.per_group_per_minute is not None:
            group = SlidingWindowLimiter(self.per_group_per_minute, 60.0 - tolerance)
        return _Limits(
            global_window=SlidingWindowLimiter(self.global_per_second, 1.0 - tolerance),
            chat_window=SlidingWindowLimiter(self.per_chat_per_second, 1.0 - tolerance),
            group_window=group,
        )

    def _require_server(self) -> _HttpServer:
        if self._server is None:
            raise RuntimeError("FakeBotApi is not running; call start() first")
        return self._server

    def _record_server_error(self, text: str) -> None:
        if "ConnectionResetError" in text or "BrokenPipeError" in text:
            return
        with self._lock:
            self._server_errors.append(text)

    def _serve(self, handler: _RequestHandler) -> None:
        received_monotonic = time.monotonic()
        received_wall = time.time()
        try:
            body = _read_body(handler)
        except (ValueError, OSError):
            handler.close_connection = True
            _write(handler, 400, _error_body(400, "Bad Request: malformed body"))
            return
        url = urlsplit(handler.path)
        path = unquote(url.path)
        content_type = handler.headers.get("Content-Type", "")
        api = _API_PATH_RE.match(path)
        file_match = _FILE_PATH_RE.match(path) if api is None else None
        route = api or file_match
        method = api.group("method") if api else ("file" if file_match else "")
        token = route.group("token") if route else ""
        params: dict[str, Any] = {}
        outcome: _Outcome | None = None
        if (api is None and file_match is None) or not _TOKEN_RE.match(token):
            outcome = _Outcome(404, _error_body(404, "Not Found"))
        else:
            try:
                params = _parse_params(url.query, content_type, body)
            except (ValueError, UnicodeDecodeError) as exc:
                outcome = _Outcome(400, _error_body(400, f"Bad Request: {exc}"))
        if file_match is not None and outcome is None:
            params = {"file_path": file_match.group("path")}

        scripted: ScriptedResponse | None = None
        if outcome is None:
            with self._lock:
                if token not in self._tokens:
                    outcome = _Outcome(401, _error_body(401, "Unauthorized"))
                elif self._outage is not None:
                    scripted = self._outage
                elif file_match is None:
                    scripted = self._take_script(method, _chat_key(params.get("chat_id")))
        if scripted is not None and scripted.delay > 0 and self._stopping.wait(scripted.delay):
            scripted = drop_connection()

        with self._lock:
            if outcome is None:
                if scripted is not None and not scripted.passthrough:
                    outcome = _Outcome(
                        None if scripted.drop_connection else scripted.status,
                        b"" if scripted.drop_connection else scripted.body(),
                        scripted.content_type,
                        scripted=True,
                    )
                elif file_match is not None:
                    outcome = self._download(file_match.group("path"))
                else:
                    outcome = self._call(method, token, params)
                    outcome.scripted = scripted is not None
            if outcome.response is None and outcome.body and outcome.status is not None:
                try:
                    decoded = json.loads(outcome.body)
                except ValueError:
                    decoded = None
                outcome.response = decoded if isinstance(decoded, dict) else None
            self._seq += 1
            record = RecordedRequest(
                seq=self._seq,
                method=_canonical_method(method),
                token=token,
                params=params,
                http_method=handler.command,
                path=path,
                content_type=content_type,
                received_monotonic=received_monotonic,
                received_wall=received_wall,
                processed_monotonic=time.monotonic(),
                status=outcome.status,
                response=outcome.response,
                scripted=outcome.scripted,
                limit_violation=outcome.limit_violation,
                message_id=outcome.message_id,
            )
            self._requests.append(record)
            if outcome.limit_violation is not None:
                self._limits.violations.append(record)
            self._lock.notify_all()

        if outcome.status is None:
            handler.close_connection = True
            return
        _write(handler, outcome.status, outcome.body, outcome.content_type)

    def _take_script(self, method: str, chat: str | None) -> ScriptedResponse | None:
        lowered = method.lower()
        candidates: list[tuple[str | None, str | None]] = []
        if chat is not None:
            candidates += [(lowered, chat), (None, chat)]
        candidates += [(lowered, None), (None, None)]
        for key in candidates:
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    def _download(self, path: str) -> _Outcome:
        for file_path, content in self._files.values():
            if file_path == path:
                return _Outcome(200, content, "application/octet-stream")
        return _Outcome(404, _error_body(404, "Not Found"))

    def _call(self, method: str, token: str, params: dict[str, Any]) -> _Outcome:
        lowered = method.lower()
        if lowered == "getme":
            return _success(self._bot_user(token))
        if lowered == "sendmessage":
            return self._send_message(token, params)
        if lowered == "getfile":
            return self._get_file(params)
        return _Outcome(404, _error_body(404, "Not Found"))

    def _bot_user(self, token: str) -> dict[str, Any]:
        bot_id = int(token.split(":", 1)[0])
        return {
            "id": bot_id,
            "is_bot": True,
            "first_name": "Fake Bot",
            "username": f"fake_{bot_id}_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _get_file(self, params: dict[str, Any]) -> _Outcome:
        file_id = str(params.get("file_id") or "")
        entry = self._files.get(file_id)
        if entry is None:
            return _Outcome(400, _error_body(400, "Bad Request: invalid file_id"))
        path, content = entry
        return _success(
            {
                "file_id": file_id,
                "file_unique_id": f"u{zlib.crc32(file_id.encode()):08x}",
                "file_size": len(content),
                "file_path": path,
            }
        )

    def _send_message(self, token: str, params: dict[str, Any]) -> _Outcome:
        chat = _chat_key(params.get("chat_id"))
        if chat is None:
            return _Outcome(400, _error_body(400, "Bad Request: chat_id is empty"))
        raw_text = params.get("text")
        if raw_text is None or not isinstance(raw_text, str | int | float):
            return _Outcome(400, _error_body(400, "Bad Request: message text is empty"))
        text = str(raw_text)
        parse_mode = params.get("parse_mode")
        if parse_mode is not None and str(parse_mode).lower() not in _PARSE_MODES | {""}:
            return _Outcome(
                400, _error_body(400, f"Bad Request: unsupported parse_mode: {parse_mode}")
            )
        visible = text
        if self.validate_html and str(parse_mode or "").lower() == "html":
            try:
                visible = parse_telegram_html(text)
            except HtmlEntityError as exc:
                return _Outcome(400, _error_body(400, f"Bad Request: can't parse entities: {exc}"))
        if not visible.strip():
            return _Outcome(400, _error_body(400, "Bad Request: message text is empty"))
        if len(visible) > self.max_text_length:
            return _Outcome(400, _error_body(400, "Bad Request: message is too long"))

        now = time.monotonic()
        if self.enforce_limits:
            refused = self._check_limits(token, chat, now)
            if refused is not None:
                return refused

        message_id = self._next_message_id
        self._next_message_id += 1
        message = {
            "message_id": message_id,
            "from": self._bot_user(token),
            "chat": _chat_object(chat),
            "date": int(time.time()),
            "text": visible,
        }
        outcome = _success(message)
        outcome.message_id = message_id
        return outcome

    def _check_limits(self, token: str, chat: str, now: float) -> _Outcome | None:
        limits = self._limits
        checks: list[tuple[str, SlidingWindowLimiter, Hashable]] = [
            ("global", limits.global_window, token),
            ("chat", limits.chat_window, (token, chat)),
        ]
        if limits.group_window is not None and _is_group(chat):
            checks.append(("group", limits.group_window, (token, chat)))
        for name, window, key in checks:
            wait = window.wait_time(key, now)
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                return _Outcome(
                    429,
                    _error_body(
                        429,
                        f"Too Many Requests: retry after {seconds}",
                        {"retry_after": seconds},
                    ),
                    limit_violation=name,
                )
        for _name, window, key in checks:
            window.admit(key, now)
        return None


def _success(result: Any) -> _Outcome:
    payload = {"ok": True, "result": result}
    return _Outcome(200, json.dumps(payload).encode(), response=payload)


def _write(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str = "application/json",
) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True


def _canonical_method(method: str) -> str:
    known = {"getme": "getMe", "sendmessage": "sendMessage", "getfile": "getFile"}
    return known.get(method.lower(), method)


def _is_group(chat: str) -> bool:
    return chat.startswith(("-", "@"))


def _chat_object(chat: str) -> dict[str, Any]:
    if chat.startswith("@"):
        return {
            "id": -1_000_000_000_000 - zlib.crc32(chat.encode()),
            "type": "channel",
            "title": chat[1:],
            "username": chat[1:],
        }
    if _INT_RE.match(chat):
        chat_id = int(chat)
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        if chat.startswith("-100"):
            return {"id": chat_id, "type": "supergroup", "title": f"Chat {chat_id}"}
        return {"id": chat_id, "type": "group", "title": f"Chat {chat_id}"}
    return {"id": zlib.crc32(chat.encode()), "type": "private", "first_name": chat}
