"""Settings: one frozen object, built from keyword arguments or from ``TRADELOG_*`` variables.

This is the only module that reads the process environment. Everything else receives a
:class:`Settings` instance (or the specific values it needs) explicitly.

Every field maps to one environment variable: the field name upper-cased with the ``TRADELOG_``
prefix (``smtp_port`` ↔ ``TRADELOG_SMTP_PORT``). Invalid values raise :class:`ConfigurationError`
naming the variable. Secrets are wrapped in :class:`Secret` so they never show in a ``repr``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tradelog._db.base import USER_ID_MAX
from tradelog._db.engine import mask_url
from tradelog.exceptions import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "LEVELS",
    "LOG_WRITER_MODES",
    "SCHEMA_CHECK_MODES",
    "SMTP_SECURITY_MODES",
    "UNKNOWN_USER_MODES",
    "Secret",
    "Settings",
]

ENV_PREFIX: Final = "TRADELOG_"
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SMTP_SECURITY_MODES: Final = ("starttls", "tls", "none")
UNKNOWN_USER_MODES: Final = ("register", "reject")
SCHEMA_CHECK_MODES: Final = ("warn", "raise", "off")
LOG_WRITER_MODES: Final = ("thread", "process")
DEFAULT_LOGGER_LEVELS: Final = (("httpcore", "WARNING"), ("httpx", "WARNING"))
_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LOGGER_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
_KIND_NAMES: Final[dict[object, str]] = {int: "an integer", float: "a number"}


class Secret:
    """A string that never shows itself in ``repr``/``str``; read it with :meth:`reveal`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value (only for handing to the client that needs it)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def _in_memory(url: str) -> bool:
    """Whether ``url`` names an SQLite database that lives in this process's memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    path = parsed.database or ""
    return path in ("", ":memory:") or "mode=memory" in path or parsed.query.get("mode") == "memory"


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_bool(raw: str, variable: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(
        f"{variable} must be a boolean (true/false), got {raw!r}", variable=variable
    )


@dataclass(frozen=True)
class _Number:
    """Parses a number from text and checks a number given in code, within bounds."""

    kind: type
    minimum: float
    maximum: float | None = None

    def _describe(self) -> str:
        return _KIND_NAMES.get(self.kind, "a number")

    def __call__(self, raw: str, variable: str) -> Any:
        try:
            value = self.kind(raw.strip())
        except ValueError:
            raise ConfigurationError(
                f"{variable} must be {self._describe()}, got {raw!r}", variable=variable
            ) from None
        return self.check(value, variable, shown=raw)

    def check(self, value: Any, variable: str, *, shown: Any = None) -> Any:
        shown = value if shown is None else shown
        wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
        if wrong_type or (self.kind is int and not isinstance(value, int)):
            raise ConfigurationError(
                f"{variable} must be {self._describe()}, got {shown!r}", variable=variable
            )
        if not math.isfinite(value):
            raise ConfigurationError(
                f"{variable} must be a finite number, got {shown!r}", variable=variable
            )
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            bounds = (
                f">= {self.minimum}"
                if self.maximum is None
                else f"between {self.minimum} and {self.maximum}"
            )
            raise ConfigurationError(
                f"{variable} must be {bounds}, got {shown!r}", variable=variable
            )
        return self.kind(value)


def _number(kind: type, minimum: float, maximum: float | None = None) -> _Number:
    return _Number(kind, minimum, maximum)


WORKER_MODES: Final = ("auto", "true", "false")


def _parse_worker(raw: str, variable: str) -> bool | Literal["auto"]:
    """``auto`` or a boolean (``TRADELOG_WORKER``)."""
    if raw.strip().lower() == "auto":
        return "auto"
    try:
        return _parse_bool(raw, variable)
    except ConfigurationError:
        raise ConfigurationError(
            f"{variable} must be auto, true or false, got {raw!r}", variable=variable
        ) from None


def _opt_str(raw: str, variable: str) -> str | None:
    return raw.strip() or None


def _opt_secret(raw: str, variable: str) -> Secret | None:
    return Secret(raw) if raw else None


def _secret_values(raw: str, variable: str) -> tuple[Secret, ...]:
    """``"k1,k2"`` -> two secrets (a value holding a comma is given in code instead)."""
    return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())


def _path(raw: str, variable: str) -> Path:
    return Path(raw)


def _schema_name(raw: str, variable: str) -> str | None:
    """A PostgreSQL schema name: letters, digits and ``_``, not starting with a digit."""
    name = raw.strip()
    if not name:
        return None
    if not _SCHEMA_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{variable} must be a plain schema name (letters, digits, _; at most 63), got {raw!r}",
            variable=variable,
        )
    return name


def _logger_levels(raw: str | Mapping[str, Any], variable: str) -> tuple[tuple[str, str], ...]:
    """``name=LEVEL,name=LEVEL`` (or a mapping) as sorted ``(logger name, level name)`` pairs."""
    if isinstance(raw, str):
        pairs: list[tuple[str, Any]] = []
        for item in raw.split(","):
            if not item.strip():
                continue
            name, sep, level = item.partition("=")
            if not sep:
                raise ConfigurationError(
                    f"{variable} must be name=LEVEL pairs separated by commas "
                    f"(e.g. httpx=WARNING,myapp.db=DEBUG), got {item.strip()!r}",
                    variable=variable,
                )
            pairs.append((name, level))
    elif isinstance(raw, Mapping):
        pairs = list(raw.items())
    else:
        raise ConfigurationError(
            f"{variable} must be name=LEVEL pairs or a mapping, got {raw!r}", variable=variable
        )
    levels: dict[str, str] = {}
    for name, level in pairs:
        logger = str(name).strip()
        if not _LOGGER_NAME.fullmatch(logger):
            raise ConfigurationError(
                f"{variable}: {name!r} is not a logger name", variable=variable
            )
        upper = str(level).strip().upper()
        upper = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(upper, upper)
        if upper not in LEVELS:
            raise ConfigurationError(
                f"{variable}: level of {logger!r} must be one of {', '.join(LEVELS)}, "
                f"got {level!r}",
                variable=variable,
            )
        levels[logger] = upper
    return tuple(sorted(levels.items()))


def _choice(*choices: str) -> Callable[[str, str], str]:
    """A parser accepting one of ``choices`` (any case, surrounding blanks ignored)."""

    def parse(raw: str, variable: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigurationError(
                f"{variable} must be one of {', '.join(choices)}, got {raw!r}", variable=variable
            )
        return value

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


def _user_ids(raw: str, variable: str) -> tuple[int, ...]:
    """``"3, 7"`` -> ``(3, 7)``: user ids separated by commas (or spaces)."""
    ids: list[int] = []
    for part in raw.replace(",", " ").split():
        if not part.isdigit() or not 0 < int(part) <= USER_ID_MAX:
            raise ConfigurationError(
                f"{variable} must be user ids separated by commas (e.g. 3,7), got {raw!r}",
                variable=variable,
            )
        if int(part) not in ids:
            ids.append(int(part))
    return tuple(ids)


def _checked(name: str, value: Any, parse: Any) -> Any:
    """Validate a value given in code (keyword options) the way the environment's text is.

    Text is parsed exactly like the variable's text, so ``configure(worker="false")`` means
    false; anything else must already have the right type and range.
    """
    variable = _env_name(name)

    def wrong(expected: str) -> ConfigurationError:
        return ConfigurationError(
            f"{variable} must be {expected}, got {value!r}", variable=variable
        )

    if parse is None:
        if not isinstance(value, str):
            raise wrong("text")
        return value
    if parse is _opt_secret:
        if value is None or isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value) if value else None
        raise wrong("text (a secret)")
    if parse is _secret_values and not isinstance(value, str):
        if isinstance(value, list | tuple) and all(isinstance(v, str | Secret) for v in value):
            return tuple(v if isinstance(v, Secret) else Secret(v) for v in value if v)
        raise wrong("a list of texts (secrets)")
    if isinstance(value, str):
        return parse(value, variable)
    if isinstance(parse, _Number):
        return parse.check(value, variable)
    if parse is _parse_bool:
        if not isinstance(value, bool):
            raise wrong("a boolean (true/false)")
        return value
    if parse is _parse_worker:
        if not isinstance(value, bool):
            raise wrong("auto, true or false")
        return value
    if parse is _opt_str:
        if value is not None:
            raise wrong("text")
        return value
    if parse is _path:
        if not isinstance(value, os.PathLike):
            raise wrong("a path")
        return Path(value)
    if parse is _user_ids:
        items = list(value) if isinstance(value, tuple | list | set | frozenset) else None
        if items is None or any(
            isinstance(i, bool) or not isinstance(i, int) or not 0 < i <= USER_ID_MAX for i in items
        ):
            raise wrong(f"user ids (integers from 1 to {USER_ID_MAX})")
        return tuple(dict.fromkeys(items))
    if parse is _schema_name:
        if value is not None:
            raise wrong("a schema name")
        return value
    if parse is _logger_levels:
        if isinstance(value, tuple) and all(isinstance(p, tuple) for p in value):
            return _logger_levels(dict(value), variable)
        return _logger_levels(value, variable)
    choices = getattr(parse, "choices", None)
    if choices is not None:
        raise wrong(f"one of {', '.join(choices)}")
    return value


def _setting(default: Any, parse: Callable[[str, str], Any] | None = None, **kw: Any) -> Any:
    return field(default=default, metadata={"parse": parse}, **kw)


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything tradelog can be configured with.

    Build it with keywords (``Settings(database_url=...)``) or from the environment with
    :meth:`from_env`, where keywords given to ``from_env`` win over the variables.
    """

    database_url: str = _setting("sqlite:///tradelog.db")
    #: PostgreSQL schema holding every tradelog table and its version table (None: default)
    db_schema: str | None = _setting(None, _schema_name)
    #: compare the database with the migrations at configure(): warn, raise or off
    schema_check: str = _setting("warn", _choice(*SCHEMA_CHECK_MODES))
    log_dir: Path = _setting(Path("./logs"), _path)
    level: str = _setting("INFO")
    #: minimum level per logger (and its children) for what tradelog takes in
    logger_levels: tuple[tuple[str, str], ...] = _setting(DEFAULT_LOGGER_LEVELS, _logger_levels)
    timezone: str = _setting("Asia/Kolkata")
    console: bool = _setting(True, _parse_bool)
    #: point structlog and stdlib logging at tradelog (False: the host wires tradelog in)
    take_over: bool = _setting(True, _parse_bool)
    #: an event, task, heartbeat or notification for an unknown user id: register or reject
    unknown_users: str = _setting("register", _choice(*UNKNOWN_USER_MODES))
    #: Telegram
    telegram_bot_token: Secret | None = _setting(None, _opt_secret)
    telegram_api_url: str = _setting("https://api.telegram.org")
    #: Secrets of your own (broker API keys, passwords) masked wherever they appear in what
    #: tradelog writes, with or without a key name before them (tradelog's own secrets always are)
    redact_values: tuple[Secret, ...] = _setting((), _secret_values)
    #: Email
    smtp_host: str | None = _setting(None, _opt_str)
    smtp_port: int = _setting(587, _number(int, 1, 65535))
    smtp_username: str | None = _setting(None, _opt_str)
    smtp_password: Secret | None = _setting(None, _opt_secret)
    smtp_security: str = _setting("starttls")
    smtp_from: str | None = _setting(None, _opt_str)
    smtp_timeout: float = _setting(30.0, _number(float, 0.1))  # connect, each command, DATA
    #: Seconds a Bot API request may take (connect at most 10 of them) before it is retried
    telegram_timeout: float = _setting(30.0, _number(float, 0.1))
    #: Background log writer
    queue_size: int = _setting(10_000, _number(int, 1))
    batch_size: int = _setting(500, _number(int, 1))
    flush_interval: float = _setting(0.25, _number(float, 0.001))
    #: ``thread``: the writer's threads run in this process; ``process``: rows are built and
    #: written by a helper process (``python -m tradelog._logs.helper``), so the writer's
    #: Python work does not share the callers' GIL (see "Log writer" in the README)
    log_writer: str = _setting("thread", _choice(*LOG_WRITER_MODES))
    file_max_bytes: int = _setting(64 * 1024 * 1024, _number(int, 1024))
    #: keys kept per event; the rest are summarised under ``tradelog_keys_dropped``
    max_event_keys: int = _setting(1000, _number(int, 8))
    db_write_timeout: float = _setting(5.0, _number(float, 0.01))  # locked/unreachable -> spool
    db_connect_timeout: float = _setting(5.0, _number(float, 0.01))  # open / wait for a connection
    db_statement_timeout: float = _setting(5.0, _number(float, 0.01))  # one statement, lock waits
    telemetry_wait: float = _setting(0.5, _number(float, 0))  # heartbeat/task row: caller waits
    #: Delivery worker: ``auto`` runs one in a configured process with a channel configured
    worker: bool | Literal["auto"] = _setting("auto", _parse_worker)
    worker_lease: float = _setting(30.0, _number(float, 1))  # renewed while a send runs
    worker_exit_timeout: float = _setting(5.0, _number(float, 0))  # due deliveries at exit
    channel_failure_threshold: int = _setting(3, _number(int, 1))  # in a row: channel paused
    channel_pause: float = _setting(1.0, _number(float, 0.01))  # first pause; doubles per probe
    channel_pause_max: float = _setting(10.0, _number(float, 0.01))
    max_delivery_attempts: int = _setting(8, _number(int, 1))
    worker_concurrency: int = _setting(8, _number(int, 1, 256))
    worker_poll_interval: float = _setting(1.0, _number(float, 0.01))
    #: PostgreSQL LISTEN/NOTIFY wake-ups for workers and live streams (off: poll only, e.g.
    #: behind a transaction-pooling proxy such as PgBouncer, where LISTEN does not work)
    listen: bool = _setting(True, _parse_bool)
    telegram_rate: float = _setting(28.0, _number(float, 0.1))  # messages/s per bot, all workers
    telegram_chat_interval: float = _setting(1.05, _number(float, 0))  # seconds between, per chat
    #: A due delivery no worker able to send its channel claimed for this long fails (0: waits)
    unserved_delivery_timeout: float = _setting(900.0, _number(float, 0))
    error_notify_window: float = _setting(900.0, _number(float, 0))
    stale_heartbeat_seconds: float = _setting(300.0, _number(float, 1))
    stale_check_interval: float = _setting(60.0, _number(float, 0.01))  # worker checks heartbeats
    capture_locals: bool = _setting(False, _parse_bool)  # error rows include scrubbed locals
    error_snapshot: bool = _setting(True, _parse_bool)  # error rows carry the user's config/status
    #: Operators: besides the active admins, these users get error and stale-service alerts
    ops_user_ids: tuple[int, ...] = _setting((), _user_ids)
    #: Web (``tradelog serve``, :mod:`tradelog.web`)
    web_admin_token: Secret | None = _setting(None, _opt_secret)  # bearer token of the admin
    web_poll_interval: float = _setting(0.5, _number(float, 0.05, 60))  # live streams poll
    #: ``day``: ``service_logs`` is partitioned by day on PostgreSQL (``tradelog db
    #: partition-logs`` converts it; retention creates partitions ahead and drops whole days)
    partition_logs: str = _setting("off", _choice("off", "day"))
    #: Retention (days)
    service_logs_retention_days: int = _setting(30, _number(int, 1))
    log_files_retention_days: int = _setting(90, _number(int, 1))
    resolved_errors_retention_days: int = _setting(90, _number(int, 1))
    read_notifications_retention_days: int = _setting(30, _number(int, 1))
    unread_notifications_retention_days: int = _setting(180, _number(int, 1))
    deliveries_retention_days: int = _setting(30, _number(int, 1))
    task_executions_retention_days: int = _setting(90, _number(int, 1))
    audit_logs_retention_days: int = _setting(365, _number(int, 1))
    dead_letter_retention_days: int = _setting(90, _number(int, 1))
    spill_files_retention_days: int = _setting(30, _number(int, 1))

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            checked = _checked(spec.name, value, spec.metadata.get("parse"))
            if checked is not value:
                object.__setattr__(self, spec.name, checked)
        level = self.level.strip().upper()
        if level not in LEVELS:
            raise ConfigurationError(
                f"{_env_name('level')} must be one of {', '.join(LEVELS)}, got {self.level!r}",
                variable=_env_name("level"),
            )
        object.__setattr__(self, "level", level)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"{_env_name('timezone')} must be an IANA timezone such as Asia/Kolkata, "
                f"got {self.timezone!r}",
                variable=_env_name("timezone"),
            ) from None
        try:
            make_url(self.database_url)
        except ArgumentError:
            raise ConfigurationError(
                f"{_env_name('database_url')} is not a database URL "
                "(expected e.g. sqlite:///tradelog.db or postgresql://user@host/db)",
                variable=_env_name("database_url"),
            ) from None
        if self.db_schema and make_url(self.database_url).get_backend_name() == "sqlite":
            raise ConfigurationError(
                f"{_env_name('db_schema')} needs PostgreSQL; "
                "an SQLite database is tradelog's alone (leave it unset)",
                variable=_env_name("db_schema"),
            )
        if self.log_writer == "process" and _in_memory(self.database_url):
            raise ConfigurationError(
                f"{_env_name('log_writer')}=process needs a database another process can "
                "open; an in-memory SQLite database is this process's alone",
                variable=_env_name("log_writer"),
            )
        security = self.smtp_security.strip().lower()
        if security not in SMTP_SECURITY_MODES:
            raise ConfigurationError(
                f"{_env_name('smtp_security')} must be one of {', '.join(SMTP_SECURITY_MODES)}, "
                f"got {self.smtp_security!r}",
                variable=_env_name("smtp_security"),
            )
        object.__setattr__(self, "smtp_security", security)
        object.__setattr__(self, "telegram_api_url", self.telegram_api_url.rstrip("/"))

    def __repr__(self) -> str:
        shown = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "database_url":
                value = mask_url(value)
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def zone(self) -> ZoneInfo:
        """The configured timezone as a ``ZoneInfo``."""
        return ZoneInfo(self.timezone)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``TRADELOG_*`` variables; keyword ``overrides`` win.

        Unknown keyword names raise :class:`ConfigurationError`; so does any invalid value,
        naming the variable it came from.
        """
        env = os.environ if environ is None else environ
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown tradelog option(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in known.items():
            variable = _env_name(name)
            if name in overrides:
                values[name] = overrides[name]
            elif variable in env:
                parse = spec.metadata.get("parse")
                raw = env[variable]
                values[name] = parse(raw, variable) if parse else raw
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value masked wherever it appears: tradelog's own (the bot token, the
        SMTP password, the admin token, the database password) and :attr:`redact_values`."""
        found = [
            secret.reveal()
            for secret in (
                self.telegram_bot_token,
                self.smtp_password,
                self.web_admin_token,
                *self.redact_values,
            )
            if secret is not None
        ]
        try:
            password = make_url(self.database_url).password
        except ArgumentError:  # an unparsable URL has no password to find
            password = None
        if password:
            found.append(str(password))
        return tuple(found)

    def redacted_url(self) -> str:
        """The database URL with any password masked, for messages and logs."""
        return mask_url(self.database_url)


def database_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Only ``TRADELOG_DATABASE_URL`` (for tools such as Alembic's env.py), or None when unset."""
    env = os.environ if environ is None else environ
    return env.get(_env_name("database_url")) or None


def db_schema_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Only ``TRADELOG_DB_SCHEMA`` (validated), for Alembic's env.py; None when unset."""
    env = os.environ if environ is None else environ
    variable = _env_name("db_schema")
    return _schema_name(env.get(variable, ""), variable)
