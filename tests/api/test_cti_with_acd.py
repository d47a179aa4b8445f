"""The CTI gateway driving the real ACD (`AcdService`; the switch side faked by tests/acd/fakes.FakeDialer):
an agent signs in, logs in, goes ready, gets the offer with its screen pop, holds, hangs up, wraps up; the
supervisor watches every step and forces a state (#6 with #5; AGT-02/03/07/09, SUP-01/05, FM-10)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hotline.acd.service import AcdService
from hotline.api import HttpServer
from hotline.switch.control import QueueRequest
from tests.acd.fakes import FakeCall, FakeDialer
from tests.api.cti_client import cti
from tests.api.test_cti import cookie
from tests.api.world import World, make_world, signed_in


@pytest.fixture
async def served(
    tmp_path: Path, world_template: Path
) -> AsyncIterator[tuple[World, int, AcdService, FakeDialer]]:
    async with make_world(tmp_path / "data", world_template, wallboard_interval=0.05) as world:
        dialer = FakeDialer()
        acd = AcdService(None, world.events, world.storage, world.directory, dialer=dialer)
        await acd.start()
        world.context.acd = acd
        server = HttpServer(world.api, "127.0.0.1", 0)
        await server.start()
        try:
            yield world, server.port, acd, dialer
        finally:
            await server.stop()
            await acd.stop()


async def test_a_call_walks_through_the_agent_desktop_and_the_wallboard(
    served: tuple[World, int, AcdService, FakeDialer],
) -> None:
    world, port, acd, dialer = served
    async with (
        cti(port, await cookie(world, "acme", "8001")) as ann,
        cti(port, await cookie(world, "acme", "super")) as supervisor,
    ):
        hello = await ann.command("hello")
        assert hello["agent"]["state"] == "logged_out"
        await supervisor.command("hello")
        login = await ann.command("agent.login", device="browser")
        assert login["ok"] and login["state"] == "not_ready", login
        refused = await ann.command("agent.not_ready", reason="no-such-reason")
        assert refused["ok"] is False and refused["error"]["code"] == "unknown_reason"
        assert (await ann.command("agent.ready"))["ok"]
        await ann.event("agent.state", state="ready")
        await supervisor.event("agent.state", agent_id="8001", state="ready")

        call = FakeCall(tenant="acme", ani="13812345678", data={"ivr": {"path": ["menu", "1"]}})
        queued = asyncio.ensure_future(acd.enqueue(call, QueueRequest(queue="sales")))  # type: ignore[arg-type]
        offer = await ann.event("call.offered")
        assert offer["call_id"] == call.call_id and offer["queue"] == "sales"
        assert offer["ani"] == "138****5678" and offer["dnis"] == "4001" and offer["region"] == "上海"
        assert offer["data"]["ivr"] == {"path": ["menu", "1"]}
        await ann.event("agent.state", state="ringing")
        board = await supervisor.event("wallboard")
        assert {agent["agent_id"] for agent in board["agents"]} >= {"8001"}

        dialer.answer("8001")
        await ann.event("agent.state", state="on_call")
        # A reload (AGT-13): the new page gets the state and the call back, with its screen pop.
        async with cti(port, await cookie(world, "acme", "8001")) as reloaded:
            restored = await reloaded.command("hello")
            assert restored["agent"]["state"] == "on_call"
            (current,) = restored["calls"]
            assert current["call_id"] == call.call_id and current["state"] == "on_call"
            assert current["ani"] == "138****5678" and current["data"]["ivr"] == {"path": ["menu", "1"]}
            assert current["answered_at"] >= current["offered_at"]
        assert (await ann.command("call.hold", call_id=call.call_id))["ok"]
        await ann.event("agent.state", state="on_hold")
        await ann.event("call.held", call_id=call.call_id)
        assert (await ann.command("call.resume", call_id=call.call_id))["ok"]
        await ann.event("call.resumed", call_id=call.call_id)
        assert (await ann.command("call.hangup", call_id=call.call_id))["ok"]
        await ann.event("agent.state", state="wrap_up")
        outcome = await asyncio.wait_for(queued, 5)
        assert outcome.result == "answered" and outcome.agent == "8001"
        done = await ann.command("wrapup.end", disposition="resolved", notes="ok")
        assert done["ok"], done
        await ann.event("agent.state", state="ready", reason=None)

        forced = await supervisor.command("supervisor.force_state", agent_id="8001", state="not_ready")
        assert forced["ok"], forced
        await ann.event("agent.state", state="not_ready", reason="supervisor")
        client = await signed_in(world, "acme", "super")
        live = (await client.get("/api/v1/live")).json()
        states = {agent["agent_id"]: agent["state"] for agent in live["agents"]}
        assert states["8001"] == "not_ready" and states["8002"] == "logged_out"
        assert live["queues"][0]["queue"] == "sales" and live["queues"][0]["answered_today"] == 1
