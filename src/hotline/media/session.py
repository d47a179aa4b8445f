"""The asyncio media driver: one RTP endpoint per call leg, and the engine that owns ports and time.

`MediaEngine(host="127.0.0.1", ports=(20000, 29999), *, tick_interval=0.02, phases=4,
housekeeping_interval=1.0, rtcp_interval=5.0, inactivity_timeout=30.0, cname=None, batch_interval=0.0005,
batch_min_rate=5000)`:
- owns the RTP port range: even ports for RTP, RTP+1 for RTCP (unless rtcp-mux); a port another process
  holds is skipped; `PortsExhausted` (a `MediaError`) says so when none is left. `ports_in_use`,
  `port_capacity`.
- `await create_session(params=None, *, rtcp_mux=False, name="", on_dtmf=None, on_timeout=None,
  on_quality=None, inactivity_timeout=<engine default>) -> MediaSession`.
- runs ONE shared clock: `loop.call_at` chained on an absolute schedule (no drift), `tick_interval` split into
  `phases` so that the legs it drives are spread over the 20 ms instead of bursting together. Whatever sends
  media on its own (a playing or holding leg, DTMF out, a recorded bridge, a conference) registers as a
  `Ticker` (`on_media_tick(now)`) for it: no timer or task per leg or per packet. Every
  `housekeeping_interval` it checks inactivity, sends RTCP and reports quality for every session.
- `broadcast(source) -> Broadcast`: one source (music on hold) that any number of legs hold on at the same
  point, read and encoded once per codec per tick.
- `batch_interval` (0 = off): while the legs receive at least `batch_min_rate` packets/s (checked every
  housekeeping round), the loop sleeps up to that long between iterations so that one wake-up handles many
  datagrams: fewer context switches and epoll calls per packet (about a quarter less CPU per relayed packet
  at 200 calls, bench/README.md), at most that much added delay. `batching` says whether it is on.
- `await close()`.

`MediaParams`: the negotiated stream as plain values (the switch fills it from `sip.sdp.negotiated_audio`,
or with `MediaParams.from_negotiation(negotiated)`): remote host/port, payload type -> codec name (the
remote's numbers, for sending) and ours for receiving, the audio and telephone-event payload types we send
with, ptime, `MediaDirection` (seen from our side), rtcp-mux and the remote RTCP address.

`MediaSession` (an `asyncio.DatagramProtocol` on its RTP port):
- `configure(params)`: first negotiation or a re-INVITE (new address, codec, direction: hold by the peer).
- symmetric RTP: sends to the SDP address until the peer's packets arrive, then to where they come from;
  a new source address is taken over after 3 packets while the old one is silent (NAT rebinding).
- modes (`SessionMode`): IDLE, PLAYING (`play(player_or_source) -> Player`, `stop_playing()`), BRIDGED
  (see `hotline.media.bridge.Bridge`), CONFERENCED (`hotline.media.bridge.ConferenceBridge`).
- DTMF in: RFC 4733 (`dtmf.DtmfReceiver`), or in-band Goertzel when the peer did not negotiate
  telephone-event; each digit once, to `on_dtmf(session, DtmfEvent)` and the `digits` queue.
- DTMF out: `send_dtmf(digits, duration=0.1, gap=0.1) -> asyncio.Future[None]`: RFC 4733 with the end packet
  sent three times, or in-band tones when the peer has no telephone-event.
- hold: `hold(music=None)` (stop sending, or send `music`: an `AudioSource`/`Player` of its own, or a shared
  `Broadcast`), `unhold()`, `on_hold`.
- `inactivity_timeout` seconds without RTP (not while on hold or not receiving) -> `on_timeout(session)`,
  once.
- RTCP SR/RR about every `rtcp_interval` (randomised 0.5-1.5x), and a `LegQuality` (loss %, jitter ms, MOS
  from `quality.estimate`, the peer's view from its reports, RTT) to `on_quality(session, quality)` with each
  report; `quality()` any time.
- `close()`: stops everything, sends an RTCP BYE, frees the ports. Idempotent.
- counters: `rx_packets`, `tx_packets`, `tx_octets`, `rx_errors`, `send_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import math
import random
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from hotline.log import get_logger
from hotline.media import rtcp as rtcp_packets
from hotline.media.codecs import (
    CodecError,
    CodecInfo,
    Decoder,
    Encoder,
    Resampler,
    get_codec,
    make_decoder,
    make_encoder,
)
from hotline.media.codecs.g711 import ALAW_ENCODE, ULAW_ENCODE
from hotline.media.dtmf import (
    DTMF_FREQUENCIES,
    ZERO_DBM0_AMPLITUDE,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    GoertzelDetector,
    digit_to_event,
)
from hotline.media.player import AudioSource, Player
from hotline.media.quality import estimate
from hotline.media.rtp import (
    MAX_DROPOUT,
    MAX_MISORDER,
    ReceiverStats,
    RtpError,
    is_rtcp,
    payload_bounds,
    read_header,
    seq_delta,
    ts_delta,
)

if TYPE_CHECKING:
    from hotline.media.bridge import Bridge, ConferenceBridge

__all__ = [
    "Broadcast",
    "DtmfEvent",
    "LegQuality",
    "MediaDirection",
    "MediaEngine",
    "MediaError",
    "MediaParams",
    "MediaSession",
    "OutgoingStream",
    "PortsExhausted",
    "SessionMode",
    "Ticker",
]

Frame = npt.NDArray[np.int16]
Address = tuple[Any, ...]

log = get_logger(__name__)

HEADER = struct.Struct("!BBHII")
_monotonic = time.monotonic
_NTP_EPOCH_OFFSET = 2208988800.0  # 1900-01-01 to 1970-01-01
_RELATCH_PACKETS = 3
_DTMF_QUEUE_SIZE = 64
_ENCODED_CACHE_SIZE = 8192


class MediaError(Exception):
    """A media operation that cannot be done; the message says why."""


class PortsExhausted(MediaError):
    """No RTP port (pair) is free in the engine's range."""


class MediaDirection(enum.StrEnum):
    """The stream's direction seen from our side (the same values as SDP's attributes)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (MediaDirection.SENDRECV, MediaDirection.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (MediaDirection.SENDRECV, MediaDirection.RECVONLY)


class _FormatLike(Protocol):
    @property
    def payload_type(self) -> int: ...

    @property
    def encoding(self) -> str: ...


class NegotiationLike(Protocol):
    """What `sip.sdp.NegotiatedAudio` offers; media does not import sip."""

    @property
    def remote_address(self) -> str: ...

    @property
    def remote_port(self) -> int: ...

    @property
    def codec(self) -> _FormatLike: ...

    @property
    def payload_types(self) -> Mapping[int, _FormatLike]: ...

    @property
    def receive_payload_types(self) -> Mapping[int, _FormatLike]: ...

    @property
    def telephone_event(self) -> _FormatLike | None: ...

    @property
    def direction(self) -> str: ...

    @property
    def ptime(self) -> int | None: ...

    @property
    def rtcp_mux(self) -> bool: ...

    @property
    def remote_rtcp(self) -> tuple[str, int] | None: ...


@dataclass(frozen=True)
class MediaParams:
    """One negotiated audio stream, seen from our side.

    `payload_types` are the remote's numbers (used when sending), `receive_payload_types` ours (what the peer
    sends us; the same unless a dynamic type was remapped). Names are SDP encoding names ("PCMU", "opus",
    "telephone-event"); names the engine does not know are ignored. `payload_type` is the audio type we send;
    `telephone_event` the telephone-event type we send, None when the peer did not negotiate it.
    """

    remote_host: str
    remote_port: int
    payload_types: Mapping[int, str]
    payload_type: int
    telephone_event: int | None = None
    receive_payload_types: Mapping[int, str] | None = None
    ptime: int = 20
    direction: MediaDirection = MediaDirection.SENDRECV
    rtcp_mux: bool = False
    remote_rtcp: tuple[str, int] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.remote_port < 65536:
            raise MediaError(f"remote RTP port {self.remote_port} is out of range")
        name = self.payload_types.get(self.payload_type)
        if name is None:
            raise MediaError(f"payload type {self.payload_type} is not among {sorted(self.payload_types)}")
        try:
            codec = get_codec(name)
        except CodecError as error:
            raise MediaError(f"cannot send {name}: {error}") from None
        if not codec.is_audio:
            raise MediaError(f"payload type {self.payload_type} ({name}) is not an audio codec")
        if self.telephone_event is not None and self.payload_types.get(self.telephone_event, "").lower() != (
            "telephone-event"
        ):
            raise MediaError(f"payload type {self.telephone_event} is not telephone-event")
        if not 10 <= self.ptime <= 200:
            raise MediaError(f"ptime {self.ptime} ms is out of range")
        object.__setattr__(self, "direction", MediaDirection(self.direction))

    @property
    def receive_types(self) -> Mapping[int, str]:
        return self.payload_types if self.receive_payload_types is None else self.receive_payload_types

    @classmethod
    def from_negotiation(cls, negotiated: NegotiationLike) -> MediaParams:
        """From `hotline.sip.sdp.NegotiatedAudio` (or anything shaped like it)."""
        event = negotiated.telephone_event
        receive = negotiated.receive_payload_types or negotiated.payload_types
        return cls(
            remote_host=negotiated.remote_address,
            remote_port=negotiated.remote_port,
            payload_types={pt: f.encoding for pt, f in negotiated.payload_types.items()},
            payload_type=negotiated.codec.payload_type,
            telephone_event=None if event is None else event.payload_type,
            receive_payload_types={pt: f.encoding for pt, f in receive.items()},
            ptime=negotiated.ptime or 20,
            direction=MediaDirection(str(negotiated.direction)),
            rtcp_mux=negotiated.rtcp_mux,
            remote_rtcp=negotiated.remote_rtcp,
        )


class SessionMode(enum.Enum):
    IDLE = "idle"
    PLAYING = "playing"
    BRIDGED = "bridged"
    CONFERENCED = "conferenced"


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    digit: str
    method: str  # "rfc4733" or "inband"
    duration_ms: int | None  # when known
    at: float  # time.monotonic() when it was detected


@dataclass(frozen=True, slots=True)
class LegQuality:
    """Voice quality of one leg (OPS-09, FM-16): inbound from our counters, outbound from the peer's RTCP."""

    session_id: str
    codec: str
    packets_received: int
    packets_sent: int
    loss_percent: float  # inbound, since the previous report
    cumulative_loss_percent: float  # inbound, since the stream started
    jitter_ms: float  # inbound interarrival jitter (RFC 3550 A.8)
    mos: float  # inbound listening quality (E-model)
    remote_loss_percent: float | None  # what the peer reported about our stream
    remote_jitter_ms: float | None
    round_trip_ms: float | None
    at: float  # time.monotonic()


