"""The media driver: ports, symmetric RTP, playback, DTMF in and out, hold, inactivity, RTCP and quality.

Every test talks to real UDP sockets on 127.0.0.1 (`RtpPeer`, a minimal phone), so what is asserted is what a
peer on the wire would see. `RtpPeer`, `pcmu_params` and `engine` are shared with test_bridge.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.media.codecs import make_decoder, make_encoder
from hotline.media.dtmf import DtmfSender, GoertzelDetector
from hotline.media.player import Tone, ToneSource
from hotline.media.rtcp import ReceiverReport, SenderReport, parse_compound
from hotline.media.rtp import RtpPacket
from hotline.media.session import (
    DtmfEvent,
    LegQuality,
    MediaDirection,
    MediaEngine,
    MediaError,
    MediaParams,
    OutgoingStream,
    PortsExhausted,
    SessionMode,
)
from tests.media.audio import dtmf as dtmf_tone
from tests.media.audio import tone as sine

RATE = 8000
FRAME = 160


# --- a test phone -------------------------------------------------------------------------------------------


@dataclass
class Received:
    data: bytes
    source: tuple[str, int]
    at: float

    @property
    def packet(self) -> RtpPacket:
        return RtpPacket.parse(self.data)


class RtpPeer(asyncio.DatagramProtocol):
    """A phone's RTP socket: sends what the test says, keeps everything it receives."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._arrived = asyncio.Event()
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.ssrc = secrets.randbits(32)

    @classmethod
    async def open(cls, port: int = 0) -> RtpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", port))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(Received(data, addr, time.monotonic()))
        self._arrived.set()

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(
        self,
        dest: tuple[str, int] | int,
        payload: bytes = bytes(160),
        *,
        pt: int = 0,
        marker: bool = False,
        seq: int | None = None,
        ts: int | None = None,
        ssrc: int | None = None,
        advance: int = 160,
    ) -> RtpPacket:
        """Send one RTP packet (the next of this peer's own stream unless seq/ts/ssrc are given)."""
        packet = RtpPacket(
            payload_type=pt,
            sequence=self.seq if seq is None else seq,
            timestamp=self.ts if ts is None else ts,
            ssrc=self.ssrc if ssrc is None else ssrc,
            payload=payload,
            marker=marker,
        )
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF
        if ts is None:
            self.ts = (self.ts + advance) & 0xFFFFFFFF
        assert self.transport is not None
        self.transport.sendto(packet.serialize(), ("127.0.0.1", dest) if isinstance(dest, int) else dest)
        return packet

    async def stream(
        self, dest: int, payloads: Iterable[bytes], interval: float = 0.02, pt: int = 0
    ) -> list[RtpPacket]:
        """Send payloads paced on an absolute schedule, like a phone."""
        sent = []
        start = time.monotonic()
        for index, payload in enumerate(payloads):
            delay = start + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent.append(self.send(dest, payload, pt=pt, advance=len(payload) if pt in (0, 8) else 160))
        return sent

    async def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def packets(self, pt: int | None = None) -> list[RtpPacket]:
        parsed = [r.packet for r in self.received if len(r.data) >= 12 and not 192 <= r.data[1] <= 223]
        return [p for p in parsed if pt is None or p.payload_type == pt]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def pcmu_params(
    peer: RtpPeer | int,
    *,
    telephone_event: bool = True,
    direction: MediaDirection = MediaDirection.SENDRECV,
    codec: str = "PCMU",
    ptime: int = 20,
    rtcp_mux: bool = False,
) -> MediaParams:
    static = {"PCMU": 0, "PCMA": 8, "G722": 9}
    pt = static.get(codec, 111)
    types = {pt: codec}
    if telephone_event:
        types[101] = "telephone-event"
    port = peer if isinstance(peer, int) else peer.port
    return MediaParams(
        "127.0.0.1",
        port,
        types,
        pt,
        101 if telephone_event else None,
        ptime=ptime,
        direction=direction,
        rtcp_mux=rtcp_mux,
    )


