"""Run the Alembic migrations from code: upgrade, downgrade, current revision, drift check and
the start-up comparison of a database with the migrations.

The migration scripts live in the repository's top-level ``alembic/`` folder and ship inside the
wheel as ``tradelog/migrations``, so ``tradelog db upgrade`` works from a plain ``pip install``.

**tradelog's corner of a shared database.** tradelog records its revision in a version table of
its own, ``tradelog_alembic_version`` (:data:`VERSION_TABLE`), never in ``alembic_version``,
which belongs to the host's own Alembic history: a host revision is never read as tradelog's and
tradelog's upgrades never touch the host's. With a schema (``TRADELOG_DB_SCHEMA``, PostgreSQL),
the schema is created if missing and both the tables and the version table live in it
(see :mod:`tradelog._db.engine`).

Installs from before the version table of its own kept tradelog's revision in
``alembic_version``. The first upgrade or downgrade moves it: when ``alembic_version`` holds one
of tradelog's revisions and the tables of that revision are there, the revision is recorded in
``tradelog_alembic_version`` and removed from ``alembic_version`` (dropped when nothing else
is left in it). Reading the revision (:func:`current`) sees such a legacy revision without
changing anything.

A database with no tradelog revision yet whose tables already use tradelog's names (a host's
own ``users`` or ``orders``) is refused before anything is created, naming the tables and
``TRADELOG_DB_SCHEMA``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Engine, inspect, pool, text

from tradelog._db.base import Base
from tradelog._db.engine import create_tradelog_engine, normalize_url, schema_of
from tradelog._db.search_index import SEARCH_INDEXES
from tradelog.config import database_url_from_env, db_schema_from_env
from tradelog.exceptions import ConfigurationError

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (with Mako and Pygments under it) is imported only where a migration runs, is compared
# or stamped, or a legacy revision is recognised: reading the revision at start-up needs none of
# it, and leaving it out takes 0.1-0.3 s off every process that imports tradelog (the CLI, a
# helper process, a spawned worker).

__all__ = [
    "LEGACY_VERSION_TABLE",
    "VERSION_TABLE",
    "SchemaStatus",
    "check",
    "current",
    "downgrade",
    "head",
    "run_environment",
    "schema_status",
    "script_location",
    "straight_line_head",
    "upgrade",
]

VERSION_TABLE: Final = "tradelog_alembic_version"
"""tradelog's own Alembic version table (in its schema when one is configured)."""
LEGACY_VERSION_TABLE: Final = "alembic_version"
"""Alembic's default table: the host's; tradelog's revision sat there before 0006."""
_LEGACY_TABLES: Final = {
    "0001_initial": ("users", "orders", "activity"),
    "0002_phase1": ("users", "service_logs", "error_logs", "service_status"),
    "0003_error_fingerprint": ("users", "service_logs", "error_logs"),
    "0004_notification_outbox": ("users", "service_logs", "notification_deliveries"),
    "0005_error_groups": ("users", "service_logs", "error_groups"),
}
"""Tables that must exist for a legacy ``alembic_version`` revision to be taken as tradelog's."""


def script_location() -> Path:
    """Where the migration scripts are: inside the installed package, else the source tree."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "migrations", package_dir.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"tradelog migration scripts not found next to {package_dir}")


def _config(connection: Connection | None = None, schema: str | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - see the note on Alembic above

    config = Config()
    location = script_location()
    config.set_main_option("script_location", str(location))
    config.set_main_option("version_locations", str(location / "versions"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
        config.attributes["tradelog_schema"] = schema
    return config


def _version_options(schema: str | None) -> dict[str, Any]:
    return {"version_table": VERSION_TABLE, "version_table_schema": schema}


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate looks only at tradelog's own tables, never at the host's beside them."""
    if type_ == "table":
        return name in Base.metadata.tables
    return True


