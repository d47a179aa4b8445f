"""Storage fixtures for both backends: SQLite files in a temporary directory, and PostgreSQL schemas.

The PostgreSQL variant uses the machine's server (127.0.0.1:5432, database `test`, user `postgres`, or
$HOTLINE_TEST_POSTGRES_URL) with a schema prefix unique to the test, dropped afterwards. It is skipped,
saying why, only when that server cannot be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from hotline.storage import Storage

POSTGRES_URL = os.environ.get("HOTLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_unreachable: list[str | None] = []


async def postgres_unreachable() -> str | None:
    """None when PostgreSQL answers, else the reason (checked once per test run)."""
    if not _unreachable:
        try:
            connection = await asyncpg.connect(POSTGRES_URL, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            _unreachable.append(f"{type(error).__name__}: {error}")
        else:
            await connection.close()
            _unreachable.append(None)
    return _unreachable[0]


async def drop_schemas(prefix: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        names = await connection.fetch(
            "SELECT schema_name FROM information_schema.schemata WHERE left(schema_name, $1) = $2",
            len(prefix),
            prefix,
        )
        for (name,) in names:
            await connection.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await connection.close()


async def open_storage(backend: str, data_dir: Path) -> tuple[Storage, str | None]:
    """A migrated Storage on `backend`; the schema prefix to drop afterwards (PostgreSQL)."""
    if backend == "postgresql":
        reason = await postgres_unreachable()
        if reason is not None:
            pytest.skip(
                f"PostgreSQL at {POSTGRES_URL} is unreachable ({reason}); schema-per-tenant path skipped"
            )
        prefix = f"t{secrets.token_hex(4)}_"
        storage = Storage(data_dir, POSTGRES_URL, schema_prefix=prefix)
    else:
        prefix = None
        storage = Storage(data_dir)
    await storage.migrate()
    return storage, prefix


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def storage(backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    opened, prefix = await open_storage(backend, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
        if prefix is not None:
            await drop_schemas(prefix)
