"""A dependency-free text progress bar for long commands, drawn on stderr only for a terminal."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``[#######......]  35%  350/1000 rows``, redrawn in place at most ``fps`` times a second.

    Nothing is written unless ``stream`` is a terminal (or ``force`` is set), so scripts and
    pipes see only the command's real output. Use as a context manager; :meth:`update` takes the
    amount done so far and optionally a new total.
    """

    def __init__(
        self,
        label: str,
        total: int = 0,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        width: int = 24,
        fps: float = 10.0,
        force: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or _isatty(self.stream)
        self.label = label
        self.total = total
        self.unit = unit
        self.width = width
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.done = 0
        self._last = 0.0
        self._drawn = False
        self._shown = 0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def update(self, done: int, total: int | None = None, *, label: str | None = None) -> None:
        """Record progress; redraws when enough time has passed or the work is complete."""
        self.done = done
        if total is not None:
            self.total = total
        if label is not None and label != self.label:
            self.label = label
            self._last = 0.0
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval and not (self.total and done >= self.total):
            return
        self._last = now
        text = self.render()
        self.stream.write("\r" + text + " " * max(0, self._shown - len(text)))
        self.stream.flush()
        self._shown = len(text)
        self._drawn = True

    def render(self) -> str:
        """The bar as text (without the carriage return)."""
        unit = f" {self.unit}" if self.unit else ""
        if self.total <= 0:
            return f"{self.label} {self.done}{unit}"
        fraction = min(1.0, max(0.0, self.done / self.total))
        filled = round(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.label} [{bar}] {fraction:4.0%}  {self.done}/{self.total}{unit}"

    def close(self) -> None:
        """End the line the bar was drawn on (if it was drawn at all)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
            self._shown = 0


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
