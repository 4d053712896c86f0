"""The tradelog exception tree.

Every error the toolkit raises on purpose derives from :class:`TradelogError`, so a host service can
catch the whole family in one place::

    TradelogError
    ├── ConfigurationError          a setting is missing or invalid (names the variable)
    ├── StorageError                the database cannot be reached or refused a write
    ├── PermissionDenied            the acting user may not read or change that row
    ├── NotFound                    the row asked for does not exist (or is not visible)
    ├── ConflictError               the change contradicts the current state
    │                               (resolving an already-resolved error, ...)
    ├── MissingExtraError           an optional dependency is not installed (names the extra)
    └── DeliveryError               a notification channel failed
        ├── RetryableDeliveryError  try again later (network, timeouts, 5xx, 429, SMTP 4xx)
        └── PermanentDeliveryError  never retry (bot blocked, chat not found, SMTP 5xx, no address)

Third-party errors are translated at the boundary; the original stays available as ``__cause__``.
Logging calls never raise any of these into the caller.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "DeliveryError",
    "MissingExtraError",
    "NotFound",
    "PermanentDeliveryError",
    "PermissionDenied",
    "RetryableDeliveryError",
    "StorageError",
    "TradelogError",
]


class TradelogError(Exception):
    """Root of every error raised by tradelog."""


class ConfigurationError(TradelogError, ValueError):
    """A setting is missing or invalid.

    ``variable`` names the environment variable (or keyword option) at fault.
    """

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class StorageError(TradelogError):
    """The database could not be reached, or refused an operation."""


class PermissionDenied(TradelogError):
    """The acting user is not allowed to see or change the requested rows."""


class NotFound(TradelogError, LookupError):
    """The requested row does not exist, or is not visible to the acting user."""


class ConflictError(TradelogError):
    """The requested change conflicts with the row's current state."""


class MissingExtraError(TradelogError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, extra: str, package: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'tradelog[{extra}]'"
        )
        self.extra = extra
        self.package = package


class DeliveryError(TradelogError):
    """A notification could not be delivered over a channel."""

    def __init__(self, message: str, *, channel: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class RetryableDeliveryError(DeliveryError):
    """A transient delivery failure; ``retry_after`` (seconds) is the earliest sensible retry."""

    def __init__(
        self, message: str, *, channel: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, channel=channel)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """A delivery failure that retrying cannot fix."""
