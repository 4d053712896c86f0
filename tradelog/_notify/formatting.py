"""Pure rendering of notifications for Telegram (HTML parse mode) and email.

User-supplied text (titles, messages) is always escaped; nothing here performs I/O or reads the
clock.

Telegram length limits: the Bot API allows 4096 characters per message *after* entity parsing.
Reports disagree on whether characters outside the Basic Multilingual Plane (most emoji) count
once or twice, so lengths here are measured in UTF-16 code units of the raw text, tags and
entities included. That can only over-count, so every part produced fits whichever way Telegram
counts.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from tradelog._notify.policy import LEVELS, validate_level, validate_type

__all__ = [
    "LEVEL_MARKERS",
    "SUBJECT_LIMIT",
    "TELEGRAM_LIMIT",
    "TITLE_LIMIT",
    "DigestItem",
    "digest",
    "digest_level",
    "email_bodies",
    "email_subject",
    "format_time",
    "split_message",
    "telegram_html",
    "telegram_parts",
    "utf16_length",
]

TELEGRAM_LIMIT: Final = 4096
"""Maximum Telegram message length, in UTF-16 code units (see the module docstring)."""

TITLE_LIMIT: Final = 256
"""Titles are cut to this many characters (with an ellipsis) before rendering."""

SUBJECT_LIMIT: Final = 150
"""Maximum email subject length in characters, level prefix included."""

LEVEL_MARKERS: Final[dict[str, str]] = {
    "info": "\u2139\ufe0f",
    "warning": "\u26a0\ufe0f",
    "error": "\u274c",
    "critical": "\U0001f6a8",
}
"""Emoji shown before the title of a Telegram message, by level."""

_LEVEL_COLOURS: Final[dict[str, str]] = {
    "info": "#1f6feb",
    "warning": "#b7791f",
    "error": "#d1242f",
    "critical": "#8b0000",
}

_ELLIPSIS: Final = "\u2026"
_SEPARATOR: Final = " \u00b7 "
_HTML_COSTS: Final[dict[str, int]] = {"&": 5, "<": 4, ">": 4}
_JOINERS: Final = frozenset({"\u200d", "\ufe0e", "\ufe0f"})
_KEPT_FORMAT: Final = frozenset({"\u200c", "\u200d"})

CharCost = Callable[[str], int]


def utf16_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (characters above U+FFFF count twice)."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def _utf16_cost(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _escaped_cost(char: str) -> int:
    return _HTML_COSTS.get(char) or _utf16_cost(char)


def _require_aware(when: datetime) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("when must be a timezone-aware datetime")


def format_time(when: datetime, tz: ZoneInfo) -> str:
    """``when`` as local time in ``tz`` with the zone abbreviation: ``2026-05-14 09:15:03 IST``.

    ``when`` must be timezone-aware. The format is numeric, so it does not depend on the
    process locale.
    """
    _require_aware(when)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _one_line_char(char: str) -> str:
    category = unicodedata.category(char)
    if category in {"Cc", "Zl", "Zp"}:
        return " "
    if category == "Cf" and char not in _KEPT_FORMAT:
        return ""
    return char


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line: control and line-separator characters become spaces, invisible
    format characters (bidi overrides, BOM, ...) other than ZWJ/ZWNJ are removed, whitespace
    runs collapse, and more than ``limit`` characters end in an ellipsis."""
    cleaned = "".join(map(_one_line_char, text))
    collapsed = " ".join(cleaned.split())
    if len(collapsed) > limit:
        collapsed = collapsed[: limit - 1].rstrip() + _ELLIPSIS
    return collapsed


