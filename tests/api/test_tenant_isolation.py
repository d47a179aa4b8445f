"""Crossing tenants is impossible by construction (principle 6, TEN-01): every request opens only the
database of the tenant its credential names, and nothing of another tenant is reachable, on SQLite
files and on PostgreSQL schemas alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.events.models import AgentStateChanged, CallEnded, CallStarted
from hotline.reporting.cdr import CdrProjection
from hotline.storage.engines import Storage
from tests.api.world import World, make_world, signed_in
from tests.storage.backends import backend, storage

__all__ = ["backend", "storage"]

READS = [
    "/api/v1/session",
    "/api/v1/extensions",
    "/api/v1/trunks",
    "/api/v1/numbers",
    "/api/v1/queues",
    "/api/v1/skills",
    "/api/v1/agents",
    "/api/v1/reason-codes",
    "/api/v1/calendars",
    "/api/v1/users",
    "/api/v1/users/admin",
    "/api/v1/flows",
    "/api/v1/flows/main",
    "/api/v1/config",
    "/api/v1/audit",
    "/api/v1/api-keys",
    "/api/v1/cdrs",
    "/api/v1/password-policy",
]


def record_tenants(world: World) -> list[str]:
    """Every tenant database the storage opens from now on."""
    opened: list[str] = []
    original = world.storage.tenant_session

    @asynccontextmanager
    async def spying(tenant_id: str) -> AsyncIterator[AsyncSession]:
        opened.append(tenant_id)
        async with original(tenant_id) as session:
            yield session

    world.storage.tenant_session = spying  # type: ignore[method-assign]
    return opened


async def check_isolation(world: World) -> None:
    # Something in each tenant's log, so a leak would show.
    await world.events.append(
        CallStarted(tenant="beta", call_id="beta-call", direction="inbound", ani="13900001111", dnis="4002")
    )
    await world.events.append(CallEnded(tenant="beta", call_id="beta-call", hangup_side="customer"))
    await world.events.append(
        AgentStateChanged(tenant="beta", agent_id="9001", from_state="logged_out", to_state="ready")
    )
    await CdrProjection(world.storage, world.events).catch_up("beta")
    acme = await signed_in(world, "acme", "admin")
    beta = await signed_in(world, "beta", "admin")
    opened = record_tenants(world)
    for path in READS:
        response = await acme.get(path)
        assert response.status_code == 200, (path, response.text)
        text = response.text
        for foreign in ("9001", "Zed", "4002", "2001", "beta-call", "13900001111", "Beta Ltd"):
            assert foreign not in text, (path, foreign)
    # Writes too: a skill created by acme is acme's only.
    assert (await acme.post("/api/v1/skills", json={"id": "acme_only"})).status_code == 201
    assert (
        await acme.put(
            "/api/v1/flows/main/draft",
            json=(await acme.get("/api/v1/flows/main")).json()["published"]["document"],
        )
    ).status_code == 200
    assert set(opened) == {"acme"}, opened

    opened.clear()
    assert (await beta.get("/api/v1/skills/acme_only")).status_code == 404
    assert (await beta.get("/api/v1/users/alice")).status_code == 404
    assert (await beta.get("/api/v1/agents/8001")).status_code == 404
    cdrs = (await beta.get("/api/v1/cdrs")).json()
    assert [row["call_id"] for row in cdrs["items"]] == ["beta-call"]
    same_name = (await beta.get("/api/v1/session")).json()
    assert same_name["user"]["username"] == "admin" and same_name["tenant"]["id"] == "beta"
    assert set(opened) == {"beta"}, opened


async def test_requests_only_open_their_own_tenants_database(world: World) -> None:
    await check_isolation(world)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_isolation_holds_on_postgresql_schemas(storage: Storage, tmp_path: Path) -> None:
    async with make_world(tmp_path, storage=storage) as world:
        await check_isolation(world)


INJECTIONS = ["' OR '1'='1", "admin'--", '"; DROP TABLE users; --', "8001) OR (1=1", "%27%20OR%201=1"]


async def test_hostile_text_is_only_ever_data(world: World) -> None:
    """OPS-11: every query is parameterised; SQL in names, keys and filters finds nothing and breaks
    nothing."""
    admin = await signed_in(world, "acme", "admin")
    async with world.client() as anonymous:
        for text in INJECTIONS:
            response = await anonymous.post(
                "/api/v1/session", json={"tenant": "acme", "username": text, "password": text}
            )
            assert response.status_code == 401
            forged = await anonymous.post(
                "/api/v1/session", json={"tenant": text, "username": "admin", "password": text}
            )
            assert forged.status_code == 401
    for text in INJECTIONS:
        for kind in ("users", "agents", "queues", "flows"):
            assert (await admin.get(f"/api/v1/{kind}/{text}")).status_code == 404
        audit = await admin.get("/api/v1/audit", params={"action": text})
        assert audit.status_code == 200 and audit.json()["total"] == 0
        created = await admin.post("/api/v1/skills", json={"id": "vip", "name": text, "description": text})
        assert created.status_code == 201
        assert (await admin.get("/api/v1/skills/vip")).json()["name"] == text
        assert (await admin.delete("/api/v1/skills/vip")).status_code == 204
    assert (await admin.get("/api/v1/users")).json()["total"] == 5
    assert (await admin.get("/api/v1/agents")).json()["total"] == 3
