"""A real in-process SMTP server for tests, built on aiosmtpd.

:class:`SmtpServer` listens on ``127.0.0.1`` on a free port in one of three modes:

* ``security="starttls"``: plain connection that must be upgraded with STARTTLS before
  anything but EHLO/NOOP/QUIT, and AUTH is only offered after the upgrade (port 587 style);
* ``security="tls"``: TLS from the first byte (implicit TLS, port 465 style);
* ``security="none"``: no TLS at all; AUTH is still offered so a client's plaintext
  fallback can be exercised.

Certificates come from a throw-away ``trustme`` CA and cover ``localhost``, ``127.0.0.1``
and ``::1``; clients verify them with :meth:`SmtpServer.client_ssl_context` or the PEM
file at :attr:`SmtpServer.ca_cert_pem_path`.

aiosmtpd behaviours this module works around
--------------------------------------------
* ``Controller(port=0)`` does not work: after binding, ``Controller.start()`` opens a
  "trigger" connection to ``self.port`` to force the lazy protocol factory to run, and
  that would be port 0.  The controller here binds its own socket first, hands it to
  ``loop.create_server(sock=...)`` and sets ``port`` to the real one, which also avoids the
  race of "find a free port, close it, bind again".
* That trigger connection runs the protocol factory once, so it would count as a
  client connection; the counters are reset when ``start()`` returns.
* ``hostname=None`` binds ``::1`` when IPv6 is available; the host is always explicit.
* The SMTP banner hostname defaults to ``socket.getfqdn()`` (a DNS lookup per
  connection); ``server_hostname`` is always passed.
* ``server_kwargs=`` is deprecated (DeprecationWarning) in 1.4; SMTP options are passed
  as plain keyword arguments to the controller.
* Implicit TLS is the controller's ``ssl_context`` (the listening socket's context), not
  the SMTP ``tls_context`` (that one is for STARTTLS and would make EHLO advertise
  STARTTLS on an already encrypted connection).
* ``auth_require_tls=True`` (the default) only looks at whether *STARTTLS* happened, so on
  an implicit-TLS connection AUTH is neither advertised nor accepted (538).  Passing
  ``auth_require_tls=False`` together with ``auth_required=True`` emits a ``UserWarning``
  in the server thread, which the ``filterwarnings = error`` test configuration turns into
  a failure of the protocol factory.  The protocol subclass here therefore relaxes the
  private ``_auth_require_tls`` flag after construction for the ``tls`` and ``none`` modes.
* ``Session.login_data`` is deprecated and logs a warning on access; the authenticated
  user is read from ``session.auth_data`` (a ``LoginPassword``).
* The ready timeout (default 5 s, overridable with ``AIOSMTPD_CONTROLLER_TIMEOUT``) covers
  both the bind and the trigger connection; a slow TLS handshake on a loaded CI machine
  can exceed it, so the default here is 10 s.
* ``Controller.stop()`` stops the loop without closing client transports; open client
  connections are closed explicitly first so no socket outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["AuthAttempt", "ReceivedMessage", "Security", "SmtpServer"]

Security = Literal["none", "starttls", "tls"]
_BUILTIN_MECHANISMS = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True)
class ReceivedMessage:
    """One message accepted at the end of DATA."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    peer: str
    tls: bool
    login: str | None
    connection_id: int
    received_at: float
    mail_options: tuple[str, ...] = ()

    @property
    def subject(self) -> str | None:
        """The decoded ``Subject`` header."""
        value = self.message["Subject"]
        return None if value is None else str(value)

    def text_body(self) -> str | None:
        """The ``text/plain`` body (preferred over HTML) with LF line ends, or ``None``."""
        part = self.message.get_body(preferencelist=("plain",))
        return None if part is None else _lf(cast(EmailMessage, part).get_content())

    def html_body(self) -> str | None:
        """The ``text/html`` body with LF line ends, or ``None``."""
        part = self.message.get_body(preferencelist=("html",))
        return None if part is None else _lf(cast(EmailMessage, part).get_content())


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


@dataclass(frozen=True)
class AuthAttempt:
    """One AUTH exchange that reached the authenticator."""

    mechanism: str
    login: str
    success: bool
    connection_id: int
    tls: bool


