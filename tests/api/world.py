"""A small platform for API tests: two tenants (acme, beta) with configuration, users of every role, the
API over real storage, event log and bus, and test doubles for the ACD and the browser phones that record
what they are asked, with exactly the signatures of `hotline.api.context.AcdControl` / `BrowserPhones`."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from hotline.acd.config import hash_password
from hotline.api import ApiContext, build_api
from hotline.events.bus import InProcessBus
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.directory import Directory
from hotline.tenancy.config_document import import_tenant
from hotline.tenancy.service import TenancyService
from hotline.tenancy.users import Role, UserCreate, create_user

PASSWORD = "Secret123"
PASSWORD_HASH = hash_password(PASSWORD)


def flow(flow_id: str = "main", queue: str = "sales", greeting: str = "hello") -> dict[str, Any]:
    return {
        "id": flow_id,
        "name": f"Flow {flow_id}",
        "entry": "welcome",
        "nodes": [
            {
                "id": "welcome",
                "type": "play",
                "prompts": [{"kind": "tts", "text": greeting}],
                "exits": {"next": "to_queue"},
            },
            {"id": "to_queue", "type": "queue", "queue": queue},
        ],
    }


def tenant_document(agents: list[tuple[str, str, str]], number: str, extension: str) -> dict[str, Any]:
    """agents: (agent id, queue, name)."""
    return {
        "numbers": [{"number": number, "target": "flow:main"}],
        "extensions": [{"number": extension, "password": "Sip12345pw", "name": "Desk"}],
        "calendars": [
            {"id": "office", "name": "Office", "weekly": {"1": [{"start": "09:00", "end": "18:00"}]}}
        ],
        "flows": [flow()],
        "skills": [{"id": "sales", "name": "Sales"}, {"id": "support", "name": "Support"}],
        "queues": [
            {"name": "sales", "display_name": "销售"},
            {"name": "support", "skills": {"skill": "support"}},
        ],
        "agents": [
            {
                "id": agent_id,
                "name": name,
                "password_hash": PASSWORD_HASH,
                "queues": [queue],
                "skills": {queue: 5},
            }
            for agent_id, queue, name in agents
        ],
        "reason_codes": [
            {"code": "break", "name": "小休"},
            {"code": "resolved", "name": "已解决", "kind": "disposition"},
        ],
    }


class FakeAcd:
    """Records every call; answers like the ACD (the agent.state view); can be told to fail or hang."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.fail: Exception | None = None
        self.hang = False
        self.unblock = asyncio.Event()

    async def _record(self, name: str, *args: Any) -> dict[str, Any]:
        self.calls.append((name, args))
        if self.hang:
            async with asyncio.timeout(30):
                await self.unblock.wait()
        if self.fail is not None:
            raise self.fail
        tenant, agent_id = args[0], args[1]
        return self.states.setdefault((tenant, agent_id), {"agent_id": agent_id, "state": "logged_out"})

    def _set(self, tenant: str, agent_id: str, state: str) -> None:
        self.states[(tenant, agent_id)] = {"agent_id": agent_id, "state": state}

    async def login(self, tenant: str, agent_id: str, device: str, queues: list[str] | None = None) -> Any:
        result = await self._record("login", tenant, agent_id, device, queues)
        self._set(tenant, agent_id, "not_ready")
        return result

    async def ready(self, tenant: str, agent_id: str) -> Any:
        result = await self._record("ready", tenant, agent_id)
        self._set(tenant, agent_id, "ready")
        return result

    async def not_ready(self, tenant: str, agent_id: str, reason: str | None) -> Any:
        return await self._record("not_ready", tenant, agent_id, reason)

    async def logout(self, tenant: str, agent_id: str) -> Any:
        result = await self._record("logout", tenant, agent_id)
        self._set(tenant, agent_id, "logged_out")
        return result

    async def end_wrapup(
        self, tenant: str, agent_id: str, disposition: str | None = None, notes: str | None = None
    ) -> Any:
        return await self._record("end_wrapup", tenant, agent_id, disposition, notes)

    async def force_state(self, tenant: str, agent_id: str, state: str, by: str) -> Any:
        return await self._record("force_state", tenant, agent_id, state, by)

    async def hangup(self, tenant: str, agent_id: str, call_id: str) -> Any:
        return await self._record("hangup", tenant, agent_id, call_id)

    async def hold(self, tenant: str, agent_id: str, call_id: str) -> Any:
        return await self._record("hold", tenant, agent_id, call_id)

    async def resume(self, tenant: str, agent_id: str, call_id: str) -> Any:
        return await self._record("resume", tenant, agent_id, call_id)

    def agent_state(self, tenant: str, agent_id: str) -> Any:
        return self.states.get((tenant, agent_id), {"agent_id": agent_id, "state": "logged_out"})

    def snapshot(self, tenant: str) -> Any:
        return self.snapshots.get(tenant, {"agents": [], "queues": [], "trunks": []})

    def queue_counts(self, tenant: str) -> Any:
        return dict(self.counts.get(tenant, {}))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