def ulaw(pcm: np.ndarray) -> bytes:
    return make_encoder("PCMU").encode(pcm.astype(np.int16))


def frames_of(payload: bytes, size: int = FRAME) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)]


def dominant_frequency(samples: np.ndarray, rate: int = RATE) -> float:
    windowed = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(windowed))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def random_port_range(size: int) -> tuple[int, int]:
    start = 40000 + 2 * secrets.randbelow(10000)
    return start, start + size - 1


def free_port_range(size: int) -> tuple[int, int]:
    """A range of `size` ports that are all free right now (other tests use ports too)."""
    for _ in range(50):
        first, last = random_port_range(size)
        probes = []
        try:
            for port in range(first, last + 1):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return first, last
    raise RuntimeError("no free port range")


@contextlib.asynccontextmanager
async def media_engine() -> AsyncIterator[MediaEngine]:
    """An engine with quick housekeeping and RTCP, on a random port range."""
    media = MediaEngine(
        "127.0.0.1",
        random_port_range(1000),
        housekeeping_interval=0.05,
        rtcp_interval=0.3,
        inactivity_timeout=None,
    )
    try:
        yield media
    finally:
        await media.close()


@pytest.fixture
async def engine() -> AsyncIterator[MediaEngine]:
    async with media_engine() as media:
        yield media


@pytest.fixture
async def peer() -> AsyncIterator[RtpPeer]:
    phone = await RtpPeer.open()
    yield phone
    phone.close()


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


# --- ports --------------------------------------------------------------------------------------------------


async def test_sessions_get_even_rtp_ports_with_rtcp_next_to_them(engine: MediaEngine) -> None:
    sessions = [await engine.create_session() for _ in range(5)]
    muxed = await engine.create_session(rtcp_mux=True)
    for session in sessions:
        assert session.local_port % 2 == 0
        assert session.rtcp_port == session.local_port + 1
    assert muxed.rtcp_port is None
    assert len({s.local_port for s in [*sessions, muxed]}) == 6
    assert engine.ports_in_use == 6
    for session in [*sessions, muxed]:
        session.close()
    await settle()
    assert engine.ports_in_use == 0


async def test_a_port_taken_by_another_process_is_skipped_and_exhaustion_is_a_clear_error() -> None:
    first, _ = free_port_range(8)
    media = MediaEngine("127.0.0.1", (first, first + 7), inactivity_timeout=None)  # 4 RTP/RTCP pairs
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", first + 3))  # the RTCP port of the second pair
    try:
        sessions = [await media.create_session() for _ in range(3)]
        assert sorted(s.local_port for s in sessions) == [first, first + 4, first + 6]
        with pytest.raises(
            PortsExhausted, match=r"no free RTP port .* 3 in use by Hotline, 1 taken by other"
        ):
            await media.create_session()
        sessions[1].close()
        await settle()  # the socket closes on the next loop iteration
        again = await media.create_session()
        assert again.local_port == sessions[1].local_port  # freed ports come back
        squatter.close()
        sessions[0].close()
        await settle()
        muxed = await media.create_session(rtcp_mux=True)
        assert muxed.local_port in (first, first + 2)
    finally:
        squatter.close()
        await media.close()


async def test_closed_sessions_and_engines_refuse_work(engine: MediaEngine, peer: RtpPeer) -> None:
    session = await engine.create_session(pcmu_params(peer))
    session.close()
    session.close()  # twice is fine
    with pytest.raises(MediaError, match="closed"):
        session.play(ToneSource(Tone("t", (440.0,)), duration=0.1))
    await engine.close()
    with pytest.raises(MediaError, match="engine is closed"):
        await engine.create_session()


