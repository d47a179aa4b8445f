"""Browser agents' phones in the switch: offers, answers, hang-ups, a vanished or reloaded browser
(issue #6, issue #3 item 7; TEL-11, AGT-13, FM-04, FM-16).

A real `Switch` (media engine, `connect` with recording, `call_ended`) with a test double for its event
log, a caller whose SIP dialog is a small double (it records the BYE) but whose media is a real
`MediaSession` fed by a test phone, and an aiortc peer standing in for the agent's browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.contrib.media import MediaPlayer
from pydantic import ValidationError

from hotline.config import Settings
from hotline.media.webrtc import ChannelBridge, ChannelState, WebRtcError
from hotline.switch.browser import BrowserNotice, ice_settings
from hotline.switch.call import Call, Leg
from hotline.switch.service import Switch
from tests.media.test_session import RtpPeer, dominant_frequency, free_port_range, pcmu_params
from tests.media.test_webrtc import (
    AGENT_HZ,
    CALLER_HZ,
    BrowserPeer,
    caller_tone_payloads,
    decoded_pcmu,
    wait_until,
    write_tone_wav,
)

TENANT = "acme"
AGENT = "8001"


class EventSink:
    """Stands in for the tenant event log: keeps what the switch appends."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def append(self, event: Any) -> None:
        self.events.append(event)

    def of(self, event_type: str, call: Call) -> list[Any]:
        return [e for e in self.events if e.type == event_type and e.call_id == call.id]


class CallerDialog:
    """The caller's SIP dialog as far as the switch uses it: `bye` is recorded."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.byes: list[str] = []
        self.on_end = None

    async def bye(self, cause: str) -> None:
        if not self.ended.is_set():
            self.byes.append(cause)
            self.end_reason = cause
            self.ended.set()


@pytest.fixture
async def switch(tmp_path: Path) -> AsyncIterator[Switch]:
    low, high = free_port_range(200)
    settings = Settings(
        data_dir=tmp_path,
        bind="127.0.0.1",
        rtp_port_min=low,
        rtp_port_max=high,
        ice_host_addresses=["127.0.0.1"],
    )
    the_switch = Switch(settings, None, None, EventSink(), None)  # type: ignore[arg-type]
    the_switch.browsers.reconnect_grace = 0.5
    the_switch.browsers.sweep_interval = 0.1
    notices: list[BrowserNotice] = []
    the_switch.browsers.notify = notices.append
    the_switch.notices = notices  # type: ignore[attr-defined]
    try:
        yield the_switch
    finally:
        for call in list(the_switch.calls.values()):
            await call.hangup("test over")
        await the_switch.browsers.close()
        await the_switch.media.close()


def events(switch: Switch) -> EventSink:
    sink = switch.events
    assert isinstance(sink, EventSink)
    return sink


def notices(switch: Switch) -> list[BrowserNotice]:
    found: list[BrowserNotice] = switch.notices  # type: ignore[attr-defined]
    return found


@contextlib.asynccontextmanager
async def caller(switch: Switch) -> AsyncIterator[tuple[Call, RtpPeer, CallerDialog]]:
    """A call from a phone, answered by the IVR and waiting for an agent."""
    phone = await RtpPeer.open()
    call = Call(switch, tenant=TENANT, ani="13800000000", dnis="4001", region=None, data={})
    session = await switch.media.create_session(pcmu_params(phone), name=f"caller-{call.id}")
    dialog = CallerDialog()
    leg = Leg(call, "caller", dialog, session)  # type: ignore[arg-type]
    call.legs.append(leg)
    call.caller = leg
    call.answered = True
    switch.calls[call.id] = call
    try:
        yield call, phone, dialog
    finally:
        phone.close()


@contextlib.asynccontextmanager
async def agent_browser(switch: Switch, folder: Path) -> AsyncIterator[BrowserPeer]:
    """The agent's browser signs in: its media channel is attached and connected."""
    folder.mkdir(exist_ok=True)
    player = MediaPlayer(str(write_tone_wav(folder / "mic.wav", AGENT_HZ)), loop=True)
    browser = BrowserPeer(player.audio)
    try:
        await browser.accept(await switch.browsers.attach(TENANT, AGENT, await browser.offer()))
        assert await wait_until(lambda: switch.browsers.connected(TENANT, AGENT))
        yield browser
    finally:
        await browser.close()
        if player.audio is not None:
            player.audio.stop()


async def ring_and_answer(switch: Switch, call: Call) -> Leg:
    ringing = asyncio.ensure_future(switch.browsers.ring(call, TENANT, AGENT, timeout=5))
    await asyncio.sleep(0.05)
    assert switch.browsers.answer(TENANT, AGENT, call.id)
    leg = await ringing
    assert leg is not None
    return leg


# --- the happy path -----------------------------------------------------------------------------------------


