from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.acd.fakes import Env, document


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    environment = await Env(tmp_path).open(document())
    yield environment
    await environment.close()
