"""Declarative bases for the two kinds of database, and column types shared by both backends.

- `PlatformBase`: tables in the platform database (tenants, numbers, users, licences).
- `TenantBase`: tables in each tenant's own database (events, CDRs, queues, customers, ...).

Tables carry no schema name: on PostgreSQL the session maps them to `platform` or `tenant_<id>`.
Every table needs a migration in `storage/migrations/platform` or `storage/migrations/tenant`;
`import_table_modules()` loads every module that defines tables, so a check (tests/storage) can compare
the complete metadata with what the migrations build.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class PlatformBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class TenantBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid (already 64-bit, and fastest).
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (stored in UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def import_table_modules() -> list[str]:
    """Import every Hotline module that declares tables on `PlatformBase` or `TenantBase`."""
    package_root = Path(__file__).resolve().parents[1]
    imported = []
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent)
        if "migrations" in relative.parts or path.name == "schema.py":
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        if "TenantBase" not in source and "PlatformBase" not in source:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        importlib.import_module(name)
        imported.append(name)
    return imported