class Ticker(Protocol):
    def on_media_tick(self, now: float) -> None: ...


# --- the streams ------------------------------------------------------------------------------------------


class ReceiveStats:
    """RFC 3550 A.1/A.8 figures of the stream a leg receives, kept cheap: the bridge updates the fields inline
    for every relayed packet. `received` counts packets of the current source; `packets` all accepted ones."""

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "jitter",
        "max_seq",
        "octets",
        "packets",
        "received",
        "reports",
        "ssrc",
        "transit",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.packets = 0
        self.received = 0
        self.octets = 0
        self.base_seq = 0
        self.max_seq = 0
        self.bad_seq = -1
        self.cycles = 0
        self.jitter = 0.0  # timestamp units
        self.transit = 0.0
        self.reports: ReceiverStats | None = None  # carries RTCP's interval state for the current source

    def restart(self, ssrc: int, sequence: int, timestamp: int, arrival: float) -> None:
        self.ssrc = ssrc
        self.base_seq = sequence
        self.max_seq = sequence
        self.cycles = 0
        self.received = 0
        self.jitter = 0.0
        self.transit = arrival * self.clock_rate - timestamp
        self.reports = None

    def update(
        self, ssrc: int, sequence: int, timestamp: int, arrival: float, size: int, audio: bool
    ) -> None:
        if ssrc != self.ssrc:
            self.restart(ssrc, sequence, timestamp, arrival)
        delta = (sequence - self.max_seq) & 0xFFFF
        if 0 < delta < MAX_DROPOUT:
            if sequence < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = sequence
        elif MAX_DROPOUT <= delta <= 0x10000 - MAX_MISORDER:
            if sequence != self.bad_seq:  # a jump: believe it when the next packet follows on (A.1)
                self.bad_seq = (sequence + 1) & 0xFFFF
                self.packets += 1
                return
            self.restart(ssrc, sequence, timestamp, arrival)  # the source restarted its sequence
        self.received += 1
        self.packets += 1
        self.octets += size
        if audio and delta:
            transit = arrival * self.clock_rate - timestamp
            change = abs(transit - self.transit)
            self.transit = transit
            if change < 0x7FFFFFFF:
                self.jitter += (change - self.jitter) * 0.0625

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base_seq + 1 if self.received else 0

    @property
    def loss_ratio(self) -> float:
        expected = self.expected
        return max(0, expected - self.received) / expected if expected > 0 else 0.0

    def report_stats(self) -> ReceiverStats | None:
        """A `rtp.ReceiverStats` with these figures, for `rtcp.report_block`."""
        if self.ssrc is None or self.received == 0:
            return None
        stats = self.reports
        if stats is None:
            stats = self.reports = ReceiverStats(self.ssrc, self.clock_rate, probation=0)
        stats.base_seq = self.base_seq
        stats.max_seq = self.max_seq
        stats.cycles = self.cycles
        stats.received = self.received
        stats.octets = self.octets
        stats.jitter_ticks = self.jitter
        stats.probation = 0
        return stats


class OutgoingStream:
    """The RTP stream we send on one leg: one SSRC, continuous sequence numbers and timestamps, whether the
    packets are relayed from the other leg (rebased per source, with constant offsets so loss and reordering
    pass through) or made here (prompts, DTMF).

    A new source (another SSRC, a sequence jump beyond RFC 3550's limits, a timestamp that leaves the wall
    clock by more than a second) is spliced right after the last packet sent: next sequence number, timestamp
    advanced by the time elapsed (at least a frame), marker set. The bridge's hot path reads and writes the
    fields directly; `map` is the complete (slow) path.
    """

    __slots__ = (
        "clock_rate",
        "frame_ticks",
        "last_in_seq",
        "last_in_ts",
        "max_step",
        "octets",
        "packets",
        "previous",
        "resyncs",
        "seq",
        "seq_offset",
        "source",
        "ssrc",
        "time",
        "ts",
        "ts_offset",
    )

    def __init__(self, ssrc: int, clock_rate: int, *, first_sequence: int, first_timestamp: int) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self.clock_rate = clock_rate
        self.frame_ticks = clock_rate // 50
        self.max_step = clock_rate  # a timestamp step the hot path takes without looking at the clock
        self.seq = (first_sequence - 1) & 0xFFFF  # the last one sent (while `source` is None)
        self.ts = (first_timestamp - self.frame_ticks) & 0xFFFFFFFF
        self.time: float | None = None  # when the last packet was sent
        self.source: int | None = None  # SSRC being relayed, None while we generate packets
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_in_seq = 0
        self.last_in_ts = 0
        self.previous: tuple[int, int, int, int] | None = None  # ssrc, offsets and last sequence left
        self.resyncs = 0
        self.packets = 0  # sent, relayed or our own (for RTCP sender reports)
        self.octets = 0

    def set_clock_rate(self, clock_rate: int) -> None:
        if clock_rate != self.clock_rate:
            self.seq, self.ts = self.last()
            self.source = None
            self.clock_rate = clock_rate
            self.frame_ticks = clock_rate // 50
            self.max_step = clock_rate
            self.time = None

    def last(self) -> tuple[int, int]:
        """Sequence number and timestamp of the newest packet sent."""
        if self.source is not None:
            return (self.last_in_seq + self.seq_offset) & 0xFFFF, (
                self.last_in_ts + self.ts_offset
            ) & 0xFFFFFFFF
        return self.seq, self.ts

    def own(self, now: float, ticks: int) -> tuple[int, int]:
        """Sequence number and timestamp for a packet we make, `ticks` after our previous one (0 for the
        packets of one RFC 4733 event). After a pause the timestamp follows the clock instead."""
        seq, ts = self.last()
        if self.time is None:
            advance = ticks if self.source is None else self.frame_ticks
        else:
            elapsed = (now - self.time) * self.clock_rate
            advance = ticks if elapsed < ticks + 3 * self.frame_ticks else round(elapsed)
            if self.source is not None:
                advance = max(advance, self.frame_ticks)
        if self.source is not None:
            self.previous = (self.source, self.seq_offset, self.ts_offset, self.last_in_seq)
        self.source = None
        self.seq = (seq + 1) & 0xFFFF
        self.ts = (ts + advance) & 0xFFFFFFFF
        self.time = now
        return self.seq, self.ts

    def splice(self, ssrc: int, sequence: int, timestamp: int, now: float) -> None:
        seq, ts = self.last()
        advance = self.frame_ticks
        if self.time is not None:
            advance = max(advance, round((now - self.time) * self.clock_rate))
        if self.source is not None and self.source != ssrc:
            self.previous = (self.source, self.seq_offset, self.ts_offset, self.last_in_seq)
        self.source = ssrc
        self.seq_offset = (seq + 1 - sequence) & 0xFFFF
        self.ts_offset = (ts + advance - timestamp) & 0xFFFFFFFF
        self.last_in_seq = sequence
        self.last_in_ts = timestamp
        self.time = now
        self.resyncs += 1

    def map(self, ssrc: int, sequence: int, timestamp: int, now: float) -> tuple[int, int, bool]:
        """`(sequence, timestamp, marker_needed)` for a relayed packet. Stragglers of the source we left keep
        its offsets; anything else from another source becomes the new source."""
        marker = False
        if ssrc == self.source:
            delta = seq_delta(sequence, self.last_in_seq)
            if -MAX_MISORDER <= delta <= 0:  # late or duplicate: same offsets, no state change
                return (
                    (sequence + self.seq_offset) & 0xFFFF,
                    (timestamp + self.ts_offset) & 0xFFFFFFFF,
                    False,
                )
            if 0 < delta <= MAX_DROPOUT:
                step = ts_delta(timestamp, self.last_in_ts)
                elapsed = (now - self.time) * self.clock_rate if self.time is not None else step
                if abs(step - elapsed) > self.clock_rate:  # the timestamp left the clock: re-anchor it
                    _, ts = self.last()
                    advance = max(round(elapsed), delta * self.frame_ticks)
                    self.ts_offset = (ts + advance - timestamp) & 0xFFFFFFFF
                    self.resyncs += 1
                    marker = True
                self.last_in_seq = sequence
                self.last_in_ts = timestamp
                self.time = now
                return (
                    (sequence + self.seq_offset) & 0xFFFF,
                    (timestamp + self.ts_offset) & 0xFFFFFFFF,
                    marker,
                )
        elif self.previous is not None and ssrc == self.previous[0]:
            _, seq_offset, ts_offset, last_seq = self.previous
            if -MAX_MISORDER <= seq_delta(sequence, last_seq) <= 0:  # a straggler of the source we left
                return (sequence + seq_offset) & 0xFFFF, (timestamp + ts_offset) & 0xFFFFFFFF, False
        self.splice(ssrc, sequence, timestamp, now)
        return (sequence + self.seq_offset) & 0xFFFF, (timestamp + self.ts_offset) & 0xFFFFFFFF, True


