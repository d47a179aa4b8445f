"""What the API needs from the rest of the platform, and the interfaces of the live services it drives.

`ApiContext` holds the services; `hotline.api.server.create_app(app)` builds one from the composition
root (`hotline.app.App`), tests build one from a storage and test doubles.

`AcdControl` and `BrowserPhones` are the call-control doors the CTI gateway and the live views use
(the ACD's `AcdService`, the switch's browser phones). Their methods may be coroutines or plain
functions: the API awaits whatever is awaitable (`resolve`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hotline.events.bus import EventBus
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.directory import Directory
from hotline.tenancy.service import TenancyService

T = TypeVar("T")


class AcdControl(Protocol):
    def login(self, tenant: str, agent_id: str, device: str, queues: list[str] | None = None) -> Any: ...
    def ready(self, tenant: str, agent_id: str) -> Any: ...
    def not_ready(self, tenant: str, agent_id: str, reason: str | None) -> Any: ...
    def logout(self, tenant: str, agent_id: str) -> Any: ...
    def end_wrapup(
        self, tenant: str, agent_id: str, disposition: str | None = None, notes: str | None = None
    ) -> Any: ...
    def force_state(self, tenant: str, agent_id: str, state: str, by: str) -> Any: ...
    def hangup(self, tenant: str, agent_id: str, call_id: str) -> Any: ...
    def hold(self, tenant: str, agent_id: str, call_id: str) -> Any: ...
    def resume(self, tenant: str, agent_id: str, call_id: str) -> Any: ...
    def agent_state(self, tenant: str, agent_id: str) -> Any: ...
    def snapshot(self, tenant: str) -> Any: ...
    def queue_counts(self, tenant: str) -> Any: ...


class BrowserPhones(Protocol):
    def attach(self, tenant: str, agent_id: str, offer_sdp: str) -> Any: ...
    def detach(self, tenant: str, agent_id: str) -> Any: ...
    def answer(self, tenant: str, agent_id: str, call_id: str) -> Any: ...
    def reject(self, tenant: str, agent_id: str, call_id: str) -> Any: ...
    def hangup(self, tenant: str, agent_id: str, call_id: str) -> Any: ...


async def resolve(value: Any) -> Any:
    """The value, awaited when it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class ApiContext:
    storage: Storage
    events: EventLog
    bus: EventBus
    tenancy: TenancyService
    directory: Directory | None = None
    acd: AcdControl | None = None
    browsers: BrowserPhones | None = None
    # An agent whose every CTI connection is gone is logged out after this long (AGT-13).
    cti_grace_seconds: float = 60.0
    # A CTI connection that sends nothing (not even its 10 s ping) for this long is considered gone.
    cti_idle_seconds: float = 35.0
    # Replies to CTI commands arrive within this many seconds (FM-05: 5 s on the wire).
    cti_command_timeout: float = 4.5
    # How often supervisors get the wallboard while anything changed (seconds).
    wallboard_interval: float = 1.0
    # The built front end (index.html and assets), served at / when present.
    static_dir: Path | None = None
