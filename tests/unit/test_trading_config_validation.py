"""Tests for trading config validation and text parsing (no database)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tradelog._db.models import UserTradingConfig
from tradelog.exceptions import ConfigurationError
from tradelog.trading_config import FIELDS, parse_value, validate_changes

DEFAULTS: dict[str, Any] = {
    name: (column.default.arg if column.default is not None else None)  # type: ignore[union-attr]
    for name, column in UserTradingConfig.__table__.columns.items()
    if name in FIELDS
}


def test_every_model_column_is_configurable() -> None:
    """FIELDS covers every column except keys and timestamps."""
    columns = set(UserTradingConfig.__table__.columns.keys())
    assert set(FIELDS) == columns - {"id", "user_id", "created_at", "updated_at"}


def test_spec_defaults_are_valid() -> None:
    """The spec's own defaults pass validation."""
    assert validate_changes({}, DEFAULTS) == DEFAULTS


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"rsi_period": 14}, {"rsi_period": 14}),
        ({"rsi_period": 14.0}, {"rsi_period": 14}),
        ({"rsi_oversold": 25}, {"rsi_oversold": 25.0}),
        ({"default_exchange": "bse"}, {"default_exchange": "BSE"}),
        ({"default_order_type": " sl-m "}, {"default_order_type": "SL-M"}),
        ({"default_stop_loss_pct": None}, {"default_stop_loss_pct": None}),
        ({"default_stop_loss_pct": 0.08}, {"default_stop_loss_pct": 0.08}),
        ({"ml_model_version": "v1.1"}, {"ml_model_version": "v1.1"}),
        (
            {"task_schedule": {"sell_monitor": "09:15"}},
            {"task_schedule": {"sell_monitor": "09:15"}},
        ),
        ({"task_schedule": None}, {"task_schedule": None}),
        ({"ml_enabled": True}, {"ml_enabled": True}),
        ({"news_sentiment_neg_threshold": -0.5}, {"news_sentiment_neg_threshold": -0.5}),
    ],
)
def test_valid_changes_are_normalised(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    """Accepted values come back in the field's type and canonical spelling."""
    clean = validate_changes(DEFAULTS, changes)
    assert clean == expected
    for name, value in clean.items():
        assert type(value) is type(expected[name])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"nonsense": 1}, "nonsense"),
        ({"rsi_period": True}, "rsi_period"),
        ({"rsi_period": "10"}, "rsi_period"),
        ({"rsi_period": 10.5}, "rsi_period"),
        ({"rsi_period": 1}, "rsi_period"),
        ({"rsi_oversold": 101}, "rsi_oversold"),
        ({"rsi_oversold": -1}, "rsi_oversold"),
        ({"rsi_oversold": math.nan}, "rsi_oversold"),
        ({"user_capital": math.inf}, "user_capital"),
        ({"user_capital": 0}, "user_capital"),
        ({"max_position_volume_ratio": 1.5}, "max_position_volume_ratio"),
        ({"default_target_pct": 10}, "default_target_pct"),
        ({"default_exchange": "NYSE"}, "default_exchange"),
        ({"default_product": "CASH"}, "default_product"),
        ({"default_order_type": "STOP"}, "default_order_type"),
        ({"default_variety": "BO"}, "default_variety"),
        ({"default_validity": "GTC"}, "default_validity"),
        ({"default_exchange": None}, "default_exchange"),
        ({"default_stop_loss_pct": 8}, "default_stop_loss_pct"),
        ({"chart_quality_enabled": 1}, "chart_quality_enabled"),
        ({"chart_quality_enabled": None}, "chart_quality_enabled"),
        ({"ml_model_version": "v" * 17}, "ml_model_version"),
        ({"ml_model_version": "  "}, "ml_model_version"),
        ({"task_schedule": ["09:05"]}, "task_schedule"),
        ({"task_schedule": {"a": math.nan}}, "task_schedule"),
        ({"task_schedule": {"a": object()}}, "task_schedule"),
        ({"news_sentiment_pos_threshold": 2}, "news_sentiment_pos_threshold"),
    ],
)
def test_invalid_changes_name_the_field(changes: dict[str, Any], field: str) -> None:
    """Every rejected value raises ConfigurationError naming its field."""
    with pytest.raises(ConfigurationError) as caught:
        validate_changes(DEFAULTS, changes)
    assert caught.value.variable == field
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rsi_extreme_oversold": 35}, "rsi_extreme_oversold (35) must not be greater than"),
        ({"rsi_near_oversold": 25}, "rsi_oversold (30) must not be greater than rsi_near"),
        ({"news_sentiment_neg_threshold": 0.5}, "news_sentiment_neg_threshold"),
        (
            {"min_stop_loss_pct": 0.05, "tight_stop_loss_pct": 0.04},
            "min_stop_loss_pct (0.05) must not be greater than tight_stop_loss_pct",
        ),
        (
            {"tight_stop_loss_pct": 0.09, "default_stop_loss_pct": 0.08},
            "tight_stop_loss_pct (0.09)",
        ),
    ],
)
def test_ordering_rules(changes: dict[str, Any], message: str) -> None:
    """Thresholds that must stay ordered are checked on the merged result."""
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_changes(DEFAULTS, changes)


def test_ordering_allows_moving_both_ends_together() -> None:
    """A change that moves both thresholds consistently is fine; unset stop losses never clash."""
    clean = validate_changes(DEFAULTS, {"rsi_oversold": 45, "rsi_near_oversold": 50})
    assert clean == {"rsi_oversold": 45.0, "rsi_near_oversold": 50.0}
    assert validate_changes(DEFAULTS, {"tight_stop_loss_pct": 0.06}) == {
        "tight_stop_loss_pct": 0.06
    }


@pytest.mark.parametrize(
    ("name", "raw", "value"),
    [
        ("rsi_period", "14", 14),
        ("rsi_oversold", "27.5", 27.5),
        ("ml_enabled", "yes", True),
        ("ml_enabled", "OFF", False),
        ("default_stop_loss_pct", "null", None),
        ("default_stop_loss_pct", "", None),
        ("default_stop_loss_pct", "0.08", 0.08),
        ("default_exchange", "bse", "bse"),
        ("task_schedule", '{"premarket_retry": "09:05"}', {"premarket_retry": "09:05"}),
        ("ml_model_version", "none", None),
    ],
)
def test_parse_value(name: str, raw: str, value: Any) -> None:
    """Command-line text becomes the field's type."""
    assert parse_value(name, raw) == value


@pytest.mark.parametrize(
    ("name", "raw"),
    [("rsi_period", "ten"), ("ml_enabled", "maybe"), ("task_schedule", "{"), ("nope", "1")],
)
def test_parse_value_rejects(name: str, raw: str) -> None:
    """Unparseable text is a ConfigurationError naming the field."""
    with pytest.raises(ConfigurationError, match=name):
        parse_value(name, raw)


def test_describe() -> None:
    """Field descriptions read well in error messages."""
    assert FIELDS["rsi_oversold"].describe() == "a number between 0 and 100"
    assert FIELDS["rsi_period"].describe() == "an integer between 2 and 200"
    assert FIELDS["default_product"].describe() == "one of CNC, MIS, NRML"
    assert FIELDS["default_stop_loss_pct"].describe() == "a number between 0 and 1 (or null)"
    assert FIELDS["ml_enabled"].describe() == "true or false"
    assert FIELDS["task_schedule"].describe() == "a JSON object (or null)"
    assert FIELDS["ml_model_version"].describe() == "text up to 16 characters (or null)"
