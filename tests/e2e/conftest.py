"""End-to-end tests need Debian's Chromium and the Python playwright package; without them they skip."""

from __future__ import annotations

import os

import pytest

from tests.e2e.harness import CHROMIUM


@pytest.fixture(autouse=True)
def _browser_available() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (scripts/setup installs it)")
    pytest.importorskip("playwright.sync_api")
