"""Two-party relay, recording on the relay path, transcoding, DTMF and hold while bridged, conferences.

Two `MediaSession`s are bridged over 127.0.0.1 and two test phones (`RtpPeer`) talk through them, so the
assertions are about what each phone receives and what the recording holds.
"""

from __future__ import annotations

import asyncio
import itertools
import wave
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hotline.media.bridge import Bridge, ConferenceBridge
from hotline.media.codecs import make_decoder, make_encoder
from hotline.media.dtmf import DtmfSender
from hotline.media.mixer import ParticipantMode
from hotline.media.player import Tone, ToneSource
from hotline.media.recorder import Recorder
from hotline.media.rtp import RtpPacket
from hotline.media.session import MediaEngine, MediaError, MediaParams, MediaSession, SessionMode
from tests.media.audio import ESPEAK, align, snr_db, speech
from tests.media.audio import dtmf as dtmf_tone
from tests.media.audio import tone as sine
from tests.media.test_session import (
    RtpPeer,
    dominant_frequency,
    frames_of,
    media_engine,
    pcmu_params,
    settle,
    ulaw,
)

RATE = 8000


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    async with media_engine() as media:
        yield media


async def bridged_pair(
    engine: MediaEngine,
    params_a: MediaParams | None = None,
    params_b: MediaParams | None = None,
    **bridge_args,
) -> tuple[RtpPeer, RtpPeer, MediaSession, MediaSession, Bridge]:
    """Two phones and their bridged legs; given parameters get the phones' ports filled in."""
    caller, agent = await RtpPeer.open(), await RtpPeer.open()
    a_params = replace(params_a, remote_port=caller.port) if params_a else pcmu_params(caller)
    b_params = replace(params_b, remote_port=agent.port) if params_b else pcmu_params(agent)
    a = await engine.create_session(a_params, name="caller")
    b = await engine.create_session(b_params, name="agent")
    return caller, agent, a, b, Bridge(a, b, **bridge_args)


def steps(values: list[int], modulus: int) -> set[int]:
    return {(second - first) % modulus for first, second in itertools.pairwise(values)}


# --- relaying -----------------------------------------------------------------------------------------------


async def test_packets_are_relayed_both_ways_as_one_continuous_stream_across_ssrc_changes(
    engine: MediaEngine,
) -> None:
    caller, agent, a, b, bridge = await bridged_pair(engine)
    try:
        assert a.mode is SessionMode.BRIDGED and b.mode is SessionMode.BRIDGED
        payloads = [bytes([index]) * 160 for index in range(60)]
        caller.seq, caller.ts = 0xFFF0, 0xFFFFFF00  # both wrap during the call
        for index, payload in enumerate(payloads):
            if index == 30:  # the caller's phone restarts its stream (re-INVITE, transfer...)
                caller.ssrc, caller.seq, caller.ts = 0x12345678, 7, 90000
            caller.send(a.local_port, payload)
            agent.send(b.local_port, payload[::-1])
            await asyncio.sleep(0.004)
        assert await agent.wait_for(60) and await caller.wait_for(60)
        to_agent = agent.packets()
        assert [p.payload for p in to_agent] == payloads  # untouched, in order
        assert {p.ssrc for p in to_agent} == {b.ssrc}
        assert steps([p.sequence for p in to_agent], 1 << 16) == {1}
        timestamp_steps = [(q.timestamp - p.timestamp) % (1 << 32) for p, q in itertools.pairwise(to_agent)]
        assert timestamp_steps[:29] == [160] * 29 and timestamp_steps[30:] == [160] * 29
        assert 160 <= timestamp_steps[29] < 800  # the new source follows on in time
        assert [p.marker for p in to_agent].count(True) == 2  # start, and the splice
        assert to_agent[30].marker
        to_caller = caller.packets()
        assert {p.ssrc for p in to_caller} == {a.ssrc}
        assert steps([p.sequence for p in to_caller], 1 << 16) == {1}
        assert bridge.relayed == 120
        assert a.rx_packets == 60 and b.tx_packets == 60
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


async def test_lost_and_reordered_packets_pass_through_as_such(engine: MediaEngine) -> None:
    caller, agent, a, _, bridge = await bridged_pair(engine)
    try:
        sent = []
        for _ in range(10):
            sent.append(RtpPacket(0, caller.seq, caller.ts, caller.ssrc, bytes(160)))
            caller.seq += 1
            caller.ts += 160
        order = [0, 1, 2, 4, 3, 5, 7, 8, 9]  # 6 lost, 3 and 4 swapped
        assert caller.transport is not None
        for index in order:
            caller.transport.sendto(sent[index].serialize(), ("127.0.0.1", a.local_port))
            await asyncio.sleep(0.003)
        assert await agent.wait_for(9)
        got = agent.packets()
        base_seq, base_ts = got[0].sequence, got[0].timestamp
        assert [(p.sequence - base_seq) % 65536 for p in got] == order
        assert [(p.timestamp - base_ts) % (1 << 32) for p in got] == [160 * i for i in order]
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


