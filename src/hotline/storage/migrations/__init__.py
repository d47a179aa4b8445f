"""Alembic migrations, run programmatically (no alembic.ini).

Two script locations: `platform/` for the platform database and `tenant/` for every tenant database.
`upgrade(connection, "platform" | "tenant", schema)` brings one database to the latest revision on a
synchronous connection (call it through `AsyncConnection.run_sync`); `Storage.migrate()` and
`Storage.create_tenant_database()` are the usual entry points (and `hotline migrate`).

To write a new revision, add a file under `<location>/versions/` whose `down_revision` is the current head
(`head_revision(location)`); keep tables free of schema names: the runner maps them per database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent
Location = Literal["platform", "tenant"]


def alembic_config(
    location: Location, connection: Connection | None = None, schema: str | None = None
) -> Config:
    if location not in ("platform", "tenant"):
        raise ValueError(f"unknown migration location {location!r}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR / location))
    config.attributes["connection"] = connection
    config.attributes["version_table_schema"] = schema
    return config


def upgrade(connection: Connection, location: Location, schema: str | None) -> None:
    """Upgrade one database (or PostgreSQL schema) to head, inside the connection's transaction."""
    command.upgrade(alembic_config(location, connection, schema), "head")


def head_revision(location: Location) -> str | None:
    return ScriptDirectory.from_config(alembic_config(location)).get_current_head()


def current_revision(connection: Connection, schema: str | None) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


def run_in_context(context: Any) -> None:
    """Body of each location's env.py: migrate on the connection the runner handed over."""
    connection = context.config.attributes.get("connection")
    if connection is None or context.is_offline_mode():
        raise RuntimeError(
            "Hotline migrations run on a live database through Storage.migrate() (`hotline migrate`)"
        )
    schema = context.config.attributes.get("version_table_schema")
    if schema is not None:
        connection = connection.execution_options(schema_translate_map={None: schema})
    context.configure(connection=connection, version_table_schema=schema, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