# --- helpers for audio in and out --------------------------------------------------------------------------


class SampleFifo:
    """Decoded audio a leg received, handed out one 20 ms frame per tick (a minimal jitter buffer for the
    conference mixer): playout starts once `target_frames` are buffered, restarts after an underrun, and
    drops the oldest audio beyond `max_frames`."""

    def __init__(self, frame_samples: int, target_frames: int = 2, max_frames: int = 8) -> None:
        self.frame_samples = frame_samples
        self.target = target_frames * frame_samples
        self.limit = max_frames * frame_samples
        self._chunks: deque[Frame] = deque()
        self._count = 0
        self._playing = False
        self.underruns = 0
        self.dropped_samples = 0

    def __len__(self) -> int:
        return self._count

    def push(self, pcm: Frame) -> None:
        if len(pcm) == 0:
            return
        self._chunks.append(pcm)
        self._count += len(pcm)
        while self._count > self.limit and self._chunks:
            excess = self._count - self.target
            first = self._chunks[0]
            if len(first) <= excess:
                self._chunks.popleft()
                self._count -= len(first)
                self.dropped_samples += len(first)
            else:
                self._chunks[0] = first[excess:]
                self._count -= excess
                self.dropped_samples += excess

    def pull(self) -> Frame | None:
        size = self.frame_samples
        if not self._playing:
            if self._count < self.target:
                return None
            self._playing = True
        if self._count < size:
            self._playing = False
            self.underruns += 1
            return None
        first = self._chunks[0]
        if len(first) == size:
            self._chunks.popleft()
            self._count -= size
            return first
        out = np.empty(size, dtype=np.int16)
        filled = 0
        while filled < size:
            chunk = self._chunks[0]
            take = min(size - filled, len(chunk))
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        self._count -= size
        return out


