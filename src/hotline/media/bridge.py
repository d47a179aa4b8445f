"""Two-party relay and the conference driver (issue #3; FM-04, FM-17, REC-01, REC-02).

`Bridge(a, b, recorder=None, *, recording_started=None, flush_interval=0.2)`: relays RTP between two
configured `MediaSession`s (a = caller, b = agent) from the moment it is made.
- Same codec on both legs (the usual case): the bridge reads the leg's socket itself (into the engine's
  buffer), rewrites the header there (our SSRC, continuous sequence numbers and timestamps across the peer's
  SSRC changes, the other leg's payload type) and sends it from the other leg's socket: no decoding, no
  numpy, no copy and no objects per packet beyond what the socket calls make. When the legs' preferred
  codecs differ but both negotiated a common one, both send that one; only packets in a codec the other
  leg lacks are transcoded.
- RFC 4733 events are reported by the receiving leg (`on_dtmf`, `digits`) and passed on when the other leg
  negotiated telephone-event; a leg without telephone-event is listened to in-band.
- `recorder` (a `hotline.media.recorder.Recorder`): the caller's audio goes to the left channel, the agent's
  to the right, each at its RTP media time. The hot path only keeps a reference to each received packet;
  every `flush_interval` seconds (checked on the media clock) the packets are decoded at once (G.711 by table
  lookup) and written in contiguous runs. `recording_started` is the `time.monotonic()` of the recording's
  time 0 (default: now). The bridge never closes the recorder: its owner does (`await recorder.close()`).
- Holding a leg (`MediaSession.hold`) stops relaying to and from it; DTMF sent on a leg pauses the relay
  to it.
- `unbridge()` flushes the recording and returns both legs to idle; closing a leg unbridges.
  `relayed` counts packets sent on by this bridge.

`ConferenceBridge(engine, *, sample_rate=8000, gain_levelling=False)`: drives a `mixer.Conference` from the
engine's tick: `add(session, mode=ParticipantMode.TALK, whisper_to=())`, `set_mode(...)`, `remove(session)`,
`close()`. Each tick takes one 20 ms frame per participant from its small receive buffer, mixes (mix-minus,
listen/whisper/barge) and sends each participant its mix in its own codec.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from hotline.log import get_logger
from hotline.media.codecs import CodecError, CodecInfo, Decoder, Resampler, Transcoder, make_decoder
from hotline.media.codecs.g711 import ALAW_DECODE, ULAW_DECODE
from hotline.media.mixer import Conference, ParticipantMode
from hotline.media.recorder import Channel, Recorder, RecordingError, RtpTimeline
from hotline.media.rtp import RtpError, is_rtcp, payload_bounds, read_header, ts_delta
from hotline.media.session import (
    Address,
    Frame,
    MediaEngine,
    MediaError,
    MediaSession,
    SampleFifo,
    SessionMode,
)

__all__ = ["Bridge", "ConferenceBridge"]

log = get_logger(__name__)

_HEADER = struct.Struct("!BBHII")
_unpack = _HEADER.unpack_from
_pack_into = _HEADER.pack_into
_monotonic = time.monotonic
_ADVANCE_MARGIN = 0.05  # the recorder's clock trails ours a little, for packets still on their way


def _payload_ticks(codec: CodecInfo, payload_size: int) -> int | None:
    """RTP timestamp units a payload lasts, for the codecs where its size says so."""
    if codec.name in ("PCMU", "PCMA", "G722"):
        return payload_size  # one byte per 8 kHz tick (G.722's RTP clock is 8000 too)
    return None


class _Tap:
    """The packets one direction received since the last flush, for the recorder and in-band DTMF."""

    __slots__ = (
        "channel",
        "decoders",
        "first_arrival",
        "inband",
        "packets",
        "resamplers",
        "simple",
        "timeline",
    )

    def __init__(self, channel: Channel, clock_rate: int, inband: bool) -> None:
        self.channel = channel
        self.packets: list[tuple[int, bytes]] = []
        self.simple = True  # only the hot path added packets (simple header, the fast payload type)
        self.first_arrival = 0.0
        self.timeline = RtpTimeline(clock_rate)
        self.inband = inband
        self.decoders: dict[int, Decoder] = {}
        self.resamplers: dict[tuple[int, int], Resampler] = {}


class _Path:
    """One direction of a bridge: packets received by `src` go out from `dst`'s socket."""

    __slots__ = (
        "bridge",
        "buffer",
        "dest",
        "dst",
        "fast_pt",
        "out",
        "out_pt",
        "peer",
        "receive",
        "relayed",
        "rx",
        "send",
        "src",
        "tap",
        "transcoders",
        "view",
    )

    def __init__(self, bridge: Bridge, src: MediaSession, dst: MediaSession) -> None:
        self.bridge = bridge
        self.src = src
        self.dst = dst
        self.rx = src._rx
        self.out = dst._out
        self.fast_pt = -1
        self.out_pt = 0
        self.tap: _Tap | None = None
        self.transcoders: dict[str, Transcoder] = {}
        self.relayed = 0
        # copies of the legs' addresses and socket functions, kept current by the bridge, so the hot path
        # reads slots rather than the sessions' dictionaries
        self.buffer = src.engine._buffer
        self.view = memoryview(self.buffer)
        self.peer: Address | None = None
        self.dest: Address | None = None
        self.receive: Callable[[Any], tuple[int, Any]] | None = None
        self.send: Callable[[Any, Any], Any] | None = None
        self.addresses_changed()

    def addresses_changed(self) -> None:
        self.peer = self.src._peer
        self.dest = self.dst._relay_addr
        source, target = self.src._transport, self.dst._transport
        self.receive = None if source is None or source.closed else source.sock.recvfrom_into
        self.send = None if target is None or target.closed or self.dest is None else target.sock.sendto

    def setup(self, tap: _Tap | None) -> None:
        src_codecs, dst_codecs = self.src.codecs, self.dst.codecs
        assert src_codecs is not None and dst_codecs is not None
        send = dst_codecs.send
        self.out_pt = dst_codecs.send_pt
        self.fast_pt = next(
            (
                pt
                for pt, codec in src_codecs.receive.items()
                if codec.name == send.name and not 72 <= pt <= 76
            ),
            -1,  # RTCP packet types 200-204 read as payload types 72-76 with the marker: never fast
        )
        self.out = self.dst._out
        self.rx = self.src._rx
        self.tap = tap
        self.addresses_changed()

    def readable(self) -> None:
        """The hot path: reads the source leg's socket while bridged. An in-order packet of the current source
        in the expected codec is read into the engine's buffer, rewritten there and sent from the other leg's
        socket, with slot reads and one struct call each way."""
        receive = self.receive
        if receive is None:
            return
        buffer = self.buffer
        try:
            size, addr = receive(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.src.error_received(error)
            return
        if addr != self.peer and not self.src._accept_source(addr):
            return
        if size > 12:
            b0, b1, seq, ts, ssrc = _unpack(buffer, 0)
            rx = self.rx
            if b0 == 0x80 and (b1 & 0x7F) == self.fast_pt and ssrc == rx.ssrc:
                max_seq = rx.max_seq
                if 0 < ((seq - max_seq) & 0xFFFF) < 3000:  # in order (RFC 3550 A.1's MAX_DROPOUT)
                    now = _monotonic()
                    if seq < max_seq:
                        rx.cycles += 0x10000
                    rx.max_seq = seq
                    rx.received += 1
                    rx.packets += 1
                    transit = now * rx.clock_rate - ts
                    change = transit - rx.transit
                    rx.transit = transit
                    if change < 0:
                        change = -change
                    if change < 2147483647.0:
                        rx.jitter += (change - rx.jitter) * 0.0625
                    tap = self.tap
                    if tap is not None:
                        if not tap.packets:
                            tap.first_arrival = now
                        tap.packets.append((ts, bytes(buffer[:size])))
                    dest = self.dest
                    if dest is None:  # the other leg is held or hears DTMF: its stream stays as it is
                        return
                    out = self.out
                    if ssrc == out.source and ((ts - out.last_in_ts) & 0xFFFFFFFF) < out.max_step:
                        out.last_in_seq = seq
                        out.last_in_ts = ts
                        out.time = now
                        _pack_into(
                            buffer,
                            0,
                            0x80,
                            (b1 & 0x80) | self.out_pt,
                            (seq + out.seq_offset) & 0xFFFF,
                            (ts + out.ts_offset) & 0xFFFFFFFF,
                            out.ssrc,
                        )
                        try:
                            self.send(self.view[:size], dest)  # type: ignore[misc]
                        except OSError:
                            self.dst.send_errors += 1
                            return
                        out.packets += 1
                        out.octets += size - 12
                        self.relayed += 1
                        return
                    self._relay_mapped(bytes(buffer[:size]), b1 & 0x80, self.out_pt, seq, ts, ssrc, now)
                    return
        self._slow(bytes(buffer[:size]), addr)

    def _relay_mapped(
        self, data: bytes, marker: int, pt: int, seq: int, ts: int, ssrc: int, now: float
    ) -> None:
        """Relay one packet through the complete mapping (new source, timestamp jump, late packet)."""
        dest = self.dest
        if dest is None or self.send is None:
            return
        out = self.out
        out_seq, out_ts, resync = out.map(ssrc, seq, ts, now)
        buf = bytearray(data)
        _pack_into(buf, 0, data[0], (0x80 if resync else marker) | pt, out_seq, out_ts, out.ssrc)
        try:
            self.send(buf, dest)
        except OSError:
            self.dst.send_errors += 1
            return
        out.packets += 1
        out.octets += len(data) - 12
        self.relayed += 1

    def _slow(self, data: bytes, addr: Address) -> None:
        src, dst = self.src, self.dst
        src_codecs, dst_codecs = src.codecs, dst.codecs
        if src_codecs is None or dst_codecs is None or src.params is None:
            return
        if src.params.rtcp_mux and is_rtcp(data):
            src._on_rtcp(data, addr)
            return
        try:
            marker, pt, seq, ts, ssrc = read_header(data)
            start, end = payload_bounds(data)
        except RtpError:
            src.rx_errors += 1
            return
        now = _monotonic()
        rx = self.rx
        if ssrc != rx.ssrc:
            src._dtmf_rx.reset()
        if pt in src_codecs.event_receive_pts:
            rx.update(ssrc, seq, ts, now, end - start, False)
            src._on_telephone_event(ssrc, ts, data[start:end])
            if dst_codecs.event_send_pt is not None:
                self._relay_mapped(data, 0x80 if marker else 0, dst_codecs.event_send_pt, seq, ts, ssrc, now)
            return
        codec = src_codecs.receive.get(pt)
        if codec is None:
            src.rx_errors += 1
            return
        rx.update(ssrc, seq, ts, now, end - start, True)
        tap = self.tap
        if tap is not None:
            if not tap.packets:
                tap.first_arrival = now
            tap.packets.append((ts, data))
            tap.simple = False
        if codec.name != dst_codecs.send.name and dst.can_send(codec.name):
            # the peer switched codecs (or we guessed wrong): follow it rather than transcode
            dst.set_send_codec(codec.name)
            self.bridge._legs_changed()
            dst_codecs = dst.codecs
            assert dst_codecs is not None
        if codec.name == dst_codecs.send.name:
            self._relay_mapped(data, 0x80 if marker else 0, dst_codecs.send_pt, seq, ts, ssrc, now)
            return
        self._transcode(codec, data[start:end], now)

    def _transcode(self, codec: CodecInfo, payload: bytes, now: float) -> None:
        dst = self.dst
        dst_codecs = dst.codecs
        if dst_codecs is None or dst._relay_addr is None:
            return
        transcoder = self.transcoders.get(codec.name)
        if transcoder is None or transcoder.target.name != dst_codecs.send.name:
            transcoder = self.transcoders[codec.name] = Transcoder(codec.name, dst_codecs.send.name)
        try:
            payloads = transcoder.transcode(payload)
        except CodecError:
            self.src.rx_errors += 1
            return
        frame_ticks = dst_codecs.send.frame_ticks
        for out in payloads:
            ticks = _payload_ticks(dst_codecs.send, len(out)) or frame_ticks
            dst.send_payload(out, ticks, now)
            self.relayed += 1


class Bridge:
    """A two-party call: RTP relayed between two legs, optionally recorded (a = caller, b = agent)."""

    def __init__(
        self,
        a: MediaSession,
        b: MediaSession,
        recorder: Recorder | None = None,
        *,
        recording_started: float | None = None,
        flush_interval: float = 0.2,
    ) -> None:
        if a is b:
            raise MediaError("a leg cannot be bridged with itself")
        for leg in (a, b):
            if leg.closed:
                raise MediaError(f"media session {leg.id} is closed")
            if leg.codecs is None:
                raise MediaError(f"media session {leg.id} has no negotiated parameters yet")
            if leg.bridge is not None or leg.conference is not None:
                raise MediaError(f"media session {leg.id} is already {leg.mode.value}")
        if a.engine is not b.engine:
            raise MediaError("both legs must belong to the same media engine")
        self.a = a
        self.b = b
        self.engine = a.engine
        self.recorder = recorder
        self.recording_started = _monotonic() if recording_started is None else recording_started
        self.flush_interval = flush_interval
        self._last_flush = _monotonic()
        self.active = True
        self._ticking = False
        for leg in (a, b):
            leg.stop_playing()
        self._choose_codecs()
        self._ab = _Path(self, a, b)
        self._ba = _Path(self, b, a)
        self._taps: dict[int, _Tap] = {}
        for leg in (a, b):
            leg.bridge = self
            leg.mode = SessionMode.BRIDGED
        self._legs_changed()

    @property
    def relayed(self) -> int:
        """Packets this bridge sent on (both directions)."""
        return self._ab.relayed + self._ba.relayed

    def _addresses_changed(self) -> None:
        self._ab.addresses_changed()
        self._ba.addresses_changed()

    def _choose_codecs(self) -> None:
        """Send each leg what its peer most likely sends us (the other leg's negotiated codec) when that leg
        negotiated it too, so packets pass through untouched in both directions."""
        a_codecs, b_codecs = self.a.codecs, self.b.codecs
        assert a_codecs is not None and b_codecs is not None
        a_sends, b_sends = a_codecs.send.name, b_codecs.send.name
        if a_sends == b_sends:
            return
        if self.b.can_send(a_sends):
            self.b.set_send_codec(a_sends)
        if self.a.can_send(b_sends):
            self.a.set_send_codec(b_sends)

    def _legs_changed(self) -> None:
        """(Re)install the relay after a bridge, hold, unhold or re-INVITE."""
        if not self.active:
            return
        want_record = self.recorder is not None
        for path, channel in ((self._ab, Channel.CALLER), (self._ba, Channel.AGENT)):
            src = path.src
            inband = src._inband is not None
            tap = None
            if want_record or inband:
                tap = self._taps.get(channel)
                if tap is None:
                    tap = self._taps[channel] = _Tap(channel, src._rx.clock_rate, inband)
                tap.inband = inband
            path.setup(tap)
            relaying = not src._held and src.direction.receives
            src.set_reader(path.readable if relaying else None)
        needs_tick = bool(self._taps)
        if needs_tick and not self._ticking:
            self.engine.add_ticker(self)
            self._ticking = True
        elif not needs_tick and self._ticking:
            self.engine.remove_ticker(self)
            self._ticking = False

    # -- the recording side --

    def on_media_tick(self, now: float) -> None:
        if now - self._last_flush >= self.flush_interval:
            self._flush(now)

    def _flush(self, now: float) -> None:
        """Decode what both directions received since the last flush and write it, in media-time order so
        that neither channel falls behind the recorder's reorder window."""
        self._last_flush = now
        writes: list[tuple[float, Channel, Frame]] = []
        for path in (self._ab, self._ba):
            tap = path.tap
            if tap is not None and tap.packets:
                packets, simple = tap.packets, tap.simple
                tap.packets, tap.simple = [], True
                self._decode_tap(path, tap, packets, simple, writes)
        recorder = self.recorder
        if recorder is None:
            return
        writes.sort(key=lambda write: write[0])
        try:
            for at, channel, pcm in writes:
                recorder.write(channel, pcm, at)
            recorder.advance(max(0.0, now - self.recording_started - _ADVANCE_MARGIN))
        except RecordingError as error:
            self._stop_recording(error)
        except ValueError as error:  # the recorder refused the audio: fail loudly, keep the call going
            self._stop_recording(RecordingError(f"recording refused audio: {error}", call_id=self.a.id))

    def _decode_tap(
        self,
        path: _Path,
        tap: _Tap,
        packets: list[tuple[int, bytes]],
        simple: bool,
        writes: list[tuple[float, Channel, Frame]],
    ) -> None:
        codecs = path.src.codecs
        if codecs is None:
            return
        clock = tap.timeline.clock_rate
        first_ts, first = packets[0]
        first_arrival = tap.first_arrival - self.recording_started
        pt = first[1] & 0x7F
        codec = codecs.receive.get(pt)
        size = len(first)
        step = size - 12
        count = len(packets)
        if (
            simple  # all with a plain 12-byte header and the one fast payload type
            and codec is not None
            and codec.name in ("PCMU", "PCMA")
            and first_ts + (count - 1) * step <= 0xFFFFFFFF
            and [ts for ts, _ in packets] == list(range(first_ts, first_ts + count * step, step))
        ):
            # the usual batch: one codec, simple headers, no loss or reordering: one run
            payload = b"".join([d[12:] for _, d in packets])
            self._decode_run(path, tap, pt, payload, first_ts, first_ts, first_arrival, clock, writes)
            return
        run: list[bytes] = []
        run_ts = first_ts
        run_pt = -1
        next_ts = first_ts
        for ts, data in packets:
            pt = data[1] & 0x7F
            if data[0] == 0x80:
                payload = data[12:]
            else:
                try:
                    start, end = payload_bounds(data)
                except RtpError:
                    continue
                payload = data[start:end]
            codec = codecs.receive.get(pt)
            if codec is None:
                continue
            ticks = _payload_ticks(codec, len(payload)) if codec.name in ("PCMU", "PCMA") else None
            if ticks is not None and run and pt == run_pt and ts == next_ts:
                run.append(payload)
                next_ts = (ts + ticks) & 0xFFFFFFFF
                continue
            if run:
                joined = b"".join(run)
                self._decode_run(path, tap, run_pt, joined, run_ts, first_ts, first_arrival, clock, writes)
            run = [payload]
            run_ts = ts
            run_pt = pt
            next_ts = (ts + (ticks or 0)) & 0xFFFFFFFF
            if ticks is None:  # codecs with decoder state: one packet at a time
                self._decode_run(path, tap, pt, payload, ts, first_ts, first_arrival, clock, writes)
                run = []
        if run:
            joined = b"".join(run)
            self._decode_run(path, tap, run_pt, joined, run_ts, first_ts, first_arrival, clock, writes)

    def _decode_run(
        self,
        path: _Path,
        tap: _Tap,
        pt: int,
        payload: bytes,
        run_ts: int,
        first_ts: int,
        first_arrival: float,
        clock: int,
        writes: list[tuple[float, Channel, Frame]],
    ) -> None:
        codecs = path.src.codecs
        assert codecs is not None
        codec = codecs.receive[pt]
        if codec.name == "PCMU":
            pcm: Frame = ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        elif codec.name == "PCMA":
            pcm = ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
        else:
            decoder = tap.decoders.get(pt)
            if decoder is None:
                decoder = tap.decoders[pt] = make_decoder(codec.name)
            try:
                pcm = decoder.decode(payload)
            except CodecError:
                return
        if tap.inband:
            path.src._detect_inband(pt, codec.sample_rate, pcm)
        recorder = self.recorder
        if recorder is None:
            return
        if codec.sample_rate != recorder.sample_rate:
            key = (pt, recorder.sample_rate)
            resampler = tap.resamplers.get(key)
            if resampler is None:
                resampler = tap.resamplers[key] = Resampler(codec.sample_rate, recorder.sample_rate)
            pcm = resampler.process(pcm)
        arrival = first_arrival + ts_delta(run_ts, first_ts) / clock
        at = tap.timeline.position(run_ts, arrival)
        # long runs (after the loop stalled) go in pieces, interleaved in time with the other channel
        piece = recorder.sample_rate // 2
        for start in range(0, len(pcm), piece):
            writes.append((at + start / recorder.sample_rate, tap.channel, pcm[start : start + piece]))

    def _stop_recording(self, error: RecordingError) -> None:
        log.error("recording failed; the call goes on unrecorded", error=str(error), a=self.a.id, b=self.b.id)
        self.recorder = None
        for path in (self._ab, self._ba):
            if path.tap is not None and not path.tap.inband:
                path.tap = None
        self._taps = {channel: tap for channel, tap in self._taps.items() if tap.inband}
        self._legs_changed()

    # -- ending --

    def unbridge(self) -> None:
        """Stop relaying (the recording gets what was received so far) and return both legs to idle."""
        if not self.active:
            return
        self._flush(_monotonic())
        self.active = False
        if self._ticking:
            self.engine.remove_ticker(self)
            self._ticking = False
        for leg in (self.a, self.b):
            if leg.bridge is self:
                leg.bridge = None
                leg.set_reader(None)
                if leg.mode is SessionMode.BRIDGED:
                    leg.mode = SessionMode.IDLE

    close = unbridge

    def __repr__(self) -> str:
        return f"<Bridge {self.a.id} <-> {self.b.id}{' recorded' if self.recorder else ''}>"


class ConferenceBridge:
    """Drives a `mixer.Conference` from the engine's tick for legs in CONFERENCED mode."""

    def __init__(self, engine: MediaEngine, *, sample_rate: int = 8000, gain_levelling: bool = False) -> None:
        self.engine = engine
        self.conference = Conference(sample_rate, gain_levelling=gain_levelling)
        self.sample_rate = sample_rate
        self.members: dict[str, MediaSession] = {}
        self._ticking = False

    def add(
        self,
        session: MediaSession,
        mode: ParticipantMode = ParticipantMode.TALK,
        whisper_to: Iterable[MediaSession] = (),
    ) -> None:
        if session.closed or session.codecs is None:
            raise MediaError(f"media session {session.id} is closed or not negotiated")
        if session.bridge is not None or session.conference is not None:
            raise MediaError(f"media session {session.id} is already {session.mode.value}")
        self.conference.add(session.id, mode, whisper_to=[other.id for other in whisper_to])
        session.stop_playing()
        session.conference = self
        session.mode = SessionMode.CONFERENCED
        session._audio_in = SampleFifo(self.sample_rate // 50)
        self.members[session.id] = session
        if not self._ticking:
            self.engine.add_ticker(self)
            self._ticking = True

    def set_mode(
        self, session: MediaSession, mode: ParticipantMode, whisper_to: Iterable[MediaSession] = ()
    ) -> None:
        self.conference.set_mode(session.id, mode, whisper_to=[other.id for other in whisper_to])

    def remove(self, session: MediaSession) -> None:
        if self.members.pop(session.id, None) is None:
            return
        self.conference.remove(session.id)
        session.conference = None
        session._audio_in = None
        if session.mode is SessionMode.CONFERENCED:
            session.mode = SessionMode.IDLE
        if not self.members and self._ticking:
            self.engine.remove_ticker(self)
            self._ticking = False

    def close(self) -> None:
        for session in list(self.members.values()):
            self.remove(session)

    def on_media_tick(self, now: float) -> None:
        members = self.members
        conference = self.conference
        for session_id, session in members.items():
            fifo = session._audio_in
            if fifo is not None:
                frame = fifo.pull()
                if frame is not None and not session._held:  # a held party is not heard
                    conference.push(session_id, frame)
        for session_id, mixed in conference.mix().items():
            listener = members.get(session_id)
            if listener is not None and listener._relay_addr is not None:
                listener.send_audio(mixed, now)