def test_params_are_checked() -> None:
    with pytest.raises(MediaError, match="not among"):
        MediaParams("127.0.0.1", 4000, {0: "PCMU"}, 8)
    with pytest.raises(MediaError, match="not an audio codec"):
        MediaParams("127.0.0.1", 4000, {101: "telephone-event"}, 101)
    with pytest.raises(MediaError, match="cannot send"):
        MediaParams("127.0.0.1", 4000, {96: "AMR"}, 96)
    with pytest.raises(MediaError, match="out of range"):
        MediaParams("127.0.0.1", 0, {0: "PCMU"}, 0)


def test_params_from_the_sip_negotiation() -> None:
    from hotline.sip.sdp import answer, build_offer, negotiated_audio, parse_sdp

    offer = build_offer(["PCMA", "PCMU", "telephone-event"], "192.0.2.10", 30000, ptime=20)
    ours = answer(parse_sdp(str(offer)), ["PCMU", "PCMA", "telephone-event"], "127.0.0.1", 20000)
    params = MediaParams.from_negotiation(negotiated_audio(parse_sdp(str(offer)), ours))
    assert (params.remote_host, params.remote_port) == ("192.0.2.10", 30000)
    assert params.payload_types[params.payload_type] in ("PCMA", "PCMU")
    assert params.telephone_event is not None
    assert params.payload_types[params.telephone_event] == "telephone-event"
    assert params.direction is MediaDirection.SENDRECV


# --- symmetric RTP ------------------------------------------------------------------------------------------


async def test_sends_to_the_sdp_address_until_the_peer_speaks_then_to_its_nat_source(
    engine: MediaEngine,
) -> None:
    sdp_socket = await RtpPeer.open()  # what the SDP says (a private address behind NAT, say)
    nat_side = await RtpPeer.open()  # where the packets really come from
    stranger = await RtpPeer.open()
    try:
        session = await engine.create_session(pcmu_params(sdp_socket))
        session.play(ToneSource(Tone("t", (440.0,)), duration=None))
        assert await sdp_socket.wait_for(3)
        assert not session.latched
        nat_side.send(session.local_port)
        await settle(0.1)
        before = len(sdp_socket.received)
        assert await nat_side.wait_for(3)
        await settle(0.1)
        assert len(sdp_socket.received) <= before + 1  # at most one in flight when it latched
        assert session.latched and session.remote_address == ("127.0.0.1", nat_side.port)
        # a single packet from elsewhere while the peer keeps talking does not take the stream away
        for _ in range(5):
            nat_side.send(session.local_port)
            stranger.send(session.local_port)
            await settle(0.01)
        assert session.remote_address == ("127.0.0.1", nat_side.port)
        assert not stranger.received
        # the NAT rebinds: the old port goes quiet and the new one keeps sending
        for _ in range(3):
            stranger.send(session.local_port)
            await settle(0.01)
        assert session.remote_address == ("127.0.0.1", stranger.port)
        assert await stranger.wait_for(2)
    finally:
        for phone in (sdp_socket, nat_side, stranger):
            phone.close()


async def test_malformed_and_foreign_packets_are_counted_not_fatal(
    engine: MediaEngine, peer: RtpPeer
) -> None:
    session = await engine.create_session(pcmu_params(peer))
    assert peer.transport is not None
    target = ("127.0.0.1", session.local_port)
    for junk in (b"", b"\x00" * 5, b"\x40" + bytes(20), b"\x80\x60" + bytes(30)):  # short, v1, unknown PT 96
        peer.transport.sendto(junk, target)
    peer.send(session.local_port)
    await settle(0.1)
    assert session.rx_errors >= 3
    assert session.rx_packets == 1