async def test_unbridge_returns_both_legs_to_idle_and_closing_a_leg_unbridges(engine: MediaEngine) -> None:
    caller, agent, a, b, bridge = await bridged_pair(engine)
    try:
        with pytest.raises(MediaError, match="already bridged"):
            Bridge(a, b)
        with pytest.raises(MediaError, match="bridge first"):
            a.play(ToneSource(Tone("t", (440.0,)), duration=0.1))
        bridge.unbridge()
        assert a.mode is SessionMode.IDLE and b.mode is SessionMode.IDLE
        caller.send(a.local_port)
        await settle(0.1)
        assert not agent.received  # nothing relayed any more
        assert a.rx_packets == 1  # but the leg still listens (DTMF, statistics)
        again = Bridge(a, b)
        b.close()
        assert not again.active and a.bridge is None and a.mode is SessionMode.IDLE
    finally:
        caller.close()
        agent.close()


# --- DTMF and hold while bridged ---------------------------------------------------------------------------


async def test_dtmf_while_bridged_is_reported_once_and_passed_on_with_the_other_legs_type(
    engine: MediaEngine,
) -> None:
    caller_peer, agent_peer = await RtpPeer.open(), await RtpPeer.open()
    digits: list[tuple[str, str]] = []
    try:
        a = await engine.create_session(
            pcmu_params(caller_peer), on_dtmf=lambda s, e: digits.append((s.id, e.digit))
        )
        b_params = MediaParams("127.0.0.1", agent_peer.port, {0: "PCMU", 96: "telephone-event"}, 0, 96)
        b = await engine.create_session(b_params, on_dtmf=lambda s, e: digits.append((s.id, e.digit)))
        bridge = Bridge(a, b)
        for digit in "2580":
            for _ in range(3):
                caller_peer.send(a.local_port)
            start = caller_peer.ts
            for event in DtmfSender().packets(digit, start, duration=0.1):
                for _ in range(2):  # duplicated by the network
                    caller_peer.send(a.local_port, event.payload, pt=101, marker=event.marker, ts=start)
            caller_peer.ts += 800
            await asyncio.sleep(0.01)
        await settle(0.2)
        assert digits == [(a.id, d) for d in "2580"]
        events = agent_peer.packets(pt=96)
        assert len(events) == 2 * 4 * 7  # every event packet passed on, with the agent's payload type
        assert [p.payload[0] for p in events[::14]] == [2, 5, 8, 0]
        assert not agent_peer.packets(pt=101)
        bridge.unbridge()
    finally:
        caller_peer.close()
        agent_peer.close()


async def test_inband_dtmf_is_detected_on_a_bridged_leg_without_telephone_event(engine: MediaEngine) -> None:
    caller, agent, a, _, bridge = await bridged_pair(
        engine, pcmu_params(1, telephone_event=False), pcmu_params(1), flush_interval=0.04
    )
    try:
        audio = np.concatenate(
            [sine(300.0, 0.2), dtmf_tone("7", 0.09), sine(300.0, 0.1), dtmf_tone("*", 0.09), np.zeros(2400)]
        ).astype(np.int16)
        await caller.stream(a.local_port, frames_of(ulaw(audio)), interval=0.01)
        await settle(0.3)
        got = []
        while not a.digits.empty():
            got.append(a.digits.get_nowait())
        assert [(e.digit, e.method) for e in got] == [("7", "inband"), ("*", "inband")]
        assert len(agent.packets()) == len(audio) // 160  # the audio itself went through untouched
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


async def test_holding_a_bridged_leg_stops_relaying_both_ways_and_plays_music(engine: MediaEngine) -> None:
    caller, agent, a, b, bridge = await bridged_pair(engine)
    try:
        for _ in range(5):
            caller.send(a.local_port)
            agent.send(b.local_port)
            await asyncio.sleep(0.005)
        assert await agent.wait_for(5) and await caller.wait_for(5)
        a.hold(ToneSource(Tone("moh", (600.0,)), duration=None))
        to_agent_before = len(agent.received)
        for _ in range(20):
            caller.send(a.local_port, ulaw(sine(1000.0, 0.02)))
            agent.send(b.local_port, ulaw(sine(1000.0, 0.02)))
            await asyncio.sleep(0.01)
        await settle(0.1)
        assert len(agent.received) == to_agent_before  # the held caller is not heard
        held_audio = make_decoder("PCMU").decode(b"".join(p.payload for p in caller.packets()[5:]))
        assert len(held_audio) >= 8 * 160
        assert abs(dominant_frequency(held_audio) - 600) < 10  # music, not the agent
        a.unhold()
        for _ in range(5):
            caller.send(a.local_port)
            agent.send(b.local_port)
            await asyncio.sleep(0.005)
        await settle(0.1)
        assert len(agent.received) == to_agent_before + 5
        assert steps([p.sequence for p in caller.packets()], 1 << 16) == {1}  # one stream throughout
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


