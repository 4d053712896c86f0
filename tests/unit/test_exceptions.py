"""The exception tree."""

from __future__ import annotations

import tradelog
from tradelog.exceptions import (
    DeliveryError,
    MissingExtraError,
    PermanentDeliveryError,
    RetryableDeliveryError,
    TradelogError,
)


def test_tree() -> None:
    """Every public error derives from TradelogError; delivery errors split retryable/permanent."""
    for name in tradelog.__all__:
        obj = getattr(tradelog, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, TradelogError)
    assert issubclass(RetryableDeliveryError, DeliveryError)
    assert issubclass(PermanentDeliveryError, DeliveryError)
    error = RetryableDeliveryError("429", channel="telegram", retry_after=3)
    assert (error.channel, error.retry_after) == ("telegram", 3)


def test_missing_extra_names_the_extra() -> None:
    """The message tells the user which extra to install."""
    error = MissingExtraError("telegram", "python-telegram-bot")
    assert "pip install 'tradelog[telegram]'" in str(error)
    assert isinstance(error, ImportError)