# --- playback -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "rate"), [("PCMU", 8000), ("PCMA", 8000), ("G722", 16000)])
async def test_a_played_tone_reaches_the_peer_as_that_tone(
    engine: MediaEngine, peer: RtpPeer, codec: str, rate: int
) -> None:
    session = await engine.create_session(pcmu_params(peer, codec=codec))
    player = session.play(ToneSource(Tone("probe", (1000.0,), level_dbm0=-6.0), duration=0.6))
    assert session.mode is SessionMode.PLAYING
    outcome = await asyncio.wait_for(player.wait(), 5)
    await settle(0.1)
    assert outcome.value == "completed"
    assert session.mode is SessionMode.IDLE
    packets = peer.packets()
    assert len(packets) == 30
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert {p.ssrc for p in packets} == {session.ssrc}
    assert [(b.sequence - a.sequence) & 0xFFFF for a, b in itertools.pairwise(packets)] == [1] * 29
    assert [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)] == [160] * 29
    decoder = make_decoder(codec)
    audio = np.concatenate([decoder.decode(p.payload) for p in packets])
    assert len(audio) == 0.6 * rate
    assert abs(dominant_frequency(audio[rate // 10 :], rate) - 1000.0) < 5
    # arrival follows the media clock: 30 packets over about 0.58 s, none bunched
    arrivals = [r.at for r in peer.received]
    assert 0.5 < arrivals[-1] - arrivals[0] < 0.75


async def test_ptime_40_packs_two_frames_per_packet(engine: MediaEngine, peer: RtpPeer) -> None:
    session = await engine.create_session(pcmu_params(peer, ptime=40))
    player = session.play(ToneSource(Tone("probe", (500.0,)), duration=0.4))
    await asyncio.wait_for(player.wait(), 5)
    await settle(0.1)
    packets = peer.packets()
    assert len(packets) == 10
    assert {len(p.payload) for p in packets} == {320}
    assert {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)} == {320}


async def test_one_shared_clock_drives_hundreds_of_playing_legs(engine: MediaEngine) -> None:
    loop = asyncio.get_running_loop()
    sink = await RtpPeer.open()
    try:
        tasks_before = len(asyncio.all_tasks(loop))
        sessions = [await engine.create_session(pcmu_params(sink), rtcp_mux=True) for _ in range(200)]
        skipped_before, start = engine.late_ticks, time.monotonic()
        for session in sessions:
            session.play(ToneSource(Tone("moh", (400.0,)), duration=None))
        assert engine.ticker_count == 200
        assert len(asyncio.all_tasks(loop)) == tasks_before  # no task per leg
        await asyncio.sleep(1.2)
        elapsed = time.monotonic() - start
        per_leg = sum(s.tx_packets for s in sessions) / len(sessions)
        # one frame per leg per 20 ms tick; a starved test machine may make the clock skip ticks, which
        # it counts, or catch up at most 5 late ticks at once, but it never runs ahead of time
        expected = elapsed / 0.02 - (engine.late_ticks - skipped_before)
        assert 0.85 * expected <= per_leg <= elapsed / 0.02 + 5
        for session in sessions:
            session.stop_playing()
        assert engine.ticker_count == 0
    finally:
        sink.close()


# --- DTMF ---------------------------------------------------------------------------------------------------


def rfc4733_packets(peer: RtpPeer, dest: int, digit: str, *, repeat_each: int = 1) -> list[bytes]:
    """One key press as a phone sends it (marker, one timestamp, growing duration, end x3), with every
    packet sent `repeat_each` times (a retransmitting or duplicating network)."""
    start_ts = peer.ts
    payloads = []
    for event in DtmfSender().packets(digit, start_ts, duration=0.12):
        for _ in range(repeat_each):
            peer.send(dest, event.payload, pt=101, marker=event.marker, ts=start_ts)
        payloads.append(event.payload)
    peer.ts = (peer.ts + 1600) & 0xFFFFFFFF
    return payloads


async def test_rfc4733_digits_while_playing_are_reported_once_each(
    engine: MediaEngine, peer: RtpPeer
) -> None:
    reported: list[tuple[str, str]] = []
    session = await engine.create_session(
        pcmu_params(peer), on_dtmf=lambda s, e: reported.append((s.id, e.digit))
    )
    session.play(ToneSource(Tone("prompt", (440.0,)), duration=None))
    for digit in "1#9":
        for _ in range(3):
            peer.send(session.local_port)  # some audio between key presses
        rfc4733_packets(peer, session.local_port, digit, repeat_each=2)
        await settle(0.02)
    await settle(0.2)
    assert [digit for _, digit in reported] == ["1", "#", "9"]
    assert {sid for sid, _ in reported} == {session.id}
    queued: list[DtmfEvent] = []
    while not session.digits.empty():
        queued.append(session.digits.get_nowait())
    assert [e.digit for e in queued] == ["1", "#", "9"]
    assert {e.method for e in queued} == {"rfc4733"}
    assert session.mode is SessionMode.PLAYING  # reporting does not stop the prompt: the switch decides


async def test_inband_digits_are_detected_when_the_peer_has_no_telephone_event(
    engine: MediaEngine, peer: RtpPeer
) -> None:
    session = await engine.create_session(pcmu_params(peer, telephone_event=False))
    session.play(ToneSource(Tone("prompt", (440.0,)), duration=None))
    audio = np.concatenate(
        [sine(300.0, 0.2), dtmf_tone("5", 0.08), sine(300.0, 0.1), dtmf_tone("0", 0.08), np.zeros(1600)]
    ).astype(np.int16)
    await peer.stream(session.local_port, frames_of(ulaw(audio)), interval=0.004)
    await settle(0.2)
    digits = []
    while not session.digits.empty():
        digits.append(session.digits.get_nowait())
    assert [e.digit for e in digits] == ["5", "0"]
    assert {e.method for e in digits} == {"inband"}


async def test_send_dtmf_as_rfc4733_with_the_end_packet_three_times(
    engine: MediaEngine, peer: RtpPeer
) -> None:
    session = await engine.create_session(pcmu_params(peer))
    await asyncio.wait_for(session.send_dtmf("4*", duration=0.1, gap=0.06), 5)
    await settle(0.05)
    events = peer.packets(pt=101)
    by_ts: dict[int, list[RtpPacket]] = {}
    for packet in events:
        by_ts.setdefault(packet.timestamp, []).append(packet)
    assert len(by_ts) == 2
    for digit, packets in zip("4*", by_ts.values(), strict=True):
        assert packets[0].marker and not any(p.marker for p in packets[1:])
        codes = {p.payload[0] for p in packets}
        assert codes == {"0123456789*#".index(digit)}
        ends = [p for p in packets if p.payload[1] & 0x80]
        assert len(ends) == 3
        assert {struct.unpack("!H", p.payload[2:4])[0] for p in ends} == {800}
    sequences = [p.sequence for p in events]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))