@dataclass
class _Failure:
    code: int
    message: str
    remaining: int | None

    def take(self) -> str:
        if self.remaining is not None:
            self.remaining -= 1
        return f"{self.code} {self.message}"

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass
class _State:
    messages: list[ReceivedMessage] = field(default_factory=list)
    auth_attempts: list[AuthAttempt] = field(default_factory=list)
    connections: int = 0
    recipient_failures: dict[str, _Failure] = field(default_factory=dict)
    mail_failures: list[_Failure] = field(default_factory=list)
    data_failures: list[_Failure] = field(default_factory=list)
    data_delays: list[float] = field(default_factory=list)


def _check_code(code: int) -> None:
    if not 400 <= code <= 599:
        raise ValueError(f"SMTP failure codes are 4xx or 5xx, got {code}")


class _QuietSession(Session):
    """A session whose legacy ``login_data`` does not log a deprecation on every AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Protocol(SMTP):
    """aiosmtpd's SMTP protocol with a connection id and implicit-TLS awareness."""

    def __init__(
        self, handler: _Handler, *, connection_id: int, relax_auth_tls: bool, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.connection_id = connection_id
        self.implicit_tls = False
        if relax_auth_tls:
            self._auth_require_tls = False

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            self.implicit_tls = transport.get_extra_info("ssl_object") is not None
        super().connection_made(transport)

    @property
    def encrypted(self) -> bool:
        """Whether the connection is TLS (implicit or after STARTTLS)."""
        return self.implicit_tls or self._tls_protocol is not None


class _Handler:
    """aiosmtpd hooks that record traffic and apply the scripted failures."""

    def __init__(self, owner: SmtpServer) -> None:
        self._owner = owner

    async def handle_MAIL(  # noqa: N802
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        failure = self._owner._take_failure("mail", address)
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self._owner._take_failure("rcpt", address)
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: _Protocol, session: Session, envelope: Envelope
    ) -> str:
        failure = self._owner._take_failure("data", "")
        if failure is not None:
            return failure
        self._owner._record_message(server, session, envelope)
        delay = self._owner._take_data_delay()
        if delay:
            await asyncio.sleep(delay)  # accepted, but the answer comes late
        return "250 2.0.0 Message accepted for delivery"


class _Controller(Controller):
    """A controller serving on a socket bound before the loop starts."""

    def __init__(self, owner: SmtpServer, sock: socket.socket, **kwargs: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(_Handler(owner), hostname=host, port=port, **kwargs)
        self._owner = owner
        self._sock = sock

    def factory(self) -> SMTP:
        return self._owner._new_protocol(self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock, ssl=self.ssl_context)


class SmtpServer:
    """An SMTP server on ``127.0.0.1`` that records what it receives.

    Example::

        with SmtpServer(security="starttls", auth_required=True) as smtp:
            async with aiosmtplib.SMTP(**smtp.client_kwargs()) as client:
                await client.send_message(msg)
            assert smtp.messages[0].rcpt_tos == ("ops@example.com",)

    All public methods are thread-safe; the server runs its own event loop in a thread.
    """

    def __init__(
        self,
        *,
        security: Security = "starttls",
        auth_required: bool = False,
        username: str = "tradelog",
        password: str = "correct horse battery staple",
        auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"),
        host: str = "127.0.0.1",
        server_hostname: str = "localhost",
        ca: trustme.CA | None = None,
        data_size_limit: int = 10 * 1024 * 1024,
        ready_timeout: float = 10.0,
    ) -> None:
        """Configure the server; nothing listens until :meth:`start`.

        Args:
            security: ``"starttls"``, ``"tls"`` or ``"none"`` (see the module docstring).
            auth_required: Refuse MAIL with 530 until the client authenticated.
            username: The only login accepted by AUTH.
            password: Its password; anything else answers 535.
            auth_mechanisms: AUTH mechanisms to offer, a subset of PLAIN and LOGIN.
            host: Interface to bind.
            server_hostname: Name in the banner and EHLO answer.
            ca: CA issuing the server certificate; a new one when omitted.
            data_size_limit: Largest message accepted (advertised with SIZE).
            ready_timeout: Seconds ``start()`` may take.
        """
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown security mode {security!r}")
        mechanisms = {m.upper() for m in auth_mechanisms}
        if not mechanisms <= _BUILTIN_MECHANISMS:
            raise ValueError(f"unsupported AUTH mechanisms: {sorted(mechanisms)}")
        self.security: Security = security
        self.auth_required = auth_required
        self.username = username
        self.password = password
        self._excluded_mechanisms = sorted(_BUILTIN_MECHANISMS - mechanisms)
        self._bind_host = host
        self._server_hostname = server_hostname
        self.ca = ca if ca is not None else trustme.CA()
        self._server_cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        self._data_size_limit = data_size_limit
        self._ready_timeout = ready_timeout
        self._lock = threading.Condition()
        self._state = _State()
        self._next_connection_id = 0
        self._active: set[_Protocol] = set()
        self._controller: _Controller | None = None
        self._tempdir: Path | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind a free port and serve in a background thread; returns ``self``."""
        if self._controller is not None:
            raise RuntimeError("SmtpServer is already running")
        sock = socket.socket(socket.AF_INET6 if ":" in self._bind_host else socket.AF_INET)
        try:
            sock.bind((self._bind_host, 0))
            controller = _Controller(
                self,
                sock,
                ready_timeout=self._ready_timeout,
                ssl_context=self._server_context() if self.security == "tls" else None,
                server_hostname=self._server_hostname,
                tls_context=self._server_context() if self.security == "starttls" else None,
                require_starttls=self.security == "starttls",
                auth_required=self.auth_required,
                authenticator=self._authenticate,
                auth_exclude_mechanism=self._excluded_mechanisms,
                data_size_limit=self._data_size_limit,
            )
            controller.start()
        except BaseException:
            sock.close()
            raise
        self._controller = controller
        self._port = int(sock.getsockname()[1])
        with self._lock:
            self._state.connections = 0
        return self

    def stop(self) -> None:
        """Close client connections, stop the event loop and remove temporary files."""
        controller = self._controller
        if controller is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close_connections(), controller.loop).result(
                timeout=5
            )
        controller.stop()
        self._controller = None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

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
        return self._controller is not None

    # -- addresses and TLS -------------------------------------------------

    @property
    def host(self) -> str:
        """The bound address (connect to this, not to ``localhost``, which may be ``::1``)."""
        return self._bind_host

    @property
    def port(self) -> int:
        """The bound port."""
        if self._port is None:
            raise RuntimeError("SmtpServer is not running; call start() first")
        return self._port

    @property
    def ca_cert_pem_path(self) -> str:
        """Path of a PEM file holding the CA certificate (valid while running)."""
        if self._tempdir is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="smtp-ca-"))
        path = self._tempdir / "ca.pem"
        if not path.exists():
            self.ca.cert_pem.write_to_path(str(path))
        return str(path)

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new verifying client context that trusts the server's CA (and nothing else: the
        system's CA store is not loaded, which costs about 40 ms a context)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and hostname
        self.ca.configure_trust(context)
        return context

    def client_kwargs(self, *, with_auth: bool = True) -> dict[str, Any]:
        """Keyword arguments for ``aiosmtplib.SMTP``/``aiosmtplib.send`` for this server."""
        kwargs: dict[str, Any] = {
            "hostname": self.host,
            "port": self.port,
            "use_tls": self.security == "tls",
            "start_tls": self.security == "starttls",
            "local_hostname": "localhost",
            "timeout": 10,
        }
        if self.security != "none":
            kwargs["tls_context"] = self.client_ssl_context()
        if with_auth:
            kwargs["username"] = self.username
            kwargs["password"] = self.password
        return kwargs

    # -- scripted failures -------------------------------------------------

    def fail_recipient(
        self,
        address: str,
        code: int = 550,
        message: str = "5.1.1 No such user",
        *,
        times: int | None = None,
    ) -> None:
        """Answer RCPT TO for ``address`` (case-insensitive) with ``code message``.

        ``times=None`` keeps failing until :meth:`clear_failures`.
        """
        _check_code(code)
        with self._lock:
            self._state.recipient_failures[address.strip().lower()] = _Failure(code, message, times)

    def fail_next_mail(
        self, code: int = 451, message: str = "4.3.0 Temporary failure", *, times: int = 1
    ) -> None:
        """Answer the next ``times`` MAIL FROM commands with ``code message``."""
        _check_code(code)
        with self._lock:
            self._state.mail_failures.append(_Failure(code, message, times))

    def fail_next_data(
        self,
        code: int = 451,
        message: str = "4.3.0 Temporary failure, try again later",
        *,
        times: int = 1,
    ) -> None:
        """Answer the end of the next ``times`` DATA transfers with ``code message``."""
        _check_code(code)
        with self._lock:
            self._state.data_failures.append(_Failure(code, message, times))

    def delay_next_data(self, seconds: float, *, times: int = 1) -> None:
        """Accept (and record) the next ``times`` messages but answer ``250`` only after
        ``seconds``: a client with a shorter timeout gives up on a message that arrived."""
        with self._lock:
            self._state.data_delays.extend([seconds] * times)

    def clear_failures(self) -> None:
        """Drop every scripted failure and delay."""
        with self._lock:
            self._state.recipient_failures.clear()
            self._state.mail_failures.clear()
            self._state.data_failures.clear()
            self._state.data_delays.clear()

    # -- observations ------------------------------------------------------

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages in arrival order."""
        with self._lock:
            return list(self._state.messages)

    @property
    def connections(self) -> int:
        """Client connections accepted since start or :meth:`reset`."""
        with self._lock:
            return self._state.connections

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        """AUTH exchanges in order, successful or not."""
        with self._lock:
            return list(self._state.auth_attempts)

    def wait_for_messages(self, count: int, *, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; raise on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._state.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._state.messages)} of {count} messages within {timeout}s"
                    )
                self._lock.wait(remaining)
            return list(self._state.messages)

    def reset(self) -> None:
        """Forget messages, AUTH attempts, the connection count and scripted failures."""
        with self._lock:
            self._state = _State()

    # -- internals ---------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # clients present no certificate
        self._server_cert.configure_cert(context)
        return context

    def _new_protocol(self, smtp_kwargs: Mapping[str, Any]) -> _Protocol:
        with self._lock:
            self._next_connection_id += 1
            self._state.connections += 1
            connection_id = self._next_connection_id
        protocol = _Protocol(
            _Handler(self),
            connection_id=connection_id,
            relax_auth_tls=self.security != "starttls",
            **smtp_kwargs,
        )
        self._active = {p for p in self._active if p.transport is not None}
        self._active.add(protocol)
        return protocol

    async def _close_connections(self) -> None:
        for protocol in list(self._active):
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                transport.close()
        await asyncio.sleep(0.05)
        self._active.clear()

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        login = password = ""
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
        success = login == self.username and password == self.password
        protocol = cast(_Protocol, server)
        with self._lock:
            self._state.auth_attempts.append(
                AuthAttempt(mechanism, login, success, protocol.connection_id, protocol.encrypted)
            )
        return AuthResult(success=success, handled=False, auth_data=auth_data)

    def _take_data_delay(self) -> float:
        with self._lock:
            return self._state.data_delays.pop(0) if self._state.data_delays else 0.0

    def _take_failure(self, stage: Literal["mail", "rcpt", "data"], address: str) -> str | None:
        with self._lock:
            state = self._state
            if stage == "rcpt":
                key = address.strip().lower()
                failure = state.recipient_failures.get(key)
                if failure is None:
                    return None
                answer = failure.take()
                if failure.exhausted:
                    del state.recipient_failures[key]
                return answer
            queue = state.mail_failures if stage == "mail" else state.data_failures
            if not queue:
                return None
            answer = queue[0].take()
            if queue[0].exhausted:
                queue.pop(0)
            return answer

    def _record_message(self, server: _Protocol, session: Session, envelope: Envelope) -> None:
        raw = envelope.original_content or b""
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        auth_data = session.auth_data
        login = (
            auth_data.login.decode("utf-8", "replace")
            if isinstance(auth_data, LoginPassword)
            else None
        )
        peer = session.peer
        record = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
            message=parsed,
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            tls=server.encrypted,
            login=login,
            connection_id=server.connection_id,
            received_at=time.time(),
            mail_options=tuple(envelope.mail_options),
        )
        with self._lock:
            self._state.messages.append(record)
            self._lock.notify_all()
