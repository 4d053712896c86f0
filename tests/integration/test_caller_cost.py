"""What a logging call costs the caller with the default settings (console on, stderr a
pipe): it only queues, whatever the size of the event; the console gets one JSON line per
event from the console thread, in order; wide events are capped with a marker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tradelog
from tests.support.db import MigratedDatabase
from tests.support.logs import running
from tradelog._logs.processors import KEYS_DROPPED
from tradelog._logs.rows import FILE_MESSAGE_MAX
from tradelog._runtime import Runtime
from tradelog.config import Settings

_FILE_LINE_KEYS = {"timestamp", "level", "user_id", "module", "message", "context"}


def _child(script: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``script`` with stderr a pipe; its last stdout line (JSON) and its JSON stderr lines."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    return result, lines


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_4mb_message_costs_the_caller_what_a_short_one_does(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Console on (the default) and stderr a pipe: a 4 MB message returns in well under 50 ms
    (it used to block 0.8-2.5 s), and its console line still appears, scrubbed and cut."""
    script = f"""
import json, statistics, time, tradelog
runtime = tradelog.configure(database_url={db.url!r}, log_dir={str(tmp_path)!r})
assert runtime.settings.console
log = tradelog.get_logger("big", user_id={users["alice"]})
short = []
for i in range(200):
    start = time.perf_counter(); log.info("short", n=i); short.append(time.perf_counter() - start)
big = "password=hunter2\\n" + "x" * (4 * 1024 * 1024)
took = []
for i in range(3):
    start = time.perf_counter(); log.info(big, n=i); took.append(time.perf_counter() - start)
flushed = runtime.flush(60)
tradelog.shutdown()
print(json.dumps({{"short": statistics.median(short), "big": max(took), "flushed": flushed}}))
"""
    result, lines = _child(script)
    assert result["flushed"] is True
    assert result["big"] < 0.05, result
    assert all(set(line) == _FILE_LINE_KEYS for line in lines)
    big = [line for line in lines if line["message"].startswith("password=")]
    assert [line["context"]["n"] for line in big] == [0, 1, 2]
    for line in big:
        assert "hunter2" not in line["message"]
        assert FILE_MESSAGE_MAX - 100 < len(line["message"]) <= FILE_MESSAGE_MAX
    assert [line["context"]["n"] for line in lines if line["message"] == "short"] == list(
        range(200)
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])
def test_console_json_lines_keep_each_threads_order(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """stderr not a terminal: one JSON line per event (the file's line), every event once,
    each thread's lines in the order it logged them, stdlib records included."""
    script = f"""
import json, logging, threading, tradelog
runtime = tradelog.configure(database_url={db.url!r}, log_dir={str(tmp_path)!r})
def work(t):
    log = tradelog.get_logger("worker", user_id={users["alice"]})
    for i in range(500):
        log.info("step", thread=t, n=i)
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
logging.getLogger("std.lib").warning("from stdlib")
flushed = runtime.flush(60)
tradelog.shutdown()
print(json.dumps({{"flushed": flushed}}))
"""
    result, lines = _child(script)
    assert result["flushed"] is True
    assert all(set(line) == _FILE_LINE_KEYS for line in lines)
    steps = [line for line in lines if line["message"] == "step"]
    assert len(steps) == 4 * 500
    for thread in range(4):
        mine = [line["context"]["n"] for line in steps if line["context"]["thread"] == thread]
        assert mine == list(range(500))
    (stdlib,) = [line for line in lines if line["message"] == "from stdlib"]
    assert (stdlib["level"], stdlib["module"]) == ("WARNING", "std.lib")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_wide_event_is_capped_with_a_marker_in_the_row(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """20,000 keys with max_event_keys=100: the event keeps its first 100 keys (the bound
    user_id and 98 of the caller's), its message and the marker counting the rest; the call
    itself stays short (it used to freeze the process for seconds)."""
    wide = {f"k{i}": i for i in range(20_000)}
    with running(db.url, tmp_path, max_event_keys=100) as runtime:
        log = tradelog.get_logger("wide", user_id=users["alice"])
        start = time.perf_counter()
        log.info("wide", **wide)
        took = time.perf_counter() - start
        assert runtime.flush(10)
    (row,) = db.rows("SELECT user_id, message, context FROM service_logs")
    context = json.loads(row["context"])
    assert (row["user_id"], row["message"]) == (users["alice"], "wide")
    assert [context[f"k{i}"] for i in range(98)] == list(range(98))
    assert context[KEYS_DROPPED]["count"] == 20_000 - 98
    assert context[KEYS_DROPPED]["first"][:3] == ["k98", "k99", "k100"]
    assert len(context) == 99
    assert took < 1.0, f"{took:.3f} s"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_full_queue_never_compiles_a_plan_on_the_callers_thread(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """With the queue full the caller writes the events itself (file lines now, rows to the
    spool): through the plain loop, leaving no compiled plan behind, and the rows still land."""
    settings = Settings(database_url=db.url, log_dir=tmp_path, console=False, queue_size=1)
    runtime = Runtime(settings).start(logging_=False, hooks=False, background=False, writer=False)
    try:
        sink = runtime.sink
        for n in range(20):
            sink.emit("INFO", "full", {"event": "spilled", "user_id": users["alice"], "n": n})
        assert runtime.writer._spill_builder.plan_bytes == 0
        assert runtime.writer._builder.plan_bytes == 0
        runtime.writer.start()
        assert runtime.flush(10)
    finally:
        runtime.shutdown(5)
    numbers = [json.loads(r["context"])["n"] for r in db.rows("SELECT context FROM service_logs")]
    assert sorted(numbers) == list(range(20))
