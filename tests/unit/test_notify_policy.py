"""Tests for the pure notification routing policy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradelog._notify.policy import (
    CHANNELS,
    LEVELS,
    NOTIFICATION_TYPES,
    QUIET_MODES,
    ChannelDecision,
    PreferenceSnapshot,
    decide,
    quiet_window_end,
    validate_chat_id,
    validate_email_address,
    validate_level,
    validate_quiet_hours,
    validate_quiet_mode,
    validate_timezone,
    validate_type,
)

IST = ZoneInfo("Asia/Kolkata")
NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=tz)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --------------------------------------------------------------------------- constants


def test_constants() -> None:
    assert NOTIFICATION_TYPES == ("service", "trading", "system", "error")
    assert LEVELS == ("info", "warning", "error", "critical")
    assert CHANNELS == ("telegram", "email", "in_app")
    assert QUIET_MODES == ("defer", "silent", "drop")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("trading", "trading"), (" Service ", "service"), ("ERROR", "error"), ("system", "system")],
)
def test_validate_type_accepts(raw: str, expected: str) -> None:
    assert validate_type(raw) == expected


@pytest.mark.parametrize("raw", ["trade", "", "errors", None, 1, "info"])
def test_validate_type_rejects_and_lists_valid_values(raw: object) -> None:
    with pytest.raises(ValueError, match="service, trading, system, error"):
        validate_type(raw)


@pytest.mark.parametrize(
    ("raw", "expected"), [("info", "info"), ("Warning", "warning"), (" critical", "critical")]
)
def test_validate_level_accepts(raw: str, expected: str) -> None:
    assert validate_level(raw) == expected


@pytest.mark.parametrize("raw", ["debug", "fatal", "", None, 3])
def test_validate_level_rejects_and_lists_valid_values(raw: object) -> None:
    with pytest.raises(ValueError, match="info, warning, error, critical"):
        validate_level(raw)


def test_validate_quiet_mode() -> None:
    assert validate_quiet_mode(" Silent ") == "silent"
    with pytest.raises(ValueError, match="defer, silent, drop"):
        validate_quiet_mode("mute")


def test_preference_defaults() -> None:
    prefs = PreferenceSnapshot()
    assert not prefs.telegram_enabled
    assert prefs.telegram_chat_id is None
    assert not prefs.email_enabled
    assert prefs.email_address is None
    assert prefs.in_app_enabled
    assert all(prefs.type_enabled(t) for t in NOTIFICATION_TYPES)
    assert prefs.quiet_hours_start is None
    assert prefs.quiet_hours_end is None
    assert prefs.timezone == "Asia/Kolkata"
    assert prefs.quiet_hours_mode == "defer"
    assert prefs.zone() == IST


def test_unknown_timezone_falls_back_to_ist() -> None:
    assert PreferenceSnapshot(timezone="Mars/Olympus").zone() == IST


# --------------------------------------------------------------------------- quiet windows

# (start, end, zone, now, expected window end or None); instants are ISO 8601 with offsets.
QUIET_CASES = [
    # Asia/Kolkata has no DST; 22:00-07:00 wraps past midnight.
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-14T23:30+05:30", "2026-05-15T07:00+05:30"),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-15T03:00+05:30", "2026-05-15T07:00+05:30"),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-14T22:00+05:30", "2026-05-15T07:00+05:30"),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-15T07:00+05:30", None),
    (
        "22:00",
        "07:00",
        "Asia/Kolkata",
        "2026-05-15T06:59:59.999999+05:30",
        "2026-05-15T07:00+05:30",
    ),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-14T21:59:59.999999+05:30", None),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-14T12:00+05:30", None),
    ("22:00", "07:00", "Asia/Kolkata", "2026-05-14T17:00+00:00", "2026-05-15T07:00+05:30"),
    ("09:15", "15:30", "Asia/Kolkata", "2026-05-14T09:15+05:30", "2026-05-14T15:30+05:30"),
    ("09:15", "15:30", "Asia/Kolkata", "2026-05-14T15:30+05:30", None),
    ("09:15", "15:30", "Asia/Kolkata", "2026-05-14T08:00+05:30", None),
    ("00:00", "06:00", "Asia/Kolkata", "2026-05-14T00:00+05:30", "2026-05-14T06:00+05:30"),
    ("23:00", "00:00", "Asia/Kolkata", "2026-05-14T23:30+05:30", "2026-05-15T00:00+05:30"),
    # Equal bounds: no quiet hours.
    ("22:00", "22:00", "Asia/Kolkata", "2026-05-14T22:00+05:30", None),
    ("00:00", "00:00", "Asia/Kolkata", "2026-05-14T00:00+05:30", None),
    # New York spring forward 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
    ("22:00", "07:00", "America/New_York", "2026-03-07T23:00-05:00", "2026-03-08T07:00-04:00"),
    ("01:00", "02:30", "America/New_York", "2026-03-08T01:30-05:00", "2026-03-08T03:00-04:00"),
    ("01:00", "02:30", "America/New_York", "2026-03-08T03:00-04:00", None),
    ("02:15", "04:00", "America/New_York", "2026-03-08T01:59:59-05:00", None),
    ("02:15", "04:00", "America/New_York", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00"),
    ("02:10", "02:50", "America/New_York", "2026-03-08T03:00-04:00", None),
    ("02:10", "02:50", "America/New_York", "2026-03-09T02:20-04:00", "2026-03-09T02:50-04:00"),
    # New York fall back 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00Z).
    ("22:00", "07:00", "America/New_York", "2026-10-31T23:00-04:00", "2026-11-01T07:00-05:00"),
    ("00:00", "01:30", "America/New_York", "2026-11-01T01:00-04:00", "2026-11-01T01:30-04:00"),
    ("00:00", "01:30", "America/New_York", "2026-11-01T01:10-05:00", None),
    ("01:30", "03:00", "America/New_York", "2026-11-01T01:29-04:00", None),
    ("01:30", "03:00", "America/New_York", "2026-11-01T01:30-04:00", "2026-11-01T03:00-05:00"),
    ("01:30", "03:00", "America/New_York", "2026-11-01T01:30-05:00", "2026-11-01T03:00-05:00"),
    # Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST; 2026-10-25 02:00 BST -> 01:00 GMT.
    ("23:00", "07:00", "Europe/London", "2026-03-28T23:30+00:00", "2026-03-29T07:00+01:00"),
    ("00:30", "01:30", "Europe/London", "2026-03-29T00:45+00:00", "2026-03-29T02:00+01:00"),
    ("22:00", "07:00", "Europe/London", "2026-10-24T22:00+01:00", "2026-10-25T07:00+00:00"),
    ("01:30", "03:00", "Europe/London", "2026-10-25T01:30+00:00", "2026-10-25T03:00+00:00"),
    ("22:00", "07:00", "Europe/London", "2026-07-01T22:30+01:00", "2026-07-02T07:00+01:00"),
    ("22:00", "07:00", "Europe/London", "2026-07-01T21:59+01:00", None),
]


@pytest.mark.parametrize(("start", "end", "zone", "now", "expected"), QUIET_CASES)
def test_quiet_window_end(start: str, end: str, zone: str, now: str, expected: str | None) -> None:
    result = quiet_window_end(
        time.fromisoformat(start), time.fromisoformat(end), ZoneInfo(zone), iso(now)
    )
    if expected is None:
        assert result is None
    else:
        assert result == iso(expected)
        assert result is not None
        assert result.tzinfo is UTC


def test_quiet_window_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        quiet_window_end(time(22), time(7), IST, datetime(2026, 5, 14, 23))


def test_quiet_window_rejects_aware_bounds() -> None:
    with pytest.raises(ValueError, match="naive"):
        quiet_window_end(time(22, tzinfo=UTC), time(7), IST, utc(2026, 5, 14))


@given(
    start=st.times(),
    end=st.times(),
    zone=st.sampled_from([IST, NY, LONDON]),
    now=st.datetimes(
        min_value=datetime(2026, 1, 1),
        max_value=datetime(2026, 12, 31),
        timezones=st.just(UTC),
    ),
)
def test_quiet_window_end_is_future_and_stable(
    start: time, end: time, zone: ZoneInfo, now: datetime
) -> None:
    result = quiet_window_end(start, end, zone, now)
    if start == end:
        assert result is None
    if result is None:
        return
    assert now < result <= now + timedelta(hours=25)
    assert quiet_window_end(start, end, zone, result - timedelta(microseconds=1)) == result


# --------------------------------------------------------------------------- decide

NOW_DAY = local(IST, 2026, 5, 14, 12)
NOW_QUIET = local(IST, 2026, 5, 14, 23)
QUIET_END = local(IST, 2026, 5, 15, 7).astimezone(UTC)
FULL = PreferenceSnapshot(
    telegram_enabled=True,
    telegram_chat_id="-1001234567890",
    email_enabled=True,
    email_address="trader@example.com",
    quiet_hours_start=time(22),
    quiet_hours_end=time(7),
)


def actions(
    prefs: PreferenceSnapshot, level: str = "info", now: datetime = NOW_DAY
) -> dict[str, ChannelDecision]:
    decision = decide(prefs, "trading", level, now)
    assert decision.create
    return {c.channel: c for c in decision.channels}


def test_defaults_only_in_app() -> None:
    decision = decide(PreferenceSnapshot(), "service", "info", NOW_DAY)
    assert decision.create
    assert decision.reason is None
    assert decision.channels == (ChannelDecision("in_app", "send"),)


@pytest.mark.parametrize(
    ("type_", "toggle"),
    [
        ("service", "notify_service_events"),
        ("trading", "notify_trading_events"),
        ("system", "notify_system_events"),
        ("error", "notify_errors"),
    ],
)
def test_type_toggle_gates_everything(type_: str, toggle: str) -> None:
    off: dict[str, Any] = {toggle: False}
    prefs = replace(FULL, **off)
    for level in LEVELS:
        decision = decide(prefs, type_, level, NOW_DAY)
        assert not decision.create
        assert decision.channels == ()
        assert decision.reason is not None
        assert type_ in decision.reason
    for other in NOTIFICATION_TYPES:
        if other != type_:
            assert decide(prefs, other, "info", NOW_DAY).create


def test_outside_quiet_hours_everything_sends() -> None:
    result = actions(FULL)
    assert list(result) == ["telegram", "email", "in_app"]
    for item in result.values():
        assert item.action == "send"
        assert item.not_before is None
        assert not item.silent
        assert item.reason is None


@pytest.mark.parametrize(
    ("telegram", "email", "expected"),
    [
        (False, False, ["in_app"]),
        (True, False, ["telegram", "in_app"]),
        (False, True, ["email", "in_app"]),
        (True, True, ["telegram", "email", "in_app"]),
    ],
)
def test_disabled_channels_not_selected(telegram: bool, email: bool, expected: list[str]) -> None:
    prefs = PreferenceSnapshot(
        telegram_enabled=telegram,
        telegram_chat_id="123",
        email_enabled=email,
        email_address="a@example.com",
    )
    assert list(actions(prefs)) == expected


@pytest.mark.parametrize(
    ("prefs_on", "requested", "expected"),
    [
        ((True, True), ("in_app",), ["in_app"]),
        ((True, True), (), ["in_app"]),
        ((True, True), ("telegram",), ["telegram", "in_app"]),
        ((True, True), ("EMAIL ", "in_app"), ["email", "in_app"]),
        ((True, True), "telegram", ["telegram", "in_app"]),
        ((True, True), None, ["telegram", "email", "in_app"]),
        ((False, True), ("telegram", "email"), ["email", "in_app"]),
        ((False, False), ("telegram", "email"), ["in_app"]),
    ],
)
def test_a_call_restricts_channels_within_the_preferences(
    prefs_on: tuple[bool, bool], requested: Any, expected: list[str]
) -> None:
    """``channels=`` narrows what the preferences allow; it never adds a channel."""
    telegram, email = prefs_on
    prefs = replace(FULL, telegram_enabled=telegram, email_enabled=email)
    decision = decide(prefs, "trading", "info", NOW_DAY, channels=requested)
    assert [c.channel for c in decision.channels] == expected


@pytest.mark.parametrize("bad", [("sms",), 3, ("telegram", None)])
def test_unknown_channels_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="telegram, email, in_app"):
        decide(FULL, "trading", "info", NOW_DAY, channels=bad)


def test_in_app_cannot_be_disabled() -> None:
    assert actions(PreferenceSnapshot(in_app_enabled=False))["in_app"].action == "send"


@pytest.mark.parametrize("now", [NOW_DAY, NOW_QUIET])
@pytest.mark.parametrize("mode", QUIET_MODES)
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_missing_address_fails(now: datetime, mode: str, blank: str | None) -> None:
    prefs = replace(FULL, telegram_chat_id=blank, email_address=blank, quiet_hours_mode=mode)
    result = actions(prefs, now=now)
    assert result["telegram"] == ChannelDecision(
        "telegram", "fail", reason="missing telegram_chat_id"
    )
    assert result["email"] == ChannelDecision("email", "fail", reason="missing email_address")
    assert result["in_app"].action == "send"


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_quiet_defer(level: str) -> None:
    result = actions(replace(FULL, quiet_hours_mode="defer"), level, NOW_QUIET)
    for channel in ("telegram", "email"):
        assert result[channel] == ChannelDecision(
            channel, "defer", not_before=QUIET_END, reason="quiet hours"
        )
    assert result["in_app"] == ChannelDecision("in_app", "send")


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_quiet_silent(level: str) -> None:
    result = actions(replace(FULL, quiet_hours_mode="silent"), level, NOW_QUIET)
    assert result["telegram"] == ChannelDecision(
        "telegram", "send", silent=True, reason="quiet hours"
    )
    assert result["email"] == ChannelDecision("email", "send", reason="quiet hours")
    assert result["in_app"] == ChannelDecision("in_app", "send")


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_quiet_drop(level: str) -> None:
    result = actions(replace(FULL, quiet_hours_mode="drop"), level, NOW_QUIET)
    for channel in ("telegram", "email"):
        assert result[channel] == ChannelDecision(channel, "suppress", reason="quiet hours")
    assert result["in_app"] == ChannelDecision("in_app", "send")


@pytest.mark.parametrize("mode", QUIET_MODES)
def test_critical_bypasses_quiet_hours(mode: str) -> None:
    result = actions(replace(FULL, quiet_hours_mode=mode), "critical", NOW_QUIET)
    for item in result.values():
        assert item == ChannelDecision(item.channel, "send")


def test_quiet_hours_boundaries_in_decide() -> None:
    prefs = replace(FULL, quiet_hours_mode="drop")
    assert actions(prefs, now=local(IST, 2026, 5, 14, 22))["telegram"].action == "suppress"
    assert actions(prefs, now=local(IST, 2026, 5, 15, 7))["telegram"].action == "send"


def test_user_timezone_is_used() -> None:
    prefs = replace(FULL, timezone="America/New_York")
    result = actions(prefs, now=utc(2026, 3, 8, 4))
    assert result["telegram"].action == "defer"
    assert result["telegram"].not_before == utc(2026, 3, 8, 11)
    # 23:00 IST is 13:30 in New York: not quiet there.
    assert actions(prefs, now=NOW_QUIET)["telegram"].action == "send"


@pytest.mark.parametrize(
    ("start", "end"), [(time(22), None), (None, time(7)), (time(22), time(22))]
)
def test_incomplete_or_empty_quiet_hours_are_off(start: time | None, end: time | None) -> None:
    prefs = replace(FULL, quiet_hours_start=start, quiet_hours_end=end)
    assert actions(prefs, now=NOW_QUIET)["telegram"].action == "send"


def test_unknown_mode_defers_and_unknown_timezone_uses_ist() -> None:
    prefs = replace(FULL, quiet_hours_mode="bogus", timezone="Nowhere/Land")
    result = actions(prefs, now=NOW_QUIET)
    assert result["telegram"].action == "defer"
    assert result["telegram"].not_before == QUIET_END


def test_decide_validates_inputs() -> None:
    with pytest.raises(ValueError, match="service, trading"):
        decide(FULL, "orders", "info", NOW_DAY)
    with pytest.raises(ValueError, match="info, warning"):
        decide(FULL, "trading", "debug", NOW_DAY)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(FULL, "trading", "info", datetime(2026, 5, 14, 12))


def test_decide_normalises_type_and_level() -> None:
    decision = decide(replace(FULL, quiet_hours_mode="drop"), " Trading", "CRITICAL", NOW_QUIET)
    assert decision.channel("telegram") == ChannelDecision("telegram", "send")


def test_decision_channel_lookup() -> None:
    decision = decide(PreferenceSnapshot(), "system", "info", NOW_DAY)
    assert decision.channel("in_app") == ChannelDecision("in_app", "send")
    assert decision.channel("telegram") is None


# --------------------------------------------------------------------------- validators


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123456789", "123456789"),
        ("-1001234567890", "-1001234567890"),
        ("-123", "-123"),
        (" 42 ", "42"),
        (123456789, "123456789"),
        (-1001234567890, "-1001234567890"),
        ("@channelusername", "@channelusername"),
        ("@abcde", "@abcde"),
        ("@" + "a" * 32, "@" + "a" * 32),
        ("@Trade_Alerts_1", "@Trade_Alerts_1"),
    ],
)
def test_validate_chat_id_accepts(raw: str | int, expected: str) -> None:
    assert validate_chat_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "0",
        "-0",
        "007",
        "abc",
        "+5",
        "--5",
        "12 34",
        "12.5",
        "1e10",
        "99999999999999999999",
        "@abc",
        "@1abcde",
        "@chan-name",
        "@" + "a" * 33,
        "channelusername",
        "123\x00",
        True,
        0,
    ],
)
def test_validate_chat_id_rejects(raw: str | int) -> None:
    with pytest.raises(ValueError, match="telegram chat id"):
        validate_chat_id(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("trader@example.com", "trader@example.com"),
        ("first.last+tag@sub.example.co.in", "first.last+tag@sub.example.co.in"),
        ("User@Example.COM", "User@example.com"),
        ("  ops@example.org ", "ops@example.org"),
        ("a@xn--80ak6aa92e.xn--p1ai", "a@xn--80ak6aa92e.xn--p1ai"),
        ("o'brien@example.ie", "o'brien@example.ie"),
    ],
)
def test_validate_email_accepts(raw: str, expected: str) -> None:
    assert validate_email_address(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "plain",
        "a@b",
        "a@@b.com",
        "@example.com",
        "a@",
        "Name <a@example.com>",
        "a@example.com\r\nBcc: evil@x.com",
        "a@example.com\n",
        "a@exa\tmple.com",
        ".a@example.com",
        "a.@example.com",
        "a..b@example.com",
        "a@-example.com",
        "a@example-.com",
        "a@exa_mple.com",
        "a@example.c",
        "ü@example.com",
        "a@exämple.com",
        '"quoted"@example.com',
        "a b@example.com",
        "a@example.com, b@example.com",
        "a" * 65 + "@example.com",
        "a@" + ("b" * 60 + ".") * 5 + "com",
    ],
)
def test_validate_email_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="email address"):
        validate_email_address(raw)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, None),
        (time(22), time(7), (time(22), time(7))),
        ("22:00", "07:00", (time(22), time(7))),
        (" 09:15 ", "15:30:00", (time(9, 15), time(15, 30))),
        (time(0), time(23, 59), (time(0), time(23, 59))),
    ],
)
def test_validate_quiet_hours_accepts(
    start: time | str | None, end: time | str | None, expected: tuple[time, time] | None
) -> None:
    assert validate_quiet_hours(start, end) == expected


@pytest.mark.parametrize(
    ("start", "end", "match"),
    [
        (time(22), None, "together"),
        (None, "07:00", "together"),
        ("22:00", "22:00", "equal"),
        (time(7), time(7), "equal"),
        ("25:00", "07:00", "quiet_hours_start"),
        ("22:00", "7pm", "quiet_hours_end"),
        (time(22, tzinfo=UTC), time(7), "without a timezone"),
        (22, 7, "quiet_hours_start"),
    ],
)
def test_validate_quiet_hours_rejects(start: object, end: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_quiet_hours(start, end)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Asia/Kolkata", "Asia/Kolkata"),
        ("America/New_York", "America/New_York"),
        (" Europe/London ", "Europe/London"),
        ("UTC", "UTC"),
        ("Etc/GMT+5", "Etc/GMT+5"),
    ],
)
def test_validate_timezone_accepts(name: str, key: str) -> None:
    assert validate_timezone(name).key == key


@pytest.mark.parametrize(
    "name",
    ["", "Mars/Olympus", "America", "../etc/passwd", "/etc/localtime", "localtime", "Asia//X", 5],
)
def test_validate_timezone_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="timezone"):
        validate_timezone(name)
