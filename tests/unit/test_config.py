"""Settings: defaults, environment parsing, validation and secret hiding."""

from __future__ import annotations

from pathlib import Path

import pytest

from tradelog.config import Secret, Settings
from tradelog.exceptions import ConfigurationError


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
