"""Per-user trading configuration (``user_trading_config``): read, validate, change, audit.

Every call names the acting user. A user reads and changes only their own configuration; an
admin reads and changes anyone's. The row is created on first read with the spec's defaults.

Changes are validated before anything is written: only known fields, the right type for each
(``True`` is not a number, ``"10"`` is not an integer; use :func:`parse_value` to turn text
into a value), ranges that make sense for the field (RSI thresholds 0..100, ratios and
percentages stored as fractions 0..1, order defaults from the broker's allowed values) and a few
cross-field rules (``rsi_extreme_oversold <= rsi_oversold <= rsi_near_oversold``, the news
sentiment negative threshold not above the positive one, ``min <= tight <= default`` stop-loss
percentages when they are set). A rejected change raises :class:`ConfigurationError` naming the
field and leaves the row untouched. Every accepted change adds an ``audit_logs`` row (actor, action
``update``, resource ``user_trading_config``) holding a before/after diff of the changed fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from tradelog._access import Actor, ActorLike, resolve_actor
from tradelog._db.models import User, UserTradingConfig
from tradelog._db.upsert import dialect_insert
from tradelog._logs.redact import redact_value
from tradelog.audit import diff, record_audit
from tradelog.exceptions import ConfigurationError, NotFound, PermissionDenied

__all__ = [
    "FIELDS",
    "RESOURCE_TYPE",
    "FieldSpec",
    "as_dict",
    "get_config",
    "parse_value",
    "update_config",
    "validate_changes",
]

RESOURCE_TYPE: Final = "user_trading_config"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """What a configuration field accepts."""

    kind: type  # int, float, bool, str or dict
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    max_length: int | None = None

    def describe(self) -> str:
        """A short human description of the accepted values (for errors and ``config show``)."""
        if self.choices:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is dict:
            text = "a JSON object"
        elif self.kind is str:
            text = f"text up to {self.max_length} characters"
        else:
            noun = "an integer" if self.kind is int else "a number"
            text = f"{noun} between {_num(self.minimum)} and {_num(self.maximum)}"
        return text + (" (or null)" if self.nullable else "")


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else str(value)


def _int(lo: int, hi: int) -> FieldSpec:
    return FieldSpec(int, lo, hi)


def _float(lo: float, hi: float, *, nullable: bool = False) -> FieldSpec:
    return FieldSpec(float, lo, hi, nullable=nullable)


def _choice(*values: str) -> FieldSpec:
    return FieldSpec(str, choices=values)


_BOOL: Final = FieldSpec(bool)
_PERCENT: Final = _float(0.0, 100.0)  # chart quality numbers are percentages / scores 0..100
_FRACTION: Final = _float(0.0, 1.0)  # targets and ratios are stored as fractions (0.10 = 10%)

#: Every field a caller may change, with what it accepts.
FIELDS: Final[Mapping[str, FieldSpec]] = {
    # strategy parameters
    "rsi_period": _int(2, 200),
    "rsi_oversold": _PERCENT,
    "rsi_extreme_oversold": _PERCENT,
    "rsi_near_oversold": _PERCENT,
    # capital and position management
    "user_capital": _float(1.0, 1e12),
    "max_portfolio_size": _int(1, 1000),
    "max_position_volume_ratio": _FRACTION,
    "min_absolute_avg_volume": _int(0, 10**12),
    # chart quality filters
    "chart_quality_enabled": _BOOL,
    "chart_quality_min_score": _PERCENT,
    "chart_quality_max_gap_frequency": _PERCENT,
    "chart_quality_min_daily_range_pct": _PERCENT,
    "chart_quality_max_extreme_candle_frequency": _PERCENT,
    # risk management (optional stop losses)
    "default_stop_loss_pct": _float(0.0, 1.0, nullable=True),
    "tight_stop_loss_pct": _float(0.0, 1.0, nullable=True),
    "min_stop_loss_pct": _float(0.0, 1.0, nullable=True),
    "default_target_pct": _FRACTION,
    "strong_buy_target_pct": _FRACTION,
    "excellent_target_pct": _FRACTION,
    # risk-reward ratios
    "strong_buy_risk_reward": _float(0.0, 100.0),
    "buy_risk_reward": _float(0.0, 100.0),
    "excellent_risk_reward": _float(0.0, 100.0),
    # order defaults
    "default_exchange": _choice("NSE", "BSE"),
    "default_product": _choice("CNC", "MIS", "NRML"),
    "default_order_type": _choice("MARKET", "LIMIT", "SL", "SL-M"),
    "default_variety": _choice("AMO", "REGULAR"),
    "default_validity": _choice("DAY", "IOC"),
    # behaviour toggles
    "allow_duplicate_recommendations_same_day": _BOOL,
    "exit_on_ema9_or_rsi50": _BOOL,
    "min_combined_score": _int(0, 100),
    # news sentiment
    "news_sentiment_enabled": _BOOL,
    "news_sentiment_lookback_days": _int(1, 365),
    "news_sentiment_min_articles": _int(0, 1000),
    "news_sentiment_pos_threshold": _float(-1.0, 1.0),
    "news_sentiment_neg_threshold": _float(-1.0, 1.0),
    # ML configuration
    "ml_enabled": _BOOL,
    "ml_model_version": FieldSpec(str, nullable=True, max_length=16),
    "ml_confidence_threshold": _FRACTION,
    "ml_combine_with_rules": _BOOL,
    # scheduling preferences
    "task_schedule": FieldSpec(dict, nullable=True),
}

#: (lower, higher) pairs that must stay ordered when both are set.
_ORDERED: Final = (
    ("rsi_extreme_oversold", "rsi_oversold"),
    ("rsi_oversold", "rsi_near_oversold"),
    ("news_sentiment_neg_threshold", "news_sentiment_pos_threshold"),
    ("min_stop_loss_pct", "tight_stop_loss_pct"),
    ("tight_stop_loss_pct", "default_stop_loss_pct"),
)

_TRUE_WORDS: Final = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS: Final = frozenset({"false", "no", "off", "0"})
_NULL_WORDS: Final = frozenset({"null", "none", ""})


def _invalid(name: str, spec: FieldSpec, value: Any) -> ConfigurationError:
    return ConfigurationError(f"{name} must be {spec.describe()}, got {value!r}", variable=name)


def _unknown(names: list[str]) -> ConfigurationError:
    return ConfigurationError(
        f"unknown trading config field(s): {', '.join(sorted(names))} (known: {', '.join(FIELDS)})",
        variable=sorted(names)[0],
    )


def _check(name: str, value: Any) -> Any:
    """Validate one typed value and return it normalised (floats as float, choices upper-case)."""
    spec = FIELDS[name]
    if value is None:
        if spec.nullable:
            return None
        raise _invalid(name, spec, value)
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise _invalid(name, spec, value)
        return value
    if spec.kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(name, spec, value)
        if spec.kind is int and not isinstance(value, int):
            if not (isinstance(value, float) and value.is_integer()):
                raise _invalid(name, spec, value)
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise _invalid(name, spec, value)
        if (spec.minimum is not None and value < spec.minimum) or (
            spec.maximum is not None and value > spec.maximum
        ):
            raise _invalid(name, spec, value)
        return spec.kind(value)
    if spec.kind is str:
        if not isinstance(value, str):
            raise _invalid(name, spec, value)
        if spec.choices:
            upper = value.strip().upper()
            if upper not in spec.choices:
                raise _invalid(name, spec, value)
            return upper
        text = value.strip()
        if not text or (spec.max_length is not None and len(text) > spec.max_length):
            raise _invalid(name, spec, value)
        return text
    # JSON object (task_schedule)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _invalid(name, spec, value)
    try:
        return redact_value(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError):
        raise _invalid(name, spec, value) from None


def validate_changes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``changes`` against ``current`` values; return the normalised changes.

    Raises :class:`ConfigurationError` for unknown fields, wrong types, values out of range and
    ordering rules broken by the merged result.
    """
    unknown = [name for name in changes if name not in FIELDS]
    if unknown:
        raise _unknown(unknown)
    clean = {name: _check(name, value) for name, value in changes.items()}
    merged = {**current, **clean}
    for low, high in _ORDERED:
        lo, hi = merged.get(low), merged.get(high)
        if lo is not None and hi is not None and lo > hi and (low in clean or high in clean):
            raise ConfigurationError(
                f"{low} ({_num(lo)}) must not be greater than {high} ({_num(hi)})",
                variable=low if low in clean else high,
            )
    return clean