async def test_send_dtmf_inband_when_the_peer_has_no_telephone_event(
    engine: MediaEngine, peer: RtpPeer
) -> None:
    session = await engine.create_session(pcmu_params(peer, telephone_event=False))
    await asyncio.wait_for(session.send_dtmf("73", duration=0.08, gap=0.08), 5)
    await settle(0.05)
    decoder = make_decoder("PCMU")
    audio = np.concatenate([decoder.decode(p.payload) for p in peer.packets(pt=0)])
    found = GoertzelDetector().feed(np.concatenate((audio, np.zeros(800, dtype=np.int16))))
    assert [d.digit for d in found] == ["7", "3"]


# --- hold and inactivity ------------------------------------------------------------------------------------


async def test_hold_sends_nothing_or_the_given_music(engine: MediaEngine, peer: RtpPeer) -> None:
    session = await engine.create_session(pcmu_params(peer))
    session.play(ToneSource(Tone("prompt", (440.0,)), duration=None))
    assert await peer.wait_for(3)
    session.hold()
    assert session.on_hold
    await settle(0.06)
    count = len(peer.received)
    await settle(0.2)
    assert len(peer.received) == count
    session.hold(ToneSource(Tone("moh", (700.0,)), duration=None))
    await settle(0.4)
    held_audio = [p for p in peer.packets()[count:]]
    assert len(held_audio) >= 10
    decoded = make_decoder("PCMU").decode(b"".join(p.payload for p in held_audio))
    assert abs(dominant_frequency(decoded) - 700) < 10
    session.unhold()
    await settle(0.3)
    resumed = make_decoder("PCMU").decode(b"".join(p.payload for p in peer.packets()[-10:]))
    assert abs(dominant_frequency(resumed) - 440) < 10
    sequences = [p.sequence for p in peer.packets()]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(sequences))


