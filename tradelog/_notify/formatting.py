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
    "TELEGRAM_MAX_PARTS",
    "TITLE_LIMIT",
    "DigestItem",
    "TelegramPart",
    "cap_text",
    "digest",
    "digest_level",
    "email_bodies",
    "email_subject",
    "format_time",
    "not_kept_marker",
    "split_message",
    "telegram_html",
    "telegram_messages",
    "utf16_length",
]

TELEGRAM_LIMIT: Final = 4096
"""Maximum Telegram message length, in UTF-16 code units (see the module docstring)."""

TELEGRAM_MAX_PARTS: Final = 20
"""Most Telegram messages one notification is sent as (about 80,000 characters); the last
one then says how much was left out."""

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
_JOINERS: Final = frozenset({"\u200d", "\ufe0e", "\ufe0f"})
_KEPT_FORMAT: Final = frozenset({"\u200c", "\u200d"})

CharCost = Callable[[str], int]
"""The cost of a piece of text in UTF-16 code units (plain, or once HTML-escaped)."""


def utf16_length(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (characters above U+FFFF count twice)."""
    return _plain_cost(text)


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


def _plain_cost(text: str) -> int:
    """UTF-16 length of ``text`` (computed in C, without a per-character Python loop)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _html_cost(text: str) -> int:
    """UTF-16 length of ``text`` once HTML-escaped (``&`` -> ``&amp;``, ``<`` -> ``&lt;``)."""
    return _plain_cost(text) + 4 * text.count("&") + 3 * text.count("<") + 3 * text.count(">")


def _prefix_end(text: str, start: int, budget: int, cost: CharCost) -> int:
    """The largest ``end`` such that ``text[start:end]`` costs at most ``budget``.

    Every character costs at least one unit, so ``end <= start + budget``; a binary search over
    slice costs finds it in O(budget log budget) C-level work.
    """
    high = min(len(text), start + budget)
    if cost(text[start:high]) <= budget:
        return high
    low = start
    while high - low > 1:
        middle = (low + high) // 2
        if cost(text[start:middle]) <= budget:
            low = middle
        else:
            high = middle
    return low


def _splits_grapheme(text: str, cut: int) -> bool:
    """Whether cutting before ``text[cut]`` separates an emoji from its modifiers or a letter
    from its combining marks."""
    return (
        text[cut] in _JOINERS
        or text[cut - 1] == "\u200d"
        or unicodedata.combining(text[cut]) != 0
        or 0x1F3FB <= ord(text[cut]) <= 0x1F3FF
    )


def _hard_cut(text: str, start: int, end: int) -> int:
    """A character boundary at or shortly before ``end`` that keeps graphemes whole."""
    cut = end
    for _ in range(8):
        if cut - 1 <= start:
            break
        if not _splits_grapheme(text, cut):
            return cut
        cut -= 1
    return end


def _unit_fits(text: str, begin: int, separator: str, budget: int, cost: CharCost) -> bool:
    """Whether the unit starting at ``begin`` (up to the next ``separator``) fits in one part."""
    stop = text.find(separator, begin, begin + budget + len(separator))
    if stop == -1:
        stop = len(text) if len(text) - begin <= budget else -1
    return stop != -1 and cost(text[begin:stop].strip("\n")) <= budget


def _break(text: str, start: int, end: int, budget: int, cost: CharCost) -> tuple[int, int]:
    """Where the part ``text[start:...]`` ends (``cut``) and the next one begins (``resume``).

    Preference: a blank line between blocks (when the block after it fits in a part of its
    own, or the part is at least half full), then a line break (same condition), then the
    last space or tab in the second half of the part, then a character boundary.
    """
    half = start + (end - start) // 2
    for separator in ("\n\n", "\n"):
        found = text.rfind(separator, start + 1, end)
        if found > start and (
            found >= half or _unit_fits(text, found + len(separator), separator, budget, cost)
        ):
            resume = found + len(separator)
            while resume < len(text) and text[resume] == "\n":
                resume += 1
            return found, resume
    space = max(text.rfind(" ", start + 1, end), text.rfind("\t", start + 1, end))
    if space >= half:
        return space, space + 1
    cut = _hard_cut(text, start, end)
    resume = cut
    if text[cut] in " \t":
        resume += 1
    while resume < len(text) and text[resume] == "\n":
        resume += 1
    return cut, resume


def _split(
    text: str,
    budget: int,
    cost: CharCost,
    *,
    max_parts: int | None = None,
    marker: Callable[[int], str] | None = None,
) -> list[str]:
    """Split ``text`` into parts costing at most ``budget`` each (see :func:`split_message`).

    With ``max_parts``, the last allowed part ends in ``marker(left_out)`` (room reserved)
    when text remains. Linear in the length of the text.
    """
    if budget < 5:
        raise ValueError(f"limit must be at least 5, got {budget}")
    reserve = cost(marker(len(text))) if marker is not None else 0
    parts: list[str] = []
    size = len(text)
    position = 0
    while position < size and text[position] == "\n":
        position += 1
    while position < size:
        last = max_parts is not None and len(parts) == max_parts - 1
        room = budget - reserve if last and budget - reserve >= 5 else budget
        end = _prefix_end(text, position, room, cost)
        if end >= size:
            parts.append(text[position:].rstrip())
            break
        cut, resume = _break(text, position, end, room, cost)
        if cut <= position:
            cut = resume = end
        part = text[position:cut].rstrip()
        if last and marker is not None:
            parts.append(part + marker(size - resume))
            break
        parts.append(part)
        position = resume
    return [part for part in parts if part.strip()]


def split_message(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 code units, in order.

    A part ends, by preference, at a blank line between two blocks of lines (so a block of
    related lines stays in one message when it fits in one), else at a line break, else at the
    last space or tab in the second half of the part, else at a character boundary that keeps
    an emoji with its modifiers and a letter with its combining marks. The separator at a
    break is dropped (and trailing whitespace of a part), so the parts hold every other
    character of the text in order. Empty text gives no parts. ``limit`` must be at least 5.
    Linear in the length of the text. Apply this to plain text, never to HTML: use
    :func:`telegram_messages` for Telegram.
    """
    return _split(text, limit, _plain_cost)


def not_kept_marker(count: int) -> str:
    """What ends a text that was cut: ``[… 12,345 more characters not kept]``."""
    return f"\n\n[\u2026 {count:,} more characters not kept]"


def cap_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in a marker saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + not_kept_marker(len(text) - limit)


def _telegram_head(title: str, level: str, counter: str) -> str:
    shown = html.escape(_one_line(title, TITLE_LIMIT), quote=False) or "Notification"
    return f"{LEVEL_MARKERS[level]} <b>{shown}</b>{counter}"


def _telegram_foot(level: str, type_: str, when: datetime, tz: ZoneInfo) -> str:
    stamp = format_time(when, tz)
    return f"<i>{level.upper()}{_SEPARATOR}{type_}{_SEPARATOR}{html.escape(stamp)}</i>"


def _plain_head(title: str, level: str, counter: str) -> str:
    return f"{LEVEL_MARKERS[level]} {_one_line(title, TITLE_LIMIT) or 'Notification'}{counter}"


def _plain_foot(level: str, type_: str, when: datetime, tz: ZoneInfo) -> str:
    return f"{level.upper()}{_SEPARATOR}{type_}{_SEPARATOR}{format_time(when, tz)}"


def _telegram_render(head: str, body_html: str, foot: str) -> str:
    return "\n\n".join(s for s in (head, body_html, foot) if s)


def _left_out(count: int) -> str:
    return f"\n\n[\u2026 {count:,} more characters not sent; the full text is in the inbox]"


@dataclass(frozen=True)
class TelegramPart:
    """One Telegram message of a notification: HTML (parse mode ``HTML``) and the same
    message as plain text, sent instead when Telegram cannot parse the HTML."""

    html: str
    plain: str


def telegram_html(  # noqa: PLR0917
    title: str, message: str, level: str, type_: str, when: datetime, tz: ZoneInfo
) -> str:
    """One Telegram message in HTML parse mode, not length-limited.

    Layout: level marker and bold title, the message, then an italic footer with level, type
    and ``when`` in ``tz`` (zone abbreviation included, e.g. IST). Title and message are
    HTML-escaped (``&``, ``<``, ``>``); the title is reduced to one line of at most
    :data:`TITLE_LIMIT` characters. Use :func:`telegram_messages` to respect Telegram's limit.
    """
    level = validate_level(level)
    type_ = validate_type(type_)
    body = html.escape(message.strip(), quote=False)
    return _telegram_render(
        _telegram_head(title, level, ""), body, _telegram_foot(level, type_, when, tz)
    )


def telegram_messages(  # noqa: PLR0917
    title: str,
    message: str,
    level: str,
    type_: str,
    when: datetime,
    tz: ZoneInfo,
    *,
    limit: int = TELEGRAM_LIMIT,
    max_parts: int = TELEGRAM_MAX_PARTS,
) -> list[TelegramPart]:
    """The notification as one or more Telegram messages, each within ``limit``.

    The plain message is split first (:func:`split_message`'s preferences: blocks, lines,
    words) and each part escaped afterwards, so no tag or entity is ever cut. *Every* part
    carries the title with ``(i/n)`` when there are several, and the footer (level, type,
    local time). At most ``max_parts`` parts are made: the last one then ends in a marker
    saying how many characters were not sent (the inbox keeps the full text). When
    everything fits, the single part's HTML is :func:`telegram_html`'s.
    """
    level = validate_level(level)
    type_ = validate_type(type_)
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    foot = _telegram_foot(level, type_, when, tz)
    text = message.strip()
    single = _telegram_head(title, level, "")
    if utf16_length(single) + utf16_length(foot) + 4 + _html_cost(text) <= limit:
        chunks = [text]
    else:
        widest = f" ({max_parts}/{max_parts})"
        overhead = utf16_length(_telegram_head(title, level, widest)) + utf16_length(foot) + 4
        budget = limit - overhead
        if budget < 5:
            raise ValueError(f"limit {limit} is too small for the title and footer")
        chunks = _split(text, budget, _html_cost, max_parts=max_parts, marker=_left_out) or [""]
    total = len(chunks)
    plain_foot = _plain_foot(level, type_, when, tz)
    parts: list[TelegramPart] = []
    for number, chunk in enumerate(chunks, start=1):
        counter = f" ({number}/{total})" if total > 1 else ""
        parts.append(
            TelegramPart(
                html=_telegram_render(
                    _telegram_head(title, level, counter), html.escape(chunk, quote=False), foot
                ),
                plain=_telegram_render(_plain_head(title, level, counter), chunk, plain_foot),
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
    plain text: render it with :func:`telegram_messages` or :func:`email_bodies`, using
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
