"""Tests for pure notification rendering (Telegram HTML, email, digests)."""

from __future__ import annotations

import email
import html
import re
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tradelog._notify.formatting import (
    LEVEL_MARKERS,
    SUBJECT_LIMIT,
    TELEGRAM_LIMIT,
    TELEGRAM_MAX_PARTS,
    DigestItem,
    digest,
    digest_level,
    email_bodies,
    email_subject,
    format_time,
    split_message,
    telegram_html,
    telegram_messages,
    utf16_length,
)

IST = ZoneInfo("Asia/Kolkata")


def telegram_parts(*args: object, **options: object) -> list[str]:
    """The HTML of each part."""
    return [part.html for part in telegram_messages(*args, **options)]  # type: ignore[arg-type]


NY = ZoneInfo("America/New_York")
WHEN = datetime(2026, 5, 14, 3, 45, tzinfo=UTC)  # 09:15 IST
ALLOWED_TAG = re.compile(r"</?[bi]>")
ENTITY = re.compile(r"&(?:lt|gt|amp);")


def assert_valid_telegram_html(text: str) -> None:
    """Only <b>/<i> tags, balanced; every & starts a complete entity; no stray < or >."""
    tags = ALLOWED_TAG.findall(text)
    stack: list[str] = []
    for tag in tags:
        if tag.startswith("</"):
            assert stack
            assert stack.pop() == tag[2]
        else:
            stack.append(tag[1])
    assert not stack
    bare = ALLOWED_TAG.sub("", text)
    assert "<" not in bare
    assert ">" not in bare
    assert "&" not in ENTITY.sub("", bare)


# --------------------------------------------------------------------------- time and length


@pytest.mark.parametrize(
    ("when", "tz", "expected"),
    [
        (WHEN, IST, "2026-05-14 09:15:00 IST"),
        (datetime(2026, 5, 14, 22, 0, 5, tzinfo=UTC), IST, "2026-05-15 03:30:05 IST"),
        (datetime(2026, 3, 8, 6, 59, tzinfo=UTC), NY, "2026-03-08 01:59:00 EST"),
        (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), NY, "2026-03-08 03:00:00 EDT"),
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), NY, "2026-11-01 01:30:00 EDT"),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), NY, "2026-11-01 01:30:00 EST"),
        (
            datetime(2026, 7, 1, 12, tzinfo=UTC),
            ZoneInfo("Europe/London"),
            "2026-07-01 13:00:00 BST",
        ),
    ],
)
def test_format_time(when: datetime, tz: ZoneInfo, expected: str) -> None:
    assert format_time(when, tz) == expected


def test_format_time_rejects_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 5, 14), IST)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("abc", 3), ("\u20b9100", 4), ("\U0001f600", 2), ("a\U0001f4c8b", 4)],
)
def test_utf16_length(text: str, expected: int) -> None:
    assert utf16_length(text) == expected
    assert utf16_length(text) == len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- telegram_html


def test_telegram_html_layout() -> None:
    text = telegram_html("Order filled", "BUY 10 RELIANCE @ 2950", "info", "trading", WHEN, IST)
    assert text == (
        f"{LEVEL_MARKERS['info']} <b>Order filled</b>\n\n"
        "BUY 10 RELIANCE @ 2950\n\n"
        "<i>INFO \u00b7 trading \u00b7 2026-05-14 09:15:00 IST</i>"
    )
    assert_valid_telegram_html(text)


@pytest.mark.parametrize("level", ["info", "warning", "error", "critical"])
def test_telegram_html_level_marker(level: str) -> None:
    text = telegram_html("t", "m", level, "system", WHEN, IST)
    assert text.startswith(LEVEL_MARKERS[level] + " <b>t</b>")
    assert f"<i>{level.upper()} " in text


def test_telegram_html_escapes_user_text() -> None:
    text = telegram_html(
        "<b>bold</b> & co", "Use <i>x</i> && \"quotes\" 'ok'", "error", "error", WHEN, IST
    )
    assert "<b>&lt;b&gt;bold&lt;/b&gt; &amp; co</b>" in text
    assert "Use &lt;i&gt;x&lt;/i&gt; &amp;&amp; \"quotes\" 'ok'" in text
    assert_valid_telegram_html(text)


