"""Telling people about captured errors: the operators get the detail, the owner a sentence.

Called with the rows an error batch stored, after its transaction committed, and what each
row changed in its group (:mod:`tradelog._errors.groups`):

* **Operators** (:func:`tradelog._recipients.operator_ids`: active admins and
  ``TRADELOG_OPS_USER_IDS``) get an ``error`` notification with the detail - type, message,
  user, task, fingerprint, how often, and the ``tradelog errors show ID`` command - when the
  group is new, when it regressed (once per regression), and while it stays unresolved at most
  once per fingerprint per ``error_notify_window`` seconds. The throttle is a compare-and-set
  on the group row (``last_alert_at``, ``alerts``), so any number of processes alert once; the
  dedupe key ``error-alert:<fingerprint>:<n>`` turns a repeated send into a duplicate.
* The **owner** of the error (a user who is not an operator) gets a plain sentence in their
  timezone - "Your sell_monitor run failed at 10:42 IST; the operators have been told." - and
  never the internals. At most one per fingerprint per window: the dedupe key
  ``error:<fingerprint>:<bucket>``, which a failed task's service notice shares
  (:mod:`tradelog._health.lifecycle`), so one failure tells the owner once.
* Errors without a user go to the operators only. Rows of an ignored group, and rows that
  occurred before their group's resolution (``late``), alert nobody.

Each recipient's preferences decide as for any notification (``notify_errors``, channels,
quiet hours). The level is the error's own (:attr:`~tradelog._errors.record.ErrorRecord.level`):
``critical`` only when the service process crashed. A window of 0 turns both throttles off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, case, or_, update
from sqlalchemy.orm import Session

from tradelog._db.models import ErrorGroup
from tradelog._errors.record import summary
from tradelog._errors.store import Written
from tradelog._recipients import describe_user, local_time, operator_ids, user_zone

__all__ = [
    "ErrorAlerts",
    "SendFn",
    "dedupe_key",
    "operator_text",
    "owner_text",
    "task_failed_sentence",
]

_log: Final = logging.getLogger("tradelog.errors")
_MEMO_SIZE: Final = 10_000
_TITLE_LENGTH: Final = 200
_MESSAGE_LENGTH: Final = 600
_LABELS: Final = {"new": "New error", "regressed": "Regressed", "ongoing": "Error"}

SendFn = Callable[..., Any]


def dedupe_key(fingerprint: str, occurred_at: datetime, window: float) -> str | None:
    """The owner's dedupe key for an error at ``occurred_at``, or None when throttling is off."""
    if window <= 0:
        return None
    bucket = int(occurred_at.timestamp() // window)
    return f"error:{fingerprint[:32]}:{bucket}"


def _told(operators: bool) -> str:
    return "; the operators have been told." if operators else "; it has been recorded."


def task_failed_sentence(task: str, when: str, *, operators: bool) -> str:
    """``Your sell_monitor run failed at 10:42 IST; the operators have been told.``"""
    return f"Your {task} run failed at {when}{_told(operators)}"


def owner_text(written: Written, when: str, *, operators: bool) -> tuple[str, str]:
    """Title and message for the owner of one stored error: no type, message or traceback."""
    record = written.record
    context = record.context or {}
    task = context.get("task")
    if record.process_crash:
        return (
            "Trading service stopped",
            f"Your trading service stopped unexpectedly at {when}{_told(operators)}",
        )
    if isinstance(task, str) and task:
        if context.get("source") == "task":
            return f"{task} failed", task_failed_sentence(task, when, operators=operators)
        return f"{task} hit an error", f"Your {task} run hit an error at {when}{_told(operators)}"
    return (
        "Something went wrong",
        f"Something went wrong in your trading service at {when}{_told(operators)}",
    )


def operator_text(written: Written, user: str, *, times_seen: int) -> tuple[str, str]:
    """Title and message for the operators: the detail and where to look."""
    record = written.record
    context = record.context or {}
    short = record.error_type.rsplit(".", 1)[-1]
    label = "Crash" if record.process_crash else _LABELS.get(written.change or "", "Error")
    where = [user]
    if context.get("task"):
        where.append(f"task {context['task']}")
    if context.get("source"):
        where.append(f"via {context['source']}")
    state = {"new": "new group", "regressed": "regressed after its resolution"}.get(
        written.change or "", "unresolved"
    )
    lines = [
        summary(record.error_type, record.error_message, _MESSAGE_LENGTH),
        " · ".join(str(part) for part in where),
        f"error #{written.error_id} · fingerprint {record.fingerprint[:12]} · "
        f"seen {times_seen} time{'s' if times_seen != 1 else ''} · {state}",
        f"details: tradelog errors show {written.error_id}",
    ]
    return f"{label}: {short}"[:_TITLE_LENGTH], "\n".join(lines)


class ErrorAlerts:
    """A store notifier (see :class:`tradelog._errors.store.ErrorStore`) sending ``error``
    notifications through ``send`` (the runtime passes its notification service's ``notify``).

    ``send`` is called as ``send(user_id, "error", level, title, message, dedupe_key=...,
    session=session)`` with a session on the error store's engine, committed afterwards.
    ``operators`` are user ids alerted besides the active admins (``TRADELOG_OPS_USER_IDS``).
    """

    def __init__(self, window: float, *, send: SendFn, operators: Iterable[int] = ()) -> None:
        self.window = window
        self.operators = tuple(operators)
        self._send = send
        self._memo: dict[tuple[int, str], str] = {}
        self._alerted: dict[str, datetime] = {}
        self._lock = threading.Lock()
        self.sent = 0
        self.skipped = 0
        self.failed = 0

    def __call__(self, engine: Engine, written: Sequence[Written]) -> None:
        """Send the notifications due for the rows just ``written``."""
        wanted = [item for item in written if item.change not in ("ignored", "late")]
        self.skipped += len(written) - len(wanted)
        if not wanted:
            return
        with Session(engine) as session:
            operators = operator_ids(session, self.operators)
            session.commit()
        for item in wanted:
            if operators:
                self._guarded("alert the operators of", item, self._alert, engine, operators)
            if not item.system and item.user_id not in operators:
                told = bool(operators)
                self._guarded(
                    f"notify user {item.user_id} of", item, self._tell_owner, engine, told
                )

    def _guarded(self, what: str, item: Written, action: Callable[..., bool], *args: Any) -> None:
        try:
            done = action(item, *args)
        except Exception as exc:
            self.failed += 1
            _log.warning(
                "tradelog could not %s error %s: %s", what, item.error_id, type(exc).__name__
            )
            return
        if done:
            self.sent += 1
        else:
            self.skipped += 1

    # -- operators ---------------------------------------------------------------------------

    def _due(self, item: Written) -> bool:
        """In-process shortcut of the database throttle (an error storm costs no round trip)."""
        if item.change in ("new", "regressed") or self.window <= 0:
            return True
        with self._lock:
            last = self._alerted.get(item.record.fingerprint)
        return last is None or item.record.occurred_at - last >= timedelta(seconds=self.window)

    def _claim(self, session: Session, item: Written) -> tuple[int, int] | None:
        """Take the group's next alert if it is due: ``(alert number, times seen)``."""
        at = item.record.occurred_at
        due = ErrorGroup.fingerprint == item.record.fingerprint
        if item.change not in ("new", "regressed") and self.window > 0:
            cutoff = at - timedelta(seconds=self.window)
            due = due & or_(ErrorGroup.last_alert_at.is_(None), ErrorGroup.last_alert_at <= cutoff)
        statement = (
            update(ErrorGroup)
            .where(due)
            .values(
                alerts=ErrorGroup.alerts + 1,
                last_alert_at=case(
                    (ErrorGroup.last_alert_at > at, ErrorGroup.last_alert_at), else_=at
                ),
            )
            .returning(ErrorGroup.alerts, ErrorGroup.times_seen)
            .execution_options(synchronize_session=False)
        )
        found = session.execute(statement).first()
        return (int(found[0]), int(found[1])) if found else None

    def _alert(self, item: Written, engine: Engine, operators: list[int]) -> bool:
        if not self._due(item):
            return False
        record = item.record
        with Session(engine) as session:
            claimed = self._claim(session, item)
            if claimed is None:
                session.commit()
                return False
            number, times_seen = claimed
            user = describe_user(session, item.user_id)
            title, message = operator_text(item, user, times_seen=times_seen)
            key = f"error-alert:{record.fingerprint[:32]}:{number}"
            for operator in operators:
                self._send(
                    operator,
                    "error",
                    record.level,
                    title,
                    message,
                    dedupe_key=key,
                    session=session,
                )
            session.commit()
        with self._lock:
            if len(self._alerted) >= _MEMO_SIZE:
                self._alerted.clear()
            self._alerted[record.fingerprint] = record.occurred_at
        return True

    # -- the owner ---------------------------------------------------------------------------

    def _tell_owner(self, item: Written, engine: Engine, operators: bool) -> bool:
        record = item.record
        key = dedupe_key(record.fingerprint, record.occurred_at, self.window)
        memo = (item.user_id, record.fingerprint)
        with self._lock:
            if key is not None and self._memo.get(memo) == key:
                return False
        with Session(engine) as session:
            zone = user_zone(session, item.user_id)
            title, message = owner_text(
                item, local_time(record.occurred_at, zone), operators=operators
            )
            self._send(
                item.user_id,
                "error",
                record.level,
                title,
                message,
                dedupe_key=key,
                session=session,
            )
            session.commit()
        if key is not None:
            with self._lock:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[memo] = key
        return True