def parse_value(name: str, raw: str) -> Any:
    """Turn the text form of a value (as typed on a command line) into the field's type.

    ``null``/``none``/empty clears a nullable field, booleans accept true/false/yes/no/on/off/1/0,
    ``task_schedule`` takes a JSON object. The result still goes through :func:`validate_changes`.
    """
    if name not in FIELDS:
        raise _unknown([name])
    spec = FIELDS[name]
    text = raw.strip()
    if spec.nullable and text.lower() in _NULL_WORDS:
        return None
    if spec.kind is bool:
        if text.lower() in _TRUE_WORDS:
            return True
        if text.lower() in _FALSE_WORDS:
            return False
        raise _invalid(name, spec, raw)
    if spec.kind in (int, float):
        try:
            return int(text) if spec.kind is int else float(text)
        except ValueError:
            raise _invalid(name, spec, raw) from None
    if spec.kind is dict:
        try:
            return json.loads(text)
        except ValueError:
            raise _invalid(name, spec, raw) from None
    return raw


def as_dict(config: UserTradingConfig) -> dict[str, Any]:
    """Every configurable field of ``config`` as a plain dict (field order as in :data:`FIELDS`)."""
    return {name: getattr(config, name) for name in FIELDS}


def _authorise(session: Session, actor: ActorLike, user_id: int, verb: str) -> Actor:
    who = resolve_actor(session, actor)
    if not who.is_admin and who.id != user_id:
        raise PermissionDenied(f"user {who.id} may not {verb} the trading config of user {user_id}")
    if session.get(User, user_id) is None:
        raise NotFound(f"no user with id {user_id}")
    return who


