"""Captured errors: recording them, and the user-scoped workflow to read and resolve them.

Recording (never raises)::

    tradelog.errors.capture_exception(user_id=7, symbol="TCS")   # inside an except block

    @tradelog.errors.guard                # a multiprocessing target: recorded, then re-raised
    def work(order_id): ...

Reading and resolving (a user sees their own errors, an admin everyone's; resolving is for
admins and is audited)::

    with tradelog.session() as s:
        page = tradelog.errors.list_errors(s, actor)
        groups = tradelog.errors.error_groups(s, actor)
        tradelog.errors.resolve(s, admin, error_id=page.items[0].id, notes="fixed in 1.4")
        s.commit()
"""

from __future__ import annotations

from tradelog._errors.workflow import (
    ErrorGroup,
    ErrorPage,
    error_groups,
    expand_fingerprint,
    get_error,
    list_errors,
    purge_resolved,
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
    "install_loop_handler",
    "list_errors",
    "purge_resolved",
    "resolve",
    "resolved_cutoff",
]
