"""The switch side of the ACD, faked for speed (tests/acd/test_switch_integration.py uses a real Switch).

- :class:`FakeCall`: a caller waiting in a queue; ``caller_hangs_up()`` is the caller's BYE.
- :class:`FakeDialer`: rings agents' devices; the test answers (``answer``), lets a ring run out
  (``no_answer``), rejects, or makes a leg vanish without a BYE (``lose_leg``).
- :class:`Env`: a real storage, event log, directory and tenant around an :class:`AcdService` with a fake
  clock and manually run timers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotline.acd.agents import Device
from hotline.acd.dialer import RingResult
from hotline.acd.service import AcdService
from hotline.events.models import Event
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.control import CallGone, Prompt, QueueOutcome, QueueRequest
from hotline.switch.directory import Directory
from hotline.tenancy.config_document import import_tenant
from hotline.tenancy.service import TenancyService

TENANT = "acme"
_ids = itertools.count(1)


class FakeCall:
    def __init__(
        self, tenant: str = TENANT, ani: str | None = "13812345678", data: dict[str, Any] | None = None
    ):
        self.call_id = f"call{next(_ids):05d}"
        self.tenant = tenant
        self.ani = ani
        self.dnis = "4001"
        self.region = "上海"
        self.data: dict[str, Any] = data if data is not None else {"ivr": {"path": ["menu", "1"]}}
        self.language = "zh"
        self._gone = asyncio.Event()
        self.moh = 0
        self.played: list[Sequence[Prompt]] = []
        self.bridged: Any = None
        self.end_cause: str | None = None
        self.lost = False  # the switch forgot the call without telling anyone

    @property
    def hung_up(self) -> bool:
        return self._gone.is_set()

    async def wait_hung_up(self) -> None:
        await self._gone.wait()

    async def answer(self) -> None:
        if self.hung_up:
            raise CallGone(self.call_id)

    def music_on_hold(self) -> None:
        if self.hung_up:
            raise CallGone(self.call_id)
        self.moh += 1

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = False) -> str | None:
        if self.hung_up:
            raise CallGone(self.call_id)
        self.played.append(prompts)
        return None

    async def hangup(self, cause: str) -> None:
        self.end_cause = self.end_cause or cause
        self._gone.set()

    def caller_hangs_up(self) -> None:
        self.end_cause = self.end_cause or "remote hangup"
        self._gone.set()


@dataclass(eq=False)
class FakeLeg:
    agent_id: str
    call: FakeCall
    id: str = field(default_factory=lambda: f"leg{next(_ids):05d}")
    ended: bool = False


@dataclass(eq=False)
class Ring:
    agent_id: str
    call: FakeCall
    device: Device
    ring_seconds: float
    future: asyncio.Future[RingResult]


class FakeDialer:
    def __init__(self) -> None:
        self.rings: dict[str, Ring] = {}
        self.history: list[tuple[str, str]] = []  # (agent, call) in ring order
        self.cancelled: list[tuple[str, str]] = []
        self.connected: list[tuple[str, FakeLeg]] = []
        self.released: list[FakeLeg] = []
        self.calls: dict[str, FakeCall] = {}
        self.unusable: dict[str, str] = {}
        self.held: list[str] = []
        self.concurrent: dict[str, int] = {}
        self.connect_gate: asyncio.Event | None = None
        self.double_offers: list[tuple[str, str]] = []  # (agent, call) rung while already ringing

    def device_problem(self, tenant: str, device: Device) -> str | None:
        return self.unusable.get(str(device))

    async def ring(
        self, call: Any, tenant: str, agent_id: str, device: Device, ring_seconds: float
    ) -> RingResult:
        future: asyncio.Future[RingResult] = asyncio.get_running_loop().create_future()
        ring = Ring(agent_id, call, device, ring_seconds, future)
        self.concurrent[agent_id] = self.concurrent.get(agent_id, 0) + 1
        if self.concurrent[agent_id] > 1:
            self.double_offers.append((agent_id, call.call_id))
        self.rings[agent_id] = ring
        self.history.append((agent_id, call.call_id))
        self.calls[call.call_id] = call
        gone = asyncio.ensure_future(call.wait_hung_up())
        try:
            await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                return RingResult()  # the caller hung up: the switch cancels the INVITE
            return future.result()
        except asyncio.CancelledError:
            self.cancelled.append((agent_id, call.call_id))
            raise
        finally:
            gone.cancel()
            self.concurrent[agent_id] -= 1
            if self.rings.get(agent_id) is ring:
                del self.rings[agent_id]

    def ringing(self, agent_id: str) -> bool:
        return agent_id in self.rings

    def answer(self, agent_id: str) -> FakeLeg:
        ring = self.rings[agent_id]
        leg = FakeLeg(agent_id, ring.call)
        ring.future.set_result(RingResult(leg=leg))
        return leg

    def no_answer(self, agent_id: str, reason: str = "ring_no_answer") -> None:
        self.rings[agent_id].future.set_result(RingResult(failure=reason))  # type: ignore[arg-type]

    async def connect(self, call: Any, leg: Any) -> None:
        if self.connect_gate is not None:
            await self.connect_gate.wait()  # a slow bridge: lets a test act while it is being made
        if call.hung_up:
            raise CallGone(call.call_id)
        call.bridged = leg
        self.connected.append((leg.agent_id, leg))

    async def release(self, leg: Any) -> None:
        leg.ended = True
        self.released.append(leg)

    def leg_ended(self, leg: Any) -> bool:
        return bool(leg is not None and leg.ended)

    def call_live(self, call: Any) -> bool:
        return not call.hung_up and not getattr(call, "lost", False)

    def find_call(self, tenant: str, call_id: str) -> Any:
        call = self.calls.get(call_id)
        return call if call is not None and self.call_live(call) else None

    async def hold(self, call: Any, leg: Any) -> None:
        self.held.append(call.call_id)

    async def resume(self, call: Any, leg: Any) -> None:
        self.held.remove(call.call_id)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def agents(
    *ids: str, queues: Sequence[str] = ("sales",), skills: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return [
        {"id": agent_id, "name": f"Agent {agent_id}", "queues": list(queues), "skills": skills or {}}
        for agent_id in ids
    ]


def document(
    queues: list[dict[str, Any]] | None = None,
    agent_list: list[dict[str, Any]] | None = None,
    skills: Sequence[str] = ("en", "zh", "billing", "tech"),
    reason_codes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "skills": [{"id": skill} for skill in skills],
        "queues": queues if queues is not None else [{"name": "sales", "display_name": "销售"}],
        "agents": agent_list if agent_list is not None else agents("a1", "a2"),
        "reason_codes": reason_codes or [],
    }


class Env:
    """Storage, event log, directory and the ACD with a fake clock, dialer and switch."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.clock = FakeClock()
        self.dialer = FakeDialer()
        self.tasks: list[asyncio.Task[QueueOutcome]] = []

    async def open(self, doc: dict[str, Any] | None) -> Env:
        """With `doc`, create the tenant and import it; without, the data directory already has both."""
        self.storage = Storage(self.data_dir)
        self.tenancy = TenancyService(self.storage)
        if doc is not None:
            await self.storage.migrate()
            if await self.tenancy.get_tenant(TENANT) is None:
                await self.tenancy.create_tenant(TENANT, "Acme", concurrent_call_limit=100, seat_limit=100)
            result = await import_tenant(self.storage, self.tenancy, TENANT, doc)
            assert result.ok, result.problems
        self.directory = await Directory.open(self.storage)
        self.events = EventLog(self.storage, batch_window=0.0)
        await self.start()
        return self

    async def start(self) -> AcdService:
        self.acd = AcdService(
            None,
            self.events,
            self.storage,
            self.directory,
            dialer=self.dialer,
            clock=self.clock,
            manual_timers=True,
        )
        await self.acd.start()
        return self.acd

    async def reconfigure(self, doc: dict[str, Any]) -> None:
        result = await import_tenant(self.storage, self.tenancy, TENANT, doc, directory=self.directory)
        assert result.ok, result.problems
        for task in list(self.acd._reloads.values()):
            await task

    async def close(self) -> None:
        await self.acd.stop()
        await self.events.close()
        await self.storage.close()

    async def settle(self, rounds: int = 30) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move the fake clock in steps so timers fire in order, letting tasks run between."""
        target = self.clock.now + seconds
        await self.settle()
        while True:
            next_due = self.acd._timers[0][0] if self.acd._timers else None
            if next_due is None or next_due > target:
                break
            self.clock.now = max(self.clock.now, next_due)
            self.acd.run_due()
            await self.settle()
        self.clock.now = target
        self.acd.run_due()
        await self.settle()

    def call(self, queue: str = "sales", **kwargs: Any) -> tuple[FakeCall, asyncio.Task[QueueOutcome]]:
        request_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in QueueRequest.__dataclass_fields__}
        call = FakeCall(**kwargs)
        task = asyncio.ensure_future(self.acd.enqueue(call, QueueRequest(queue=queue, **request_fields)))
        self.tasks.append(task)
        return call, task

    async def ready(self, *agent_ids: str, device: str | None = None, gap: float = 1.0) -> None:
        for agent_id in agent_ids:
            await self.acd.login(TENANT, agent_id, device or f"sip:{agent_id}@127.0.0.1:5070")
            await self.acd.ready(TENANT, agent_id)
            await self.advance(gap)

    def state(self, agent_id: str) -> str:
        return str(self.acd.agent_state(TENANT, agent_id)["state"])

    async def logged(self, event_type: str | None = None) -> list[Event]:
        await self.acd._outbox.flush()
        found = await self.events.read(TENANT, 0, 10_000)
        return [event for event in found if event_type is None or event.type == event_type]
