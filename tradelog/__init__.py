"""tradelog: logging, error tracking and notifications for multi-user trading services.

The public API is what this package exports and the public modules:

* :mod:`tradelog` - configure, log, notify, capture, track (this module);
* :mod:`tradelog.logs` - reading service logs (user-scoped queries, paging, following);
* :mod:`tradelog.errors` - capturing errors and the resolution workflow;
* :mod:`tradelog.notifications` - sending, the inbox, preferences;
* :mod:`tradelog.health` - heartbeats, running state, stale services, task tracking;
* :mod:`tradelog.users` - accounts and the acting user;
* :mod:`tradelog.audit`, :mod:`tradelog.trading_config`, :mod:`tradelog.retention`;
* :mod:`tradelog.ml` - the ML registry: training jobs, model versions, the active model;
* :mod:`tradelog.db` - migrations and sessions; :mod:`tradelog.config` - :class:`Settings`;
* :mod:`tradelog.exceptions` - the error tree; :mod:`tradelog.testing` - for your own tests.

Everything else (modules and packages whose names start with ``_``) is an implementation detail.
"""

from tradelog import (
    audit,
    config,
    db,
    errors,
    exceptions,
    health,
    logs,
    ml,
    notifications,
    retention,
    trading_config,
    users,
)
from tradelog._facade import (
    anotify,
    capture_exception,
    get_logger,
    guard,
    heartbeat,
    install_loop_handler,
    mark_running,
    mark_stopped,
    notify,
    session,
    track_task,
)
from tradelog._health.tasks import skip
from tradelog._notify.dispatch import NotifyResult
from tradelog._runtime import Runtime, configure, current, flush, shutdown
from tradelog.config import Secret, Settings
from tradelog.exceptions import (
    ConfigurationError,
    ConflictError,
    DeliveryError,
    MissingExtraError,
    NotFound,
    PermanentDeliveryError,
    PermissionDenied,
    RetryableDeliveryError,
    StorageError,
    TradelogError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DeliveryError",
    "MissingExtraError",
    "NotFound",
    "NotifyResult",
    "PermanentDeliveryError",
    "PermissionDenied",
    "RetryableDeliveryError",
    "Runtime",
    "Secret",
    "Settings",
    "StorageError",
    "TradelogError",
    "__version__",
    "anotify",
    "audit",
    "capture_exception",
    "config",
    "configure",
    "current",
    "db",
    "errors",
    "exceptions",
    "flush",
    "get_logger",
    "guard",
    "health",
    "heartbeat",
    "install_loop_handler",
    "logs",
    "mark_running",
    "mark_stopped",
    "ml",
    "notifications",
    "notify",
    "retention",
    "session",
    "shutdown",
    "skip",
    "track_task",
    "trading_config",
    "users",
]
