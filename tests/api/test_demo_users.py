"""The demo tenant's web users: an admin and a supervisor with printed passwords; agents sign in with their
agent number and their extension's password (#6, AGT-02)."""

from __future__ import annotations

from pathlib import Path

import httpx

from hotline.api import ApiContext, build_api
from hotline.demo import demo_instructions, ensure_demo_tenant
from hotline.events.bus import InProcessBus
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.tenancy.service import TenancyService


async def test_demo_users_sign_in_with_the_printed_passwords(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    await storage.migrate()
    tenancy = TenancyService(storage)
    bus = InProcessBus()
    events = EventLog(storage, bus)
    try:
        info = await ensure_demo_tenant(storage, tenancy)
        users = {username: (password, role) for username, password, role in info.users}
        assert set(users) == {"admin", "super"}
        assert users["admin"][1] == "tenant_admin" and users["super"][1] == "supervisor"
        banner = demo_instructions(info, sip_host="192.0.2.1", sip_port=5060, http_port=8080)
        for username, (password, _role) in users.items():
            assert password is not None and f"  {username}  {password}  " in banner

        api = build_api(ApiContext(storage, events, bus, tenancy))
        transport = httpx.ASGITransport(app=api)
        first_extension, first_password, first_agent = info.extensions[0]
        logins = [
            ("admin", users["admin"][0], ["tenant_admin"]),
            ("super", users["super"][0], ["supervisor"]),
        ]
        logins.append((str(first_agent), first_password, ["agent"]))
        for username, password, roles in logins:
            async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
                response = await client.post(
                    "/api/v1/session", json={"tenant": "demo", "username": username, "password": password}
                )
                assert response.status_code == 200, (username, response.text)
                assert response.json()["user"]["roles"] == roles
        assert first_extension == "1001" and first_agent == "8001"

        again = await ensure_demo_tenant(storage, tenancy)
        assert [(username, password) for username, password, _role in again.users] == [
            ("admin", None),
            ("super", None),
        ]
        assert "(as printed when the demo was created)" in demo_instructions(
            again, sip_host="192.0.2.1", sip_port=5060, http_port=8080
        )
    finally:
        await events.close()
        await bus.close()
        await storage.close()