async def test_a_peer_that_holds_us_gets_nothing(engine: MediaEngine, peer: RtpPeer) -> None:
    session = await engine.create_session(pcmu_params(peer))
    session.play(ToneSource(Tone("prompt", (440.0,)), duration=None))
    assert await peer.wait_for(2)
    session.configure(pcmu_params(peer, direction=MediaDirection.RECVONLY))  # peer re-INVITEd sendonly
    await settle(0.05)
    count = len(peer.received)
    await settle(0.2)
    assert len(peer.received) == count
    assert session.on_hold


async def test_inactivity_timeout_fires_once_and_never_on_hold(engine: MediaEngine) -> None:
    talker, holder = await RtpPeer.open(), await RtpPeer.open()
    timeouts: list[str] = []
    try:
        live = await engine.create_session(
            pcmu_params(talker),
            name="live",
            on_timeout=lambda s: timeouts.append(s.id),
            inactivity_timeout=0.3,
        )
        held = await engine.create_session(
            pcmu_params(holder),
            name="held",
            on_timeout=lambda s: timeouts.append(s.id),
            inactivity_timeout=0.3,
        )
        for _ in range(10):
            talker.send(live.local_port)
            holder.send(held.local_port)
            await settle(0.02)
        held.hold()
        assert timeouts == []
        await settle(0.8)
        assert timeouts == ["live"]  # once, and the held leg is left alone
        held.unhold()
        await settle(0.6)
        assert timeouts == ["live", "held"]
        talker.send(live.local_port)  # media comes back: the timer re-arms
        await settle(0.6)
        assert timeouts == ["live", "held", "live"]
    finally:
        talker.close()
        holder.close()


# --- RTCP and quality ---------------------------------------------------------------------------------------


async def test_rtcp_reports_and_quality_figures_follow_the_received_stream(engine: MediaEngine) -> None:
    rtp, rtcp = await RtpPeer.open(), None
    for _ in range(20):
        try:
            rtcp = await RtpPeer.open(rtp.port + 1)
            break
        except OSError:
            rtp.close()
            rtp = await RtpPeer.open()
    assert rtcp is not None
    figures: list[LegQuality] = []
    try:
        session = await engine.create_session(pcmu_params(rtp), on_quality=lambda s, q: figures.append(q))
        session.play(ToneSource(Tone("prompt", (440.0,)), duration=None))
        for index in range(61):
            if index % 10 != 9:  # lose every tenth packet
                rtp.send(session.local_port)
            else:
                rtp.seq = (rtp.seq + 1) & 0xFFFF
                rtp.ts = (rtp.ts + 160) & 0xFFFFFFFF
            await settle(0.01)
        await settle(0.5)
        reports = [p for r in rtcp.received for p in parse_compound(r.data)]
        senders = [p for p in reports if isinstance(p, SenderReport)]
        assert senders and all(p.ssrc == session.ssrc for p in senders)
        blocks = [b for p in reports if isinstance(p, SenderReport | ReceiverReport) for b in p.reports]
        assert blocks and blocks[0].ssrc == rtp.ssrc
        assert max(b.cumulative_lost for b in blocks) == 6
        assert figures, "on_quality was not called"
        last = figures[-1]
        assert last.packets_received == 55
        assert last.cumulative_loss_percent == pytest.approx(600 / 61)
        assert 1.0 <= last.mos < 4.4
        assert session.quality().packets_sent > 0
        # our reports come back from the peer: its view of our stream and the round trip
        sr = senders[-1]
        block = struct.pack(
            "!IB3sIIII",
            session.ssrc,
            64,
            (3).to_bytes(3, "big"),
            1000,
            80,
            (sr.ntp_timestamp >> 16) & 0xFFFFFFFF,
            0,
        )
        rr = struct.pack("!BBHI", 0x81, 201, 7, rtp.ssrc) + block
        assert rtcp.transport is not None
        rtcp.transport.sendto(rr, ("127.0.0.1", session.rtcp_port or 0))
        await settle(0.1)
        quality = session.quality()
        assert quality.remote_loss_percent == pytest.approx(25.0)
        assert quality.remote_jitter_ms == pytest.approx(10.0)
        assert quality.round_trip_ms is not None and 0 <= quality.round_trip_ms < 2000
    finally:
        rtp.close()
        if rtcp is not None:
            rtcp.close()


