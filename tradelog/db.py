"""tradelog's database: its migrations, and sessions on it.

::

    tradelog.db.upgrade("postgresql://app@db/trading")   # or: tradelog db upgrade
    tradelog.db.check(url)                                # [] when models and database agree

    with tradelog.db.session() as s:                      # same as tradelog.session()
        ...

tradelog never uses the host's engine or session for its own writes; these sessions are on the
configured runtime's engine.
"""

from __future__ import annotations

from tradelog._db.migrate import check, downgrade, head, upgrade
from tradelog._db.migrate import current as current_revision
from tradelog._facade import session

__all__ = ["check", "current_revision", "downgrade", "head", "session", "upgrade"]