async def test_an_answered_browser_call_has_two_way_audio_and_the_agent_hangs_up(
    switch: Switch, tmp_path: Path
) -> None:
    async with (
        agent_browser(switch, tmp_path / "browser") as browser,
        caller(switch) as (call, phone, dialog),
    ):
        leg = await ring_and_answer(switch, call)
        channel = switch.browsers.channel(TENANT, AGENT)
        assert leg.sip is None and leg.media is channel and leg in call.legs
        await switch.connect(call, leg)
        assert isinstance(call.bridge, ChannelBridge)
        await phone.stream(call.caller.media.local_port, caller_tone_payloads(1.0))  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        heard = browser.heard_audio(0.5)
        assert abs(dominant_frequency(heard, browser.heard_rate) - CALLER_HZ) < 15
        assert abs(dominant_frequency(decoded_pcmu(phone)[-4000:]) - AGENT_HZ) < 15
        # the agent clicks hang-up: the caller gets a BYE, the call ends, the channel stays
        assert await switch.browsers.hangup(TENANT, AGENT, call.id)
        assert dialog.byes == ["agent hangup"]
        assert call.hung_up and call.id not in switch.calls
        assert not call.bridge.active
        assert channel is not None and channel.state is ChannelState.CONNECTED
        assert notices(switch)[-1] == BrowserNotice(TENANT, AGENT, "call_ended", call.id, "agent hangup")
        log = events(switch)
        assert [e.kind for e in log.of("leg.created", call)] == ["agent"]
        assert log.of("leg.created", call)[0].endpoint == f"browser:{AGENT}"
        assert len(log.of("leg.answered", call)) == 1
        assert log.of("leg.ended", call)[0].cause == "agent hangup"
        assert log.of("call.ended", call)[0].hangup_side == "agent"
        assert len(log.of("recording.stopped", call)) == 1
        # the next call is answered on the same channel at once
        async with caller(switch) as (second, second_phone, _dialog):
            leg = await ring_and_answer(switch, second)
            assert leg.media is channel
            await switch.connect(second, leg)
            await second_phone.stream(second.caller.media.local_port, caller_tone_payloads(0.4))  # type: ignore[union-attr]
            assert abs(dominant_frequency(decoded_pcmu(second_phone)[-2000:]) - AGENT_HZ) < 15


async def test_the_caller_hanging_up_releases_the_browser_leg_but_not_the_channel(
    switch: Switch, tmp_path: Path
) -> None:
    async with agent_browser(switch, tmp_path / "browser"), caller(switch) as (call, _phone, dialog):
        leg = await ring_and_answer(switch, call)
        await switch.connect(call, leg)
        call.mark_gone("remote hangup")  # the caller's BYE, as the SIP side reports it
        await call.hangup("remote hangup")
        assert leg.ended and leg.browser is not None and leg.browser.end_reason == "remote hangup"
        assert dialog.byes == ["remote hangup"]  # a dialog already ended ignores it in real life
        assert switch.browsers.connected(TENANT, AGENT)
        assert notices(switch)[-1].kind == "call_ended"
        assert events(switch).of("call.ended", call)[0].hangup_side == "customer"


# --- offers that are not answered ---------------------------------------------------------------------------


async def test_reject_timeout_caller_hangup_and_withdrawal_end_the_offer(
    switch: Switch, tmp_path: Path
) -> None:
    browsers = switch.browsers
    async with caller(switch) as (call, _phone, _dialog):
        assert await browsers.ring(call, TENANT, AGENT, timeout=1) is None  # not signed in: at once
    async with agent_browser(switch, tmp_path / "browser"):
        async with caller(switch) as (call, _phone, _dialog):
            ringing = asyncio.ensure_future(browsers.ring(call, TENANT, AGENT, timeout=5))
            await asyncio.sleep(0.05)
            assert not browsers.answer(TENANT, AGENT, "another-call")
            assert await browsers.ring(call, TENANT, AGENT, timeout=1) is None  # one offer at a time
            assert browsers.reject(TENANT, AGENT, call.id)
            assert await ringing is None
            assert not browsers.answer(TENANT, AGENT, call.id)  # too late
            assert events(switch).of("leg.ended", call)[-1].cause == "rejected"
        async with caller(switch) as (call, _phone, _dialog):
            started = time.monotonic()
            assert await browsers.ring(call, TENANT, AGENT, timeout=0.3) is None
            assert 0.25 < time.monotonic() - started < 2
            await asyncio.sleep(0)
            assert events(switch).of("leg.ended", call)[-1].cause == "no_answer"
            assert notices(switch)[-1] == BrowserNotice(
                TENANT, AGENT, "offer_withdrawn", call.id, "no_answer"
            )
        async with caller(switch) as (call, _phone, _dialog):
            ringing = asyncio.ensure_future(browsers.ring(call, TENANT, AGENT, timeout=5))
            await asyncio.sleep(0.05)
            call.mark_gone("remote hangup")
            assert await asyncio.wait_for(ringing, 1) is None
            await asyncio.sleep(0)
            assert events(switch).of("leg.ended", call)[-1].cause == "cancelled"
            await call.hangup("remote hangup")
        async with caller(switch) as (call, _phone, _dialog):
            ringing = asyncio.ensure_future(browsers.ring(call, TENANT, AGENT, timeout=5))
            await asyncio.sleep(0.05)
            ringing.cancel()  # another agent took it (ring-all)
            with pytest.raises(asyncio.CancelledError):
                await ringing
            assert not browsers.answer(TENANT, AGENT, call.id)
            assert notices(switch)[-1].kind == "offer_withdrawn"
            # the agent is free again
            leg = await ring_and_answer(switch, call)
            assert leg.call is call


