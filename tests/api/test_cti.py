"""The CTI WebSocket against a real uvicorn on 127.0.0.1 (docs/cti.md; AGT-02/13, SUP-01/05/07, FM-05)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from hotline.acd.agents import AcdError
from hotline.api import HttpServer, create_app
from hotline.config import Settings
from hotline.events.models import (
    AgentStateChanged,
    CallAnswered,
    CallDataChanged,
    CallEnded,
    CallOffered,
    CallQueued,
    CallStarted,
)
from tests.api.cti_client import cti
from tests.api.world import FakeBrowsers, World, make_world, sign_in


@pytest.fixture
async def served(tmp_path: Path, world_template: Path) -> AsyncIterator[tuple[World, int]]:
    async with make_world(
        tmp_path / "data",
        world_template,
        cti_grace_seconds=0.6,
        wallboard_interval=0.05,
        cti_command_timeout=0.5,
    ) as world:
        server = HttpServer(world.api, "127.0.0.1", 0)
        await server.start()
        try:
            yield world, server.port
        finally:
            await server.stop()


async def cookie(world: World, tenant: str, username: str) -> str:
    async with world.client() as client:
        response = await sign_in(client, tenant, username)
        assert response.status_code == 200, response.text
        value = client.cookies.get("hotline_session")
        assert value is not None
        return value


def state(tenant: str, agent_id: str, to: str, frm: str = "logged_out", **extra: object) -> AgentStateChanged:
    return AgentStateChanged(tenant=tenant, agent_id=agent_id, from_state=frm, to_state=to, **extra)  # type: ignore[arg-type]


async def test_a_connection_without_a_session_is_closed_4401(served: tuple[World, int]) -> None:
    _world, port = served
    async with cti(port) as client:
        closed = await client.wait_closed()
        assert closed.rcvd is not None and closed.rcvd.code == 4401
    async with cti(port, "acme.forged-token") as client:
        assert (await client.wait_closed()).rcvd.code == 4401  # type: ignore[union-attr]


async def test_a_page_of_another_site_cannot_use_the_cookie(served: tuple[World, int]) -> None:
    world, port = served
    session = await cookie(world, "acme", "8001")
    async with cti(port, session, origin="https://evil.example") as client:
        assert (await client.wait_closed()).rcvd.code == 4403  # type: ignore[union-attr]


async def test_hello_ping_and_malformed_messages(served: tuple[World, int]) -> None:
    world, port = served
    world.acd.states[("acme", "8001")] = {"agent_id": "8001", "state": "ready", "calls": []}
    await world.events.append(state("acme", "8001", "ready"))
    async with cti(port, await cookie(world, "acme", "8001")) as client:
        early = await client.command("agent.ready")
        assert early["ok"] is False and early["error"]["code"] == "hello_first"
        hello = await client.command("hello")
        assert hello["ok"] is True
        assert hello["user"]["agent_id"] == "8001" and hello["agent"]["state"] == "ready"
        assert hello["last_seq"] == 1 and hello["replay_from"] is None
        assert await client.command("ping") == {"reply_to": "c3", "ok": True}
        again = await client.command("hello")
        assert again["error"]["code"] == "hello_again"
        unknown = await client.command("agent.dance")
        assert unknown["ok"] is False and unknown["error"]["code"] == "unknown_op"
        await client.websocket.send("not json")
        await client.send({"op": "ping"})
        await client.send({"id": 7})
        reply = await client._until(lambda: client.replies.get(7), 3)
        assert reply["error"]["code"] == "bad_message"
        assert [frame["error"]["code"] for frame in client.unsolicited] == ["bad_message", "bad_message"]
        assert all(frame["ok"] is False for frame in client.unsolicited)


async def test_events_reach_the_agent_and_the_supervisors_in_scope_only(served: tuple[World, int]) -> None:
    world, port = served
    async with (
        cti(port, await cookie(world, "acme", "8001")) as ann,
        cti(port, await cookie(world, "acme", "alice")) as alice,
        cti(port, await cookie(world, "acme", "super")) as supervisor,
        cti(port, await cookie(world, "acme", "lead")) as lead,
        cti(port, await cookie(world, "beta", "admin")) as other_tenant,
    ):
        for client in (ann, alice, supervisor, lead, other_tenant):
            assert (await client.command("hello"))["ok"]
        await world.events.append(state("acme", "8001", "ready", reason_code=None))
        await world.events.append(
            CallStarted(tenant="acme", call_id="call-1", direction="inbound", ani="13812345678", dnis="4001")
        )
        await world.events.append(
            CallOffered(
                tenant="acme",
                call_id="call-1",
                agent_id="8001",
                queue_id="sales",
                ani="13812345678",
                dnis="4001",
                region="上海",
                waited_seconds=12.5,
                data={"ivr_path": ["welcome", "menu"], "digits": "1"},
            )
        )
        await world.events.append(state("acme", "8002", "not_ready", reason_code="break"))
        await world.events.append(state("beta", "9001", "ready"))

        offered = await ann.event("call.offered")
        assert offered["call_id"] == "call-1" and offered["queue"] == "sales"
        assert offered["ani"] == "138****5678" and offered["ani_masked"] == "138****5678"
        assert offered["dnis"] == "4001" and offered["region"] == "上海" and offered["waited_seconds"] == 12.5
        assert offered["data"] == {"ivr_path": ["welcome", "menu"], "digits": "1"}
        mine = await ann.event("agent.state", agent_id="8001")
        assert mine["state"] == "ready" and mine["seq"] == 1 and mine["since"] == mine["at"]

        # Supervisors: every agent of their scope, no screen pops.
        await supervisor.event("agent.state", agent_id="8002")
        assert [e["agent_id"] for e in supervisor.of_type("agent.state")] == ["8001", "8002"]
        assert supervisor.of_type("call.offered") == []
        await lead.event("agent.state", agent_id="8002")
        assert [e["agent_id"] for e in lead.of_type("agent.state")] == ["8002"]
        # Other agents see nothing of 8001; the other tenant sees only its own.
        alice_state = await alice.event("agent.state", agent_id="8002")
        assert alice_state["reason"] == "break"
        assert [e["type"] for e in alice.logged()] == ["agent.state"]
        beta_state = await other_tenant.event("agent.state", agent_id="9001")
        assert beta_state["seq"] == 1
        assert [e["agent_id"] for e in other_tenant.of_type("agent.state")] == ["9001"]
        # Every logged event carries its seq and time; each arrives once, in order.
        seqs = [e["seq"] for e in ann.logged()]
        assert seqs == sorted(set(seqs)) and all(e["at"] for e in ann.logged())


async def test_the_screen_pop_is_completed_from_the_log_and_calls_end_at_their_agents(
    served: tuple[World, int],
) -> None:
    world, port = served
    async with (
        cti(port, await cookie(world, "acme", "8001")) as ann,
        cti(port, await cookie(world, "acme", "admin")) as admin,
    ):
        await ann.command("hello")
        await admin.command("hello")
        await world.events.append(
            CallStarted(
                tenant="acme",
                call_id="call-2",
                direction="inbound",
                ani="02154321234",
                dnis="4001",
                region="上海",
            )
        )
        await world.events.append(
            CallDataChanged(tenant="acme", call_id="call-2", values={"menu": "1"}, source="ivr")
        )
        await world.events.append(CallQueued(tenant="acme", call_id="call-2", queue_id="sales"))
        # An offer without the screen pop (another producer than the ACD).
        await world.events.append(
            CallOffered(tenant="acme", call_id="call-2", agent_id="8001", queue_id="sales")
        )
        await world.events.append(CallAnswered(tenant="acme", call_id="call-2", by="agent", agent_id="8001"))
        await world.events.append(CallEnded(tenant="acme", call_id="call-2", hangup_side="customer"))
        offered = await ann.event("call.offered")
        assert offered["ani"] == "021****1234" and offered["dnis"] == "4001" and offered["region"] == "上海"
        assert offered["data"] == {"menu": "1"} and offered["waited_seconds"] >= 0
        answered = await ann.event("call.answered")
        ended = await ann.event("call.ended")
        assert answered["call_id"] == ended["call_id"] == "call-2" and ended["cause"] == "normal_clearing"
        # The admin (numbers.full) watches the wallboard, not the agent's calls.
        await admin.event("wallboard")
        assert admin.of_type("call.ended") == []


async def test_agent_commands_reach_the_acd_and_browser_phones_with_the_right_arguments(
    served: tuple[World, int],
) -> None:
    world, port = served
    world.browsers.ringing.add(("acme", "8001", "call-9"))
    async with cti(port, await cookie(world, "acme", "8001")) as ann:
        await ann.command("hello")
        offer = await ann.command("webrtc.offer", sdp="v=0\r\no=browser\r\n")
        assert offer["ok"] and offer["sdp"].startswith("v=0")
        login = await ann.command("agent.login", device="browser", queues=["sales"])
        assert login["ok"] is True and login["state"] == "logged_out"  # the ACD's view comes back
        assert (await ann.command("agent.ready"))["ok"]
        assert (await ann.command("agent.not_ready", reason="break"))["ok"]
        assert (await ann.command("call.answer", call_id="call-9"))["ok"]
        missing = await ann.command("call.answer", call_id="call-0")
        assert missing["ok"] is False and missing["error"]["code"] == "not_ringing"
        assert (await ann.command("call.hold", call_id="call-9"))["ok"]
        assert (await ann.command("call.resume", call_id="call-9"))["ok"]
        assert (await ann.command("call.hangup", call_id="call-9"))["ok"]
        assert (await ann.command("wrapup.end", disposition="resolved", notes="回访"))["ok"]
        assert (await ann.command("agent.logout"))["ok"]
        bad = await ann.command("agent.login", device="carrier-pigeon")
        assert (
            bad["ok"] is False and bad["error"]["code"] == "invalid" and "device" in bad["error"]["message"]
        )
        assert (await ann.command("call.hold"))["error"]["code"] == "invalid"
        assert (await ann.command("call.transfer", call_id="call-9", target="agent:8002"))["error"][
            "code"
        ] == ("not_supported")
        forced = await ann.command("supervisor.force_state", agent_id="8002", state="ready")
        assert forced["error"]["code"] == "forbidden"
    assert world.browsers.named("attach") == [("acme", "8001", "v=0\r\no=browser\r\n")]
    assert world.browsers.named("answer") == [("acme", "8001", "call-9"), ("acme", "8001", "call-0")]
    assert world.acd.calls == [
        ("login", ("acme", "8001", "browser", ["sales"])),
        ("ready", ("acme", "8001")),
        ("not_ready", ("acme", "8001", "break")),
        ("hold", ("acme", "8001", "call-9")),
        ("resume", ("acme", "8001", "call-9")),
        ("hangup", ("acme", "8001", "call-9")),
        ("end_wrapup", ("acme", "8001", "resolved", "回访")),
        ("logout", ("acme", "8001")),
    ]


async def test_refusals_and_slow_answers_are_replied_within_the_time_limit(served: tuple[World, int]) -> None:
    world, port = served
    async with cti(port, await cookie(world, "acme", "8001")) as ann:
        await ann.command("hello")
        world.acd.fail = AcdError("not_logged_in", "agent 8001 is not logged in")
        refused = await ann.command("agent.ready")
        assert refused == {
            "reply_to": refused["reply_to"],
            "ok": False,
            "error": {"code": "not_logged_in", "message": "agent 8001 is not logged in"},
        }
        world.acd.fail = None
        world.acd.hang = True
        started = time.monotonic()
        slow = await ann.command("agent.ready")
        assert slow["error"]["code"] == "timeout" and time.monotonic() - started < 2.0
        # The connection still answers (heartbeat) while the slow command runs on.
        assert (await ann.command("ping"))["ok"]
        world.acd.unblock.set()


async def test_supervisors_force_states_in_their_scope_and_it_is_audited(served: tuple[World, int]) -> None:
    world, port = served
    async with (
        cti(port, await cookie(world, "acme", "super")) as supervisor,
        cti(port, await cookie(world, "acme", "lead")) as lead,
    ):
        await supervisor.command("hello")
        await lead.command("hello")
        assert (await supervisor.command("supervisor.force_state", agent_id="8001", state="not_ready"))["ok"]
        outside = await lead.command("supervisor.force_state", agent_id="8001", state="logged_out")
        assert outside["error"]["code"] == "forbidden"
        assert (await lead.command("supervisor.force_state", agent_id="8002", state="logged_out"))["ok"]
        wrong = await supervisor.command("supervisor.force_state", agent_id="8001", state="asleep")
        assert wrong["error"]["code"] == "invalid"
    assert world.acd.named("force_state") == [
        ("acme", "8001", "not_ready", "super"),
        ("acme", "8002", "logged_out", "lead"),
    ]
    async with world.client() as client:
        await sign_in(client, "acme", "admin")
        audit = (await client.get("/api/v1/audit", params={"action": "agent.force_state"})).json()
    assert [(entry["actor"], entry["target"]) for entry in audit["items"]] == [
        ("lead", "agents/8002"),
        ("super", "agents/8001"),
    ]


async def test_a_reconnecting_client_gets_what_it_missed_once_and_in_order(served: tuple[World, int]) -> None:
    world, port = served
    session = await cookie(world, "acme", "8001")
    async with cti(port, session) as ann:
        await ann.command("hello")
        await world.events.append(state("acme", "8001", "ready"))
        seen = await ann.event("agent.state")
    last_seq = seen["seq"]
    # While the browser is away (a reload, a network blip):
    await world.events.append(state("acme", "8001", "ringing", frm="ready", call_id="call-5"))
    await world.events.append(state("acme", "8002", "ready"))
    await world.events.append(
        CallOffered(tenant="acme", call_id="call-5", agent_id="8001", ani="13812345678", dnis="4001")
    )
    async with cti(port, session) as ann:
        hello = await ann.command("hello", last_seq=last_seq)
        assert hello["replay_from"] == last_seq and hello["last_seq"] == last_seq + 3
        await ann.event("call.offered")
        # The log's AGT-03 names reach the browser as the protocol's (talking -> on_call).
        await world.events.append(state("acme", "8001", "talking", frm="ringing", call_id="call-5"))
        live = await ann.event("agent.state", state="on_call")
        logged = ann.logged()
        assert [(e["type"], e.get("state")) for e in logged] == [
            ("agent.state", "ringing"),
            ("call.offered", None),
            ("agent.state", "on_call"),
        ]
        assert [e["seq"] for e in logged] == [last_seq + 1, last_seq + 3, live["seq"]]
        assert live["call_id"] == "call-5"


async def test_an_agent_whose_browser_vanished_is_logged_out_after_the_grace_period(
    served: tuple[World, int],
) -> None:
    world, port = served
    grace = world.context.cti_grace_seconds
    session = await cookie(world, "acme", "8001")
    world.acd.states[("acme", "8001")] = {"agent_id": "8001", "state": "ready"}
    async with cti(port, session) as ann:
        await ann.command("hello")
    # A reload within the grace period keeps the login, however long the agent then stays.
    await asyncio.sleep(grace / 5)
    async with cti(port, session) as ann:
        await ann.command("hello")
        await asyncio.sleep(grace * 1.5)
        assert world.acd.named("logout") == []
    gone = time.monotonic()
    # Gone for good: logged out once the grace period has passed, and the media channel released.
    async with asyncio.timeout(5):
        while not world.acd.named("logout"):
            await asyncio.sleep(0.02)
    assert time.monotonic() - gone >= grace * 0.9
    assert world.acd.named("logout") == [("acme", "8001")]
    assert world.browsers.named("detach") == [("acme", "8001")]


async def test_supervisors_get_the_wallboard_and_agents_their_waiting_counts(
    served: tuple[World, int],
) -> None:
    world, port = served
    world.acd.snapshots["acme"] = {
        "agents": [
            {"agent_id": "8001", "name": "Ann", "state": "ready", "since": "2026-01-01T00:00:00+00:00"},
            {"agent_id": "8002", "name": "Alice", "state": "on_call", "since": "2026-01-01T00:00:00+00:00"},
        ],
        "queues": [{"queue": "sales", "name": "销售", "waiting": 2}],
        "trunks": [],
    }
    world.acd.counts["acme"] = {"sales": 2, "support": 5}
    async with (
        cti(port, await cookie(world, "acme", "lead")) as lead,
        cti(port, await cookie(world, "acme", "8001")) as ann,
    ):
        await lead.command("hello")
        await ann.command("hello")
        board = await lead.event("wallboard")
        assert [agent["agent_id"] for agent in board["agents"]] == ["8002"]  # the lead's department
        assert board["queues"][0]["waiting"] == 2
        counts = await ann.event("queue.counts")
        assert counts["counts"] == {"sales": 2}  # only the agent's own queues
        world.acd.counts["acme"] = {"sales": 3}
        await world.events.append(CallQueued(tenant="acme", call_id="call-7", queue_id="sales"))
        await ann.event("queue.counts", counts={"sales": 3})
        assert len(ann.of_type("queue.counts")) == 2
        assert ann.of_type("wallboard") == []
        # A login to other queues changes which counts the agent gets.
        await world.events.append(state("acme", "8001", "not_ready", queues=["sales", "support"]))
        await ann.event("queue.counts", counts={"sales": 3, "support": 0})


async def test_a_silent_connection_is_closed_after_the_idle_time(served: tuple[World, int]) -> None:
    world, port = served
    world.context.cti_idle_seconds = 0.3
    async with cti(port, await cookie(world, "acme", "8001")) as ann:
        await ann.command("hello")
        for _ in range(4):  # pings keep it open
            await asyncio.sleep(0.15)
            assert (await ann.command("ping"))["ok"]
        closed = await ann.wait_closed()
        assert closed.rcvd is not None and closed.rcvd.code == 4000


async def test_events_the_bus_dropped_are_read_from_the_log(served: tuple[World, int]) -> None:
    world, port = served
    async with cti(port, await cookie(world, "acme", "8001")) as ann:
        await ann.command("hello")
        hub = world.api.state.cti.hubs["acme"]
        hub.subscription.maxsize = 2  # a slow subscriber: the bus drops what does not fit
        states = ["ready", "not_ready"] * 5
        await world.events.append_many([state("acme", "8001", to) for to in states])
        await ann._until(lambda: True if len(ann.of_type("agent.state")) >= len(states) else None, 5)
        received = ann.of_type("agent.state")
        assert [event["state"] for event in received] == states
        assert [event["seq"] for event in received] == list(range(1, len(states) + 1))
        assert hub.subscription.dropped > 0


class _Socket:
    """Just enough of a WebSocket for a connection that is never read."""

    def __init__(self) -> None:
        from starlette.websockets import WebSocketState

        self.application_state = WebSocketState.CONNECTED
        self.client = None
        self.closed_with: tuple[int, str] | None = None

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = (code, reason)


async def test_a_client_too_far_behind_is_told_to_reconnect_with_its_last_seq(world: World) -> None:
    from hotline.api.cti import CLOSE_TOO_SLOW, CtiConnection
    from hotline.tenancy.users import Principal, permissions_of

    principal = Principal("acme", "8001", "Ann", ("agent",), permissions_of(["agent"]), agent_id="8001")
    gateway = world.api.state.cti
    socket = _Socket()
    connection = CtiConnection(gateway, None, socket, principal, set(), ["sales"])  # type: ignore[arg-type]
    connection.pending = None
    connection.outbox = asyncio.Queue(maxsize=2)
    for seq in (1, 2, 3):
        connection.deliver({"type": "agent.state", "seq": seq}, logged=True)
    for _ in range(20):
        await asyncio.sleep(0)
    assert connection.closed and socket.closed_with is not None and socket.closed_with[0] == CLOSE_TOO_SLOW
    # Nothing more is queued for a connection that is gone.
    connection.deliver({"type": "agent.state", "seq": 4}, logged=True)
    assert connection.outbox.qsize() == 2


async def test_the_browser_phones_word_that_an_offer_is_gone_reaches_the_agent(
    served: tuple[World, int],
) -> None:
    world, port = served
    async with (
        cti(port, await cookie(world, "acme", "8001")) as ann,
        cti(port, await cookie(world, "acme", "alice")) as alice,
    ):
        await ann.command("hello")
        await alice.command("hello")
        notice = SimpleNamespace(
            tenant="acme",
            agent_id="8001",
            kind="offer_withdrawn",
            call_id="call-3",
            cause="answered_elsewhere",
        )
        world.api.state.cti.browser_notice(notice)
        ended = await ann.event("call.ended")
        assert ended["call_id"] == "call-3" and ended["cause"] == "answered_elsewhere"
        assert (await alice.command("ping"))["ok"] and alice.of_type("call.ended") == []


def test_the_platform_wires_browser_notices_to_the_gateway(world: World) -> None:
    browsers = FakeBrowsers()
    app = SimpleNamespace(
        storage=world.storage,
        events=world.events,
        bus=world.bus,
        tenancy=world.tenancy,
        settings=Settings(cti_grace_seconds=7),
        switch=SimpleNamespace(directory=world.directory, browsers=browsers),
        acd=world.acd,
    )
    api = create_app(app)  # type: ignore[arg-type]
    assert browsers.notify == api.state.cti.browser_notice
    assert api.state.context.cti_grace_seconds == 7 and api.state.context.acd is world.acd