def _dtmf_tone(digit: str, seconds: float, rate: int, level_dbm0: float = -10.0) -> Frame:
    low, high = DTMF_FREQUENCIES[digit.upper()]
    t = np.arange(round(seconds * rate)) / rate
    peak = ZERO_DBM0_AMPLITUDE * 10 ** (level_dbm0 / 20)
    signal = peak * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class _Codecs:
    """The codec state a session derives from its parameters."""

    send: CodecInfo
    send_pt: int
    event_send_pt: int | None
    receive: dict[int, CodecInfo]  # audio payload types we accept
    event_receive_pts: frozenset[int]
    frames_per_packet: int

    @classmethod
    def from_params(cls, params: MediaParams, send_name: str | None = None) -> _Codecs:
        send_pt = params.payload_type
        if send_name is not None:
            send_pt = next(
                (pt for pt, name in params.payload_types.items() if name.lower() == send_name.lower()),
                send_pt,
            )
        send = get_codec(params.payload_types[send_pt])
        receive: dict[int, CodecInfo] = {}
        events = set()
        for pt, name in params.receive_types.items():
            lowered = name.lower()
            if lowered == "telephone-event":
                events.add(pt)
                continue
            try:
                info = get_codec(name)
            except CodecError:
                continue  # CN and codecs we do not implement: ignored
            if info.is_audio:
                receive[pt] = info
        frames = 1
        if send.name in ("PCMU", "PCMA", "G722") and params.ptime % 20 == 0:
            frames = max(1, min(5, params.ptime // 20))
        return cls(send, send_pt, params.telephone_event, receive, frozenset(events), frames)


# --- the session --------------------------------------------------------------------------------------------


class UdpEndpoint:
    """A leg's UDP socket, read by the engine with `loop.add_reader`: one datagram per readiness, into the
    engine's receive buffer. asyncio's and uvloop's datagram transports read each ready socket until it says
    EAGAIN (an extra system call per packet when, as here, each socket has one packet waiting) and build
    objects for every packet; reading directly made a relayed packet about 13% cheaper (bench/README.md).
    `sendto` never raises: a failed send is counted (`errors`)."""

    __slots__ = ("closed", "errors", "fd", "loop", "sock")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.closed = False
        self.errors = 0

    def set_reader(self, callback: Callable[[], None]) -> None:
        if not self.closed:
            self.loop.add_reader(self.fd, callback)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.errors += 1

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.loop.remove_reader(self.fd)
            self.sock.close()


class MediaSession(asyncio.DatagramProtocol):
    """One RTP endpoint (one leg); made by `MediaEngine.create_session`."""

    def __init__(
        self,
        engine: MediaEngine,
        session_id: str,
        local_host: str,
        local_port: int,
        rtcp_port: int | None,
        *,
        on_dtmf: Callable[[MediaSession, DtmfEvent], None] | None,
        on_timeout: Callable[[MediaSession], None] | None,
        on_quality: Callable[[MediaSession, LegQuality], None] | None,
        inactivity_timeout: float | None,
    ) -> None:
        self.engine = engine
        self.id = session_id
        self.local_host = local_host
        self.local_port = local_port
        self.rtcp_port = rtcp_port
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.on_quality = on_quality
        self.inactivity_timeout = inactivity_timeout
        self.digits: asyncio.Queue[DtmfEvent] = asyncio.Queue(_DTMF_QUEUE_SIZE)
        self.mode = SessionMode.IDLE
        self.params: MediaParams | None = None
        self.codecs: _Codecs | None = None
        self.closed = False
        # counters (packets sent are counted by the outgoing stream)
        self.rx_errors = 0  # malformed, unknown payload type, or not from the peer
        self.send_errors = 0
        # transports
        self._transport: UdpEndpoint | None = None
        self._rtcp_transport: UdpEndpoint | None = None
        # where we send: `_peer` is the SDP address until latched; `_remote` is None when we may not send;
        # `_relay_addr` is None when relayed audio must not go out (held, DTMF being sent)
        self._peer: Address | None = None
        self._remote: Address | None = None
        self._relay_addr: Address | None = None
        self._latched = False
        self._latch_mark = 0
        self._candidate: Address | None = None
        self._candidate_count = 0
        self._candidate_mark = 0
        self._rtcp_peer: Address | None = None
        self._rtcp_latched = False
        self._direction = MediaDirection.INACTIVE
        self._held = False
        # streams
        ssrc = secrets.randbits(32)
        self._rx = ReceiveStats(8000)
        self._out = OutgoingStream(
            ssrc, 8000, first_sequence=secrets.randbits(16), first_timestamp=secrets.randbits(32)
        )
        # playing
        self._player: Player | None = None
        self._hold_player: Player | None = None
        self._hold_broadcast: Broadcast | None = None
        self._encoder: Encoder | None = None
        self._encoder_key: tuple[str, int] | None = None
        self._resampler: Resampler | None = None
        self._pending_payloads: list[bytes] = []
        self._talkspurt = True
        self._ticking = False
        # DTMF
        self._dtmf_rx = DtmfReceiver()
        self._inband: GoertzelDetector | None = None
        self._dtmf_out: deque[tuple[str, bytes | Frame | None, bool]] = deque()
        self._dtmf_done: asyncio.Future[None] | None = None
        self._decoders: dict[int, Decoder] = {}
        self._to_8k: dict[int, Resampler] = {}
        # conference
        self._audio_in: SampleFifo | None = None
        self._audio_in_resamplers: dict[int, Resampler] = {}
        self.bridge: Bridge | None = None
        self.conference: ConferenceBridge | None = None
        # inactivity, RTCP, quality
        self._last_rx_count = 0
        self._last_rx_time = _monotonic()
        self._timed_out = False
        self._next_rtcp = _monotonic() + engine.rtcp_interval * random.uniform(0.5, 1.5)
        self._remote_loss: float | None = None
        self._remote_jitter: float | None = None
        self._rtt: float | None = None
        self._last_loss_percent = 0.0
        self._sender = rtcp_packets.SenderStats(ssrc, 8000)

    # -- the datagram protocol (driven by the engine's readers) --

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._receive_generic(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1  # ICMP unreachable and the like: the peer may come back

    def _readable(self) -> None:
        endpoint = self._transport
        if endpoint is None:
            return
        buffer = self.engine._buffer
        try:
            size, addr = endpoint.sock.recvfrom_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.error_received(error)
            return
        self.datagram_received(bytes(buffer[:size]), addr)

    def _rtcp_readable(self) -> None:
        endpoint = self._rtcp_transport
        if endpoint is None:
            return
        buffer = self.engine._buffer
        try:
            size, addr = endpoint.sock.recvfrom_into(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.error_received(error)
            return
        self._on_rtcp(bytes(buffer[:size]), addr)

    def set_receiver(self, handler: Callable[[bytes, Address], None] | None) -> None:
        """Hand each received datagram to `handler` instead of the session's own handling (which
        `MediaSession.datagram_received(session, data, addr)` still does); None restores it."""
        if handler is None:
            self.__dict__.pop("datagram_received", None)
        else:
            self.__dict__["datagram_received"] = handler

    def set_reader(self, callback: Callable[[], None] | None) -> None:
        """Let `callback` read this leg's RTP socket (a bridge's relay) instead of the session itself; None
        gives it back."""
        if self._transport is not None:
            self._transport.set_reader(callback or self._readable)

    # -- public state --

    @property
    def ssrc(self) -> int:
        return self._out.ssrc

    @property
    def direction(self) -> MediaDirection:
        return self._direction

    @property
    def on_hold(self) -> bool:
        return self._held or (self.params is not None and self._direction != MediaDirection.SENDRECV)

    @property
    def remote_address(self) -> Address | None:
        """Where RTP goes: the SDP address, or the latched source of the peer's packets."""
        return self._peer

    @property
    def latched(self) -> bool:
        return self._latched

    @property
    def rx_packets(self) -> int:
        return self._rx.packets

    @property
    def tx_packets(self) -> int:
        return self._out.packets

    @property
    def send_failures(self) -> int:
        """Datagrams the kernel refused to send (full buffers, unreachable networks)."""
        return sum(e.errors for e in (self._transport, self._rtcp_transport) if e is not None)

    @property
    def tx_octets(self) -> int:
        return self._out.octets

    @property
    def send_codec(self) -> CodecInfo | None:
        return None if self.codecs is None else self.codecs.send

    @property
    def player(self) -> Player | None:
        return self._player

    @property
    def outgoing(self) -> OutgoingStream:
        return self._out

    # -- configuration --

    def configure(self, params: MediaParams) -> None:
        """Apply a negotiation (the first, or a re-INVITE's: address, codec, direction)."""
        self._check_open()
        keep_codec = None
        if self.codecs is not None and self.bridge is not None:
            keep_codec = self.codecs.send.name
        codecs = _Codecs.from_params(params, keep_codec)
        old = self.params
        self.params = params
        self.codecs = codecs
        self._direction = params.direction
        if old is None or (old.remote_host, old.remote_port) != (params.remote_host, params.remote_port):
            self._peer = self._resolve(params.remote_host, params.remote_port)
            self._latched = False
            self._latch_mark = self._rx.packets
            self._candidate = None
        if params.rtcp_mux:
            self._rtcp_peer = self._peer
        elif old is None or old.remote_rtcp != params.remote_rtcp or not self._rtcp_latched:
            host, port = params.remote_rtcp or (params.remote_host, params.remote_port + 1)
            self._rtcp_peer = self._resolve(host, port)
            self._rtcp_latched = False
        self._out.set_clock_rate(codecs.send.clock_rate)
        self._sender.clock_rate = codecs.send.clock_rate
        rx_rate = next(iter(codecs.receive.values()), codecs.send).clock_rate
        if rx_rate != self._rx.clock_rate:
            self._rx.clock_rate = rx_rate
            self._rx.ssrc = None
        self._dtmf_rx = DtmfReceiver(rx_rate)
        needs_inband = codecs.event_send_pt is None and not codecs.event_receive_pts
        self._inband = (self._inband or GoertzelDetector()) if needs_inband else None
        self._decoders.clear()
        self._encoder = None
        self._encoder_key = None
        self._pending_payloads.clear()
        self._refresh_send_state()
        if self.bridge is not None:
            self.bridge._legs_changed()

    def can_send(self, name: str) -> bool:
        """Whether the peer negotiated the audio codec `name` (so we may send it)."""
        if self.params is None:
            return False
        lowered = name.lower()
        return any(value.lower() == lowered for value in self.params.payload_types.values())

    def set_send_codec(self, name: str) -> None:
        """Send with another codec the peer negotiated (used by a bridge to avoid transcoding)."""
        if self.params is None:
            raise MediaError("the session has no negotiated parameters yet")
        codecs = _Codecs.from_params(self.params, name)
        if codecs.send.name.lower() != name.lower():
            raise MediaError(f"the peer did not negotiate {name}")
        self.codecs = codecs
        self._out.set_clock_rate(codecs.send.clock_rate)
        self._sender.clock_rate = codecs.send.clock_rate
        self._encoder = None
        self._encoder_key = None
        self._pending_payloads.clear()
        if self._hold_broadcast is not None:
            self._hold_broadcast._changed(self)

    def _resolve(self, host: str, port: int) -> Address:
        if self.engine.family == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host if host.count(".") == 3 else host
        if self.engine.family == socket.AF_INET6:
            return (host, port, 0, 0)
        return (host, port)

    def _refresh_send_state(self) -> None:
        sends = not self.closed and self.params is not None and self._direction.sends
        self._remote = self._peer if sends else None
        self._relay_addr = self._remote if not self._held and not self._dtmf_out else None
        if self.bridge is not None:
            self.bridge._addresses_changed()
        if self._hold_broadcast is not None:
            self._hold_broadcast._changed(self)

    def _check_open(self) -> None:
        if self.closed:
            raise MediaError(f"media session {self.id} is closed")

    # -- receiving --

    def _accept_source(self, addr: Address) -> bool:
        """Symmetric RTP: latch on to where the peer's packets come from (called when `addr` is not the
        current peer address)."""
        if self.params is None:
            self.rx_errors += 1
            return False
        if not self._latched and self._rx.packets == self._latch_mark:
            self._latch(addr)
            return True
        if addr != self._candidate or self._rx.packets != self._candidate_mark:
            # a new candidate, or the current peer spoke since: count again from here
            self._candidate = addr
            self._candidate_count = 1
            self._candidate_mark = self._rx.packets
        else:
            self._candidate_count += 1
        if self._candidate_count >= _RELATCH_PACKETS:
            self._latch(addr)  # the old address went quiet and a new one took over: NAT rebinding
            return True
        self.rx_errors += 1
        return False

    def _latch(self, addr: Address) -> None:
        self._peer = addr
        self._latched = True
        self._candidate = None
        self._candidate_count = 0
        if self.params is not None and self.params.rtcp_mux:
            self._rtcp_peer = addr
        elif not self._rtcp_latched and self._rtcp_peer is not None:
            self._rtcp_peer = (addr[0], self._rtcp_peer[1], *addr[2:])
        self._refresh_send_state()

    def _receive_generic(self, data: bytes, addr: Address) -> None:
        if addr != self._peer and not self._accept_source(addr):
            return
        codecs = self.codecs
        if codecs is None:
            return
        if self.params is not None and self.params.rtcp_mux and is_rtcp(data):
            self._on_rtcp(data, addr)
            return
        try:
            _, pt, seq, ts, ssrc = read_header(data)
            start, end = payload_bounds(data)
        except RtpError:
            self.rx_errors += 1
            return
        now = _monotonic()
        codec = codecs.receive.get(pt)
        if codec is None:
            if pt in codecs.event_receive_pts:
                self._rx.update(ssrc, seq, ts, now, end - start, False)
                if self._direction.receives:
                    self._on_telephone_event(ssrc, ts, data[start:end])
            else:
                self.rx_errors += 1
            return
        rx = self._rx
        if ssrc != rx.ssrc:
            self._dtmf_rx.reset()
        rx.update(ssrc, seq, ts, now, end - start, True)
        if not self._direction.receives:
            return
        if self._audio_in is not None or self._inband is not None:
            pcm = self._decode(pt, codec, data[start:end])
            if pcm is not None:
                self._deliver_audio(pt, codec, pcm)

    def _decode(self, pt: int, codec: CodecInfo, payload: bytes) -> Frame | None:
        decoder = self._decoders.get(pt)
        if decoder is None:
            decoder = self._decoders[pt] = make_decoder(codec.name)
        try:
            return decoder.decode(payload)
        except CodecError:
            self.rx_errors += 1
            return None

    def _deliver_audio(self, pt: int, codec: CodecInfo, pcm: Frame) -> None:
        if self._inband is not None:
            self._detect_inband(pt, codec.sample_rate, pcm)
        fifo = self._audio_in
        if fifo is not None:
            rate = fifo.frame_samples * 50
            if codec.sample_rate != rate:
                resampler = self._audio_in_resamplers.get(pt)
                if resampler is None:
                    resampler = self._audio_in_resamplers[pt] = Resampler(codec.sample_rate, rate)
                pcm = resampler.process(pcm)
            fifo.push(pcm)

    def _detect_inband(self, key: int, sample_rate: int, pcm: Frame) -> None:
        detector = self._inband
        if detector is None:
            return
        if sample_rate != 8000:
            resampler = self._to_8k.get(key)
            if resampler is None:
                resampler = self._to_8k[key] = Resampler(sample_rate, 8000)
            pcm = resampler.process(pcm)
        for found in detector.feed(pcm):
            self._report_dtmf(found.digit, "inband", None)

    def _on_telephone_event(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        try:
            found = self._dtmf_rx.feed(timestamp, payload)
        except DtmfError:
            self.rx_errors += 1
            return
        if found is not None:
            duration = None
            if found.duration is not None:
                duration = round(1000 * found.duration / self._dtmf_rx.clock_rate)
            self._report_dtmf(found.digit, "rfc4733", duration)

    def _report_dtmf(self, digit: str, method: str, duration_ms: int | None) -> None:
        event = DtmfEvent(digit, method, duration_ms, _monotonic())
        if self.digits.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.digits.get_nowait()  # nobody is reading: keep the newest digits
        self.digits.put_nowait(event)
        if self.on_dtmf is not None:
            try:
                self.on_dtmf(self, event)
            except Exception:
                log.exception("on_dtmf callback failed", session=self.id)

    # -- sending our own media --

    def play(self, media: Player | AudioSource) -> Player:
        """Play a prompt (or any source) to the peer; replaces the current playback. Not while bridged."""
        self._check_open()
        if self.mode in (SessionMode.BRIDGED, SessionMode.CONFERENCED):
            raise MediaError(f"session {self.id} is {self.mode.value}: take it out of the bridge first")
        player = media if isinstance(media, Player) else Player(media)
        if self._player is not None and self._player is not player:
            self._player.stop()
        self._player = player
        self.mode = SessionMode.PLAYING
        self._talkspurt = True
        self._update_ticking()
        return player

    def stop_playing(self) -> None:
        if self._player is not None:
            player, self._player = self._player, None
            player.stop()
        if self.mode is SessionMode.PLAYING:
            self.mode = SessionMode.IDLE
        self._update_ticking()

    def hold(self, music: Player | AudioSource | Broadcast | None = None) -> None:
        """Put the peer on hold: it hears `music` (or nothing) and nothing is relayed to or from it. A
        `Broadcast` (`engine.broadcast(source)`) is shared with every other leg holding on it."""
        self._check_open()
        self._stop_hold_music()
        if isinstance(music, Broadcast):
            self._hold_broadcast = music
            music._add(self)
        elif music is not None:
            self._hold_player = music if isinstance(music, Player) else Player(music, interruptible=False)
        self._held = True
        self._talkspurt = True
        self._refresh_send_state()
        if self.bridge is not None:
            self.bridge._legs_changed()
        self._update_ticking()

    def unhold(self) -> None:
        if not self._held:
            return
        self._held = False
        self._stop_hold_music()
        self._talkspurt = True
        self._last_rx_time = _monotonic()
        self._refresh_send_state()
        if self.bridge is not None:
            self.bridge._legs_changed()
        self._update_ticking()

    def _stop_hold_music(self) -> None:
        if self._hold_player is not None:
            self._hold_player.stop()
            self._hold_player = None
        if self._hold_broadcast is not None:
            self._hold_broadcast._remove(self)
            self._hold_broadcast = None

    def send_dtmf(self, digits: str, duration: float = 0.1, gap: float = 0.1) -> asyncio.Future[None]:
        """Send digits: RFC 4733 events (end packet three times) or, without telephone-event, in-band tones.
        Relayed and played audio to this peer pauses meanwhile. The future completes when all are sent."""
        self._check_open()
        codecs = self.codecs
        if codecs is None:
            raise MediaError("the session has no negotiated parameters yet")
        for digit in digits:
            digit_to_event(digit)  # raises DtmfError for anything else
        if not 0.04 <= duration <= 5.0 or not 0.0 <= gap <= 5.0:
            raise MediaError("DTMF duration must lie in 40 ms-5 s and the gap in 0-5 s")
        gap_ticks = math.ceil(round(gap / 0.02, 6))
        if codecs.event_send_pt is not None:
            sender = DtmfSender(codecs.send.clock_rate)
            for digit in digits:
                for index, packet in enumerate(sender.packets(digit, 0, duration)):
                    self._dtmf_out.append(("event", packet.payload, index == 0))
                self._dtmf_out.extend(("gap", None, False) for _ in range(gap_ticks))
        else:
            rate = codecs.send.sample_rate if codecs.send.name != "opus" else 8000
            size = rate // 50
            for digit in digits:
                tone = _dtmf_tone(digit, duration, rate)
                tone = np.concatenate((tone, np.zeros(-len(tone) % size, dtype=np.int16)))
                for start in range(0, len(tone), size):
                    self._dtmf_out.append(("pcm", tone[start : start + size], start == 0))
                self._dtmf_out.extend(
                    ("pcm", np.zeros(size, dtype=np.int16), False) for _ in range(gap_ticks)
                )
        done = self._dtmf_done
        if done is None or done.done():
            done = self._dtmf_done = asyncio.get_running_loop().create_future()
        self._refresh_send_state()
        self._update_ticking()
        return done

    def _update_ticking(self) -> None:
        wanted = not self.closed and (
            bool(self._dtmf_out)
            or (self._held and self._hold_player is not None)
            or (not self._held and self._player is not None and self.mode is SessionMode.PLAYING)
        )
        if wanted and not self._ticking:
            self.engine.add_ticker(self)
            self._ticking = True
        elif not wanted and self._ticking:
            self.engine.remove_ticker(self)
            self._ticking = False

    def on_media_tick(self, now: float) -> None:
        if self.closed:
            return
        if self._dtmf_out:
            self._send_dtmf_step(now)
            return
        player = self._hold_player if self._held else self._player
        if player is None:
            self._update_ticking()
            return
        frame = player.next_frame()
        if frame is None:
            if player is self._player:
                self._player = None
                if self.mode is SessionMode.PLAYING:
                    self.mode = SessionMode.IDLE
            elif player is self._hold_player:
                self._hold_player = None
            self._flush_pending(now)
            self._talkspurt = True
            self._update_ticking()
            return
        self.send_audio(frame, now)

    def send_audio(self, frame: Frame, now: float) -> None:
        """Encode and send one 20 ms frame of our own audio (prompts, mixes), in ptime-sized packets."""
        codecs = self.codecs
        if codecs is None or self._remote is None:
            return
        payload = self._encode(frame, codecs.send)
        if payload is None:
            return
        if codecs.frames_per_packet > 1:
            self._pending_payloads.append(payload)
            if len(self._pending_payloads) < codecs.frames_per_packet:
                return
            payload = b"".join(self._pending_payloads)
            self._pending_payloads.clear()
            ticks = codecs.send.frame_ticks * codecs.frames_per_packet
        else:
            ticks = codecs.send.frame_ticks
        self.send_payload(payload, ticks, now)

    def _flush_pending(self, now: float) -> None:
        if self._pending_payloads and self.codecs is not None:
            count = len(self._pending_payloads)
            self.send_payload(b"".join(self._pending_payloads), count * self.codecs.send.frame_ticks, now)
            self._pending_payloads.clear()

    def send_payload(self, payload: bytes, ticks: int, now: float, payload_type: int | None = None) -> None:
        """Send one payload on our outgoing stream, `ticks` after the previous packet we made."""
        dest = self._remote
        transport = self._transport
        codecs = self.codecs
        if dest is None or transport is None or codecs is None:
            return
        seq, ts = self._out.own(now, ticks)
        marker = 0x80 if self._talkspurt else 0
        self._talkspurt = False
        pt = codecs.send_pt if payload_type is None else payload_type
        transport.sendto(HEADER.pack(0x80, marker | pt, seq, ts, self._out.ssrc) + payload, dest)
        self._out.packets += 1
        self._out.octets += len(payload)

    def _encode(self, frame: Frame, codec: CodecInfo) -> bytes | None:
        rate = len(frame) * 50
        name = codec.name
        if name in ("PCMU", "PCMA") and rate == 8000:
            cache = self.engine._encoded
            key = None
            if not frame.flags.writeable:  # cached audio (prompts, music on hold): encode each frame once
                key = (name, frame.tobytes())
                payload = cache.get(key)
                if payload is not None:
                    return payload
            table = ULAW_ENCODE if name == "PCMU" else ALAW_ENCODE
            payload = table[np.ascontiguousarray(frame, dtype=np.int16).view(np.uint16)].tobytes()
            if key is not None:
                if len(cache) >= _ENCODED_CACHE_SIZE:
                    cache.clear()
                cache[key] = payload
            return payload
        encoder_rate = rate if name == "opus" and rate in (8000, 16000, 48000) else codec.sample_rate
        if self._encoder is None or self._encoder_key != (name, encoder_rate):
            self._encoder = make_encoder(name, encoder_rate)
            self._encoder_key = (name, encoder_rate)
            self._resampler = None
        if rate != encoder_rate:
            if self._resampler is None or self._resampler.from_rate != rate:
                self._resampler = Resampler(rate, encoder_rate)
            frame = self._resampler.process(frame)
        try:
            return self._encoder.encode(frame)
        except CodecError:
            log.exception("cannot encode a frame", session=self.id, codec=name)
            return None

    def _send_dtmf_step(self, now: float) -> None:
        kind, data, first = self._dtmf_out.popleft()
        codecs = self.codecs
        if kind == "event" and codecs is not None and codecs.event_send_pt is not None:
            assert isinstance(data, bytes)
            self._talkspurt = first
            self.send_payload(data, codecs.send.frame_ticks if first else 0, now, codecs.event_send_pt)
        elif kind == "pcm" and isinstance(data, np.ndarray):
            if first:
                self._talkspurt = True
            self.send_audio(data, now)
        if not self._dtmf_out:
            self._flush_pending(now)
            self._talkspurt = True
            if self._dtmf_done is not None and not self._dtmf_done.done():
                self._dtmf_done.set_result(None)
            self._refresh_send_state()
            self._update_ticking()

    # -- RTCP, inactivity and quality --

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        if self.params is None:
            return
        if not self.params.rtcp_mux and addr != self._rtcp_peer:
            if self._rtcp_latched:
                return
            self._rtcp_peer = addr
            self._rtcp_latched = True
        try:
            packets = rtcp_packets.parse_compound(data)
        except rtcp_packets.RtcpError:
            self.rx_errors += 1
            return
        wall = time.time() + _NTP_EPOCH_OFFSET
        for packet in packets:
            if isinstance(packet, rtcp_packets.SenderReport):
                stats = self._rx.report_stats()
                if stats is not None and packet.ssrc == stats.ssrc:
                    stats.on_sender_report(packet.ntp_timestamp, wall)
            if isinstance(packet, rtcp_packets.SenderReport | rtcp_packets.ReceiverReport):
                for block in packet.reports:
                    if block.ssrc != self._out.ssrc:
                        continue
                    self._remote_loss = 100.0 * block.fraction_lost_ratio
                    self._remote_jitter = 1000.0 * block.jitter / self._out.clock_rate
                    rtt = rtcp_packets.round_trip_time(block, wall)
                    if rtt is not None and rtt < 10.0:
                        self._rtt = rtt

    def _send_rtcp(self, mono: float, extra: list[rtcp_packets.RtcpPacket] | None = None) -> None:
        wall = time.time() + _NTP_EPOCH_OFFSET
        sender = self._sender
        sender.packet_count = self.tx_packets
        sender.octet_count = self.tx_octets
        sender.last_timestamp = self._out.last()[1]
        sender.last_sent = None if self._out.time is None else wall - (mono - self._out.time)
        stats = self._rx.report_stats()
        report = rtcp_packets.build_report(
            self._out.ssrc,
            [] if stats is None else [stats],
            wall,
            sender=sender,
            cname=self.engine.cname,
        )
        if stats is not None:
            self._last_loss_percent = 100.0 * stats.fraction_lost / 256.0
        if extra:
            report += rtcp_packets.serialize_compound(extra)
        dest = self._rtcp_peer
        if dest is None or self.params is None:
            return
        transport = self._transport if self.params.rtcp_mux else self._rtcp_transport
        if transport is not None and not transport.is_closing():
            transport.sendto(report, dest)

    def quality(self) -> LegQuality:
        rx = self._rx
        codec = self.codecs.send.name if self.codecs is not None else "PCMU"
        jitter_ms = 1000.0 * rx.jitter / rx.clock_rate
        network_delay = 1000.0 * self._rtt / 2 if self._rtt is not None else 0.0
        figures = estimate(
            codec,
            self._last_loss_percent / 100.0,
            network_delay,
            jitter_buffer_ms=max(20.0, 2 * jitter_ms),
        )
        return LegQuality(
            session_id=self.id,
            codec=codec,
            packets_received=rx.packets,
            packets_sent=self.tx_packets,
            loss_percent=self._last_loss_percent,
            cumulative_loss_percent=100.0 * rx.loss_ratio,
            jitter_ms=jitter_ms,
            mos=figures.mos,
            remote_loss_percent=self._remote_loss,
            remote_jitter_ms=self._remote_jitter,
            round_trip_ms=None if self._rtt is None else 1000.0 * self._rtt,
            at=_monotonic(),
        )

    def _housekeeping(self, mono: float) -> None:
        if self.closed or self.params is None:
            return
        count = self._rx.packets
        if count != self._last_rx_count or self.on_hold or not self._direction.receives:
            self._last_rx_count = count
            self._last_rx_time = mono
            self._timed_out = False
        elif (
            not self._timed_out
            and self.inactivity_timeout is not None
            and mono - self._last_rx_time >= self.inactivity_timeout
        ):
            self._timed_out = True
            log.info("no RTP from the peer", session=self.id, seconds=round(mono - self._last_rx_time, 1))
            if self.on_timeout is not None:
                try:
                    self.on_timeout(self)
                except Exception:
                    log.exception("on_timeout callback failed", session=self.id)
        if mono >= self._next_rtcp:
            self._next_rtcp = mono + self.engine.rtcp_interval * random.uniform(0.5, 1.5)
            self._send_rtcp(mono)
            if self.on_quality is not None:
                try:
                    self.on_quality(self, self.quality())
                except Exception:
                    log.exception("on_quality callback failed", session=self.id)

    # -- closing --

    def close(self) -> None:
        """Stop everything, tell the peer (RTCP BYE) and free the ports. Safe to call twice."""
        if self.closed:
            return
        if self.bridge is not None:
            self.bridge.unbridge()
        if self.conference is not None:
            self.conference.remove(self)
        if self.params is not None:
            with contextlib.suppress(Exception):
                self._send_rtcp(_monotonic(), [rtcp_packets.Bye([self._out.ssrc])])
        self.closed = True
        if self._player is not None:
            self._player.stop()
        self._player = None
        self._stop_hold_music()
        self._dtmf_out.clear()
        if self._dtmf_done is not None and not self._dtmf_done.done():
            self._dtmf_done.set_exception(MediaError(f"media session {self.id} closed before DTMF was sent"))
            self._dtmf_done.exception()  # retrieved: nobody has to await it
        self._update_ticking()
        self._refresh_send_state()
        if self._transport is not None:
            self._transport.close()
        if self._rtcp_transport is not None:
            self._rtcp_transport.close()
        self.mode = SessionMode.IDLE
        self.engine._forget(self)
        self.engine._ports.release(self.local_port)

    def __repr__(self) -> str:
        return f"<MediaSession {self.id} :{self.local_port} {self.mode.value}>"


class _Listener:
    """A leg holding on a broadcast, with what sending to it needs kept in slots."""

    __slots__ = ("dest", "endpoint", "marker", "out", "payload_type", "send_codec", "sendto", "session")

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.out = session._out
        self.marker = 0x80
        self.dest: Address | None = None
        self.endpoint: UdpEndpoint | None = None
        self.sendto: Callable[[Any, Any], Any] | None = None
        self.send_codec: CodecInfo | None = None
        self.payload_type = 0
        self.refresh()

    def refresh(self) -> None:
        session = self.session
        codecs = session.codecs
        transport = session._transport
        blocked = codecs is None or transport is None or bool(session._dtmf_out)
        self.dest = None if blocked else session._remote
        self.endpoint = transport
        self.sendto = None if transport is None else transport.sock.sendto
        self.send_codec = None if codecs is None else codecs.send
        self.payload_type = 0 if codecs is None else codecs.send_pt


class Broadcast:
    """One source heard by many legs at the same point, like a radio: music on hold for a thousand queued
    callers costs one frame read and one encoding per codec per tick, plus a packet per leg. The legs are
    spread over the engine's phases."""

    def __init__(self, engine: MediaEngine, source: AudioSource) -> None:
        self.engine = engine
        self.source = source
        self.listeners: list[dict[int, _Listener]] = [{} for _ in range(engine.phases)]
        self._phases = [_BroadcastPhase(self, phase) for phase in range(engine.phases)]
        self._tick = -1
        self._frame: Frame | None = None
        self._payloads: dict[str, bytes] = {}
        self._encoders: dict[tuple[str, int], Encoder] = {}
        self._resamplers: dict[tuple[int, int], Resampler] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self.listeners)

    def _add(self, session: MediaSession) -> None:
        phase = min(range(len(self.listeners)), key=lambda p: len(self.listeners[p]))
        group = self.listeners[phase]
        group[id(session)] = _Listener(session)
        if len(group) == 1:
            self.engine.add_ticker(self._phases[phase], phase)

    def _remove(self, session: MediaSession) -> None:
        for phase, group in enumerate(self.listeners):
            if group.pop(id(session), None) is not None and not group:
                self.engine.remove_ticker(self._phases[phase])

    def _changed(self, session: MediaSession) -> None:
        for group in self.listeners:
            listener = group.get(id(session))
            if listener is not None:
                listener.refresh()

    def _current_frame(self) -> Frame | None:
        ticks = self.engine.ticks
        if ticks != self._tick:  # the first phase of a new tick moves the music on
            self._tick = ticks
            self._payloads.clear()
            frame = self.source.read_frame()
            if frame is None:
                self.source.rewind()
                frame = self.source.read_frame()
            self._frame = frame
        return self._frame

    def payload_for(self, codec: CodecInfo) -> bytes | None:
        """This tick's frame in `codec` (encoded once per codec)."""
        self._current_frame()
        payload = self._payloads.get(codec.name)
        if payload is not None:
            return payload
        frame = self._frame
        if frame is None:
            return None
        rate = len(frame) * 50
        if codec.name in ("PCMU", "PCMA") and rate == 8000:
            table = ULAW_ENCODE if codec.name == "PCMU" else ALAW_ENCODE
            payload = table[np.ascontiguousarray(frame, dtype=np.int16).view(np.uint16)].tobytes()
        else:
            target = rate if codec.name == "opus" and rate in (8000, 16000, 48000) else codec.sample_rate
            encoder = self._encoders.get((codec.name, target))
            if encoder is None:
                encoder = self._encoders[(codec.name, target)] = make_encoder(codec.name, target)
            if rate != target:
                resampler = self._resamplers.get((rate, target))
                if resampler is None:
                    resampler = self._resamplers[(rate, target)] = Resampler(rate, target)
                frame = resampler.process(frame)
            try:
                payload = encoder.encode(frame)
            except CodecError:
                return None
        self._payloads[codec.name] = payload
        return payload

    def close(self) -> None:
        """Silence it: every leg holding on it stays on hold, hearing nothing."""
        for group in self.listeners:
            for listener in group.values():
                listener.session._hold_broadcast = None
            group.clear()
        for phase in self._phases:
            self.engine.remove_ticker(phase)


class _BroadcastPhase:
    """The legs of a broadcast that the engine serves in one phase of its tick."""

    def __init__(self, broadcast: Broadcast, phase: int) -> None:
        self.broadcast = broadcast
        self.phase = phase

    def on_media_tick(self, now: float) -> None:
        broadcast = self.broadcast
        payloads = broadcast._payloads
        pack = HEADER.pack
        for listener in broadcast.listeners[self.phase].values():
            dest = listener.dest
            codec = listener.send_codec
            if dest is None or codec is None or listener.sendto is None:
                continue
            payload = payloads.get(codec.name) if broadcast._tick == broadcast.engine.ticks else None
            if payload is None:
                payload = broadcast.payload_for(codec)
                if payload is None:
                    continue
            out = listener.out
            ticks = codec.frame_ticks
            last = out.time
            if out.source is None and last is not None and now - last < 0.08:  # the steady case
                seq = out.seq = (out.seq + 1) & 0xFFFF
                ts = out.ts = (out.ts + ticks) & 0xFFFFFFFF
                out.time = now
            else:
                seq, ts = out.own(now, ticks)
            try:
                listener.sendto(
                    pack(0x80, listener.marker | listener.payload_type, seq, ts, out.ssrc) + payload, dest
                )
            except OSError:
                if listener.endpoint is not None:
                    listener.endpoint.errors += 1
            listener.marker = 0
            out.packets += 1
            out.octets += len(payload)


# --- the engine ---------------------------------------------------------------------------------------------


class _PortAllocator:
    """Even RTP ports (and RTP+1 for RTCP) from a range, round robin so a freed port is not reused at once."""

    def __init__(self, host: str, family: int, first: int, last: int) -> None:
        if not 0 < first < last < 65536:
            raise MediaError(f"bad RTP port range {first}-{last}")
        self.host = host
        self.family = family
        self.first = first + (first % 2)
        self.last = last
        # RTP on every even port p with p + 1 (RTCP) still in the range
        self.capacity = max(0, (last - 1 - self.first) // 2 + 1)
        self.in_use: set[int] = set()
        self._cursor = self.first

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # DSCP EF: voice
                if self.family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xB8)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0xB8)
            sock.bind((self.host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def allocate(self, with_rtcp: bool) -> tuple[int, socket.socket, socket.socket | None]:
        taken_elsewhere = 0
        for _ in range(self.capacity):
            port = self._cursor
            self._cursor += 2
            if self._cursor + 1 > self.last:
                self._cursor = self.first
            if port in self.in_use:
                continue
            try:
                rtp = self._bind(port)
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    taken_elsewhere += 1
                    continue
                raise MediaError(f"cannot open RTP port {self.host}:{port}: {error.strerror}") from error
            rtcp: socket.socket | None = None
            if with_rtcp:
                try:
                    rtcp = self._bind(port + 1)
                except OSError as error:
                    rtp.close()
                    if error.errno in (errno.EADDRINUSE, errno.EACCES):
                        taken_elsewhere += 1
                        continue
                    raise MediaError(
                        f"cannot open RTCP port {self.host}:{port + 1}: {error.strerror}"
                    ) from error
            self.in_use.add(port)
            return port, rtp, rtcp
        raise PortsExhausted(
            f"no free RTP port in {self.host} {self.first}-{self.last}: "
            f"{len(self.in_use)} in use by Hotline, "
            f"{taken_elsewhere} taken by other processes"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)


class MediaEngine:
    """Ports, sessions and the one media clock of a process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        ports: tuple[int, int] = (20000, 29999),
        *,
        tick_interval: float = 0.02,
        phases: int = 4,
        housekeeping_interval: float = 1.0,
        rtcp_interval: float = 5.0,
        inactivity_timeout: float | None = 30.0,
        cname: str | None = None,
        batch_interval: float = 0.0005,
        batch_min_rate: float = 5000.0,
    ) -> None:
        if not 0.005 <= tick_interval <= 0.1 or not 1 <= phases <= 20:
            raise MediaError("tick_interval must lie in 5-100 ms and phases in 1-20")
        if not 0.0 <= batch_interval <= 0.005:
            raise MediaError("batch_interval must lie in 0-5 ms")
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._ports = _PortAllocator(host, self.family, *ports)
        self.tick_interval = tick_interval
        self.phases = phases
        self.housekeeping_interval = housekeeping_interval
        self.rtcp_interval = rtcp_interval
        self.inactivity_timeout = inactivity_timeout
        self.cname = cname or f"hotline-{secrets.token_hex(4)}@{host}"
        self.sessions: dict[str, MediaSession] = {}
        self.ticks = 0  # whole ticks run
        self.late_ticks = 0  # ticks the loop was too busy for and that were skipped
        self._phase_tickers: list[dict[int, Ticker]] = [{} for _ in range(phases)]
        self._ticker_phase: dict[int, int] = {}
        self._phase = 0
        self._next_tick = 0.0
        self._next_housekeeping = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._encoded: dict[tuple[str, bytes], bytes] = {}
        self._buffer = bytearray(
            65536
        )  # every datagram is read into this first (one loop, one reader at a time)
        self._counter = 0
        self.batch_interval = batch_interval
        self.batch_min_rate = batch_min_rate
        self.batching = False
        self.packet_rate = 0.0  # packets/s the legs received, as of the last housekeeping round
        self._rx_total = 0
        self._rx_total_time = 0.0
        self._batch_next = 0.0
        self.closed = False

    @property
    def ports_in_use(self) -> int:
        return len(self._ports.in_use)

    @property
    def port_capacity(self) -> int:
        return self._ports.capacity

    @property
    def ticker_count(self) -> int:
        return len(self._ticker_phase)

    async def create_session(
        self,
        params: MediaParams | None = None,
        *,
        rtcp_mux: bool = False,
        name: str = "",
        on_dtmf: Callable[[MediaSession, DtmfEvent], None] | None = None,
        on_timeout: Callable[[MediaSession], None] | None = None,
        on_quality: Callable[[MediaSession, LegQuality], None] | None = None,
        inactivity_timeout: float | bool | None = True,
    ) -> MediaSession:
        """A new leg on a fresh port (pair). `params` may come later (`configure`), once SDP is negotiated:
        the port is needed to write our own SDP first. `inactivity_timeout=True` takes the engine's."""
        if self.closed:
            raise MediaError("the media engine is closed")
        loop = asyncio.get_running_loop()
        self._start(loop)
        with_rtcp = not (rtcp_mux or (params is not None and params.rtcp_mux))
        port, rtp_sock, rtcp_sock = self._ports.allocate(with_rtcp)
        self._counter += 1
        session_id = name or f"leg-{self._counter}"
        timeout: float | None = None
        if inactivity_timeout is True:
            timeout = self.inactivity_timeout
        elif inactivity_timeout is not False and inactivity_timeout is not None:
            timeout = float(inactivity_timeout)
        session = MediaSession(
            self,
            session_id,
            self.host,
            port,
            port + 1 if rtcp_sock is not None else None,
            on_dtmf=on_dtmf,
            on_timeout=on_timeout,
            on_quality=on_quality,
            inactivity_timeout=timeout,
        )
        try:
            session._transport = UdpEndpoint(loop, rtp_sock)
            session._transport.set_reader(session._readable)
            if rtcp_sock is not None:
                session._rtcp_transport = UdpEndpoint(loop, rtcp_sock)
                session._rtcp_transport.set_reader(session._rtcp_readable)
        except BaseException:
            for endpoint in (session._transport, session._rtcp_transport):
                if endpoint is not None:
                    endpoint.close()
            rtp_sock.close()
            if rtcp_sock is not None:
                rtcp_sock.close()
            self._ports.release(port)
            raise
        self.sessions[session.id] = session
        if params is not None:
            session.configure(params)
        await asyncio.sleep(0)  # let the clock and the other legs run between sessions made in a burst
        return session

    def broadcast(self, source: AudioSource) -> Broadcast:
        """A source many legs can hold on at once (`session.hold(broadcast)`): played, and encoded once per
        codec, for all of them. A source that ends starts again."""
        return Broadcast(self, source)

    def _forget(self, session: MediaSession) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    # -- the clock --

    def add_ticker(self, ticker: Ticker, phase: int | None = None) -> None:
        """Call `ticker.on_media_tick(now)` once per tick interval, in `phase` or the least busy one."""
        key = id(ticker)
        if key in self._ticker_phase:
            return
        if phase is None:
            phase = min(range(self.phases), key=lambda p: len(self._phase_tickers[p]))
        self._phase_tickers[phase][key] = ticker
        self._ticker_phase[key] = phase

    def remove_ticker(self, ticker: Ticker) -> None:
        phase = self._ticker_phase.pop(id(ticker), None)
        if phase is not None:
            self._phase_tickers[phase].pop(id(ticker), None)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._handle is not None:
            return
        self._loop = loop
        self._next_tick = loop.time() + self.tick_interval / self.phases
        self._next_housekeeping = _monotonic() + self.housekeeping_interval
        self._handle = loop.call_at(self._next_tick, self._tick)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None or self.closed:
            return
        now = _monotonic()
        tickers = self._phase_tickers[self._phase]
        if tickers:
            for ticker in list(tickers.values()):
                try:
                    ticker.on_media_tick(now)
                except Exception:
                    log.exception("media tick failed; ticker dropped", ticker=repr(ticker))
                    self.remove_ticker(ticker)
        self._phase += 1
        if self._phase == self.phases:
            self._phase = 0
            self.ticks += 1
            if now >= self._next_housekeeping:
                self._next_housekeeping = now + self.housekeeping_interval
                self._housekeeping(now, loop)
        step = self.tick_interval / self.phases
        self._next_tick += step
        current = loop.time()
        if current - self._next_tick > 5 * self.tick_interval:
            # the loop stalled for more than 5 ticks: skip ahead rather than burst the backlog out
            skipped = int((current - self._next_tick) / step)
            self.late_ticks += skipped // self.phases
            self._next_tick += skipped * step
            self._phase = (self._phase + skipped) % self.phases
        self._handle = loop.call_at(self._next_tick, self._tick)

    def _housekeeping(self, now: float, loop: asyncio.AbstractEventLoop) -> None:
        received = 0
        for session in list(self.sessions.values()):
            received += session._rx.packets
            try:
                session._housekeeping(now)
            except Exception:
                log.exception("media housekeeping failed", session=session.id)
        if self._rx_total_time:
            self.packet_rate = max(0, received - self._rx_total) / max(1e-3, now - self._rx_total_time)
        self._rx_total, self._rx_total_time = received, now
        if self.batch_interval and not self.batching and self.packet_rate >= self.batch_min_rate:
            self.batching = True
            self._batch_next = now
            loop.call_soon(self._batch_pause)

    def _batch_pause(self) -> None:
        """Under load, let datagrams gather for up to `batch_interval` between loop iterations, so one wake-up
        handles many of them (fewer context switches and epoll calls per packet, at the price of at most that
        much added latency). Re-armed with call_soon, so the loop polls without blocking in between."""
        loop = self._loop
        if loop is None or self.closed or self.packet_rate < self.batch_min_rate:
            self.batching = False
            return
        now = _monotonic()
        wait = self._batch_next - now
        if wait > 0:
            time.sleep(wait)
            now = self._batch_next
        self._batch_next = max(now, self._batch_next) + self.batch_interval
        loop.call_soon(self._batch_pause)

    async def close(self) -> None:
        """Close every session and stop the clock."""
        for session in list(self.sessions.values()):
            session.close()
        self.closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await asyncio.sleep(0)  # let the transports finish closing