# --- the browser going away (FM-16) and coming back (AGT-13) ------------------------------------------------


async def test_a_vanished_browser_ends_the_call_after_the_grace_period(
    switch: Switch, tmp_path: Path
) -> None:
    async with (
        agent_browser(switch, tmp_path / "browser") as browser,
        caller(switch) as (call, _phone, dialog),
    ):
        await switch.connect(call, await ring_and_answer(switch, call))
        await browser.pc.close()  # the tab is gone
        assert await wait_until(lambda: not switch.browsers.connected(TENANT, AGENT), 3)
        assert not call.hung_up  # a reload gets its chance first
        assert await wait_until(lambda: call.hung_up, 3)
        assert await wait_until(lambda: bool(events(switch).of("call.ended", call)), 2)
        assert dialog.byes == ["agent_connection_lost"]
        ended = events(switch).of("call.ended", call)[0]
        assert (ended.cause, ended.hangup_side) == ("agent_connection_lost", "agent")


async def test_a_silent_browser_is_found_by_the_sweep_and_the_call_ends(
    switch: Switch, tmp_path: Path
) -> None:
    switch.browsers.inactivity_timeout = 0.4
    async with (
        agent_browser(switch, tmp_path / "browser") as browser,
        caller(switch) as (call, _phone, dialog),
    ):
        await switch.connect(call, await ring_and_answer(switch, call))
        for transceiver in browser.pc.getTransceivers():
            transceiver.sender.replaceTrack(None)  # the network went: nothing arrives any more
        assert await wait_until(lambda: call.id not in switch.calls, 4)
        assert dialog.byes == ["agent_connection_lost"]


async def test_a_reloaded_browser_keeps_the_call(switch: Switch, tmp_path: Path) -> None:
    async with caller(switch) as (call, phone, dialog):
        async with agent_browser(switch, tmp_path / "first") as first:
            await switch.connect(call, await ring_and_answer(switch, call))
            await first.pc.close()  # reload: the old page's connection ends...
            assert await wait_until(lambda: not switch.browsers.connected(TENANT, AGENT), 3)
        async with agent_browser(switch, tmp_path / "second") as second:  # ...and the new page attaches
            assert not call.hung_up
            await phone.stream(call.caller.media.local_port, caller_tone_payloads(1.0))  # type: ignore[union-attr]
            await asyncio.sleep(0.2)
            assert abs(dominant_frequency(second.heard_audio(0.5), second.heard_rate) - CALLER_HZ) < 15
            await asyncio.sleep(0.6)  # past the grace period: still up
            assert not call.hung_up and dialog.byes == []
            agent_leg = call.legs[-1]
            assert agent_leg.media is switch.browsers.channel(TENANT, AGENT)


async def test_a_channel_dropping_while_ringing_ends_the_offer(switch: Switch, tmp_path: Path) -> None:
    async with agent_browser(switch, tmp_path / "browser"), caller(switch) as (call, _phone, _dialog):
        ringing = asyncio.ensure_future(switch.browsers.ring(call, TENANT, AGENT, timeout=5))
        await asyncio.sleep(0.05)
        await switch.browsers.detach(TENANT, AGENT)  # signed out
        assert await asyncio.wait_for(ringing, 1) is None
        assert not switch.browsers.connected(TENANT, AGENT)
        assert not call.hung_up  # the caller waits for another agent


async def test_a_bad_offer_is_refused_and_leaves_the_agent_unattached(switch: Switch) -> None:
    with pytest.raises(WebRtcError, match="not valid SDP"):
        await switch.browsers.attach(TENANT, AGENT, "not sdp")
    assert not switch.browsers.connected(TENANT, AGENT)
    assert switch.browsers.channel(TENANT, AGENT) is None


def test_ice_servers_come_from_the_settings() -> None:
    settings = Settings(
        ice_servers=[
            "stun:stun.example.com:3478",
            {"urls": "turn:turn.example.com", "username": "u", "credential": "p"},
        ],
        ice_host_addresses=["192.0.2.10"],
    )
    ice = ice_settings(settings)
    assert [server.urls for server in ice.servers] == [
        ("stun:stun.example.com:3478",),
        ("turn:turn.example.com",),
    ]
    assert ice.servers[1].username == "u" and ice.host_addresses == ("192.0.2.10",)
    assert ice_settings(Settings()).host_addresses is None  # the LAN's addresses
    with pytest.raises(ValidationError, match="username and a credential"):
        Settings(ice_servers=[{"urls": ["turn:turn.example.com"]}])
    with pytest.raises(ValidationError, match="must start with stun"):
        Settings(ice_servers=["https://turn.example.com"])
