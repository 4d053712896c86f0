"""The public API is exactly what ``tradelog.__all__`` lists."""

from __future__ import annotations

import tradelog

EXPECTED = [
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


def test_all_is_locked() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert tradelog.__all__ == EXPECTED


def test_all_is_sorted_and_importable() -> None:
    """__all__ stays sorted and every name in it exists."""
    assert tradelog.__all__ == sorted(tradelog.__all__)
    for name in tradelog.__all__:
        assert hasattr(tradelog, name), name
