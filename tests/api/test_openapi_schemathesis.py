"""Property tests of read endpoints against the OpenAPI document (schemathesis): generated queries never
make the server fail, and every answer matches the documented schema and content type (API-01/10).

The API runs in a real uvicorn in its own thread and event loop (schemathesis calls it synchronously over
HTTP); requests carry an administrator's API key. Examples are few, so the file stays quick."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from hotline.api import ApiContext, HttpServer, build_api
from hotline.events.bus import InProcessBus
from hotline.events.models import CallEnded, CallStarted
from hotline.reporting.cdr import CdrProjection
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.tenancy.service import TenancyService
from hotline.tenancy.users import create_api_key
from tests.api.world import make_world

READ_PATHS = (
    "^/api/v1/(queues|agents|skills|extensions|numbers|trunks|reason-codes|calendars"
    "|users|flows|cdrs|audit|live)$"
)


class LiveApi:
    """The API served from another thread, until `stop`."""

    def __init__(self, data_dir: Path, template: Path) -> None:
        self.data_dir = data_dir
        self.template = template
        self.port = 0
        self.key = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="api-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to the test thread
            self.error = error
            self.ready.set()

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with make_world(self.data_dir, self.template) as world:
            world.acd.snapshots["acme"] = {
                "agents": [],
                "queues": [{"queue": "sales", "waiting": 1}],
                "trunks": [],
            }
            await world.events.append(
                CallStarted(tenant="acme", call_id="c-1", direction="inbound", ani="13812345678", dnis="4001")
            )
            await world.events.append(CallEnded(tenant="acme", call_id="c-1", hangup_side="customer"))
            await CdrProjection(world.storage, world.events).catch_up("acme")
            async with world.storage.tenant_session("acme") as session:
                _record, self.key = await create_api_key(
                    session, "acme", "schemathesis", ["tenant_admin"], "test"
                )
            server = HttpServer(world.api, "127.0.0.1", 0)
            await server.start()
            self.port = server.port
            self.ready.set()
            try:
                await self.stopping.wait()
            finally:
                await server.stop()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(60), "the API did not start"
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory, world_template: Path) -> Iterator[LiveApi]:
    api = LiveApi(tmp_path_factory.mktemp("schemathesis") / "data", world_template)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def openapi_document() -> dict[str, Any]:
    """The document as the server publishes it (building it opens no database)."""
    storage = Storage(Path("unused"))
    context = ApiContext(storage, EventLog(storage), InProcessBus(), TenancyService(storage))
    return build_api(context).openapi()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.include(method="GET", path_regex=READ_PATHS).parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_read_endpoints_answer_as_documented(case: Any, live_api: LiveApi) -> None:
    case.call_and_validate(
        base_url=live_api.base_url,
        headers={"Authorization": f"Bearer {live_api.key}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
        timeout=10,
    )


def test_the_openapi_document_describes_every_resource(live_api: LiveApi) -> None:
    document = requests.get(f"{live_api.base_url}/openapi.json", timeout=10).json()
    paths = document["paths"]
    for kind in (
        "extensions",
        "trunks",
        "numbers",
        "queues",
        "skills",
        "agents",
        "reason-codes",
        "calendars",
        "users",
    ):
        assert {"get", "post"} <= set(paths[f"/api/v1/{kind}"]), kind
        item = next(path for path in paths if path.startswith(f"/api/v1/{kind}/{{"))
        assert {"get", "put", "delete"} <= set(paths[item]), kind
    for path in (
        "/api/v1/session",
        "/api/v1/flows/{flow_id}/draft",
        "/api/v1/flows/{flow_id}/publish",
        "/api/v1/config",
    ):
        assert path in paths
    queue_body = paths["/api/v1/queues"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    name = queue_body["$ref"].rsplit("/", 1)[1]
    assert "strategy" in document["components"]["schemas"][name]["properties"]
    docs = requests.get(f"{live_api.base_url}/docs", timeout=10)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
