"""A test tenant written straight into a data directory, before `hotline serve` starts on it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

PASSWORDS = {"1001": "phone1001pw", "1002": "phone1002pw", "1003": "phone1003pw"}
CARRIER_ADDRESS = "127.0.0.2"  # the "carrier" sends from another loopback address than the phones


def document(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "extensions": [{"number": n, "password": p, "name": f"Phone {n}"} for n, p in PASSWORDS.items()],
        "trunks": [
            {
                "name": "carrier",
                "kind": "ip",
                "host": CARRIER_ADDRESS,
                "port": 5060,
                "allowed_sources": [f"{CARRIER_ADDRESS}/32"],
            }
        ],
        "numbers": [
            {"number": "9196", "target": "echo", "public": False},
            {"number": "9197", "target": "readback", "public": False},
            {"number": "02161234560", "target": "silence"},
            {"number": "02161234567", "target": "echo"},
            {"number": "02161234568", "target": "readback"},
            {"number": "02161234569", "target": "extension:1002"},
        ],
    }
    doc.update(extra or {})
    return doc


def create_tenant(data_dir: Path, tenant: str = "acme", extra: dict[str, Any] | None = None) -> None:
    asyncio.run(_create(data_dir, tenant, document(extra)))


async def _create(data_dir: Path, tenant: str, doc: dict[str, Any]) -> None:
    from hotline.storage.engines import Storage
    from hotline.tenancy.config_document import import_tenant
    from hotline.tenancy.service import TenancyService

    storage = Storage(data_dir)
    try:
        await storage.migrate()
        tenancy = TenancyService(storage)
        if await tenancy.get_tenant(tenant) is None:
            await tenancy.create_tenant(
                tenant, tenant.title(), time_zone="Asia/Shanghai", concurrent_call_limit=500, seat_limit=100
            )
        result = await import_tenant(storage, tenancy, tenant, doc)
        if not result.ok:
            raise RuntimeError("test tenant rejected: " + "; ".join(map(str, result.problems)))
    finally:
        await storage.close()
