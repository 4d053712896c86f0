"""Service health: running state and heartbeats, stale detection, task tracking.

* :mod:`~tradelog._health.status` - read models: who is running, stale, stopped (user-scoped);
* :mod:`~tradelog._health.writer` - :class:`ServiceHealth`, the writes (heartbeat, running
  state, task rows) with an explicit engine;
* :mod:`~tradelog._health.tasks` - :class:`track_task`, the context manager and decorator
  around one run of a task.

The public face is :mod:`tradelog.health`.
"""
