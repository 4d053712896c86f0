"""tradelog: logging, error tracking and notifications for multi-user trading services.

The public API is what this module exports; everything else is an implementation detail.
"""

from tradelog._errors.capture import capture_exception
from tradelog._notify.api import anotify, notify  # rebinds ``tradelog._notify`` to the function
from tradelog._notify.dispatch import NotifyResult
from tradelog._runtime import configure, flush, get_logger, shutdown
from tradelog._service import heartbeat, mark_running, mark_stopped, track_task
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
    "Secret",
    "Settings",
    "StorageError",
    "TradelogError",
    "__version__",
    "anotify",
    "capture_exception",
    "configure",
    "flush",
    "get_logger",
    "heartbeat",
    "mark_running",
    "mark_stopped",
    "notify",
    "shutdown",
    "track_task",
]