def _for_dialect(dialect: str) -> Callable[..., bool]:
    """Leave out of the comparison what the models create on another database only (an index
    declared with ``.ddl_if(dialect=...)``), and the keyword-search indexes where they are
    missing (:mod:`tradelog._db.search_index`: they are optional)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        if type_ == "index" and name in SEARCH_INDEXES:
            # Optional: absent without pg_trgm, or turned off (`tradelog db search-index`).
            return dialect == "postgresql" and (reflected or other is not None)
        condition = getattr(obj, "_ddl_if", None)
        if type_ == "index" and not reflected and condition is not None:
            return condition.dialect in (None, dialect)
        return True

    return include


@contextmanager
def _connected(url_or_engine: str | Engine, schema: str | None) -> Iterator[Connection]:
    if isinstance(url_or_engine, Engine):
        engine = url_or_engine
    else:
        engine = create_tradelog_engine(url_or_engine, schema=schema, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # A migration is an operator's step and may build an index over millions of
                # rows: the statement bound of a bounded engine (the CLI's) does not apply.
                connection.execute(text("SET LOCAL statement_timeout = 0"))
            yield connection
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


def _schema(url_or_engine: str | Engine, schema: str | None) -> str | None:
    if isinstance(url_or_engine, Engine):
        return schema_of(url_or_engine) or schema
    return schema


def _ensure_schema(connection: Connection, schema: str | None) -> None:
    if schema:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def upgrade(
    url_or_engine: str | Engine, revision: str = "head", *, schema: str | None = None
) -> None:
    """Upgrade the database to ``revision`` (default: the newest), in ``schema`` when given
    (PostgreSQL; an engine made with a schema brings its own)."""
    schema = _schema(url_or_engine, schema)
    with _connected(url_or_engine, schema) as connection:
        _ensure_schema(connection, schema)
        from alembic import command  # noqa: PLC0415 - see the note on Alembic above

        command.upgrade(_config(connection, schema), revision)


def downgrade(url_or_engine: str | Engine, revision: str, *, schema: str | None = None) -> None:
    """Downgrade the database to ``revision`` (``base`` removes every table)."""
    from alembic import command  # noqa: PLC0415 - see the note on Alembic above

    schema = _schema(url_or_engine, schema)
    with _connected(url_or_engine, schema) as connection:
        command.downgrade(_config(connection, schema), revision)


def current(url_or_engine: str | Engine, *, schema: str | None = None) -> str | None:
    """tradelog's revision in the database, or None when it has none (a host's revision in
    ``alembic_version`` is not tradelog's)."""
    schema = _schema(url_or_engine, schema)
    with _connected(url_or_engine, schema) as connection:
        return _read_revision(connection, schema)


_SCRIPT_NAMES: Final = re.compile(
    r"""^(down_revision|revision)\b[^=\n]*=\s*(?:"([^"\n]*)"|'([^'\n]*)'|None)\s*$""",
    re.MULTILINE,
)
_SCRIPT_FILE: Final = re.compile(r"^(?!\.#|__init__).*\.py$")
"""The files Alembic reads as revision scripts (it skips editor lock files and ``__init__``)."""


@cache
def head() -> str:
    """The newest revision the scripts know: read from the scripts' own lines when they are one
    straight line (:func:`straight_line_head`), else by Alembic. The scripts do not change while
    a process runs."""
    versions = script_location() / "versions"
    try:
        texts = [
            path.read_text("utf-8")
            for path in sorted(versions.iterdir())
            if _SCRIPT_FILE.match(path.name) and path.is_file()
        ]
    except (OSError, UnicodeDecodeError):
        return _alembic_head()
    return straight_line_head(texts) or _alembic_head()


