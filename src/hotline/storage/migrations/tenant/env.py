"""Alembic environment for the tenant database(s); see hotline.storage.migrations."""

from alembic import context

from hotline.storage.migrations import run_in_context

run_in_context(context)
