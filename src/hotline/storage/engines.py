"""Database engines and sessions with physical tenancy (principle 6, TEN-01).

    storage = Storage(data_dir)                                  # SQLite files (the single-node default)
    storage = Storage(data_dir, "postgresql://u@host/hotline")   # PostgreSQL schemas (hosting)

    await storage.migrate()                      # platform + every tenant database, to the latest revision
    await storage.create_tenant_database("acme")  # new tenant: its own file or schema, migrated
    async with storage.platform_session() as session: ...
    async with storage.tenant_session("acme") as session: ...

Layout:

- SQLite: `data_dir/platform.db`, and `data_dir/tenants/<tenant>/tenant.db` per tenant, in WAL mode with
  synchronous=NORMAL (a committed transaction survives a process kill; a power cut may lose the last
  few), foreign keys on and a busy timeout.
- PostgreSQL: one database; schema `platform` and one schema `tenant_<tenant>` per tenant. Tables carry
  no schema name; each session maps them to its own schema and sets `search_path` for its transactions.

A session comes from `platform_session()` or `tenant_session(tenant_id)` only, and is bound to that one
database or schema: code handed a tenant session holds no handle to any other tenant's data. The session
commits when the block ends normally and rolls back when it raises.

Tenant ids are slugs: a lowercase letter, then lowercase letters, digits or `_`, 2-32 characters.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, SessionTransaction

from hotline.storage.migrations import upgrade

TENANT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
SCHEMA_PREFIX_PATTERN = re.compile(r"^([a-z][a-z0-9_]{0,15})?$")
PLATFORM_SCHEMA = "platform"
TENANT_SCHEMA_PREFIX = "tenant_"

Backend = Literal["sqlite", "postgresql"]


class StorageError(Exception):
    """A storage problem worth a sentence to the operator."""


class InvalidTenantId(StorageError, ValueError):
    pass


class UnknownTenant(StorageError, LookupError):
    """The tenant has no database: create it with `create_tenant_database` (via tenancy) first."""


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidTenantId(
            f"tenant id {tenant_id!r} must be 2-32 characters: a lowercase letter, then lowercase "
            "letters, digits or '_'"
        )
    return tenant_id


def _postgresql_url(database_url: str) -> str:
    try:
        url = make_url(database_url)
    except ArgumentError as error:
        raise StorageError(f"database URL {database_url!r} is not a URL: {error}") from None
    backend = url.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise StorageError(
            f"database URL must name PostgreSQL (postgresql://...), not {backend!r}; "
            "SQLite databases live in the data directory without a URL"
        )
    return url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    return on_connect


def _quote_identifier(name: str) -> str:
    # Only ever called with names built from validated slugs; quoting is belt and braces.
    return '"' + name.replace('"', '""') + '"'


class Storage:
    """Engines for the platform database and for each tenant's database. Create one per process."""

    def __init__(
        self,
        data_dir: Path | str,
        database_url: str | None = None,
        *,
        schema_prefix: str = "",
        sqlite_busy_timeout_ms: int = 5000,
    ) -> None:
        self.data_dir = Path(data_dir)
        if not SCHEMA_PREFIX_PATTERN.fullmatch(schema_prefix):
            raise StorageError(f"schema prefix {schema_prefix!r} must be a short lowercase identifier")
        self.schema_prefix = schema_prefix
        self._busy_timeout_ms = sqlite_busy_timeout_ms
        self._pg_url = _postgresql_url(database_url) if database_url else None
        self.backend: Backend = "postgresql" if self._pg_url else "sqlite"
        self._platform_engine: AsyncEngine | None = None
        self._shared_pg_engine: AsyncEngine | None = None
        self._tenant_engines: dict[str, AsyncEngine] = {}
        self._known_tenants: set[str] = set()
        self._tenant_creation_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------------------------- naming

    @property
    def platform_schema(self) -> str | None:
        return f"{self.schema_prefix}{PLATFORM_SCHEMA}" if self.backend == "postgresql" else None

    def tenant_schema(self, tenant_id: str) -> str | None:
        validate_tenant_id(tenant_id)
        if self.backend != "postgresql":
            return None
        return f"{self.schema_prefix}{TENANT_SCHEMA_PREFIX}{tenant_id}"

    def tenant_files_dir(self, tenant_id: str) -> Path:
        """The tenant's own folder under the data directory (its SQLite file, recordings, exports)."""
        return self.data_dir / "tenants" / validate_tenant_id(tenant_id)

    def _tenant_sqlite_path(self, tenant_id: str) -> Path:
        return self.tenant_files_dir(tenant_id) / "tenant.db"

    # ------------------------------------------------------------------------------------ engines

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("storage is closed")

    def _sqlite_engine(self, path: Path) -> AsyncEngine:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(self._busy_timeout_ms))
        return engine

    def _pg_engine(self) -> AsyncEngine:
        if self._shared_pg_engine is None:
            assert self._pg_url is not None
            # One pool for the platform and all tenant schemas, so connections do not grow with tenants.
            self._shared_pg_engine = create_async_engine(
                self._pg_url, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
        return self._shared_pg_engine

    def _platform(self) -> AsyncEngine:
        self._check_open()
        if self._platform_engine is None:
            if self.backend == "postgresql":
                self._platform_engine = self._pg_engine().execution_options(
                    schema_translate_map={None: self.platform_schema}
                )
            else:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self._platform_engine = self._sqlite_engine(self.data_dir / "platform.db")
        return self._platform_engine

    def _tenant_engine(self, tenant_id: str) -> AsyncEngine:
        self._check_open()
        engine = self._tenant_engines.get(tenant_id)
        if engine is None:
            if self.backend == "postgresql":
                engine = self._pg_engine().execution_options(
                    schema_translate_map={None: self.tenant_schema(tenant_id)}
                )
            else:
                engine = self._sqlite_engine(self._tenant_sqlite_path(tenant_id))
            self._tenant_engines[tenant_id] = engine
        return engine

    # ----------------------------------------------------------------------------------- sessions

    @asynccontextmanager
    async def platform_session(self) -> AsyncIterator[AsyncSession]:
        async with self._session(self._platform(), self.platform_schema) as session:
            yield session

    @asynccontextmanager
    async def tenant_session(self, tenant_id: str) -> AsyncIterator[AsyncSession]:
        """A session on `tenant_id`'s database only. Raises UnknownTenant if it has none."""
        validate_tenant_id(tenant_id)
        if not await self.tenant_database_exists(tenant_id):
            raise UnknownTenant(f"tenant {tenant_id!r} has no database")
        async with self._session(self._tenant_engine(tenant_id), self.tenant_schema(tenant_id)) as session:
            yield session

    @asynccontextmanager
    async def _session(self, engine: AsyncEngine, schema: str | None) -> AsyncIterator[AsyncSession]:
        session = AsyncSession(bind=engine, expire_on_commit=False)
        if schema is not None:
            # Raw SQL in this session resolves unqualified names in its own schema only.
            statement = f"SET LOCAL search_path TO {_quote_identifier(schema)}"

            def set_search_path(
                _session: Session, _transaction: SessionTransaction, conn: Connection
            ) -> None:
                conn.exec_driver_sql(statement)

            event.listen(session.sync_session, "after_begin", set_search_path)
        try:
            async with session.begin():
                yield session
        finally:
            await session.close()

    # --------------------------------------------------------------------------------- migrations

    async def migrate(self) -> list[str]:
        """Upgrade the platform database and every tenant database; returns the tenants migrated."""
        await self.migrate_platform()
        tenants = await self.tenant_databases()
        for tenant_id in tenants:
            await self._migrate_tenant(tenant_id)
        return tenants

    async def migrate_platform(self) -> None:
        engine = self._platform()
        schema = self.platform_schema
        async with engine.begin() as connection:
            if schema is not None:
                await connection.run_sync(self._prepare_pg_schema, schema)
            await connection.run_sync(upgrade, "platform", schema)

    async def create_tenant_database(self, tenant_id: str) -> None:
        """Create the tenant's file or schema if needed and bring it to the latest revision (idempotent)."""
        validate_tenant_id(tenant_id)
        self._check_open()
        async with self._tenant_creation_lock:
            if self.backend == "sqlite":
                self.tenant_files_dir(tenant_id).mkdir(parents=True, exist_ok=True)
            await self._migrate_tenant(tenant_id)
            self._known_tenants.add(tenant_id)

    async def _migrate_tenant(self, tenant_id: str) -> None:
        engine = self._tenant_engine(tenant_id)
        schema = self.tenant_schema(tenant_id)
        async with engine.begin() as connection:
            if schema is not None:
                await connection.run_sync(self._prepare_pg_schema, schema)
            await connection.run_sync(upgrade, "tenant", schema)

    @staticmethod
    def _prepare_pg_schema(connection: Connection, schema: str) -> None:
        quoted = _quote_identifier(schema)
        # Serialise concurrent migrations of one schema (several nodes starting at once).
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"hotline:{schema}"})
        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        connection.exec_driver_sql(f"SET LOCAL search_path TO {quoted}")

    # ------------------------------------------------------------------------------------ tenants

    async def tenant_database_exists(self, tenant_id: str) -> bool:
        validate_tenant_id(tenant_id)
        if tenant_id in self._known_tenants:
            return True
        if self.backend == "sqlite":
            exists = self._tenant_sqlite_path(tenant_id).is_file()
        else:
            async with self._pg_engine().connect() as connection:
                found = await connection.scalar(
                    text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :name"),
                    {"name": self.tenant_schema(tenant_id)},
                )
            exists = found is not None
        if exists:
            self._known_tenants.add(tenant_id)
        return exists

    async def tenant_databases(self) -> list[str]:
        """Tenants that have a database, found on disk or in the PostgreSQL catalogue."""
        self._check_open()
        if self.backend == "sqlite":
            root = self.data_dir / "tenants"
            if not root.is_dir():
                return []
            return sorted(
                entry.name
                for entry in root.iterdir()
                if TENANT_ID_PATTERN.fullmatch(entry.name) and (entry / "tenant.db").is_file()
            )
        prefix = f"{self.schema_prefix}{TENANT_SCHEMA_PREFIX}"
        async with self._pg_engine().connect() as connection:
            rows = await connection.execute(
                text("SELECT schema_name FROM information_schema.schemata WHERE left(schema_name, :n) = :p"),
                {"n": len(prefix), "p": prefix},
            )
            names = [row[0][len(prefix) :] for row in rows]
        return sorted(name for name in names if TENANT_ID_PATTERN.fullmatch(name))

    # ------------------------------------------------------------------------------------ closing

    async def close(self) -> None:
        self._closed = True
        if self.backend == "sqlite":
            engines = list(self._tenant_engines.values())
            if self._platform_engine is not None:
                engines.append(self._platform_engine)
            for engine in engines:
                await engine.dispose()
        elif self._shared_pg_engine is not None:
            await self._shared_pg_engine.dispose()
        self._tenant_engines.clear()
        self._platform_engine = None
        self._shared_pg_engine = None
