"""Both storage backends for these tests (see tests/storage/backends.py)."""

from tests.storage.backends import backend, storage

__all__ = ["backend", "storage"]
