"""Physical tenancy: where databases live, how sessions are bound, and that migrations match the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from hotline.events import CallStarted
from hotline.storage import (
    EventLog,
    InvalidTenantId,
    PlatformBase,
    Storage,
    StorageError,
    TenantBase,
    UnknownTenant,
    UtcDateTime,
)
from hotline.storage.migrations import current_revision, head_revision
from hotline.storage.schema import import_table_modules


async def test_sqlite_layout_and_pragmas(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    try:
        await storage.migrate()
        await storage.create_tenant_database("acme")
        assert (tmp_path / "platform.db").is_file()
        assert (tmp_path / "tenants" / "acme" / "tenant.db").is_file()
        assert storage.tenant_files_dir("acme") == tmp_path / "tenants" / "acme"
        async with storage.tenant_session("acme") as session:
            connection = await session.connection()
            pragmas = {
                name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
        assert pragmas == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 5000}
    finally:
        await storage.close()


async def test_tenant_ids_are_checked_and_unknown_tenants_have_no_session(storage: Storage) -> None:
    for bad in ("../etc", "Acme", "a", "acme-corp", "x" * 33, "1acme", ""):
        with pytest.raises(InvalidTenantId):
            async with storage.tenant_session(bad):
                pass
    with pytest.raises(UnknownTenant):
        async with storage.tenant_session("nobody"):
            pass
    if storage.backend == "sqlite":
        assert not (storage.data_dir / "tenants" / "nobody").exists()


def test_only_postgresql_urls_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="PostgreSQL"):
        Storage(tmp_path, "mysql://root@localhost/hotline")
    with pytest.raises(StorageError, match="PostgreSQL"):
        Storage(tmp_path, "sqlite:///elsewhere.db")


async def test_each_tenant_sees_only_its_own_rows(storage: Storage) -> None:
    """TEN-01: a session for one tenant has no handle to another's data, not even through raw SQL."""
    await storage.create_tenant_database("acme")
    await storage.create_tenant_database("beta")
    log = EventLog(storage)
    try:
        for tenant, count in (("acme", 3), ("beta", 5)):
            for i in range(count):
                await log.append(
                    CallStarted(
                        tenant=tenant, call_id=f"{tenant}-{i}", direction="inbound", ani="1", dnis="2"
                    )
                )
    finally:
        await log.close()
    for tenant, count in (("acme", 3), ("beta", 5)):
        async with storage.tenant_session(tenant) as session:
            raw = await session.execute(text("SELECT call_id FROM events ORDER BY seq"))
            assert [row[0] for row in raw] == [f"{tenant}-{i}" for i in range(count)]
    if storage.backend == "postgresql":
        async with storage.tenant_session("acme") as session:
            path = (await session.execute(text("SHOW search_path"))).scalar()
            assert str(path).strip('"') == storage.tenant_schema("acme")
    assert await storage.tenant_databases() == ["acme", "beta"]


async def test_migrations_reach_head_everywhere_and_are_idempotent(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    await storage.create_tenant_database("beta")
    assert await storage.migrate() == ["acme", "beta"]
    assert await storage.migrate() == ["acme", "beta"]
    await storage.create_tenant_database("acme")  # again: no error, nothing changes

    def revision(connection: Connection, schema: str | None) -> str | None:
        return current_revision(connection, schema)

    engine = storage._platform()
    async with engine.connect() as connection:
        assert await connection.run_sync(revision, storage.platform_schema) == head_revision("platform")
    for tenant in ("acme", "beta"):
        async with storage._tenant_engine(tenant).connect() as connection:
            assert await connection.run_sync(revision, storage.tenant_schema(tenant)) == head_revision(
                "tenant"
            )


def _not_alembic_version(name: str | None, kind: str, _parents: object) -> bool:
    return not (kind == "table" and name == "alembic_version")


async def test_migrations_create_exactly_the_tables_the_models_use(storage: Storage) -> None:
    """Every model change needs a migration: autogenerate finds no difference after upgrading."""
    modules = import_table_modules()
    assert {"hotline.storage.eventlog", "hotline.reporting.cdr", "hotline.tenancy.models"} <= set(modules)
    await storage.create_tenant_database("acme")

    def differences(connection: Connection, metadata: MetaData, schema: str | None) -> list[object]:
        if schema is not None:
            connection = connection.execution_options(schema_translate_map={None: schema})
            connection.exec_driver_sql(f'SET search_path TO "{schema}"')
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_name": _not_alembic_version},
        )
        found: list[object] = compare_metadata(context, metadata)
        if schema is not None:
            connection.exec_driver_sql("SET search_path TO DEFAULT")
        return found

    async with storage._platform().connect() as connection:
        diff = await connection.run_sync(differences, PlatformBase.metadata, storage.platform_schema)
        assert diff == []
    async with storage._tenant_engine("acme").connect() as connection:
        diff = await connection.run_sync(differences, TenantBase.metadata, storage.tenant_schema("acme"))
        assert diff == []


async def test_timestamps_come_back_aware_and_in_utc(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    scratch = Table(
        "scratch_times", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    moment = datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    async with storage.tenant_session("acme") as session:
        connection = await session.connection()
        await connection.run_sync(scratch.create)
        await session.execute(insert(scratch).values(id=1, at=moment))
    async with storage.tenant_session("acme") as session:
        stored = (await session.execute(select(scratch.c.at))).scalar_one()
    assert stored == moment
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)
    assert stored.astimezone(UTC).hour == 1
    with pytest.raises(StatementError, match="timezone-aware"):
        async with storage.tenant_session("acme") as session:
            await session.execute(insert(scratch).values(id=2, at=datetime(2024, 5, 1, 9, 30)))


async def test_a_failing_block_rolls_back(storage: Storage) -> None:
    await storage.create_tenant_database("acme")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with storage.tenant_session("acme") as session:
            await session.execute(
                text("INSERT INTO projection_state (name, last_seq) VALUES ('probe', 7)"),
            )
            raise Boom
    async with storage.tenant_session("acme") as session:
        assert (await session.execute(text("SELECT count(*) FROM projection_state"))).scalar() == 0