def straight_line_head(scripts: list[str]) -> str | None:
    """The head of revision scripts (their texts) that form one straight line, read from each
    script's one ``revision`` and one ``down_revision`` line; None when they do not (a merge,
    a branch, a parent that is missing, a line this does not read or finds twice)."""
    parents: dict[str, str | None] = {}
    for text_ in scripts:
        found: dict[str, list[str | None]] = {"revision": [], "down_revision": []}
        for match in _SCRIPT_NAMES.finditer(text_):
            found[match[1]].append(match[2] if match[2] is not None else match[3])
        if len(found["revision"]) != 1 or len(found["down_revision"]) != 1:
            return None
        [revision], [parent] = found["revision"], found["down_revision"]
        if not revision or parent == "" or revision in parents:
            return None
        parents[revision] = parent
    roots = [revision for revision, parent in parents.items() if parent is None]
    children = [parent for parent in parents.values() if parent is not None]
    if len(roots) != 1 or len(set(children)) != len(children) or not set(children) <= set(parents):
        return None
    heads = set(parents) - set(children)
    return heads.pop() if len(heads) == 1 else None


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see the note on Alembic above

    heads = ScriptDirectory.from_config(_config()).get_heads()
    return str(heads[0])


def check(url_or_engine: str | Engine, *, schema: str | None = None) -> list[Any]:
    """Differences between tradelog's tables and the models (empty when they agree); tables
    that are not tradelog's are not compared."""
    from alembic.autogenerate import compare_metadata  # noqa: PLC0415 - see the note on Alembic
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    _load_models()
    schema = _schema(url_or_engine, schema)
    with _connected(url_or_engine, schema) as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": False,
                "include_name": _ours,
                "include_object": _for_dialect(connection.dialect.name),
                **_version_options(schema),
            },
        )
        with warnings.catch_warnings():
            # SQLite cannot reflect expression indexes; the ones the models declare are
            # PostgreSQL's only and left out by ``_for_dialect`` anyway.
            warnings.filterwarnings(
                "ignore", message="autogenerate skipping metadata-specified expression-based"
            )
            return list(compare_metadata(context, Base.metadata))


@dataclass(frozen=True)
class SchemaStatus:
    """How a database compares with the migrations (:func:`schema_status`)."""

    revision: str | None
    head: str

    @property
    def ok(self) -> bool:
        """The database is at the newest revision."""
        return self.revision == self.head

    def describe(self, where: str) -> str:
        """One line saying what is wrong and what to run."""
        if self.ok:
            return f"database {where} is at tradelog revision {self.head}"
        state = (
            "has no tradelog schema"
            if self.revision is None
            else f"is at tradelog revision {self.revision}, behind {self.head}"
        )
        return f"database {where} {state}: run `tradelog db upgrade`"


def schema_status(
    url_or_engine: str | Engine, *, schema: str | None = None, timeout: float | None = None
) -> SchemaStatus:
    """Compare the database with the migration scripts. With ``timeout`` (seconds, for a URL)
    connecting and each statement are bounded by it."""
    if timeout is not None and not isinstance(url_or_engine, Engine):
        engine = create_tradelog_engine(
            url_or_engine,
            schema=schema,
            poolclass=pool.NullPool,
            connect_args=_bounded_connect_args(url_or_engine, timeout),
        )
        try:
            return SchemaStatus(current(engine), head())
        finally:
            engine.dispose()
    return SchemaStatus(current(url_or_engine, schema=schema), head())


def _bounded_connect_args(url: str, timeout: float) -> dict[str, Any]:
    if normalize_url(url).get_backend_name() == "sqlite":
        return {"timeout": timeout}
    milliseconds = max(1, int(timeout * 1000))
    return {
        "connect_timeout": max(1, round(timeout)),
        "options": f"-c statement_timeout={milliseconds}",
    }


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see the note on Alembic above

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _has_table(connection: Connection, name: str, schema: str | None) -> bool:
    return bool(inspect(connection).has_table(name, schema=schema))


def _legacy_revision(connection: Connection, schema: str | None) -> str | None:
    """tradelog's revision as older installs recorded it in ``alembic_version``, or None."""
    if not _has_table(connection, LEGACY_VERSION_TABLE, schema):
        return None
    table = _qualified(LEGACY_VERSION_TABLE, schema)
    found = connection.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
    known = _known_revisions()
    ours = [str(revision) for revision in found if revision in known]
    if len(ours) != 1:
        return None
    needed = _LEGACY_TABLES.get(ours[0], ("users", "service_logs"))
    if not all(_has_table(connection, name, schema) for name in needed):
        return None
    return ours[0]


