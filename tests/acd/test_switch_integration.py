"""The ACD on a real Switch over loopback (#5 "Done when"): SIPp is the carrier (uac from 127.0.0.2 to a
DID whose target is queue:sales) and the agents (uas on static SIP URIs).

- the call reaches the longest-idle of two agents, and wrap-up holds that agent 5 s after the call;
- an agent who lets it ring becomes not ready ("no_answer", ACD-09) and the call goes on to the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hotline.acd.service import AcdService
from hotline.config import Settings
from hotline.events.models import CallAnswered, CallOffered, CallOfferFailed
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.service import Switch, build_switch
from hotline.tenancy.config_document import import_tenant
from hotline.tenancy.service import TenancyService
from tests.integration.peers import free_port, free_port_range
from tests.integration.tenant import CARRIER_ADDRESS, document

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parents[1] / "integration" / "scenarios"
TENANT = "acme"
QUEUE_NUMBER = "02161234570"
HUNT_NUMBER = "02161234571"


@dataclass
class Site:
    storage: Storage
    events: EventLog
    switch: Switch
    acd: AcdService
    workdir: Path

    async def sipp(self, *args: str, timeout: float = 30) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "sipp",
            *args,
            "-nostdin",
            "-timeout",
            f"{int(timeout)}s",
            cwd=self.workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def agent_phone(self, scenario: str) -> tuple[str, asyncio.subprocess.Process]:
        port = free_port()
        process = await self.sipp(
            "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1"
        )
        return f"sip:agent@127.0.0.1:{port}", process

    async def carrier_call(self, seconds: float, number: str = QUEUE_NUMBER) -> asyncio.subprocess.Process:
        return await self.sipp(
            f"127.0.0.1:{self.switch.settings.sip_port}",
            "-sn",
            "uac",
            "-s",
            number,
            "-i",
            CARRIER_ADDRESS,
            "-p",
            str(free_port()),
            "-m",
            "1",
            "-d",
            str(int(seconds * 1000)),
        )

    async def state_becomes(self, agent_id: str, state: str, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.acd.agent_state(TENANT, agent_id)["state"] == state:
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise AssertionError(f"{agent_id} never became {state}: {self.acd.agent_state(TENANT, agent_id)}")

    async def logged(self, event_type: str) -> list[Any]:
        await self.acd._outbox.flush()
        return [event for event in await self.events.read(TENANT, 0, 10_000) if event.type == event_type]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    storage = Storage(tmp_path)
    await storage.migrate()
    tenancy = TenancyService(storage)
    await tenancy.create_tenant(TENANT, "Acme", concurrent_call_limit=50, seat_limit=50)
    doc = document(
        {
            "queues": [
                {"name": "sales", "ring_timeout": 2, "wrap_up_seconds": 5, "announce_every_seconds": 0},
                {"name": "hunt", "strategy": "ring_all", "ring_timeout": 10, "announce_every_seconds": 0},
            ],
            "agents": [{"id": "a1", "queues": ["sales", "hunt"]}, {"id": "a2", "queues": ["sales", "hunt"]}],
        }
    )
    doc["numbers"].append({"number": QUEUE_NUMBER, "target": "queue:sales"})
    doc["numbers"].append({"number": HUNT_NUMBER, "target": "queue:hunt"})
    result = await import_tenant(storage, tenancy, TENANT, doc)
    assert result.ok, result.problems
    events = EventLog(storage)
    rtp = free_port_range(40)
    settings = Settings(
        data_dir=tmp_path, bind="127.0.0.1", sip_port=free_port(), rtp_port_min=rtp[0], rtp_port_max=rtp[1]
    )
    switch = await build_switch(settings, storage, tenancy, events)
    acd = AcdService(switch, events, storage, switch.directory)
    switch.queue_handler = acd.enqueue
    switch.targets["queue"] = acd.run_queue_target
    await acd.start()
    await switch.start()
    yield Site(storage, events, switch, acd, tmp_path)
    await acd.stop()
    await switch.stop()
    await events.close()
    await storage.close()


async def _finished(process: asyncio.subprocess.Process, timeout: float = 20) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        stderr = await process.stderr.read() if process.stderr else b""
        raise AssertionError(f"sipp did not finish: {stderr.decode(errors='replace')[-1000:]}") from None


async def test_carrier_call_reaches_the_longest_idle_agent_and_wrap_up_holds_five_seconds(site: Site) -> None:
    uri1, phone1 = await site.agent_phone("uas_answer.xml")
    uri2, phone2 = await site.agent_phone("uas_answer.xml")
    await site.acd.login(TENANT, "a1", uri1)
    await site.acd.login(TENANT, "a2", uri2)
    await site.acd.ready(TENANT, "a1")
    await asyncio.sleep(0.2)
    await site.acd.ready(TENANT, "a2")  # a1 has been idle longer
    carrier = await site.carrier_call(seconds=2)
    await site.state_becomes("a1", "on_call")
    assert site.acd.agent_state(TENANT, "a2")["state"] == "ready"
    assert await _finished(carrier) == 0
    wrap_started = await site.state_becomes("a1", "wrap_up")
    assert await _finished(phone1) == 0  # the agent's phone got its BYE
    ready_at = await site.state_becomes("a1", "ready", timeout=10)
    assert 4.5 <= ready_at - wrap_started <= 6.0  # ACD-08: 5 s
    answered = [
        e for e in await site.logged("call.answered") if isinstance(e, CallAnswered) and e.by == "agent"
    ]
    assert [e.agent_id for e in answered] == ["a1"]
    offered = [e for e in await site.logged("call.offered") if isinstance(e, CallOffered)]
    assert offered[0].dnis == QUEUE_NUMBER and offered[0].ani  # the screen pop has the caller's number
    phone2.kill()
    await phone2.wait()


async def test_ring_no_answer_makes_the_agent_not_ready_and_the_next_one_answers(site: Site) -> None:
    uri1, phone1 = await site.agent_phone("uas_ring_until_cancel.xml")
    uri2, phone2 = await site.agent_phone("uas_answer.xml")
    await site.acd.login(TENANT, "a1", uri1)
    await site.acd.login(TENANT, "a2", uri2)
    await site.acd.ready(TENANT, "a1")
    await asyncio.sleep(0.2)
    await site.acd.ready(TENANT, "a2")
    carrier = await site.carrier_call(seconds=5)  # answered by the switch at once; the agent after ~2 s
    await site.state_becomes("a2", "on_call", timeout=10)
    state = site.acd.agent_state(TENANT, "a1")
    assert (state["state"], state["reason"]) == ("not_ready", "no_answer")
    assert await _finished(phone1) == 0  # the unanswered phone got its CANCEL
    assert await _finished(carrier) == 0
    assert await _finished(phone2) == 0
    failed = [e for e in await site.logged("call.offer_failed") if isinstance(e, CallOfferFailed)]
    assert [(e.agent_id, e.reason) for e in failed] == [("a1", "ring_no_answer")]


async def test_ring_all_connects_the_first_to_answer_and_cancels_the_other(site: Site) -> None:
    uri1, phone1 = await site.agent_phone("uas_ring_until_cancel.xml")
    uri2, phone2 = await site.agent_phone("uas_answer.xml")
    await site.acd.login(TENANT, "a1", uri1, ["hunt"])
    await site.acd.login(TENANT, "a2", uri2, ["hunt"])
    await site.acd.ready(TENANT, "a1")
    await site.acd.ready(TENANT, "a2")
    carrier = await site.carrier_call(seconds=2, number=HUNT_NUMBER)
    await site.state_becomes("a2", "on_call", timeout=10)
    assert await _finished(phone1, timeout=5) == 0  # CANCELled at once, not left ringing 10 s
    assert site.acd.agent_state(TENANT, "a1")["state"] == "ready"  # losing the race is no fault
    assert await _finished(carrier) == 0
    assert await _finished(phone2) == 0
