"""Alembic environment: all logic lives in :func:`tradelog.db.migrate.run_environment`."""

from alembic import context
from tradelog.db.migrate import run_environment

run_environment(context)
