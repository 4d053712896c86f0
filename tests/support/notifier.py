"""Another process that sends notifications on request, for the live-stream tests.

``python -m tests.support.notifier DATABASE_URL LOG_DIR`` reads lines ``<user_id> <title>`` on
standard input, calls ``tradelog.notify`` for each and prints ``{"id": ..., "at": ...}`` once the
notification is committed (``at`` is ``time.time()`` then).
"""

from __future__ import annotations

import json
import sys
import time

import tradelog


def main() -> int:
    url, log_dir = sys.argv[1], sys.argv[2]
    tradelog.configure(database_url=url, log_dir=log_dir, console=False, worker=False)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        user, _, title = line.strip().partition(" ")
        if not user:
            continue
        result = tradelog.notify(int(user), "trading", "info", title or "hello", f"{title} body")
        print(json.dumps({"id": result.notification_id, "at": time.time()}), flush=True)
    tradelog.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