def _qualified(table: str, schema: str | None) -> str:
    return f'"{schema}".{table}' if schema else table


def _read_revision(connection: Connection, schema: str | None) -> str | None:
    """The revision in tradelog's version table (read with plain SQL: nothing is logged)."""
    if _has_table(connection, VERSION_TABLE, schema):
        table = _qualified(VERSION_TABLE, schema)
        found = connection.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
        return str(found[0]) if found else None
    return _legacy_revision(connection, schema)


def _adopt_legacy_revision(connection: Connection, schema: str | None) -> None:
    """Move tradelog's revision from ``alembic_version`` to its own table (module docstring)."""
    if _has_table(connection, VERSION_TABLE, schema):
        return
    revision = _legacy_revision(connection, schema)
    if revision is None:
        return
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 - see the note above
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    context = MigrationContext.configure(connection, opts=_version_options(schema))
    context.stamp(ScriptDirectory.from_config(_config()), revision)
    table = _qualified(LEGACY_VERSION_TABLE, schema)
    connection.execute(text(f"DELETE FROM {table} WHERE version_num = :r"), {"r": revision})
    left = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    if not left:
        connection.execute(text(f"DROP TABLE {table}"))


def _refuse_foreign_tables(connection: Connection, schema: str | None) -> None:
    """A database without a tradelog revision must not already have tables of its names."""
    if _read_revision(connection, schema) is not None:
        return
    _load_models()
    existing = set(inspect(connection).get_table_names(schema=schema))
    clash = sorted(existing & set(Base.metadata.tables))
    if clash:
        where = f"schema {schema!r}" if schema else "the database's default schema"
        raise ConfigurationError(
            f"{where} already has tables named like tradelog's ({', '.join(clash)}) but no "
            f"tradelog revision ({VERSION_TABLE}): they are not tradelog's. Keep tradelog in a "
            "schema of its own with TRADELOG_DB_SCHEMA=tradelog (PostgreSQL)"
        )


def _load_models() -> None:
    import tradelog._db.models  # noqa: F401, PLC0415 - registers every table on Base.metadata


def run_environment(context: Any) -> None:
    """Body of Alembic's ``env.py``: online with a given connection or URL, or offline (SQL).

    Without a connection handed over by :func:`upgrade` (``alembic upgrade head``), the URL
    and schema come from ``TRADELOG_DATABASE_URL`` / ``TRADELOG_DB_SCHEMA``.
    """
    _load_models()
    config = context.config
    options: dict[str, Any] = {
        "target_metadata": Base.metadata,
        "render_as_batch": True,
        "compare_type": True,
        "transaction_per_migration": True,
        "include_name": _ours,
    }
    if context.is_offline_mode():
        url = database_url_from_env() or config.get_main_option("sqlalchemy.url")
        schema = db_schema_from_env()
        context.configure(url=url, literal_binds=True, **options, **_version_options(schema))
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        schema = config.attributes.get("tradelog_schema")
        _prepare(connection, schema)
        context.configure(connection=connection, **options, **_version_options(schema))
        with context.begin_transaction():
            context.run_migrations()
        return
    url = database_url_from_env() or config.get_main_option("sqlalchemy.url")
    schema = db_schema_from_env()
    engine = create_tradelog_engine(url, schema=schema, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _prepare(connection, schema)
            connection.commit()
            context.configure(connection=connection, **options, **_version_options(schema))
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


def _prepare(connection: Connection, schema: str | None) -> None:
    """Before any migration runs: the schema exists, a legacy revision is adopted, and a
    database of someone else's tables with tradelog's names is refused."""
    _ensure_schema(connection, schema)
    _adopt_legacy_revision(connection, schema)
    _refuse_foreign_tables(connection, schema)