def _lines(text: str) -> list[str]:
    """``text`` split after each ``\\n``, keeping the newlines, so the pieces rejoin exactly."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def _prefix_end(text: str, limit: int, cost: CharCost) -> int:
    """The largest index ``i`` such that ``text[:i]`` costs at most ``limit``."""
    used = 0
    for index, char in enumerate(text):
        used += cost(char)
        if used > limit:
            return index
    return len(text)


def _cut_point(text: str, end: int) -> int:
    """Move a hard cut at ``end`` back to a friendlier boundary within ``text[:end]``."""
    space = max(text.rfind(" ", 0, end), text.rfind("\t", 0, end))
    if space >= end // 2:
        return space + 1
    cut = end
    for _ in range(8):
        if cut <= 1:
            break
        if not (
            text[cut] in _JOINERS
            or text[cut - 1] == "\u200d"
            or unicodedata.combining(text[cut])
            or 0x1F3FB <= ord(text[cut]) <= 0x1F3FF
        ):
            return cut
        cut -= 1
    return end


def _hard_split(line: str, limit: int, cost: CharCost) -> list[str]:
    chunks: list[str] = []
    rest = line
    while sum(map(cost, rest)) > limit:
        end = _prefix_end(rest, limit, cost)
        cut = _cut_point(rest, end)
        chunks.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        chunks.append(rest)
    return chunks


def _split(text: str, limit: int, cost: CharCost) -> list[str]:
    if limit < 5:
        raise ValueError(f"limit must be at least 5, got {limit}")
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for line in _lines(text):
        size = sum(map(cost, line))
        if used + size <= limit:
            current.append(line)
            used += size
            continue
        if current:
            parts.append("".join(current))
        chunks = [line] if size <= limit else _hard_split(line, limit, cost)
        parts.extend(chunks[:-1])
        current = [chunks[-1]]
        used = sum(map(cost, chunks[-1]))
    if current:
        parts.append("".join(current))
    return parts


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 code units, in order.

    Parts break after a newline where possible; a single line longer than ``limit`` is cut at
    its last space or tab in the second half of the chunk, else at a character boundary that
    avoids separating an emoji from its modifiers or a base letter from its combining marks.
    Newlines stay in the parts, so ``"".join(split_message(text)) == text`` exactly; a part may
    therefore start or end with a newline. Empty text gives no parts. ``limit`` must be at
    least 5. Apply this to plain text, never to HTML: use :func:`telegram_parts` for Telegram.
    """
    return _split(text, limit, _utf16_cost)


def _telegram_head(title: str, level: str, counter: str) -> str:
    shown = html.escape(_one_line(title, TITLE_LIMIT), quote=False) or "Notification"
    return f"{LEVEL_MARKERS[level]} <b>{shown}</b>{counter}"


def _telegram_foot(level: str, type_: str, when: datetime, tz: ZoneInfo) -> str:
    stamp = format_time(when, tz)
    return f"<i>{level.upper()}{_SEPARATOR}{type_}{_SEPARATOR}{html.escape(stamp)}</i>"


def _telegram_render(head: str, body_html: str, foot: str) -> str:
    return "\n\n".join(s for s in (head, body_html, foot) if s)


def telegram_html(  # noqa: PLR0917
    title: str, message: str, level: str, type_: str, when: datetime, tz: ZoneInfo
) -> str:
    """One Telegram message in HTML parse mode, not length-limited.

    Layout: level marker and bold title, the message, then an italic footer with level, type
    and ``when`` in ``tz`` (zone abbreviation included, e.g. IST). Title and message are
    HTML-escaped (``&``, ``<``, ``>``); the title is reduced to one line of at most
    :data:`TITLE_LIMIT` characters. Use :func:`telegram_parts` to respect Telegram's limit.
    """
    level = validate_level(level)
    type_ = validate_type(type_)
    body = html.escape(message.strip(), quote=False)
    return _telegram_render(
        _telegram_head(title, level, ""), body, _telegram_foot(level, type_, when, tz)
    )


def telegram_parts(  # noqa: PLR0917
    title: str,
    message: str,
    level: str,
    type_: str,
    when: datetime,
    tz: ZoneInfo,
    *,
    limit: int = TELEGRAM_LIMIT,
) -> list[str]:
    """The notification as one or more Telegram HTML messages, each within ``limit``.

    The plain message is split first and each part escaped afterwards, so no tag or entity is
    ever cut. Every part carries the title (with ``(i/n)`` when there are several) and the last
    carries the footer. When everything fits, the result is ``[telegram_html(...)]``.
    """
    level = validate_level(level)
    type_ = validate_type(type_)
    foot = _telegram_foot(level, type_, when, tz)
    text = message.strip()
    width = 1
    while True:
        widest = _telegram_head(title, level, f" ({'9' * width}/{'9' * width})")
        overhead = utf16_length(widest) + utf16_length(foot) + 4
        budget = limit - overhead
        if budget < 5:
            raise ValueError(f"limit {limit} is too small for the title and footer")
        chunks = [c.strip("\n") for c in _split(text, budget, _escaped_cost)]
        chunks = [c for c in chunks if c.strip()] or [""]
        if len(str(len(chunks))) <= width:
            break
        width += 1
    total = len(chunks)
    parts: list[str] = []
    for number, chunk in enumerate(chunks, start=1):
        counter = f" ({number}/{total})" if total > 1 else ""
        parts.append(
            _telegram_render(
                _telegram_head(title, level, counter),
                html.escape(chunk, quote=False),
                foot if number == total else "",
            )
        )
    return parts


