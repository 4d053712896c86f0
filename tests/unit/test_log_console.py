"""The console thread: pretty lines on a terminal, JSON lines otherwise, drained on demand,
bounded when nobody reads stderr."""

from __future__ import annotations

import io
import threading
from zoneinfo import ZoneInfo

import pytest

from tradelog._logs.console import PRETTY_MESSAGE_MAX, ConsoleLines, PrettyLines
from tradelog._logs.redact import Redactor

ZONE = ZoneInfo("UTC")


def test_pretty_lines_are_scrubbed_and_cut(capsys: pytest.CaptureFixture[str]) -> None:
    """A terminal gets structlog's pretty line, written by the console thread, scrubbed, with a
    huge message cut."""
    console = ConsoleLines(PrettyLines(Redactor(), ZONE, colors=False))
    console.start()
    try:
        record = (0.0, "INFO", "oms", {"event": "filled", "qty": 3, "password": "hunter2"}, True)
        huge = (0.0, "INFO", "oms", {"event": "token=abc123def456\n" + "y" * 10**6}, True)
        console.put([(record, "ignored\n"), (huge, "ignored\n")])
        assert console.drain(5)
    finally:
        console.stop(5)
    first, second = capsys.readouterr().err.splitlines()[:2]
    assert "filled" in first
    assert "oms" in first
    assert "qty=3" in first
    assert "hunter2" not in first
    assert "abc123def456" not in second
    assert len(second) < PRETTY_MESSAGE_MAX + 200


def test_json_lines_are_written_in_order_from_another_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not a terminal: the lines handed over are written as they are, batch after batch, by a
    thread that is not the caller's."""
    writers: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writers.append(threading.current_thread().name)
            return super().write(text)

    stream = Recording()
    console = ConsoleLines()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", stream)
        console.start()
        for batch in range(50):
            console.put([(None, f'{{"n":{batch * 2 + i}}}\n') for i in range(2)])
        assert console.drain(5)
        console.stop(5)
    assert stream.getvalue().splitlines() == [f'{{"n":{n}}}' for n in range(100)]
    assert set(writers) == {"tradelog-console"}


def test_a_console_nobody_reads_drops_lines_and_says_so() -> None:
    """Past max_pending characters new lines are dropped and counted, and one notice line
    reports them once the console takes lines again."""
    blocked = threading.Event()
    release = threading.Event()

    class Stuck(io.StringIO):
        def write(self, text: str) -> int:
            blocked.set()
            release.wait(10)
            return super().write(text)

    stream = Stuck()
    console = ConsoleLines(max_pending=100)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", stream)
        console.start()
        console.put([(None, "first\n")])
        assert blocked.wait(5)  # the console thread is stuck writing "first"
        console.put([(None, "x" * 60 + "\n")])
        console.put([(None, "y" * 60 + "\n")])  # over 100 characters waiting: dropped
        assert console.dropped == 1
        release.set()
        assert console.drain(5)
        console.put([(None, "last\n")])
        assert console.drain(5)
        console.stop(5)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["first", "x" * 60]
    assert "1 console lines were dropped" in lines[2]
    assert lines[3] == "last"