def _load_or_create(session: Session, user_id: int) -> UserTradingConfig:
    query = select(UserTradingConfig).where(UserTradingConfig.user_id == user_id)
    found = session.scalars(query).one_or_none()
    if found is not None:
        return found
    # INSERT ... ON CONFLICT DO NOTHING inside the caller's transaction: a row created by another
    # process meanwhile wins, and nothing here commits behind the caller's back.
    session.execute(
        dialect_insert(session, UserTradingConfig)
        .values(user_id=user_id)
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    return session.scalars(query).one()


def get_config(session: Session, actor: ActorLike, user_id: int) -> UserTradingConfig:
    """The trading config of ``user_id`` as seen by ``actor``, created with defaults if missing.

    A newly created row is flushed, not committed: the caller's transaction decides.
    Raises :class:`PermissionDenied` (someone else's config, not an admin) or :class:`NotFound`.
    """
    _authorise(session, actor, user_id, "read")
    return _load_or_create(session, user_id)


def update_config(
    session: Session, actor: ActorLike, user_id: int, **changes: Any
) -> dict[str, Any]:
    """Validate and apply ``changes`` to ``user_id``'s config; return the before/after diff.

    Fields whose value does not change are not written and not audited; an empty diff writes
    nothing. The caller commits (the change and its audit row land together or not at all).
    """
    who = _authorise(session, actor, user_id, "change")
    config = _load_or_create(session, user_id)
    before = as_dict(config)
    clean = validate_changes(before, changes)
    for name, value in clean.items():
        setattr(config, name, value)
    changed = diff(before, as_dict(config))
    if changed:
        session.flush()
        record_audit(
            session,
            user_id=who.id,
            action="update",
            resource_type=RESOURCE_TYPE,
            resource_id=config.id,
            changes={"target_user_id": user_id, "fields": changed},
        )
        session.flush()
    return changed