async def test_dtmf_sent_on_a_bridged_leg_pauses_the_relay_to_it(engine: MediaEngine) -> None:
    caller, agent, a, b, bridge = await bridged_pair(engine)
    try:
        done = b.send_dtmf("9", duration=0.06, gap=0.04)
        for _ in range(12):
            caller.send(a.local_port)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(done, 3)
        for _ in range(3):
            caller.send(a.local_port)
            await asyncio.sleep(0.01)
        await settle(0.1)
        packets = agent.packets()
        kinds = [p.payload_type for p in packets]
        assert kinds[: kinds.index(0)].count(101) == 5  # the event (2 + end x3) before any audio
        assert steps([p.sequence for p in packets], 1 << 16) == {1}
        assert {p.ssrc for p in packets} == {b.ssrc}
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


# --- recording ----------------------------------------------------------------------------------------------


def read_stereo(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == RATE
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)


def onset(channel: np.ndarray, threshold: int = 2000) -> float:
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > threshold)
    assert len(loud), "no audio in this channel"
    return float(loud[0]) / RATE


async def test_a_recorded_call_has_both_parties_aligned_on_their_own_channels(
    engine: MediaEngine, tmp_path: Path
) -> None:
    recorder = Recorder(tmp_path, "acme", "call-1", format="wav")
    caller, agent, a, b, bridge = await bridged_pair(engine, recorder=recorder)
    try:
        caller_audio = np.concatenate([np.zeros(2400), sine(1000.0, 0.2, level_dbm0=-6), np.zeros(4000)])
        agent_audio = np.concatenate([np.zeros(4800), sine(500.0, 0.2, level_dbm0=-6), np.zeros(1600)])
        await asyncio.gather(
            caller.stream(a.local_port, frames_of(ulaw(caller_audio))),
            agent.stream(b.local_port, frames_of(ulaw(agent_audio))),
        )
        await settle(0.1)
        assert len(agent.received) == len(caller_audio) // 160  # recording does not hold up the relay
        bridge.unbridge()
        info = await recorder.close()
        assert info.complete and info.error is None
        stereo = read_stereo(info.path)
        left, right = stereo[:, 0], stereo[:, 1]
        # the agent spoke 0.3 s after the caller, and the file says so
        assert onset(right) - onset(left) == pytest.approx(0.3, abs=0.025)
        assert abs(dominant_frequency(left[int(onset(left) * RATE) :][:1600]) - 1000) < 10
        assert abs(dominant_frequency(right[int(onset(right) * RATE) :][:1600]) - 500) < 10
        quiet_left = left[int((onset(right) + 0.02) * RATE) :][:1200]
        assert np.max(np.abs(quiet_left)) < 100  # the agent is not on the caller's channel
        assert 0.9 < len(stereo) / RATE < 1.5
    finally:
        caller.close()
        agent.close()


async def test_a_long_backlog_after_a_stalled_loop_is_recorded_in_pieces(
    engine: MediaEngine, tmp_path: Path
) -> None:
    recorder = Recorder(tmp_path, "acme", "call-2", format="wav")
    caller, agent, a, _, bridge = await bridged_pair(engine, recorder=recorder, flush_interval=60.0)
    try:
        audio = sine(700.0, 6.0, level_dbm0=-6)  # twice the recorder's ring buffer, in one batch
        await caller.stream(a.local_port, frames_of(ulaw(audio)), interval=0.002)
        assert await agent.wait_for(300)
        bridge.unbridge()
        info = await recorder.close()
        assert info.complete and info.error is None
        left = read_stereo(info.path)[:, 0]
        assert np.count_nonzero(np.abs(left.astype(np.int32)) > 2000) > 5.5 * RATE * 0.5
    finally:
        caller.close()
        agent.close()


# --- audio through the bridge -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spoken() -> np.ndarray:
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed")
    return speech("Thank you for calling. Your call is important to us.", rate=RATE)


def golden_signals(spoken: np.ndarray) -> dict[str, np.ndarray]:
    return {"tone": sine([697.0, 1209.0], 0.6, level_dbm0=-12), "speech": spoken[: 2 * RATE]}


