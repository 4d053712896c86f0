"""Settings: defaults, environment parsing, validation and secret hiding."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from tradelog.config import Secret, Settings
from tradelog.exceptions import ConfigurationError
from tradelog.retention import RetentionJob


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///tradelog.db"
    assert settings.log_dir == Path("logs")
    assert settings.level == "INFO"
    assert settings.timezone == "Asia/Kolkata"
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.smtp_security == "starttls"
    assert settings.telegram_bot_token is None


def test_environment_is_parsed() -> None:
    """Every kind of variable is read and converted."""
    settings = Settings.from_env(
        {
            "TRADELOG_DATABASE_URL": "postgresql://u:p@db/x",
            "TRADELOG_LOG_DIR": "/var/log/tl",
            "TRADELOG_LEVEL": "debug",
            "TRADELOG_TIMEZONE": "Europe/London",
            "TRADELOG_SMTP_PORT": "465",
            "TRADELOG_SMTP_SECURITY": "TLS",
            "TRADELOG_CONSOLE": "no",
            "TRADELOG_FLUSH_INTERVAL": "0.5",
            "TRADELOG_TELEGRAM_API_URL": "http://127.0.0.1:9000/",
            "TRADELOG_SMTP_HOST": "  ",
        }
    )
    assert settings.log_dir == Path("/var/log/tl")
    assert settings.level == "DEBUG"
    assert settings.smtp_port == 465
    assert settings.smtp_security == "tls"
    assert settings.console is False
    assert settings.flush_interval == 0.5
    assert settings.telegram_api_url == "http://127.0.0.1:9000"
    assert settings.smtp_host is None
    assert settings.zone.key == "Europe/London"


def test_keywords_beat_environment() -> None:
    """Explicit options win over TRADELOG_* variables."""
    settings = Settings.from_env({"TRADELOG_LEVEL": "DEBUG"}, level="ERROR")
    assert settings.level == "ERROR"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRADELOG_LEVEL", "LOUD"),
        ("TRADELOG_TIMEZONE", "Mars/Olympus"),
        ("TRADELOG_SMTP_PORT", "seventy"),
        ("TRADELOG_SMTP_PORT", "70000"),
        ("TRADELOG_SMTP_SECURITY", "ssl3"),
        ("TRADELOG_CONSOLE", "maybe"),
        ("TRADELOG_DATABASE_URL", "not a url"),
        ("TRADELOG_BATCH_SIZE", "0"),
        ("TRADELOG_PARTITION_LOGS", "week"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    """A bad value fails at start-up with the variable's name in the message."""
    with pytest.raises(ConfigurationError, match=variable) as info:
        Settings.from_env({variable: value})
    assert info.value.variable == variable


def test_unknown_option_is_refused() -> None:
    """A misspelt keyword option is an error, not silently ignored."""
    with pytest.raises(ConfigurationError, match="databse_url"):
        Settings.from_env({}, databse_url="sqlite://")


def test_secrets_never_show() -> None:
    """Tokens and passwords are absent from repr and str; the DB password is masked."""
    settings = Settings.from_env(
        {
            "TRADELOG_TELEGRAM_BOT_TOKEN": "123456:AAH-supersecret-token-value-000000",
            "TRADELOG_SMTP_PASSWORD": "hunter2",
            "TRADELOG_DATABASE_URL": "postgresql://trader:pg-secret@db/prod",
        }
    )
    text = repr(settings) + str(settings)
    for secret in ("supersecret", "hunter2", "pg-secret"):
        assert secret not in text
    assert settings.smtp_password is not None
    assert settings.smtp_password.reveal() == "hunter2"
    assert settings.redacted_url() == "postgresql://trader:***@db/prod"


def test_plain_string_secret_keyword_is_wrapped() -> None:
    """Passing a secret as a plain keyword string still hides it."""
    settings = Settings(smtp_password="pw", telegram_bot_token="")
    assert isinstance(settings.smtp_password, Secret)
    assert settings.telegram_bot_token is None
    assert "pw" not in repr(settings.smtp_password)
    assert Secret("a") == Secret("a")
    assert len({Secret("a"), Secret("a")}) == 1


def test_replace_validates() -> None:
    """replace() returns a validated copy."""
    settings = Settings().replace(level="warning")
    assert settings.level == "WARNING"
    with pytest.raises(ConfigurationError):
        settings.replace(timezone="Nowhere/Land")


