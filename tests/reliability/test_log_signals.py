"""Processes ended by a signal while they log as fast as they can: nothing lost, none hung.

* The README's ``SIGTERM`` recipe (``signal.signal(SIGTERM, lambda *_: sys.exit(0))``): the
  ``SystemExit`` lands wherever the main thread is - often inside a spill that took a batch
  off the queue - and the exit hooks write or spool everything. 20 runs in a row.
* The same recipe when the handler runs inside a weak-reference callback (as the garbage
  collector runs SQLAlchemy's): Python swallows the ``SystemExit``; tradelog sends the signal
  again and the process still ends.
* ``Pool.terminate()``: each worker gets ``SIGTERM`` mid-stream; tradelog's handler writes or
  spools what is queued (and what the interrupted call held) and the worker dies of the
  signal; the parent's flush adopts the spools. 20 runs in a row.

Each producer notes the index of the event it is about to log in shared memory before it
logs it, so the test knows exactly which events were emitted: every event before that index
must be in ``service_logs`` exactly once, and the one being logged when the signal came may
be there (once) or not.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Final

import pytest

import tradelog
from tests.support.db import MigratedDatabase

# Untraced by coverage (no_cover): twenty rounds a case repeat what the integration tests cover.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.no_cover,
    pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning"),
]

RUNS = 20
EVENTS = 1_000_000  # more than any run gets through: the signal ends each one
EXIT_BOUND = 10.0
"""Seconds from SIGTERM to the child's exit (measured: 0.6 s at most beside the full suite)."""
SWALLOWED_EVENTS = 300_000  # about 10 s of logging into a full queue
_CONTEXT = multiprocessing.get_context("fork")
_DUMP: Final = signal.SIGRTMIN + 1
"""Asks a child that did not end for its threads' stacks: a signal tradelog never holds back
(it defers the ones a host ends on, SIGUSR1 among them)."""


def _log_until_stopped(prefix: str, user_id: int, progress: Any, slot: int) -> None:
    log = tradelog.get_logger("signals")
    for event in range(EVENTS):
        progress[slot] = event + 1  # event `event` is being emitted
        log.info(f"{prefix} e{event}", user_id=user_id)


def _recipe_child(
    url: str,
    log_dir: str,
    run: int,
    user_id: int,
    progress: Any,
    *,
    log_writer: str = "thread",
    stacks: str | None = None,
) -> None:
    if stacks is not None:  # where every thread is, on _DUMP: for a run that does not end
        faulthandler.register(_DUMP, file=open(stacks, "w"), all_threads=True)  # noqa: SIM115
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the README's recipe
    tradelog.configure(
        database_url=url,
        log_dir=log_dir,
        console=False,
        queue_size=1000,
        schema_check="off",
        log_writer=log_writer,
    )
    _log_until_stopped(f"r{run}", user_id, progress, 0)


class _Token:
    """Something to hold a weak reference to."""


def _slow_hook(unraisable: Any) -> None:
    """An unraisable hook that takes its time (as pytest's, formatting the traceback)."""
    time.sleep(1.0)  # the redelivered signal's handler runs in here


def _swallowed_child(
    url: str, log_dir: str, user_id: int, progress: Any, *, slow_hook: bool = False
) -> None:
    """The recipe, with SIGTERM raised inside a weak-reference callback after 5,000 events:
    the handler runs there and Python swallows its SystemExit. ``slow_hook``: the unraisable
    hook tradelog chains to is slow, so the signal sent again arrives inside it (and Python
    swallows that SystemExit as well)."""
    # Under coverage, the tracer runs Python code (deciding what to measure) in between; a
    # handler that lands in there has its SystemExit swallowed by the tracer, with no report
    # to any hook. That is the measuring, not the program: this child runs untraced.
    sys.settrace(None)
    threading.settrace(None)  # type: ignore[arg-type]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the README's recipe
    if slow_hook:
        sys.unraisablehook = _slow_hook
    tradelog.configure(
        database_url=url, log_dir=log_dir, console=False, queue_size=1000, schema_check="off"
    )
    log = tradelog.get_logger("signals")
    for event in range(SWALLOWED_EVENTS):
        progress[0] = event + 1
        log.info(f"w e{event}", user_id=user_id)
        if event == 5_000:
            token = _Token()
            ref = weakref.ref(token, lambda _: signal.raise_signal(signal.SIGTERM))
            del token  # the callback runs now; the handler's SystemExit is "unraisable"
            assert ref() is None


def _check_prefix(db: MigratedDatabase, prefix: str, emitted: int) -> None:
    """Rows of ``prefix`` are events 0..n-1 exactly once, n = emitted or emitted - 1 (the
    event being logged when the signal came)."""
    rows = db.rows("SELECT message FROM service_logs WHERE message LIKE :p", p=f"{prefix} e%")
    numbers = sorted(int(str(r["message"]).rsplit("e", 1)[1]) for r in rows)
    assert len(numbers) == len(set(numbers)), f"{prefix}: duplicates"
    assert numbers == list(range(len(numbers))), f"{prefix}: a gap: {_missing(numbers)}"
    assert emitted - 1 <= len(numbers) <= emitted, (prefix, emitted, len(numbers))


def _missing(numbers: list[int]) -> list[tuple[int, int]]:
    """The ranges (first, last) absent from sorted ``numbers``."""
    gaps: list[tuple[int, int]] = []
    expected = 0
    for number in numbers:
        if number > expected:
            gaps.append((expected, number - 1))
        expected = number + 1
    return gaps


