"""Service health: heartbeats, running state, stale services and task tracking.

Writes (each a short transaction on tradelog's own engine; a failure is logged, never raised)::

    tradelog.health.mark_running(7)
    tradelog.health.heartbeat(7)
    with tradelog.health.track_task(7, "sell_monitor") as task:
        task["orders"] = 3

The owner hears of it (a ``service`` notification, their preferences permitting): a service
that starts or stops, a task that fails, and a task that succeeds when the call asks
(``track_task(..., notify_success=True)``). The worker process (``TRADELOG_WORKER=true`` or
``tradelog worker``) checks heartbeats: a service stale past ``TRADELOG_STALE_HEARTBEAT_SECONDS``
is reported to the operators and its owner once per stale episode, and again when it ends.

Reads (user-scoped: a user sees their own row, an admin everyone's)::

    with tradelog.session() as s:
        rows = tradelog.health.service_overview(s, actor, now, threshold=300)
"""

from __future__ import annotations

from tradelog._facade import heartbeat, mark_running, mark_stopped, track_task
from tradelog._health.status import is_stale, service_overview, stale_services
from tradelog._health.tasks import TaskRun, TaskSkipped, current_task, skip
from tradelog._health.writer import TASK_STATUSES, ServiceHealth

__all__ = [
    "TASK_STATUSES",
    "ServiceHealth",
    "TaskRun",
    "TaskSkipped",
    "current_task",
    "heartbeat",
    "is_stale",
    "mark_running",
    "mark_stopped",
    "service_overview",
    "skip",
    "stale_services",
    "track_task",
]