class FakeBrowsers:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.ringing: set[tuple[str, str, str]] = set()
        self.notify: Any = None

    async def attach(self, tenant: str, agent_id: str, offer_sdp: str) -> str:
        self.calls.append(("attach", (tenant, agent_id, offer_sdp)))
        return "v=0\r\no=answer for " + agent_id + "\r\n"

    async def detach(self, tenant: str, agent_id: str) -> None:
        self.calls.append(("detach", (tenant, agent_id)))

    def answer(self, tenant: str, agent_id: str, call_id: str) -> bool:
        self.calls.append(("answer", (tenant, agent_id, call_id)))
        return (tenant, agent_id, call_id) in self.ringing

    def reject(self, tenant: str, agent_id: str, call_id: str) -> bool:
        self.calls.append(("reject", (tenant, agent_id, call_id)))
        return (tenant, agent_id, call_id) in self.ringing

    async def hangup(self, tenant: str, agent_id: str, call_id: str) -> bool:
        self.calls.append(("hangup", (tenant, agent_id, call_id)))
        return True

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


@dataclass
class World:
    storage: Storage
    bus: InProcessBus
    events: EventLog
    tenancy: TenancyService
    directory: Directory
    acd: FakeAcd
    browsers: FakeBrowsers
    context: ApiContext
    api: FastAPI
    opened: list[str] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.api), base_url="http://testserver", headers=headers
        )


USERS: list[tuple[str, str, list[Role], str | None, str | None]] = [
    # tenant, username, roles, agent_id, department
    ("acme", "admin", ["tenant_admin"], None, None),
    ("acme", "super", ["supervisor"], None, None),
    ("acme", "lead", ["team_leader"], None, "east"),
    ("acme", "alice", ["agent"], "8002", "east"),
    ("acme", "quinn", ["qa"], None, None),
    ("beta", "admin", ["tenant_admin"], None, None),
]


async def add_user(
    storage: Storage,
    tenant: str,
    username: str,
    roles: list[Role],
    agent_id: str | None = None,
    department: str | None = None,
    **extra: Any,
) -> None:
    async with storage.tenant_session(tenant) as session:
        user = UserCreate(
            username=username,
            password=PASSWORD,
            display_name=username.title(),
            roles=roles,
            agent_id=agent_id,
            department=department,
            **extra,
        )
        await create_user(session, user, PASSWORD_HASH)


async def populate(storage: Storage) -> None:
    """The two tenants, their configuration and users (built once per test run on SQLite; each test gets
    a copy of the files)."""
    await storage.migrate()
    tenancy = TenancyService(storage)
    await tenancy.create_tenant("acme", "Acme 有限公司")
    await tenancy.create_tenant("beta", "Beta Ltd")
    acme = tenant_document(
        [("8001", "sales", "Ann"), ("8002", "sales", "Alice"), ("8003", "support", "Bob")], "4001", "1001"
    )
    beta = tenant_document([("9001", "sales", "Zed")], "4002", "2001")
    for tenant, document in (("acme", acme), ("beta", beta)):
        result = await import_tenant(storage, tenancy, tenant, document)
        assert result.ok, result.problems
    for tenant, username, roles, agent_id, department in USERS:
        await add_user(storage, tenant, username, roles, agent_id, department)


async def build_template(data_dir: Path) -> None:
    storage = Storage(data_dir)
    try:
        await populate(storage)
    finally:
        await storage.close()


@asynccontextmanager
async def make_world(
    data_dir: Path, template: Path | None = None, storage: Storage | None = None, **context_options: Any
) -> AsyncIterator[World]:
    """A world in `data_dir`: a copy of `template`, or built afresh (in `storage` when given)."""
    if template is not None:
        shutil.copytree(template, data_dir, dirs_exist_ok=True)
        storage = Storage(data_dir)
    else:
        storage = storage or Storage(data_dir)
        await populate(storage)
    await storage.migrate()
    bus = InProcessBus()
    events = EventLog(storage, bus, batch_window=0)
    tenancy = TenancyService(storage)
    directory = await Directory.open(storage)
    acd = FakeAcd()
    browsers = FakeBrowsers()
    context = ApiContext(
        storage=storage,
        events=events,
        bus=bus,
        tenancy=tenancy,
        directory=directory,
        acd=acd,
        browsers=browsers,
        **context_options,
    )
    api = build_api(context)
    world = World(storage, bus, events, tenancy, directory, acd, browsers, context, api)
    try:
        yield world
    finally:
        await api.state.cti.close()
        await events.close()
        await bus.close()
        await storage.close()


async def sign_in(
    client: httpx.AsyncClient, tenant: str, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/v1/session", json={"tenant": tenant, "username": username, "password": password}
    )


async def signed_in(world: World, tenant: str, username: str) -> httpx.AsyncClient:
    client = world.client()
    response = await sign_in(client, tenant, username)
    assert response.status_code == 200, response.text
    return client