@pytest.mark.parametrize("signal", ["tone", "speech"])
async def test_golden_audio_passes_a_same_codec_bridge_bit_for_bit(
    engine: MediaEngine, spoken: np.ndarray, signal: str
) -> None:
    audio = golden_signals(spoken)[signal]
    audio = audio[: len(audio) // 160 * 160]
    caller, agent, a, _, bridge = await bridged_pair(engine)
    try:
        encoded = ulaw(audio)
        await caller.stream(a.local_port, frames_of(encoded), interval=0.004)
        assert await agent.wait_for(len(audio) // 160)
        assert b"".join(p.payload for p in agent.packets()) == encoded
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


@pytest.mark.parametrize("signal", ["tone", "speech"])
@pytest.mark.parametrize(("agent_codec", "minimum_snr"), [("PCMA", 30.0), ("G722", 12.0)])
async def test_golden_audio_through_a_transcoding_bridge_stays_within_codec_tolerance(
    engine: MediaEngine, spoken: np.ndarray, signal: str, agent_codec: str, minimum_snr: float
) -> None:
    audio = golden_signals(spoken)[signal]
    audio = audio[: len(audio) // 160 * 160]
    caller, agent, a, _, bridge = await bridged_pair(
        engine, pcmu_params(1), pcmu_params(1, codec=agent_codec, telephone_event=False)
    )
    try:
        await caller.stream(a.local_port, frames_of(ulaw(audio)), interval=0.004)
        assert await agent.wait_for(len(audio) // 160)
        await settle(0.05)
        decoder = make_decoder(agent_codec)
        received = np.concatenate([decoder.decode(p.payload) for p in agent.packets()])
        if agent_codec == "G722":
            received = received[::2]  # 16 kHz: compare at 8 kHz (the band G.711 carried anyway)
        lag, correlation = align(audio, received, max_lag=120)
        assert correlation > 0.95
        compared = received[lag : lag + len(audio)]
        assert snr_db(audio[: len(compared)], compared) > minimum_snr
        assert {p.payload_type for p in agent.packets()} == {8 if agent_codec == "PCMA" else 9}
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


async def test_a_bridge_follows_a_peer_that_sends_another_negotiated_codec(engine: MediaEngine) -> None:
    both = {0: "PCMU", 8: "PCMA", 101: "telephone-event"}
    caller, agent, a, b, bridge = await bridged_pair(
        engine, MediaParams("127.0.0.1", 1, both, 8, 101), MediaParams("127.0.0.1", 1, both, 0, 101)
    )
    try:
        # each leg now sends what its peer is expected to send: no transcoding either way
        assert a.send_codec is not None and a.send_codec.name == "PCMU"
        assert b.send_codec is not None and b.send_codec.name == "PCMA"
        encoded = make_encoder("PCMA").encode(sine(440.0, 0.2))
        await caller.stream(a.local_port, frames_of(encoded), interval=0.004, pt=8)
        encoded_u = ulaw(sine(440.0, 0.2))
        await caller.stream(a.local_port, frames_of(encoded_u), interval=0.004, pt=0)  # the caller switches
        assert await agent.wait_for(20)
        packets = agent.packets()
        assert [p.payload_type for p in packets] == [8] * 10 + [0] * 10
        assert b"".join(p.payload for p in packets) == encoded + encoded_u
    finally:
        bridge.unbridge()
        caller.close()
        agent.close()


# --- conference ---------------------------------------------------------------------------------------------


async def test_a_conference_sends_each_party_everyone_else(engine: MediaEngine) -> None:
    voices = {"caller": 500.0, "agent": 1000.0, "supervisor": 1750.0}
    peers = {name: await RtpPeer.open() for name in voices}
    room = ConferenceBridge(engine)
    try:
        sessions = {
            name: await engine.create_session(pcmu_params(peer), name=name) for name, peer in peers.items()
        }
        for name, session in sessions.items():
            mode = ParticipantMode.LISTEN if name == "supervisor" else ParticipantMode.TALK
            room.add(session, mode)
        assert all(s.mode is SessionMode.CONFERENCED for s in sessions.values())
        await asyncio.gather(
            *(
                peers[name].stream(
                    sessions[name].local_port, frames_of(ulaw(sine(freq, 0.8, level_dbm0=-12)))
                )
                for name, freq in voices.items()
            )
        )
        await settle(0.1)
        heard = {}
        for name, peer in peers.items():
            audio = make_decoder("PCMU").decode(b"".join(p.payload for p in peer.packets()[-20:]))
            spectrum = np.abs(np.fft.rfft(audio.astype(np.float64) * np.hanning(len(audio))))
            freqs = np.fft.rfftfreq(len(audio), 1 / RATE)
            heard[name] = {
                other
                for other, f in voices.items()
                if spectrum[np.abs(freqs - f) < 15].max() > 0.1 * spectrum.max()
            }
        assert heard == {"caller": {"agent"}, "agent": {"caller"}, "supervisor": {"caller", "agent"}}
        room.remove(sessions["supervisor"])
        assert sessions["supervisor"].mode is SessionMode.IDLE
        room.close()
        assert engine.ticker_count == 0
    finally:
        for peer in peers.values():
            peer.close()
