"""Run the Alembic migrations from code: upgrade, downgrade, current revision and drift check.

The migration scripts live in the repository's top-level ``alembic/`` folder and ship inside the
wheel as ``tradelog/migrations``, so ``tradelog db upgrade`` works from a plain ``pip install``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, pool

from alembic import command
from tradelog._db.base import Base
from tradelog._db.engine import create_tradelog_engine
from tradelog.config import database_url_from_env
from tradelog.exceptions import ConfigurationError

__all__ = [
    "check",
    "current",
    "downgrade",
    "head",
    "run_environment",
    "script_location",
    "upgrade",
]


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, else the source tree."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "migrations", package_dir.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"tradelog migration scripts not found next to {package_dir}")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    location = script_location()
    config.set_main_option("script_location", str(location))
    config.set_main_option("version_locations", str(location / "versions"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _connected(url_or_engine: str | Engine) -> Iterator[Connection]:
    engine = (
        url_or_engine
        if isinstance(url_or_engine, Engine)
        else create_tradelog_engine(url_or_engine, poolclass=pool.NullPool)
    )
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: the newest)."""
    with _connected(url_or_engine) as connection:
        command.upgrade(_config(connection), revision)


def downgrade(url_or_engine: str | Engine, revision: str) -> None:
    """Downgrade the database to ``revision`` (``base`` removes every table)."""
    with _connected(url_or_engine) as connection:
        command.downgrade(_config(connection), revision)


def current(url_or_engine: str | Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with _connected(url_or_engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head() -> str:
    """The newest revision the scripts know."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    return heads[0]


def check(url_or_engine: str | Engine) -> list[Any]:
    """Differences between the database and the models (empty when they agree)."""
    _load_models()
    with _connected(url_or_engine) as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, Base.metadata))


def _load_models() -> None:
    import tradelog._db.models  # noqa: F401, PLC0415 - registers every table on Base.metadata


def run_environment(context: Any) -> None:
    """Body of Alembic's ``env.py``: online with a given connection or URL, or offline (SQL)."""
    _load_models()
    config = context.config
    options: dict[str, Any] = {
        "target_metadata": Base.metadata,
        "render_as_batch": True,
        "compare_type": True,
        "transaction_per_migration": True,
    }
    if context.is_offline_mode():
        url = database_url_from_env() or config.get_main_option("sqlalchemy.url")
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = database_url_from_env() or config.get_main_option("sqlalchemy.url")
    engine = create_tradelog_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **options)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()