def email_subject(title: str, level: str) -> str:
    """A single-line subject ``[LEVEL] title`` safe to place in a header.

    Control characters (CR, LF, NUL, ...), Unicode format characters and line separators become
    spaces, whitespace runs collapse, and the result is at most :data:`SUBJECT_LIMIT` characters.
    """
    level = validate_level(level)
    prefix = f"[{level.upper()}] "
    shown = _one_line(title, SUBJECT_LIMIT - len(prefix)) or "Notification"
    return prefix + shown


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def email_bodies(  # noqa: PLR0917
    title: str, message: str, level: str, type_: str, when: datetime, tz: ZoneInfo
) -> tuple[str, str]:
    """The plain-text and HTML bodies of a notification email.

    Line endings are normalised to ``\\n``; the HTML body escapes all user text and keeps the
    message's line breaks with ``white-space: pre-wrap``.
    """
    level = validate_level(level)
    type_ = validate_type(type_)
    shown_title = _one_line(title, TITLE_LIMIT) or "Notification"
    body = _normalise_newlines(message).strip("\n")
    stamp = format_time(when, tz)
    plain_lines = [shown_title, ""]
    if body:
        plain_lines += [body, ""]
    plain_lines += ["-- ", f"Level: {level.upper()}", f"Type: {type_}", f"Time: {stamp}", ""]
    plain = "\n".join(plain_lines)

    colour = _LEVEL_COLOURS[level]
    message_html = (
        f'<div style="white-space: pre-wrap; font-family: sans-serif;">{html.escape(body)}</div>\n'
        if body
        else ""
    )
    rich = (
        '<!DOCTYPE html>\n<html>\n<body style="font-family: sans-serif;">\n'
        f'<h2 style="color: {colour}; margin: 0 0 12px;">{html.escape(shown_title)}</h2>\n'
        f"{message_html}"
        '<hr style="border: none; border-top: 1px solid #ddd;">\n'
        '<p style="color: #666; font-size: 12px;">'
        f"{html.escape(level.upper())}{_SEPARATOR}{html.escape(type_)}{_SEPARATOR}"
        f"{html.escape(stamp)}</p>\n"
        "</body>\n</html>\n"
    )
    return plain, rich


@dataclass(frozen=True)
class DigestItem:
    """One deferred notification to be released in a digest."""

    title: str
    message: str
    level: str
    type_: str
    created_at: datetime


def digest_level(items: Sequence[DigestItem]) -> str:
    """The most severe level among ``items`` (raises ValueError when empty)."""
    if not items:
        raise ValueError("a digest needs at least one item")
    return max((validate_level(i.level) for i in items), key=LEVELS.index)


def digest(items: Sequence[DigestItem], tz: ZoneInfo) -> tuple[str, str]:
    """Title and plain-text message combining ``items`` released together after quiet hours.

    Items are listed oldest first (ties keep their given order), each with its local time in
    ``tz``; the date is shown only when the items span more than one local day. The result is
    plain text: render it with :func:`telegram_parts` or :func:`email_bodies`, using
    :func:`digest_level` as the level.
    """
    if not items:
        raise ValueError("a digest needs at least one item")
    for item in items:
        _require_aware(item.created_at)
    ordered = sorted(items, key=lambda i: i.created_at)
    local = [i.created_at.astimezone(tz) for i in ordered]
    stamp_format = "%H:%M %Z" if len({t.date() for t in local}) == 1 else "%Y-%m-%d %H:%M %Z"
    count = len(ordered)
    title = f"{count} notification{'s' if count != 1 else ''} during quiet hours"

    levels = [validate_level(i.level) for i in ordered]
    summary = ", ".join(
        f"{levels.count(level)} {level}" for level in reversed(LEVELS) if level in levels
    )
    blocks = [summary]
    for item, level, stamp in zip(ordered, levels, local, strict=True):
        heading = f"\u2022 {stamp.strftime(stamp_format)} [{level.upper()}] "
        heading += _one_line(item.title, TITLE_LIMIT) or "Notification"
        body = _normalise_newlines(item.message).strip("\n")
        lines = [heading] + ["  " + line if line else "" for line in body.split("\n") if body]
        blocks.append("\n".join(lines))
    return title, "\n\n".join(blocks)