@pytest.mark.parametrize(
    ("option", "value", "variable"),
    [
        ("queue_size", -5, "TRADELOG_QUEUE_SIZE"),
        ("queue_size", 2.5, "TRADELOG_QUEUE_SIZE"),
        ("queue_size", True, "TRADELOG_QUEUE_SIZE"),
        ("smtp_port", 70000, "TRADELOG_SMTP_PORT"),
        ("smtp_port", "abc", "TRADELOG_SMTP_PORT"),
        ("flush_interval", 0, "TRADELOG_FLUSH_INTERVAL"),
        ("flush_interval", float("nan"), "TRADELOG_FLUSH_INTERVAL"),
        ("smtp_timeout", float("inf"), "TRADELOG_SMTP_TIMEOUT"),
        ("worker", 1, "TRADELOG_WORKER"),
        ("console", "maybe", "TRADELOG_CONSOLE"),
        ("log_dir", 5, "TRADELOG_LOG_DIR"),
        ("smtp_host", 25, "TRADELOG_SMTP_HOST"),
        ("database_url", None, "TRADELOG_DATABASE_URL"),
        ("smtp_password", 1234, "TRADELOG_SMTP_PASSWORD"),
    ],
)
def test_invalid_keyword_options_name_the_variable(
    option: str, value: object, variable: str
) -> None:
    """Options given in code are validated like the environment, never stored as given."""
    with pytest.raises(ConfigurationError, match=variable) as caught:
        Settings.from_env({}, **{option: value})
    assert caught.value.variable == variable


def test_text_keyword_options_parse_like_the_environment() -> None:
    """``worker="false"`` means false (not a truthy string); numbers and paths convert."""
    settings = Settings(
        worker="false", console="off", smtp_port="2525", flush_interval=1, log_dir="x/y"
    )
    assert settings.worker is False
    assert settings.console is False
    assert settings.smtp_port == 2525
    assert settings.flush_interval == 1.0
    assert isinstance(settings.flush_interval, float)
    assert settings.log_dir == Path("x/y")


def test_non_finite_numbers_in_the_environment_are_refused() -> None:
    """``nan`` and ``inf`` are not durations or sizes."""
    for raw in ("nan", "inf"):
        with pytest.raises(ConfigurationError, match="TRADELOG_FLUSH_INTERVAL"):
            Settings.from_env({"TRADELOG_FLUSH_INTERVAL": raw})


def test_operator_ids_and_retention_periods() -> None:
    """``TRADELOG_OPS_USER_IDS`` is a comma list (duplicates dropped); every retention period
    has a default and a variable; bad values name the variable."""
    settings = Settings.from_env(
        {
            "TRADELOG_OPS_USER_IDS": " 7, 3 7",
            "TRADELOG_AUDIT_LOGS_RETENTION_DAYS": "400",
            "TRADELOG_ERROR_SNAPSHOT": "off",
        }
    )
    assert settings.ops_user_ids == (7, 3)
    assert settings.audit_logs_retention_days == 400
    assert settings.error_snapshot is False
    defaults = Settings()
    assert defaults.ops_user_ids == ()
    assert defaults.error_snapshot is True
    assert (
        defaults.read_notifications_retention_days,
        defaults.unread_notifications_retention_days,
        defaults.deliveries_retention_days,
        defaults.task_executions_retention_days,
        defaults.audit_logs_retention_days,
        defaults.dead_letter_retention_days,
        defaults.spill_files_retention_days,
    ) == (30, 180, 30, 90, 365, 90, 30)
    assert Settings(ops_user_ids=[4, 4, 9]).ops_user_ids == (4, 9)
    for bad in ("7,admin", "0", "-3"):
        with pytest.raises(ConfigurationError, match="TRADELOG_OPS_USER_IDS"):
            Settings.from_env({"TRADELOG_OPS_USER_IDS": bad})
    with pytest.raises(ConfigurationError, match="TRADELOG_OPS_USER_IDS"):
        Settings(ops_user_ids=(True,))
    with pytest.raises(ConfigurationError, match="TRADELOG_DELIVERIES_RETENTION_DAYS"):
        Settings.from_env({"TRADELOG_DELIVERIES_RETENTION_DAYS": "0"})


def test_partition_logs_is_off_unless_asked() -> None:
    """``TRADELOG_PARTITION_LOGS`` defaults to ``off`` and takes ``day``; the retention job
    built from the settings follows it."""
    assert Settings().partition_logs == "off"
    settings = Settings.from_env({"TRADELOG_PARTITION_LOGS": "day"})
    assert settings.partition_logs == "day"
    engine = create_engine("sqlite://")
    try:
        assert RetentionJob.from_settings(settings, engine).partition_logs == "day"
    finally:
        engine.dispose()


def test_redact_values_are_secrets_from_the_environment_or_code() -> None:
    """``TRADELOG_REDACT_VALUES`` is a comma-separated list of secrets (never shown); code may
    give a list; every secret tradelog holds is among the values it masks."""
    settings = Settings.from_env(
        {"TRADELOG_REDACT_VALUES": " key-one-123 ,key-two-456,"},
        database_url="postgresql://u:db-Pass-77@h/d",
        smtp_password="smtp-secret-9",
    )
    assert [s.reveal() for s in settings.redact_values] == ["key-one-123", "key-two-456"]
    assert "key-one" not in repr(settings)
    assert set(settings.secret_values()) == {
        "key-one-123",
        "key-two-456",
        "smtp-secret-9",
        "db-Pass-77",
    }
    coded = Settings.from_env({}, redact_values=["in-code-value"])
    assert coded.secret_values() == ("in-code-value",)
    with pytest.raises(ConfigurationError, match="TRADELOG_REDACT_VALUES"):
        Settings.from_env({}, redact_values=[1234])
