from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api.world import World, build_template, make_world


@pytest.fixture(scope="session")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tenants, configuration and users built once; every test works on its own copy."""
    path = tmp_path_factory.mktemp("api-world")
    asyncio.run(build_template(path))
    return path


@pytest.fixture
async def world(tmp_path: Path, world_template: Path) -> AsyncIterator[World]:
    async with make_world(tmp_path / "data", world_template) as built:
        yield built
