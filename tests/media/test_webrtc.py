"""Browser media channels (aiortc) and their bridge to SIP legs (issue #3 item 7; TEL-11, FM-04, FM-16).

An aiortc peer stands in for the browser: it offers a sine tone read from a WAV file and keeps what it
hears. A test phone (`RtpPeer`) sends a PCMU tone of another frequency to a SIP `MediaSession`. Once the
two are bridged, each side must hear the other's tone, and the recording must hold both, caller left and
agent right. ICE runs on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from av.audio.frame import AudioFrame

from hotline.media.codecs import make_decoder
from hotline.media.dtmf import DtmfSender
from hotline.media.recorder import Recorder
from hotline.media.session import MediaEngine, MediaError, SessionMode
from hotline.media.webrtc import (
    ChannelBridge,
    ChannelState,
    IceServer,
    IceSettings,
    WebRtcChannel,
    WebRtcError,
    host_addresses,
)
from tests.media.audio import tone as sine
from tests.media.test_session import RtpPeer, dominant_frequency, media_engine, pcmu_params, ulaw

LOOPBACK = IceSettings(host_addresses=("127.0.0.1",))
AGENT_HZ = 1000.0  # what the browser's microphone "hears"
CALLER_HZ = 440.0  # what the phone sends


def write_tone_wav(path: Path, freq: float, seconds: float = 2.0, rate: int = 48000) -> Path:
    samples = sine(freq, seconds, rate, level_dbm0=-12.0)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


class BrowserPeer:
    """What an agent's browser does: offer (after gathering) with a microphone track, keep what it hears."""

    def __init__(self, microphone: MediaStreamTrack | None, codecs: list[str] | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.heard: list[np.ndarray] = []  # mono int16 at 48 kHz (or the codec's rate)
        self.heard_rate = 48000
        self._reader: asyncio.Task[None] | None = None
        self.player_tracks: list[MediaStreamTrack] = []
        transceiver = self.pc.addTransceiver(microphone or "audio", direction="sendrecv")
        if codecs:
            wanted = [RTCRtpCodecCapability(f"audio/{name}", clockRate=8000, channels=1) for name in codecs]
            transceiver.setCodecPreferences(wanted)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, AudioFrame)
                samples = frame.to_ndarray().reshape(-1, frame.layout.nb_channels)[:, 0]
                self.heard_rate = frame.sample_rate
                self.heard.append(samples.astype(np.int16))

    async def offer(self) -> str:
        with host_addresses(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def heard_audio(self, seconds: float) -> np.ndarray:
        audio = np.concatenate(self.heard) if self.heard else np.zeros(0, dtype=np.int16)
        return audio[-round(seconds * self.heard_rate) :]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()


async def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


@contextlib.asynccontextmanager
async def browser_with_channel(
    tmp_path: Path, *, codecs: list[str] | None = None, **channel_args
) -> AsyncIterator[tuple[BrowserPeer, WebRtcChannel, list[ChannelState]]]:
    states: list[ChannelState] = []
    player = MediaPlayer(str(write_tone_wav(tmp_path / "mic.wav", AGENT_HZ)), loop=True)
    browser = BrowserPeer(player.audio, codecs)
    channel = WebRtcChannel(ice=LOOPBACK, on_state=lambda _c, s: states.append(s), **channel_args)
    try:
        answer = await channel.accept_offer(await browser.offer())
        await browser.accept(answer)
        assert await wait_until(lambda: channel.state is ChannelState.CONNECTED), channel.state
        yield browser, channel, states
    finally:
        await channel.close()
        await browser.close()
        if player.audio is not None:
            player.audio.stop()


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    async with media_engine() as media:
        yield media


def caller_tone_payloads(seconds: float) -> list[bytes]:
    pcm = sine(CALLER_HZ, seconds, 8000, level_dbm0=-12.0)
    return [ulaw(pcm[i : i + 160]) for i in range(0, len(pcm) - 159, 160)]


def decoded_pcmu(peer: RtpPeer) -> np.ndarray:
    decoder = make_decoder("PCMU")
    return np.concatenate([decoder.decode(p.payload) for p in peer.packets(pt=0)])


# --- negotiation --------------------------------------------------------------------------------------------


async def test_answer_carries_our_host_candidate_and_opus_and_the_channel_connects(tmp_path: Path) -> None:
    async with browser_with_channel(tmp_path) as (browser, channel, states):
        answer = browser.pc.remoteDescription.sdp
        assert "a=candidate:" in answer and " 127.0.0.1 " in answer
        assert "a=fingerprint:sha-256" in answer  # DTLS-SRTP (OPS-10)
        assert "UDP/TLS/RTP/SAVPF" in answer
        assert channel.codec == "opus"
        assert states[:2] == [ChannelState.CONNECTING, ChannelState.CONNECTED]
        # no call bridged in: nothing is sent to the browser, and what it sends is not decoded
        await asyncio.sleep(0.3)
        assert channel.frames_sent == 0 and channel.frames_received == 0 and channel.read_frame() is None
        channel.start_receiving()
        assert await wait_until(lambda: channel.frames_received > 5)
        channel.stop_receiving()


async def test_a_host_with_no_address_to_offer_says_so_instead_of_answering(tmp_path: Path) -> None:
    """An answer without candidates would "succeed" and never connect (calls would fail much later)."""
    player = MediaPlayer(str(write_tone_wav(tmp_path / "mic.wav", AGENT_HZ)), loop=True)
    browser = BrowserPeer(player.audio, None)
    channel = WebRtcChannel(ice=IceSettings(host_addresses=()))
    try:
        with pytest.raises(WebRtcError, match="HOTLINE_ICE_HOST_ADDRESSES"):
            await channel.accept_offer(await browser.offer())
    finally:
        await channel.close()
        await browser.close()
        if player.audio is not None:
            player.audio.stop()


async def test_a_browser_offering_only_g711_gets_pcmu(tmp_path: Path) -> None:
    async with browser_with_channel(tmp_path, codecs=["PCMU", "PCMA"]) as (_browser, channel, _states):
        assert channel.codec == "PCMU"


@pytest.mark.parametrize(
    ("offer", "reason"),
    [
        ("", "empty"),
        ("hello", "not valid SDP"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "exactly one audio stream"),
    ],
)
async def test_bad_offers_are_refused_with_a_reason(offer: str, reason: str) -> None:
    channel = WebRtcChannel(ice=LOOPBACK)
    with pytest.raises(WebRtcError, match=reason):
        await channel.accept_offer(offer)
    await channel.close()


async def test_an_offer_sent_before_gathering_or_with_video_is_refused() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    with host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    complete = pc.localDescription.sdp
    await pc.close()
    without_candidates = "".join(
        line + "\r\n" for line in complete.splitlines() if not line.startswith("a=candidate")
    )
    channel = WebRtcChannel(ice=LOOPBACK)
    with pytest.raises(WebRtcError, match="no ICE candidates"):
        await channel.accept_offer(without_candidates)
    video = complete + complete[complete.index("m=audio") :].replace("m=audio", "m=video", 1)
    with pytest.raises(WebRtcError, match="exactly one audio stream"):
        await WebRtcChannel(ice=LOOPBACK).accept_offer(video)


def test_ice_servers_are_checked() -> None:
    IceServer(("stun:stun.example.com:3478",))
    IceServer("turn:turn.example.com:3478?transport=udp", "agent", "secret")  # type: ignore[arg-type]
    with pytest.raises(WebRtcError, match="username and a credential"):
        IceServer(("turn:turn.example.com",))
    with pytest.raises(WebRtcError, match="must start with"):
        IceServer(("http://example.com",))
    servers = IceSettings(servers=(IceServer(("stun:a.example:3478",)),)).configuration().iceServers
    assert [s.urls for s in servers or []] == [["stun:a.example:3478"]]
    assert IceSettings().configuration().iceServers == []  # never aiortc's public default


# --- bridged calls ------------------------------------------------------------------------------------------


async def test_two_way_audio_between_browser_and_sip_leg_and_both_sides_recorded(
    tmp_path: Path, engine: MediaEngine
) -> None:
    phone = await RtpPeer.open()
    try:
        session = await engine.create_session(pcmu_params(phone), name="caller")
        async with browser_with_channel(tmp_path) as (browser, channel, _states):
            recorder = Recorder(tmp_path / "rec", "acme", "call-1", format="wav")
            bridge = ChannelBridge(session, channel, recorder)
            assert session.mode is SessionMode.BRIDGED
            heard_before = len(browser.heard)
            await phone.stream(session.local_port, caller_tone_payloads(1.6))
            await asyncio.sleep(0.2)
            bridge.unbridge()
            info = await recorder.close()
            # FM-04: audio both ways
            heard = browser.heard_audio(0.8)
            assert len(browser.heard) - heard_before > 40
            assert abs(dominant_frequency(heard, browser.heard_rate) - CALLER_HZ) < 15
            to_phone = decoded_pcmu(phone)
            assert len(to_phone) >= 160 * 60
            assert abs(dominant_frequency(to_phone[-8000:]) - AGENT_HZ) < 15
            assert bridge.to_browser > 50 and bridge.to_caller > 50
            # unbridging leaves both ends open: the channel waits for the next call
            assert session.mode is SessionMode.IDLE and not session.closed
            assert channel.state is ChannelState.CONNECTED and not channel.receiving
        with wave.open(str(info.path)) as recording:
            assert recording.getnchannels() == 2 and recording.getframerate() == 8000
            frames = recording.readframes(recording.getnframes())
        stereo = np.frombuffer(frames, dtype=np.int16).reshape(-1, 2)
        assert len(stereo) > 8000 * 1.4
        caller_side, agent_side = stereo[4000:12000, 0], stereo[4000:12000, 1]
        assert abs(dominant_frequency(caller_side) - CALLER_HZ) < 15
        assert abs(dominant_frequency(agent_side) - AGENT_HZ) < 15
    finally:
        phone.close()


async def test_the_channel_serves_call_after_call_and_dtmf_still_reaches_the_sip_session(
    tmp_path: Path, engine: MediaEngine
) -> None:
    phones = [await RtpPeer.open(), await RtpPeer.open()]
    digits: list[str] = []
    try:
        async with browser_with_channel(tmp_path) as (_browser, channel, _states):
            for index, phone in enumerate(phones):
                session = await engine.create_session(
                    pcmu_params(phone), name=f"caller-{index}", on_dtmf=lambda _s, e: digits.append(e.digit)
                )
                bridge = ChannelBridge(session, channel)
                await phone.stream(session.local_port, caller_tone_payloads(0.3))
                start = phone.ts
                for event in DtmfSender().packets(str(index + 1), start, duration=0.1):
                    phone.send(session.local_port, event.payload, pt=101, marker=event.marker, ts=start)
                await asyncio.sleep(0.3)
                assert abs(dominant_frequency(decoded_pcmu(phone)[-2400:]) - AGENT_HZ) < 15
                # the session closing (the caller's BYE) ends the bridge, not the channel
                session.close()
                assert not bridge.active
                assert channel.state is ChannelState.CONNECTED
        assert digits == ["1", "2"]
    finally:
        for phone in phones:
            phone.close()


async def test_holding_the_sip_leg_stops_both_directions(tmp_path: Path, engine: MediaEngine) -> None:
    phone = await RtpPeer.open()
    try:
        session = await engine.create_session(pcmu_params(phone), name="caller")
        async with browser_with_channel(tmp_path) as (_browser, channel, _states):
            bridge = ChannelBridge(session, channel)
            await phone.stream(session.local_port, caller_tone_payloads(0.4))
            assert await wait_until(lambda: bridge.to_caller > 10 and bridge.to_browser > 10)
            session.hold()
            to_caller, to_browser, packets = bridge.to_caller, bridge.to_browser, len(phone.received)
            await phone.stream(session.local_port, caller_tone_payloads(0.4))
            assert (bridge.to_caller, bridge.to_browser) == (to_caller, to_browser)
            assert len(phone.received) - packets < 3  # at most what was in flight
            session.unhold()
            await phone.stream(session.local_port, caller_tone_payloads(0.4))
            assert bridge.to_caller > to_caller and bridge.to_browser > to_browser
            bridge.unbridge()
    finally:
        phone.close()


async def test_bridging_checks_both_ends(tmp_path: Path, engine: MediaEngine) -> None:
    unconfigured = await engine.create_session()
    channel = WebRtcChannel(ice=LOOPBACK)
    with pytest.raises(MediaError, match="no negotiated parameters"):
        ChannelBridge(unconfigured, channel)
    phone = await RtpPeer.open()
    try:
        session = await engine.create_session(pcmu_params(phone))
        await channel.close()
        with pytest.raises(MediaError, match="closed"):
            ChannelBridge(session, channel)
    finally:
        phone.close()


async def test_a_reloaded_browser_takes_over_the_call(tmp_path: Path, engine: MediaEngine) -> None:
    phone = await RtpPeer.open()
    (tmp_path / "second").mkdir()
    try:
        session = await engine.create_session(pcmu_params(phone), name="caller")
        async with browser_with_channel(tmp_path) as (_old_browser, old, _states):
            bridge = ChannelBridge(session, old)
            await phone.stream(session.local_port, caller_tone_payloads(0.3))
            async with browser_with_channel(tmp_path / "second") as (new_browser, new, _states2):
                bridge.replace_channel(new)
                assert not old.receiving and new.receiving
                sent_before = new.frames_sent
                await phone.stream(session.local_port, caller_tone_payloads(1.0))
                await asyncio.sleep(0.2)
                assert new.frames_sent - sent_before > 40
                heard = new_browser.heard_audio(0.5)
                assert abs(dominant_frequency(heard, new_browser.heard_rate) - CALLER_HZ) < 15
                bridge.unbridge()
    finally:
        phone.close()


# --- the browser going away (FM-16) -------------------------------------------------------------------------


async def test_a_browser_that_closes_is_reported_closed(tmp_path: Path) -> None:
    async with browser_with_channel(tmp_path) as (browser, channel, states):
        await browser.pc.close()
        assert await wait_until(lambda: channel.state is ChannelState.CLOSED, 5.0)
        assert states[-1] is ChannelState.CLOSED


async def test_a_browser_that_stops_sending_is_reported_failed(tmp_path: Path) -> None:
    async with browser_with_channel(tmp_path, inactivity_timeout=0.5) as (browser, channel, states):
        channel.check(time.monotonic() + 60)
        assert channel.state is ChannelState.CONNECTED  # no call: silence from the browser is fine
        channel.start_receiving()  # a call
        assert await wait_until(lambda: channel.frames_received > 5)
        channel.check(time.monotonic())
        assert channel.state is ChannelState.CONNECTED  # it talks: alive
        for transceiver in browser.pc.getTransceivers():
            transceiver.sender.replaceTrack(None)  # the network to the browser is gone
        await asyncio.sleep(0.8)
        channel.check(time.monotonic())
        assert channel.state is ChannelState.FAILED
        assert states[-1] is ChannelState.FAILED
        await channel.close()
        assert states.count(ChannelState.FAILED) == 1 and ChannelState.CLOSED not in states
