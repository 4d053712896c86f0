"""Writing captured errors: ``error_logs`` rows, their groups and the owners' ``service_status``
counters.

One batch is one transaction: the owners' account snapshots are read
(:mod:`tradelog._errors.snapshot`, when enabled), the rows are inserted, their groups move on
(:mod:`tradelog._errors.groups`: new, ongoing, regressed ...), and every user in the batch gets
one ``service_status`` upsert that adds the batch's count to ``error_count`` and sets
``last_error`` to their latest error. Errors without a user are kept under the system user
(:func:`tradelog._users.store.system_user_id`). A user id that does not exist is registered in
the same transaction (``unknown_users=register``, see :mod:`tradelog._users.registry`), or the
error is kept under the system user with the id in ``context["unknown_user_id"]`` (``reject``,
or no registry). The notifier (operators' and owners' alerts) is called after the commit with
what each row changed in its group.

A batch written with a ``batch_id`` claims it in ``tradelog_write_batches`` first, in the same
transaction: a batch retried after its commit went unacknowledged, or replayed from a spill
file by a process killed after storing it, finds its id taken and stores nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from tradelog._db.base import utcnow
from tradelog._db.engine import STATEMENT_TIMEOUT_MS
from tradelog._db.models import ErrorLog, User, WriteBatch
from tradelog._db.upsert import dialect_insert, upsert_status
from tradelog._errors.groups import Change, record_occurrences
from tradelog._errors.record import ErrorRecord
from tradelog._errors.snapshot import Snapshots
from tradelog._logs.redact import Redactor
from tradelog._users.registry import KnownUsers
from tradelog._users.store import system_user_id

__all__ = ["ErrorStore", "Notifier", "Written"]

_log: Final = logging.getLogger("tradelog.errors")


@dataclass(frozen=True, slots=True)
class Written:
    """A record as stored: its row id, the user that owns it and what it did to its group
    (``new``, ``ongoing``, ``regressed``, ``ignored`` or ``late``; None without a group)."""

    record: ErrorRecord
    error_id: int
    user_id: int
    system: bool
    change: Change | None = None


Notifier = Callable[[Engine, Sequence[Written]], None]
"""Called with the stored rows after their transaction committed (see ``alerts``)."""


class ErrorStore:
    """Inserts error records with ``engine`` and hands the stored rows to ``notifier``.

    ``snapshots`` adds the owner's trading config and service status to each fresh row's
    context (scrubbed with ``redactor``); ``clock`` tells how fresh a row is; ``users``
    decides what an unknown user id becomes.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        notifier: Notifier | None = None,
        snapshots: bool = True,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = utcnow,
        users: KnownUsers | None = None,
    ) -> None:
        self.engine = engine
        self.notifier = notifier
        self.snapshots = Snapshots(redactor or Redactor()) if snapshots else None
        self.clock = clock
        self.users = users
        self._system_user: int | None = None

    def reset(self) -> None:
        """Forget cached ids (after a fork, or when the database may have been replaced)."""
        self._system_user = None

    def write(self, records: Sequence[ErrorRecord], batch_id: str | None = None) -> list[Written]:
        """Store ``records`` in one transaction; raises on database errors (the caller retries).

        With ``batch_id``, nothing is stored (and ``[]`` returned) when that id was committed
        before: the batch is in already."""
        if not records:
            return []
        written: list[Written] = []
        system_user = self._system_user
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            if batch_id is not None:
                claim = (
                    dialect_insert(session, WriteBatch)
                    .values(batch_id=batch_id, committed_at=utcnow())
                    .on_conflict_do_nothing(index_elements=["batch_id"])
                    .returning(WriteBatch.batch_id)
                )
                if session.execute(claim).scalar_one_or_none() is None:
                    return []
            wanted = {r.user_id for r in records if r.user_id is not None}
            if not wanted:
                known: set[int] = set()
            elif self.users is not None:
                known = self.users.ensure(session, wanted)
            else:
                known = set(session.scalars(select(User.id).where(User.id.in_(wanted))))
            rejected = 0
            now = self.clock()
            taken = (
                self.snapshots.take(
                    session,
                    (
                        r.user_id
                        for r in records
                        if r.user_id in known and Snapshots.fresh(r.occurred_at, now)
                    ),
                    now,
                )
                if self.snapshots is not None
                else {}
            )
            rows: list[tuple[ErrorRecord, ErrorLog, bool]] = []
            for record in records:
                context = record.context
                if record.user_id in taken and Snapshots.fresh(record.occurred_at, now):
                    context = {**(context or {}), "snapshot": taken[record.user_id]}
                if record.user_id is not None and record.user_id in known:
                    owner, system = record.user_id, False
                else:
                    if system_user is None:
                        system_user = system_user_id(session)
                    owner, system = system_user, True
                    if record.user_id is not None:
                        context = {**(context or {}), "unknown_user_id": record.user_id}
                        rejected += 1
                row = ErrorLog(
                    user_id=owner,
                    error_type=record.error_type,
                    error_message=record.error_message,
                    traceback=record.traceback,
                    context=context,
                    occurred_at=record.occurred_at,
                    fingerprint=record.fingerprint,
                )
                rows.append((record, row, system))
            session.add_all([row for _, row, _ in rows])
            session.flush()
            changes = record_occurrences(session, [row for _, row, _ in rows])
            latest: dict[int, tuple[int, ErrorRecord]] = {}
            for record, row, _ in rows:
                count, newest = latest.get(row.user_id, (0, record))
                if record.occurred_at >= newest.occurred_at:
                    newest = record
                latest[row.user_id] = (count + 1, newest)
            for owner, (count, newest) in sorted(latest.items()):
                upsert_status(
                    session,
                    owner,
                    now=newest.occurred_at,
                    errors=count,
                    last_error=newest.last_error,
                )
            written = [
                Written(record, row.id, row.user_id, system, changes.get(row.id))
                for record, row, system in rows
            ]
        self._system_user = system_user  # only remembered once the transaction committed
        if rejected and self.users is not None:
            self.users.reject(rejected)
        if self.notifier is not None:
            try:
                self.notifier(self.engine, written)
            except Exception as exc:
                _log.warning("tradelog could not send error notifications: %s", exc)
        return written
