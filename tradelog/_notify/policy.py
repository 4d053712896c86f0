"""Pure notification routing policy: which channels get a notification, and when.

Nothing here reads the clock or touches storage; every time-dependent function takes ``now``.

Rules applied by :func:`decide`:

* The per-type toggle gates everything. A type that is switched off creates no notification at
  all, in-app included.
* Otherwise the in-app channel always records (``in_app_enabled`` is kept for completeness but is
  not consulted: in-app cannot be turned off).
* A disabled external channel (Telegram, email) is not selected.
* An enabled external channel without an address is selected with action ``"fail"`` and a reason
  such as ``"missing telegram_chat_id"`` so the caller records a permanent delivery failure. This
  takes precedence over quiet hours: the configuration problem exists whatever the time.
* ``critical`` notifications ignore quiet hours.
* A call may restrict the channels it uses (``channels=("in_app",)``): external channels not
  named are not selected, whatever the preferences say. It never adds a channel the preferences
  leave off, and the in-app record is made in any case (it is the notification itself).
* Inside quiet hours the user's ``quiet_hours_mode`` applies to external channels:

  ``"defer"``
      Telegram and email are held until the window ends (``not_before``, UTC).
  ``"silent"``
      both are sent now; Telegram with ``silent=True`` (``disable_notification``). Email has no
      notification sound of its own, so it is sent now unchanged.
  ``"drop"``
      both are suppressed; the in-app record is the only trace.

Quiet hours (:func:`quiet_window_end`) are wall-clock times in the user's timezone. The window
starts at ``start`` (inclusive) and ends at ``end`` (exclusive); ``start > end`` wraps past
midnight. ``start == end`` means *no* quiet hours (a 24-hour window is not expressible).

Daylight-saving transitions are resolved by mapping each wall-clock boundary to the **first
instant at or after** that local time:

* a nonexistent time (inside a spring-forward gap) maps to the instant the clocks jump, so a
  window ending at 02:30 in New York on 2026-03-08 ends at 03:00 EDT;
* an ambiguous time (inside a fall-back overlap) maps to its first occurrence, so a window ending
  at 01:30 in New York on 2026-11-01 ends at 01:30 EDT, and the repeated hour does not re-enter
  the window.

Each day's window is therefore one continuous interval of real time, possibly an hour shorter
or longer than on other days.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.utils import parseaddr
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "DEFAULT_QUIET_MODE",
    "DEFAULT_TIMEZONE",
    "LEVELS",
    "NOTIFICATION_TYPES",
    "QUIET_HOURS_REASON",
    "QUIET_MODES",
    "Action",
    "ChannelDecision",
    "Decision",
    "PreferenceSnapshot",
    "decide",
    "quiet_window_end",
    "validate_channels",
    "validate_chat_id",
    "validate_email_address",
    "validate_level",
    "validate_quiet_hours",
    "validate_quiet_mode",
    "validate_timezone",
    "validate_type",
]

NOTIFICATION_TYPES: Final[tuple[str, ...]] = ("service", "trading", "system", "error")
"""Valid notification ``type`` values."""

LEVELS: Final[tuple[str, ...]] = ("info", "warning", "error", "critical")
"""Valid notification ``level`` values, least to most severe."""

CHANNELS: Final[tuple[str, ...]] = ("telegram", "email", "in_app")
"""Delivery channels, in the order :func:`decide` reports them."""

QUIET_MODES: Final[tuple[str, ...]] = ("defer", "silent", "drop")
"""Valid ``quiet_hours_mode`` values."""

ACTIONS: Final[tuple[str, ...]] = ("send", "defer", "suppress", "fail")
"""Valid :attr:`ChannelDecision.action` values."""

Action = Literal["send", "defer", "suppress", "fail"]

DEFAULT_TIMEZONE: Final = "Asia/Kolkata"
DEFAULT_QUIET_MODE: Final = "defer"

QUIET_HOURS_REASON: Final = "quiet hours"

_TYPE_TOGGLES: Final[dict[str, str]] = {
    "service": "notify_service_events",
    "trading": "notify_trading_events",
    "system": "notify_system_events",
    "error": "notify_errors",
}

_CHAT_ID_NUMERIC = re.compile(r"-?[1-9][0-9]{0,18}")
_CHAT_ID_USERNAME = re.compile(r"@[A-Za-z][A-Za-z0-9_]{4,31}")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_EMAIL_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})"
)
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_NOT_ZONES: Final = frozenset({"localtime", "posixrules", "Factory"})


def _choice(value: object, valid: tuple[str, ...], what: str) -> str:
    if isinstance(value, str):
        normalised = value.strip().lower()
        if normalised in valid:
            return normalised
    raise ValueError(f"invalid {what} {value!r}; expected one of: {', '.join(valid)}")


def validate_type(value: object) -> str:
    """Return the canonical notification type for ``value`` (case and surrounding space ignored).

    Raises :class:`ValueError` listing the valid types.
    """
    return _choice(value, NOTIFICATION_TYPES, "notification type")


def validate_level(value: object) -> str:
    """Return the canonical level for ``value`` (case and surrounding space ignored).

    Raises :class:`ValueError` listing the valid levels.
    """
    return _choice(value, LEVELS, "notification level")


def validate_channels(value: object) -> frozenset[str] | None:
    """Return the channels a call restricts itself to (None: no restriction).

    ``value`` is None or an iterable of channel names (a single name is accepted too); case and
    surrounding space are ignored. Raises :class:`ValueError` listing the valid channels.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, Iterable):
        items = list(value)
    else:
        raise ValueError(
            f"channels must be a sequence of channel names ({', '.join(CHANNELS)}), got {value!r}"
        )
    return frozenset(_choice(item, CHANNELS, "channel") for item in items)


