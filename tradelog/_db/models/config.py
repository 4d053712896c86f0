"""``user_trading_config``: one strategy and service configuration per user."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Integer, String, false, true
from sqlalchemy.orm import Mapped, mapped_column

from tradelog._db.base import Base, created_at, intpk, updated_at, user_fk


def _float(default: float) -> Any:
    return mapped_column(Float, default=default, server_default=repr(float(default)))


def _int(default: int) -> Any:
    return mapped_column(Integer, default=default, server_default=str(default))


def _bool(default: bool) -> Any:
    return mapped_column(default=default, server_default=true() if default else false())


def _str(length: int, default: str) -> Any:
    return mapped_column(String(length), default=default, server_default=default)


class UserTradingConfig(Base):
    """Strategy parameters, risk settings, order defaults and toggles for one user."""

    __tablename__ = "user_trading_config"

    id: Mapped[intpk]
    user_id: Mapped[int] = user_fk(unique=True)
    # strategy parameters
    rsi_period: Mapped[int] = _int(10)
    rsi_oversold: Mapped[float] = _float(30.0)
    rsi_extreme_oversold: Mapped[float] = _float(20.0)
    rsi_near_oversold: Mapped[float] = _float(40.0)
    # capital and position management
    user_capital: Mapped[float] = _float(200000.0)
    max_portfolio_size: Mapped[int] = _int(6)
    max_position_volume_ratio: Mapped[float] = _float(0.10)
    min_absolute_avg_volume: Mapped[int] = _int(10000)
    # chart quality filters
    chart_quality_enabled: Mapped[bool] = _bool(True)
    chart_quality_min_score: Mapped[float] = _float(50.0)
    chart_quality_max_gap_frequency: Mapped[float] = _float(25.0)
    chart_quality_min_daily_range_pct: Mapped[float] = _float(1.0)
    chart_quality_max_extreme_candle_frequency: Mapped[float] = _float(20.0)
    # risk management (optional)
    default_stop_loss_pct: Mapped[float | None] = mapped_column(Float)
    tight_stop_loss_pct: Mapped[float | None] = mapped_column(Float)
    min_stop_loss_pct: Mapped[float | None] = mapped_column(Float)
    default_target_pct: Mapped[float] = _float(0.10)
    strong_buy_target_pct: Mapped[float] = _float(0.12)
    excellent_target_pct: Mapped[float] = _float(0.15)
    # risk-reward ratios
    strong_buy_risk_reward: Mapped[float] = _float(3.0)
    buy_risk_reward: Mapped[float] = _float(2.5)
    excellent_risk_reward: Mapped[float] = _float(3.5)
    # order defaults
    default_exchange: Mapped[str] = _str(8, "NSE")
    default_product: Mapped[str] = _str(8, "CNC")
    default_order_type: Mapped[str] = _str(16, "MARKET")
    default_variety: Mapped[str] = _str(8, "AMO")
    default_validity: Mapped[str] = _str(8, "DAY")
    # behaviour toggles
    allow_duplicate_recommendations_same_day: Mapped[bool] = _bool(False)
    exit_on_ema9_or_rsi50: Mapped[bool] = _bool(True)
    min_combined_score: Mapped[int] = _int(25)
    # news sentiment
    news_sentiment_enabled: Mapped[bool] = _bool(True)
    news_sentiment_lookback_days: Mapped[int] = _int(30)
    news_sentiment_min_articles: Mapped[int] = _int(2)
    news_sentiment_pos_threshold: Mapped[float] = _float(0.25)
    news_sentiment_neg_threshold: Mapped[float] = _float(-0.25)
    # ML configuration
    ml_enabled: Mapped[bool] = _bool(False)
    ml_model_version: Mapped[str | None] = mapped_column(String(16))
    ml_confidence_threshold: Mapped[float] = _float(0.5)
    ml_combine_with_rules: Mapped[bool] = _bool(True)
    # scheduling preferences
    task_schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]