def test_telegram_html_title_is_one_line() -> None:
    text = telegram_html("line one\r\nline two\u2028three", "", "info", "service", WHEN, IST)
    assert text.splitlines()[0].endswith("<b>line one line two three</b>")


def test_telegram_html_empty_message_and_title() -> None:
    text = telegram_html("", "   ", "warning", "service", WHEN, IST)
    assert text == (
        f"{LEVEL_MARKERS['warning']} <b>Notification</b>\n\n"
        "<i>WARNING \u00b7 service \u00b7 2026-05-14 09:15:00 IST</i>"
    )


def test_telegram_html_user_timezone() -> None:
    text = telegram_html("t", "m", "info", "trading", WHEN, NY)
    assert "2026-05-13 23:45:00 EDT" in text


@pytest.mark.parametrize(
    ("level", "type_", "when"),
    [
        ("debug", "trading", WHEN),
        ("info", "orders", WHEN),
        ("info", "trading", datetime(2026, 5, 14)),
    ],
)
def test_telegram_html_rejects_bad_input(level: str, type_: str, when: datetime) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        telegram_html("t", "m", level, type_, when, IST)


# --------------------------------------------------------------------------- split_message


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("", 4096, []),
        ("hello", 4096, ["hello"]),
        ("a" * 4096, 4096, ["a" * 4096]),
        ("a" * 4097, 4096, ["a" * 4096, "a"]),
        ("a" * 4095 + "\n", 4096, ["a" * 4095]),
        ("a" * 4095 + "\nb", 4096, ["a" * 4095, "b"]),
        ("a" * 4096 + "\nb", 4096, ["a" * 4096, "b"]),
        (
            "a" * 2000 + "\n" + "b" * 2000 + "\n" + "c" * 2000,
            4096,
            ["a" * 2000 + "\n" + "b" * 2000, "c" * 2000],
        ),
        ("a" * 10000, 4096, ["a" * 4096, "a" * 4096, "a" * 1808]),
        ("one two three four", 9, ["one two", "three", "four"]),
        ("abcdefghij klmnop", 10, ["abcdefghij", "klmnop"]),
        ("\U0001f600" * 2048, 4096, ["\U0001f600" * 2048]),
        ("\U0001f600" * 2049, 4096, ["\U0001f600" * 2048, "\U0001f600"]),
        ("abcdefgh\U0001f468\u200d\U0001f469", 10, ["abcdefgh", "\U0001f468\u200d\U0001f469"]),
        ("abcdefghe\u0301", 9, ["abcdefgh", "e\u0301"]),
        ("abcdefgh\u2764\ufe0f!!", 9, ["abcdefgh", "\u2764\ufe0f!!"]),
        ("\n\n\n", 5, []),
        ("line\r\nnext", 6, ["line", "next"]),
    ],
)
def test_split_message(text: str, limit: int, expected: list[str]) -> None:
    assert split_message(text, limit) == expected


def test_split_message_default_limit_is_telegram() -> None:
    assert TELEGRAM_LIMIT == 4096
    assert [len(p) for p in split_message("x" * 9000)] == [4096, 4096, 808]


def test_split_message_keeps_html_as_text() -> None:
    parts = split_message("<b>" * 3000, 4096)
    assert "".join(parts) == "<b>" * 3000
    assert all(len(p) <= 4096 for p in parts)


def test_split_message_rejects_tiny_limit() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        split_message("abc", 4)


def _stock(name: str, lines: int) -> str:
    return "\n".join(
        f"{name} line {i}: entry 2950.00 stop 2900.00 target 3100.00" for i in range(lines)
    )


def test_split_prefers_blocks_then_lines_then_words() -> None:
    """A block of related lines (one stock) is never cut when it fits in a part; a block too
    long for any part is cut at a line; a line too long for any part at a word."""
    blocks = [_stock(f"STOCK{n}", 7) for n in range(40)]
    parts = split_message("\n\n".join(blocks), 1000)
    assert len(parts) > 1
    for part in parts:
        assert all(block in "\n\n".join(blocks) for block in part.split("\n\n"))
        for block in part.split("\n\n"):
            assert block in blocks  # whole blocks only
    big = _stock("HUGE", 60)
    parts = split_message(big, 1000)
    assert all(p.split("\n")[0].startswith("HUGE line") for p in parts)
    assert "\n".join(parts) == big
    words = " ".join(f"word{i}" for i in range(400))
    parts = split_message(words, 100)
    assert " ".join(parts) == words
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)