async def test_close_says_bye_over_rtcp_mux(engine: MediaEngine, peer: RtpPeer) -> None:
    session = await engine.create_session(pcmu_params(peer, rtcp_mux=True))
    peer.send(session.local_port)
    await settle(0.05)
    session.close()
    await settle(0.05)
    rtcp = [r for r in peer.received if 192 <= r.data[1] <= 223]
    assert rtcp
    assert any(type(p).__name__ == "Bye" for p in parse_compound(rtcp[-1].data))
    assert engine.ports_in_use == 0


# --- the outgoing stream ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("relay"), st.integers(0, 3), st.integers(1, 3)),  # source index, seq step
            st.tuples(st.just("jump"), st.integers(0, 3), st.integers(4000, 60000)),  # a sequence jump
            st.tuples(st.just("own"), st.integers(0, 1), st.integers(0, 1)),  # our own packet / DTMF
        ),
        min_size=1,
        max_size=120,
    ),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_the_outgoing_stream_stays_continuous_whatever_the_sources_do(
    steps: list[tuple[str, int, int]], first_seq: int, first_ts: int
) -> None:
    out = OutgoingStream(0xABCD, 8000, first_sequence=first_seq, first_timestamp=first_ts)
    sources = {i: [secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)] for i in range(4)}
    now = 100.0
    emitted: list[tuple[int, int]] = []
    for kind, which, amount in steps:
        now += 0.02
        if kind == "own":
            emitted.append(out.own(now, 160 if amount else 0))
            continue
        state = sources[which]
        step = amount
        state[1] = (state[1] + step) & 0xFFFF
        state[2] = (state[2] + 160 * (step if kind == "relay" else 1)) & 0xFFFFFFFF
        emitted.append(out.map(state[0], state[1], state[2], now)[:2])
    sequences = [seq for seq, _ in emitted]
    assert sequences[0] == first_seq
    for (seq_a, ts_a), (seq_b, ts_b) in itertools.pairwise(emitted):
        assert 1 <= (seq_b - seq_a) & 0xFFFF <= 3  # continuous, gaps only where the source lost packets
        assert (ts_b - ts_a) & 0xFFFFFFFF < 8000 * 2  # never backwards, never a wild jump


def test_late_packets_keep_their_place_and_stragglers_of_an_old_source_are_mapped_behind() -> None:
    out = OutgoingStream(1, 8000, first_sequence=10, first_timestamp=1000)
    assert out.map(0xA, 500, 80000, 1.0) == (10, 1000, True)
    assert out.map(0xA, 502, 80320, 1.04) == (12, 1320, False)
    assert out.map(0xA, 501, 80160, 1.05) == (11, 1160, False)  # late: fills its own gap
    assert out.map(0xB, 7, 5, 1.06) == (13, 1480, True)  # new source, spliced after 12 with the elapsed time
    assert out.map(0xA, 499, 79840, 1.07) == (9, 840, False)  # a straggler of A keeps A's offsets
    assert out.map(0xA, 100, 0, 1.08) == (14, 1640, True)  # A comes back for real: it is the source again
    assert out.source == 0xA


