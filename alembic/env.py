"""Alembic environment: all logic lives in :func:`tradelog._db.migrate.run_environment`."""

from alembic import context
from tradelog._db.migrate import run_environment

run_environment(context)