def _wait_for(progress: Any, slots: int, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(progress[i] < at_least for i in range(slots)):
        assert time.monotonic() < deadline, "the producers did not start"
        time.sleep(0.005)


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(("log_writer", "runs"), [("thread", RUNS), ("process", 5)])
def test_the_readme_sigterm_recipe_loses_nothing_20_times(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, log_writer: str, runs: int
) -> None:
    """SIGTERM → sys.exit(0) at a random moment, 20 runs: 0 lost, 0 duplicated, 0 hung. With
    the helper process (5 runs), the exit hooks' shutdown waits for the helper to write what it
    was sent."""
    rng = random.Random(10)
    adopter = tradelog.configure(
        database_url=db.url, log_dir=tmp_path, console=False, worker=False, schema_check="off"
    )
    hung = 0
    emitted = 0
    slowest = 0.0
    for run in range(runs):
        progress = _CONTEXT.Array("l", 1, lock=False)
        stacks = tmp_path / f"stacks-{run}.txt"
        child = _CONTEXT.Process(
            target=_recipe_child,
            args=(db.url, str(tmp_path), run, users["alice"], progress),
            kwargs={"log_writer": log_writer, "stacks": str(stacks)},
        )
        child.start()
        _wait_for(progress, 1, 2_000)
        time.sleep(rng.uniform(0.0, 0.2))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGTERM)
        signalled = time.monotonic()
        child.join(EXIT_BOUND)
        slowest = max(slowest, time.monotonic() - signalled)
        where = ""
        if child.exitcode is None:
            hung += 1
            os.kill(child.pid, _DUMP)
            time.sleep(1.0)
            where = stacks.read_text(errors="replace")
            child.kill()
            child.join()
        assert child.exitcode == 0, (
            f"run {run}: the child did not end within {EXIT_BOUND} s; its threads:\n{where}"
        )
        assert adopter.flush(60)  # rows the child left in its spool are replayed here
        _check_prefix(db, f"r{run}", progress[0])
        emitted += progress[0]
    print(
        f"\nSIGTERM recipe ({log_writer}): {runs} runs, {emitted} events, 0 lost, "
        f"slowest exit {slowest:.2f} s"
    )
    assert hung == 0


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("slow_hook", [False, True], ids=["", "slow-previous-hook"])
def test_an_exit_python_swallowed_in_a_callback_still_ends_the_process(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path, slow_hook: bool
) -> None:
    """The recipe's handler runs inside a weak-reference callback (Python reports its
    SystemExit as unraisable and carries on): tradelog sends SIGTERM again, the child ends
    within the bound long before it runs out of events, and nothing it logged is lost - also
    when the signal sent again lands inside the host's own (slow) unraisable hook."""
    progress = _CONTEXT.Array("l", 1, lock=False)
    child = _CONTEXT.Process(
        target=_swallowed_child,
        args=(db.url, str(tmp_path), users["alice"], progress),
        kwargs={"slow_hook": slow_hook},
    )
    child.start()
    child.join(EXIT_BOUND + 30)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert progress[0] < SWALLOWED_EVENTS, "the swallowed SIGTERM was never handled"
    runtime = tradelog.configure(
        database_url=db.url, log_dir=tmp_path, console=False, worker=False, schema_check="off"
    )
    assert runtime.flush(60)
    _check_prefix(db, "w", progress[0])
    assert not list((tmp_path / "_spool").glob("spool-*.jsonl"))


def _pool_init(progress: Any, slots: Any) -> None:
    global _PROGRESS, _SLOTS
    _PROGRESS, _SLOTS = progress, slots


_PROGRESS: Any = None
_SLOTS: Any = None


def _pool_work(run: int, user_id: int) -> None:
    with _SLOTS.get_lock():
        slot = _SLOTS.value
        _SLOTS.value += 1
    _log_until_stopped(f"t{run}w{slot}", user_id, _PROGRESS, slot)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_pool_terminate_loses_nothing_20_times(
    db: MigratedDatabase, users: dict[str, int], tmp_path: Path
) -> None:
    """Pool.terminate() while two workers log flat out, 20 runs: 0 lost, 0 duplicated, every
    terminate returns within its bound (0 hung)."""
    runtime = tradelog.configure(
        database_url=db.url,
        log_dir=tmp_path,
        console=False,
        queue_size=1000,
        db_write_timeout=2.0,
        schema_check="off",
    )
    slowest = 0.0
    emitted = 0
    for run in range(RUNS):
        progress = _CONTEXT.Array("l", 2, lock=False)
        slots = _CONTEXT.Value("i", 0)
        pool = _CONTEXT.Pool(2, initializer=_pool_init, initargs=(progress, slots))
        pool.starmap_async(_pool_work, [(run, users["alice"])] * 2)
        _wait_for(progress, 2, 2_000)
        started = time.monotonic()
        pool.terminate()  # SIGTERM to both workers, then joins them
        slowest = max(slowest, time.monotonic() - started)
        assert runtime.flush(60)  # adopts and replays the workers' spools
        for slot in range(2):
            _check_prefix(db, f"t{run}w{slot}", progress[slot])
            emitted += progress[slot]
    print(f"\nPool.terminate: {RUNS} runs, {emitted} events, 0 lost, slowest {slowest:.2f} s")
    assert slowest < 20.0, f"Pool.terminate took {slowest:.1f} s"
    assert not list((tmp_path / "_spool").glob("spool-*.jsonl"))
