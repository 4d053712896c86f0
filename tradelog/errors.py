"""Captured errors: recording them, and the user-scoped workflow to read and resolve them.

Recording (never raises)::

    tradelog.errors.capture_exception(user_id=7, symbol="TCS")   # inside an except block

    @tradelog.errors.guard                # a multiprocessing target: recorded, then re-raised
    def work(order_id): ...

Reading and resolving (a user sees their own errors, an admin everyone's; resolving,
ignoring and reopening are for admins and are audited)::

    with tradelog.session() as s:
        page = tradelog.errors.list_errors(s, actor)
        groups = tradelog.errors.error_groups(s, actor, status="unresolved")
        tradelog.errors.resolve(s, page.items[0].id, admin, "fixed in 1.4")
        tradelog.errors.ignore_group(s, groups[0].fingerprint, admin)
        s.commit()

Each fingerprint is a group with a status (unresolved, resolved, ignored) and, while
unresolved, a substatus (new, ongoing, regressed): an occurrence dated after its group's
resolution reopens it as regressed and alerts the operators once.
"""

from __future__ import annotations

from tradelog._errors.workflow import (
    ErrorGroup,
    ErrorPage,
    error_groups,
    expand_fingerprint,
    get_error,
    ignore_group,
    list_errors,
    purge_resolved,
    reopen_group,
    resolve,
    resolved_cutoff,
)
from tradelog._facade import capture_exception, guard, install_loop_handler

__all__ = [
    "ErrorGroup",
    "ErrorPage",
    "capture_exception",
    "error_groups",
    "expand_fingerprint",
    "get_error",
    "guard",
    "ignore_group",
    "install_loop_handler",
    "list_errors",
    "purge_resolved",
    "reopen_group",
    "resolve",
    "resolved_cutoff",
]