def validate_quiet_mode(value: object) -> str:
    """Return the canonical quiet-hours mode for ``value``.

    Raises :class:`ValueError` listing the valid modes.
    """
    return _choice(value, QUIET_MODES, "quiet_hours_mode")


@dataclass(frozen=True)
class PreferenceSnapshot:
    """One user's notification preferences, as read from ``user_notification_preferences``.

    ``quiet_hours_start``/``quiet_hours_end`` are naive wall-clock times in ``timezone`` (an IANA
    name). Quiet hours apply only when both are set and differ.
    """

    telegram_enabled: bool = False
    telegram_chat_id: str | None = None
    email_enabled: bool = False
    email_address: str | None = None
    in_app_enabled: bool = True
    notify_service_events: bool = True
    notify_trading_events: bool = True
    notify_system_events: bool = True
    notify_errors: bool = True
    quiet_hours_start: time | None = None
    quiet_hours_end: time | None = None
    timezone: str = DEFAULT_TIMEZONE
    quiet_hours_mode: str = DEFAULT_QUIET_MODE

    def type_enabled(self, type_: str) -> bool:
        """Whether notifications of ``type_`` are switched on (``type_`` must be valid)."""
        return bool(getattr(self, _TYPE_TOGGLES[validate_type(type_)]))

    def zone(self) -> ZoneInfo:
        """The user's timezone; an unknown or invalid name falls back to Asia/Kolkata."""
        try:
            return validate_timezone(self.timezone)
        except ValueError:
            return ZoneInfo(DEFAULT_TIMEZONE)