def test_receive_statistics_follow_a_restarted_source_but_not_a_stray_packet() -> None:
    from hotline.media.session import ReceiveStats

    stats = ReceiveStats(8000)
    for index in range(10):
        stats.update(0xA, 100 + index, 160 * index, 0.02 * index, 160, True)
    stats.update(0xA, 30000, 5, 0.2, 160, True)  # one stray packet far away: not believed
    assert (stats.base_seq, stats.max_seq, stats.received) == (100, 109, 10)
    stats.update(0xA, 110, 1600, 0.22, 160, True)
    assert stats.loss_ratio == 0.0
    stats.update(0xA, 40000, 7, 0.24, 160, True)  # the source really restarted: two in a row
    stats.update(0xA, 40001, 167, 0.26, 160, True)
    assert (stats.base_seq, stats.max_seq, stats.received) == (40001, 40001, 1)
    assert stats.packets == 14


async def test_batching_under_load_keeps_relaying_with_little_delay() -> None:
    from hotline.media.bridge import Bridge

    media = MediaEngine(
        "127.0.0.1",
        free_port_range(40),
        inactivity_timeout=None,
        housekeeping_interval=0.1,
        batch_interval=0.001,
        batch_min_rate=20,
    )
    caller, agent = await RtpPeer.open(), await RtpPeer.open()
    try:
        a = await media.create_session(pcmu_params(caller))
        b = await media.create_session(pcmu_params(agent))
        bridge = Bridge(a, b)
        assert not media.batching  # no traffic, no batching
        sent_at = []
        for _ in range(40):
            sent_at.append(time.monotonic())
            caller.send(a.local_port)
            await asyncio.sleep(0.01)
        assert media.batching  # 100 packets/s: over the threshold
        assert await agent.wait_for(40)
        delays = [r.at - t for r, t in zip(agent.received, sent_at, strict=True)][-15:]
        assert sorted(delays)[len(delays) // 2] < 0.004  # the median packet waits about a millisecond
        bridge.unbridge()
        await settle(0.3)
        assert not media.batching  # quiet again: the loop blocks in epoll again
    finally:
        caller.close()
        agent.close()
        await media.close()


async def test_a_broadcast_plays_one_music_to_many_held_legs(engine: MediaEngine) -> None:
    sinks = [await RtpPeer.open() for _ in range(3)]
    try:
        music = engine.broadcast(ToneSource(Tone("moh", (700.0,)), duration=0.5))  # loops when it ends
        legs = [await engine.create_session(pcmu_params(sinks[i % 3]), rtcp_mux=True) for i in range(30)]
        g722 = await engine.create_session(pcmu_params(sinks[0], codec="G722"), rtcp_mux=True)
        skipped_before, start = engine.late_ticks, time.monotonic()
        for leg in [*legs, g722]:
            leg.hold(music)
        assert len(music) == 31
        assert engine.ticker_count == engine.phases  # one ticker per phase, not one per leg
        await asyncio.sleep(1.0)
        elapsed = time.monotonic() - start
        expected = elapsed / 0.02 - (engine.late_ticks - skipped_before)
        for leg in legs:
            assert 0.85 * expected <= leg.tx_packets <= elapsed / 0.02 + 5
        audio = make_decoder("PCMU").decode(b"".join(p.payload for p in sinks[1].packets(pt=0)[-25:]))
        assert abs(dominant_frequency(audio) - 700) < 10
        wideband = make_decoder("G722").decode(b"".join(p.payload for p in sinks[0].packets(pt=9)[-25:]))
        assert abs(dominant_frequency(wideband, 16000) - 700) < 10
        legs[0].unhold()
        assert len(music) == 30 and not legs[0].on_hold
        sent = legs[0].tx_packets
        await settle(0.2)
        assert legs[0].tx_packets == sent
        music.close()
        assert engine.ticker_count == 0 and all(leg.on_hold for leg in legs[1:])
    finally:
        for sink in sinks:
            sink.close()