def test_split_is_linear() -> None:
    """One megabyte without a single break (the worst case for a splitter) splits in well
    under a second; before, the hard-cut loop re-measured the rest of the line each time."""
    started = time.perf_counter()
    parts = split_message("x" * 1_000_000, 4096)
    assert len(parts) == 245
    lines = split_message(("y" * 50 + "\n") * 20_000, 4096)
    assert sum(len(p) for p in lines) == 50 * 20_000 + len(lines) * 0 + (20_000 - len(lines))
    assert time.perf_counter() - started < 1.0


TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(["\n", " ", "\r", "<", ">", "&", "\u200d", "\ufe0f", "\u0301"]),
        st.characters(codec="utf-8"),
        st.sampled_from(["\U0001f600", "\U0001f4c8", "\u20b9"]),
    ),
    max_size=400,
)


@given(text=TEXT, limit=st.integers(min_value=5, max_value=80))
def test_split_message_property(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(p.strip() for p in parts)
    assert all(utf16_length(p) <= limit for p in parts)
    kept = "".join(parts)
    assert "".join(c for c in kept if not c.isspace()) == "".join(
        c for c in text if not c.isspace()
    )


# --------------------------------------------------------------------------- telegram_parts


def test_telegram_parts_short_is_single_html() -> None:
    args = ("Order <filled>", "BUY 10 @ 2950 & more", "warning", "trading", WHEN, IST)
    assert telegram_parts(*args) == [telegram_html(*args)]


def test_telegram_parts_long_message() -> None:
    """Every part carries the title with (i/n) and the footer with level, type and time."""
    message = "\n".join(f"<b>line {i}</b> & \U0001f4c8 {'x' * 40}" for i in range(600))
    parts = telegram_parts("Report <1>", message, "error", "system", WHEN, IST)
    assert len(parts) > 1
    total = len(parts)
    foot = "<i>ERROR \u00b7 system \u00b7 2026-05-14 09:15:00 IST</i>"
    for number, part in enumerate(parts, start=1):
        assert utf16_length(part) <= TELEGRAM_LIMIT
        assert_valid_telegram_html(part)
        assert part.startswith(
            f"{LEVEL_MARKERS['error']} <b>Report &lt;1&gt;</b> ({number}/{total})"
        )
        assert part.endswith("\n\n" + foot)
    bodies = [html.unescape(p.split("\n\n")[1]) for p in parts]
    assert "\n".join(bodies) == message


def test_telegram_messages_plain_twin() -> None:
    """Each part has a plain-text twin with the same header, text and footer (no markup)."""
    message = "\n\n".join(_stock(f"S{n}", 6) + " <&>" for n in range(50))
    parts = telegram_messages("Fills <today>", message, "info", "trading", WHEN, IST)
    assert len(parts) > 1
    for number, part in enumerate(parts, start=1):
        assert part.plain.startswith(f"{LEVEL_MARKERS['info']} Fills <today> ({number}/")
        assert part.plain.endswith("INFO \u00b7 trading \u00b7 2026-05-14 09:15:00 IST")
        assert (
            html.unescape(part.html.split("\n\n", 1)[1].rsplit("\n\n", 1)[0])
            == (part.plain.split("\n\n", 1)[1].rsplit("\n\n", 1)[0])
        )
        assert utf16_length(part.plain) <= TELEGRAM_LIMIT


def test_telegram_parts_are_capped_with_a_marker() -> None:
    """More text than max_parts messages hold: the last part says how much was left out."""
    parts = telegram_parts("Big", "z" * 100_000, "info", "trading", WHEN, IST, max_parts=3)
    assert len(parts) == 3
    assert all(utf16_length(p) <= TELEGRAM_LIMIT for p in parts)
    sent = sum(html.unescape(p.split("\n\n")[1]).count("z") for p in parts)
    assert f"[\u2026 {100_000 - sent:,} more characters not sent" in parts[-1]
    assert parts[-1].endswith("2026-05-14 09:15:00 IST</i>")
    default = telegram_parts("Big", "z" * 1_000_000, "info", "trading", WHEN, IST)
    assert len(default) == TELEGRAM_MAX_PARTS


def test_telegram_parts_never_cut_entities() -> None:
    parts = telegram_parts(
        "amp", "&" * 5000, "info", "service", WHEN, IST, limit=300, max_parts=500
    )
    assert len(parts) > 1
    for part in parts:
        assert utf16_length(part) <= 300
        assert_valid_telegram_html(part)
    joined = "".join(html.unescape(p.split("\n\n")[1]) for p in parts)
    assert joined == "&" * 5000


def test_telegram_parts_long_title_is_bounded() -> None:
    parts = telegram_parts("<" * 10000, "body", "critical", "error", WHEN, IST)
    assert len(parts) == 1
    assert utf16_length(parts[0]) <= TELEGRAM_LIMIT
    assert "\u2026</b>" in parts[0]


def test_telegram_parts_limit_too_small() -> None:
    with pytest.raises(ValueError, match="too small"):
        telegram_parts("title", "body" * 100, "info", "service", WHEN, IST, limit=60)


@given(
    title=st.text(max_size=30),
    message=TEXT,
    limit=st.integers(min_value=150, max_value=400),
)
def test_telegram_parts_property(title: str, message: str, limit: int) -> None:
    parts = telegram_parts(title, message, "warning", "trading", WHEN, IST, limit=limit)
    assert parts
    for part in parts:
        assert utf16_length(part) <= limit
        assert_valid_telegram_html(part)
    bodies = [html.unescape(p.split("</b>", 1)[1]) for p in parts]
    text = "".join(bodies)
    for char in set(message) - {"\n", "\r", " ", "\t"}:
        if not char.isspace():
            assert char in text


# --------------------------------------------------------------------------- email


@pytest.mark.parametrize(
    "title",
    [
        "Hi\r\nBcc: evil@x",
        "Hi\nBcc: evil@x",
        "Hi\rBcc: evil@x",
        "Hi\x00\nBcc: evil@x",
        "Hi\u2028Bcc: evil@x",
        "Hi\u2029Bcc: evil@x",
        "Hi\x85Bcc: evil@x",
        "Hi\x0b\x0cBcc: evil@x",
        "Hi\r\n\r\nBcc: evil@x",
    ],
)
def test_email_subject_blocks_header_injection(title: str) -> None:
    subject = email_subject(title, "info")
    assert subject == "[INFO] Hi Bcc: evil@x"
    message = EmailMessage()
    message["From"] = "alerts@example.com"
    message["To"] = "trader@example.com"
    message["Subject"] = subject
    parsed = email.message_from_bytes(message.as_bytes(policy=SMTP))
    assert parsed.get_all("Bcc") is None
    assert parsed["Subject"] == subject


@pytest.mark.parametrize(
    ("title", "level", "expected"),
    [
        ("Order rejected", "error", "[ERROR] Order rejected"),
        ("  spaced   out  ", "warning", "[WARNING] spaced out"),
        ("", "critical", "[CRITICAL] Notification"),
        ("\r\n\t", "info", "[INFO] Notification"),
        ("evil\u202etxt.exe", "info", "[INFO] eviltxt.exe"),
        ("\u0915\u094d\u200d\u0937", "info", "[INFO] \u0915\u094d\u200d\u0937"),
        ("\u20b9 5,000 credited \U0001f4b0", "info", "[INFO] \u20b9 5,000 credited \U0001f4b0"),
    ],
)
def test_email_subject(title: str, level: str, expected: str) -> None:
    assert email_subject(title, level) == expected


def test_email_subject_length_bounded() -> None:
    subject = email_subject("word " * 200, "critical")
    assert len(subject) <= SUBJECT_LIMIT
    assert subject.startswith("[CRITICAL] word word")
    assert subject.endswith("\u2026")


def test_email_subject_rejects_bad_level() -> None:
    with pytest.raises(ValueError, match="info, warning"):
        email_subject("x", "loud")


def test_email_bodies() -> None:
    plain, rich = email_bodies(
        "Stop-loss <hit>",
        'Sold 10 "INFY" & exited\r\nP&L: -\u20b9500\n<script>alert(1)</script>',
        "warning",
        "trading",
        WHEN,
        IST,
    )
    assert plain == (
        "Stop-loss <hit>\n\n"
        'Sold 10 "INFY" & exited\nP&L: -\u20b9500\n<script>alert(1)</script>\n\n'
        "-- \nLevel: WARNING\nType: trading\nTime: 2026-05-14 09:15:00 IST\n"
    )
    assert "\r" not in plain
    assert "<script>" not in rich
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rich
    assert "Sold 10 &quot;INFY&quot; &amp; exited" in rich
    assert "Stop-loss &lt;hit&gt;</h2>" in rich
    assert "2026-05-14 09:15:00 IST" in rich
    assert rich.startswith("<!DOCTYPE html>")


def test_email_bodies_empty_message() -> None:
    plain, rich = email_bodies("Up", "", "info", "service", WHEN, NY)
    assert plain == "Up\n\n-- \nLevel: INFO\nType: service\nTime: 2026-05-13 23:45:00 EDT\n"
    assert "pre-wrap" not in rich


def test_email_bodies_title_one_line() -> None:
    plain, rich = email_bodies("a\r\nb", "m", "info", "service", WHEN, IST)
    assert plain.startswith("a b\n\nm\n")
    assert ">a b</h2>" in rich


# --------------------------------------------------------------------------- digest


def item(minute: int, level: str = "info", title: str = "t", message: str = "") -> DigestItem:
    created = datetime(2026, 5, 14, 17, 0, tzinfo=UTC) + timedelta(minutes=minute)
    return DigestItem(title, message, level, "trading", created)


def test_digest_orders_and_counts() -> None:
    items = [
        item(30, "warning", "Margin low", "Available: \u20b910,000"),
        item(0, "info", "Order placed"),
        item(15, "critical", "Broker down", "line 1\n\nline 3"),
        item(30, "info", "Same time, later in input"),
    ]
    title, message = digest(items, IST)
    assert title == "4 notifications during quiet hours"
    assert message == (
        "1 critical, 1 warning, 2 info\n\n"
        "\u2022 22:30 IST [INFO] Order placed\n\n"
        "\u2022 22:45 IST [CRITICAL] Broker down\n  line 1\n\n  line 3\n\n"
        "\u2022 23:00 IST [WARNING] Margin low\n  Available: \u20b910,000\n\n"
        "\u2022 23:00 IST [INFO] Same time, later in input"
    )
    assert digest_level(items) == "critical"


def test_digest_single_item() -> None:
    title, message = digest([item(0, "error", "Only one")], IST)
    assert title == "1 notification during quiet hours"
    assert message == "1 error\n\n\u2022 22:30 IST [ERROR] Only one"


def test_digest_spanning_days_shows_dates() -> None:
    title, message = digest([item(60), item(120, title="after midnight")], IST)
    assert "2026-05-14 23:30 IST" in message
    assert "2026-05-15 00:30 IST [INFO] after midnight" in message
    assert title.startswith("2 ")


def test_digest_across_dst_shows_each_abbreviation() -> None:
    items = [
        DigestItem("a", "", "info", "system", datetime(2026, 3, 8, 6, 30, tzinfo=UTC)),
        DigestItem("b", "", "info", "system", datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
    ]
    _, message = digest(items, NY)
    assert "01:30 EST [INFO] a" in message
    assert "03:30 EDT [INFO] b" in message


def test_digest_output_renders_safely() -> None:
    title, message = digest([item(0, title="<b>x</b>", message="a & b")], IST)
    for part in telegram_parts(title, message, "info", "trading", WHEN, IST):
        assert_valid_telegram_html(part)
        assert "&lt;b&gt;x&lt;/b&gt;" in part


def test_digest_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        digest([], IST)
    with pytest.raises(ValueError, match="at least one"):
        digest_level([])
    with pytest.raises(ValueError, match="timezone-aware"):
        digest([DigestItem("t", "", "info", "trading", datetime(2026, 5, 14))], IST)
    with pytest.raises(ValueError, match="info, warning"):
        digest([DigestItem("t", "", "loud", "trading", WHEN)], IST)