@dataclass(frozen=True)
class ChannelDecision:
    """What to do with one notification on one channel.

    ``action`` is ``"send"`` (now), ``"defer"`` (not before ``not_before``, a UTC instant),
    ``"suppress"`` (do not deliver; not a failure) or ``"fail"`` (record a permanent delivery
    failure with ``reason``). ``silent`` asks the channel to deliver without sound.
    """

    channel: str
    action: Action
    not_before: datetime | None = None
    silent: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`.

    ``create`` is False when the notification must not exist at all (its type is switched off;
    ``reason`` says so) and ``channels`` is then empty.
    """

    create: bool
    channels: tuple[ChannelDecision, ...] = ()
    reason: str | None = None

    def channel(self, name: str) -> ChannelDecision | None:
        """The decision for channel ``name``, or None when that channel is not selected."""
        for item in self.channels:
            if item.channel == name:
                return item
        return None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


def _offset_at(instant: int, tz: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(instant, tz=UTC).astimezone(tz).utcoffset()


def _resolve_wall_time(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first UTC instant at or after wall-clock ``day wall`` in ``tz``."""
    naive = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
    earlier = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if earlier.astimezone(tz).replace(tzinfo=None) == naive:
        return earlier
    # Nonexistent local time: fold=0 applies the pre-transition offset and lands after the jump;
    # fold=1 applies the post-transition offset and lands before it. Find the jump itself.
    later = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = sorted((earlier, later))
    target = _offset_at(math.ceil(high.timestamp()), tz)
    lo = math.floor(low.timestamp())
    hi = math.ceil(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, tz) == target:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, tz=UTC)


def quiet_window_end(start: time, end: time, tz: ZoneInfo, now: datetime) -> datetime | None:
    """If ``now`` falls inside the quiet window, the UTC instant the window ends; else None.

    ``start`` and ``end`` are naive wall-clock times in ``tz``; ``start`` is inclusive, ``end``
    exclusive, and ``start > end`` wraps past midnight. ``start == end`` means no quiet hours.
    DST gaps and overlaps resolve to the first instant at or after the wall-clock time (see the
    module docstring). ``now`` must be timezone-aware.
    """
    _require_aware(now)
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("quiet-hours times must be naive wall-clock times")
    if start == end:
        return None
    wraps = start > end
    today = now.astimezone(tz).date()
    for offset in (-1, 0, 1):
        day = today + timedelta(days=offset)
        window_start = _resolve_wall_time(day, start, tz)
        window_end = _resolve_wall_time(day + timedelta(days=1 if wraps else 0), end, tz)
        if window_start <= now < window_end:
            return window_end
    return None


def _external(
    channel: str,
    *,
    address: str | None,
    address_field: str,
    level: str,
    quiet_end: datetime | None,
    mode: str,
) -> ChannelDecision:
    if address is None or not address.strip():
        return ChannelDecision(channel, "fail", reason=f"missing {address_field}")
    if level == "critical" or quiet_end is None:
        return ChannelDecision(channel, "send")
    if mode == "drop":
        return ChannelDecision(channel, "suppress", reason=QUIET_HOURS_REASON)
    if mode == "silent":
        return ChannelDecision(
            channel, "send", silent=channel == "telegram", reason=QUIET_HOURS_REASON
        )
    return ChannelDecision(channel, "defer", not_before=quiet_end, reason=QUIET_HOURS_REASON)


def decide(
    prefs: PreferenceSnapshot,
    type_: str,
    level: str,
    now: datetime,
    *,
    channels: Iterable[str] | None = None,
) -> Decision:
    """Route one notification of ``type_`` and ``level`` for the user with ``prefs`` at ``now``.

    ``type_`` and ``level`` are validated (:class:`ValueError` when invalid); ``now`` must be
    timezone-aware. ``channels``, when given, is the set of channels this call may use (see
    :func:`validate_channels`): the others are not selected. Preferences are read leniently:
    an unknown ``quiet_hours_mode`` counts as ``"defer"``, an unknown timezone as
    Asia/Kolkata, and a half-set quiet window as none.
    """
    type_ = validate_type(type_)
    level = validate_level(level)
    allowed = validate_channels(channels)
    _require_aware(now)
    if not prefs.type_enabled(type_):
        return Decision(create=False, reason=f"{type_} notifications are turned off")

    quiet_end: datetime | None = None
    start, end = prefs.quiet_hours_start, prefs.quiet_hours_end
    if level != "critical" and start is not None and end is not None:
        quiet_end = quiet_window_end(
            start.replace(tzinfo=None), end.replace(tzinfo=None), prefs.zone(), now
        )
    try:
        mode = validate_quiet_mode(prefs.quiet_hours_mode)
    except ValueError:
        mode = DEFAULT_QUIET_MODE

    def wanted(channel: str) -> bool:
        return allowed is None or channel in allowed

    selected: list[ChannelDecision] = []
    if prefs.telegram_enabled and wanted("telegram"):
        selected.append(
            _external(
                "telegram",
                address=prefs.telegram_chat_id,
                address_field="telegram_chat_id",
                level=level,
                quiet_end=quiet_end,
                mode=mode,
            )
        )
    if prefs.email_enabled and wanted("email"):
        selected.append(
            _external(
                "email",
                address=prefs.email_address,
                address_field="email_address",
                level=level,
                quiet_end=quiet_end,
                mode=mode,
            )
        )
    selected.append(ChannelDecision("in_app", "send"))
    return Decision(create=True, channels=tuple(selected))


def validate_chat_id(value: str | int) -> str:
    """Return a Telegram chat id in canonical string form.

    Accepts a non-zero integer (negative for groups, e.g. ``-1001234567890``) or a public
    ``@username`` (5-32 letters, digits or underscores, starting with a letter). Raises
    :class:`ValueError` otherwise.
    """
    if isinstance(value, bool):
        raise ValueError("telegram chat id must be an integer or @username, not a boolean")
    text = str(value).strip() if isinstance(value, int | str) else ""
    if _CHAT_ID_NUMERIC.fullmatch(text) and abs(int(text)) < 2**63:
        return text
    if _CHAT_ID_USERNAME.fullmatch(text):
        return text
    raise ValueError(
        f"invalid telegram chat id {value!r}; expected an integer such as -1001234567890 "
        "or a public @channelusername"
    )


def validate_email_address(value: str) -> str:
    """Return a bare ASCII email address (domain lower-cased), or raise :class:`ValueError`.

    Display names, comments, quoted local parts, control characters (CR/LF included) and
    non-ASCII addresses are rejected; the domain needs at least one dot.
    """
    if not isinstance(value, str):
        raise ValueError(f"email address must be a string, got {type(value).__name__}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("email address must not contain control characters")
    text = value.strip()
    local, sep, domain = text.rpartition("@")
    if (
        not sep
        or len(text) > 254
        or len(local) > 64
        or not _EMAIL_LOCAL.fullmatch(local)
        or not _EMAIL_DOMAIN.fullmatch(domain)
        or parseaddr(text) != ("", text)
    ):
        raise ValueError(f"invalid email address {value!r}")
    return f"{local}@{domain.lower()}"


def _parse_time(value: time | str, what: str) -> time:
    if isinstance(value, time):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be a time such as 22:00, got {value!r}") from None
    else:
        raise ValueError(f"{what} must be a time such as 22:00, got {value!r}")
    if parsed.tzinfo is not None:
        raise ValueError(f"{what} must be a wall-clock time without a timezone")
    return parsed.replace(fold=0)


def validate_quiet_hours(
    start: time | str | None, end: time | str | None
) -> tuple[time, time] | None:
    """Validate a quiet-hours update; None means quiet hours are off.

    Both bounds must be given, or neither. Strings use ISO form (``"22:00"``, ``"07:30:00"``).
    Equal bounds are rejected: clear both to turn quiet hours off. Raises :class:`ValueError`.
    """
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise ValueError("quiet_hours_start and quiet_hours_end must be set together, or neither")
    parsed_start = _parse_time(start, "quiet_hours_start")
    parsed_end = _parse_time(end, "quiet_hours_end")
    if parsed_start == parsed_end:
        raise ValueError(
            "quiet_hours_start and quiet_hours_end are equal; clear both to turn quiet hours off"
        )
    return parsed_start, parsed_end


def validate_timezone(name: str) -> ZoneInfo:
    """Return the :class:`~zoneinfo.ZoneInfo` for IANA name ``name``, or raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"timezone must be an IANA name string, got {type(name).__name__}")
    text = name.strip()
    if not _ZONE_NAME.fullmatch(text) or text in _NOT_ZONES:
        raise ValueError(f"invalid timezone {name!r}; expected an IANA name such as Asia/Kolkata")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r}; expected an IANA name such as Asia/Kolkata"
        ) from None
