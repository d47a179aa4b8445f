"""RTP packets and streams (RFC 3550), sans-IO.

Packets as objects (for building and inspecting):
- `RtpPacket` (mutable dataclass): `payload_type`, `sequence`, `timestamp`, `ssrc`, `payload: bytes`,
  `marker`, `csrc: tuple[int, ...]`, `extension: RtpExtension | None`, `padding: int` (count of padding
  bytes, 0 = none), `version` (always 2). `RtpPacket.parse(data)`, `packet.serialize() -> bytes`.
- `RtpExtension(profile: int, data: bytes)`: the header extension (`data` is a multiple of 4 bytes).
- `RtpError(ValueError)`: `.reason`; raised for every malformed packet.

The relay hot path works on bytes, without a packet object:
- `is_rtp(data)`, `is_rtcp(data)`: demultiplex one port (RFC 5761 / RFC 7983).
- `make_packet(payload_type, sequence, timestamp, ssrc, payload, marker=False) -> bytes`: a plain packet
  (no CSRC, extension or padding) in one `struct.pack`, for media we generate.
- `read_header(data) -> (marker, payload_type, sequence, timestamp, ssrc)`;
  `payload_bounds(data) -> (start, end)`.
- `rewrite_header(buf, *, ssrc=, sequence=, timestamp=, payload_type=, marker=)`: in place on a bytearray.
- `StreamRewriter`: maps incoming packets (whose source may change SSRC, or jump in sequence or timestamp,
  e.g. on re-INVITE or when a bridge switches sources) onto one continuous outgoing stream;
  `.rewrite(buf, now)`.
- `seq_delta(a, b)`, `ts_delta(a, b)`: signed differences modulo 2**16 / 2**32.

Reception statistics: `ReceiverStats` (RFC 3550 A.1 sequence validation and extended highest sequence,
A.3 loss, A.8 interarrival jitter) feeds RTCP reports (`hotline.media.rtcp.report_block`) and quality figures.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

RTP_VERSION = 2
HEADER_SIZE = 12
SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2

_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True, frozen=True)
class RtpExtension:
    """RTP header extension: a 16-bit profile-defined value and data of a multiple of 4 bytes."""

    profile: int
    data: bytes


@dataclass(slots=True)
class RtpPacket:
    payload_type: int = 0
    sequence: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0

    version: ClassVar[int] = RTP_VERSION

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        if len(data) < HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({len(data)} bytes)")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data, 0)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        csrc_count = b0 & 0x0F
        offset = HEADER_SIZE + 4 * csrc_count
        if len(data) < offset:
            raise RtpError(f"RTP packet too short for {csrc_count} CSRC")
        csrc = struct.unpack_from(f"!{csrc_count}I", data, HEADER_SIZE) if csrc_count else ()
        extension = None
        if b0 & 0x10:
            if len(data) < offset + 4:
                raise RtpError("RTP packet too short for its header extension")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            end = offset + 4 + 4 * words
            if len(data) < end:
                raise RtpError("RTP header extension longer than the packet")
            extension = RtpExtension(profile, bytes(data[offset + 4 : end]))
            offset = end
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"bad RTP padding length {padding}")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRC")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} out of range")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [
            _HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            data = self.extension.data
            if len(data) % 4:
                raise RtpError("RTP header extension data must be a multiple of 4 bytes")
            parts.append(_EXT_HEADER.pack(self.extension.profile & 0xFFFF, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


# --- byte-level helpers for the relay path -------------------------------------------------------------


def make_packet(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    return (
        _HEADER.pack(
            0x80,
            (payload_type & 0x7F) | (0x80 if marker else 0),
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        + payload
    )


def is_rtcp(data: bytes | bytearray | memoryview) -> bool:
    """True for RTCP on a muxed port: version 2 and packet type 192-223 (RFC 5761 section 4)."""
    return len(data) >= 4 and data[0] >> 6 == RTP_VERSION and 192 <= data[1] <= 223


def is_rtp(data: bytes | bytearray | memoryview) -> bool:
    """True for an RTP packet (not RTCP, STUN or DTLS) by its first two bytes."""
    return len(data) >= HEADER_SIZE and data[0] >> 6 == RTP_VERSION and not 192 <= data[1] <= 223


def read_header(data: bytes | bytearray | memoryview) -> tuple[bool, int, int, int, int]:
    """`(marker, payload_type, sequence, timestamp, ssrc)` of an RTP packet, checking only size
    and version."""
    if len(data) < HEADER_SIZE:
        raise RtpError(f"RTP packet too short ({len(data)} bytes)")
    b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    return bool(b1 & 0x80), b1 & 0x7F, sequence, timestamp, ssrc


def payload_bounds(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """`(start, end)` of the payload inside `data`, past CSRC and extension and before padding."""
    if len(data) < HEADER_SIZE:
        raise RtpError(f"RTP packet too short ({len(data)} bytes)")
    b0 = data[0]
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6}, expected 2")
    start = HEADER_SIZE + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < start + 4:
            raise RtpError("RTP packet too short for its header extension")
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = len(data)
    if b0 & 0x20:
        end -= data[-1]
        if data[-1] == 0:
            raise RtpError("bad RTP padding length 0")
    if start > end:
        raise RtpError("RTP header longer than the packet")
    return start, end


def rewrite_header(
    buf: bytearray | memoryview,
    *,
    ssrc: int | None = None,
    sequence: int | None = None,
    timestamp: int | None = None,
    payload_type: int | None = None,
    marker: bool | None = None,
) -> None:
    """Change header fields of the RTP packet in `buf` in place (bytearray or writable memoryview)."""
    if len(buf) < HEADER_SIZE:
        raise RtpError(f"RTP packet too short ({len(buf)} bytes)")
    if payload_type is not None or marker is not None:
        b1 = buf[1]
        if payload_type is not None:
            b1 = (b1 & 0x80) | (payload_type & 0x7F)
        if marker is not None:
            b1 = (b1 & 0x7F) | (0x80 if marker else 0)
        buf[1] = b1
    if sequence is not None and timestamp is not None and ssrc is not None:
        _SEQ_TS_SSRC.pack_into(buf, 2, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
        return
    if sequence is not None:
        struct.pack_into("!H", buf, 2, sequence & 0xFFFF)
    if timestamp is not None:
        struct.pack_into("!I", buf, 4, timestamp & 0xFFFFFFFF)
    if ssrc is not None:
        struct.pack_into("!I", buf, 8, ssrc & 0xFFFFFFFF)


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number `b` to `a`, modulo 2**16 (in -32768..32767)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_delta(a: int, b: int) -> int:
    """Signed distance from timestamp `b` to `a`, modulo 2**32."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


# --- one continuous outgoing stream from changing sources ---------------------------------------------


class StreamRewriter:
    """Maps incoming RTP packets onto one outgoing stream with our SSRC and continuous sequence/timestamps.

    Within one source, offsets are constant, so loss, reordering and timestamp gaps (silence suppression,
    RFC 4733 events that reuse a timestamp) pass through unchanged. A new source (another SSRC, a sequence
    jump beyond RFC 3550's MAX_DROPOUT/MAX_MISORDER, or a timestamp that leaves the wall-clock track by more
    than `max_timestamp_jump` seconds ahead or `max_timestamp_lag` behind) is spliced right after the last
    packet sent: next sequence number, timestamp advanced by the wall-clock time elapsed (at least one frame),
    and the marker bit set so the receiver's jitter buffer resynchronises. Late packets of the previous source
    are still mapped with its old offsets.
    """

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        *,
        first_sequence: int = 0,
        first_timestamp: int = 0,
        frame_duration: float = 0.02,
        max_timestamp_jump: float = 1.0,
        max_timestamp_lag: float = 10.0,
    ) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self.clock_rate = clock_rate
        self.resyncs = 0
        self._frame_ticks = max(1, round(frame_duration * clock_rate))
        self._jump_ticks = max_timestamp_jump * clock_rate
        self._lag_ticks = max_timestamp_lag * clock_rate
        self._drift_window = self._jump_ticks / 4
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_in_seq = 0
        self._transit = 0.0  # now*rate - timestamp of the source, tracked slowly
        self._out_seq = (first_sequence - 1) & 0xFFFF
        self._out_ts = (first_timestamp - self._frame_ticks) & 0xFFFFFFFF
        self._out_time: float | None = None
        self._previous: tuple[int, int, int, int] | None = None  # ssrc, seq offset, ts offset, last seq

    @property
    def last_sequence(self) -> int:
        """Sequence number of the newest packet sent (the next one the caller generates is this + 1)."""
        return self._out_seq

    @property
    def last_timestamp(self) -> int:
        return self._out_ts

    def map(self, ssrc: int, sequence: int, timestamp: int, now: float) -> tuple[int, int, bool]:
        """`(sequence, timestamp, marker_needed)` of the outgoing packet for an incoming one."""
        if ssrc == self._source:
            delta = ((sequence - self._last_in_seq + 0x8000) & 0xFFFF) - 0x8000
            if 0 < delta <= MAX_DROPOUT:
                # how far the timestamp left the wall-clock track of this source (inlined: the relay path)
                drift = (
                    (round(self._transit - now * self.clock_rate + timestamp) + 0x80000000) & 0xFFFFFFFF
                ) - 0x80000000
                self._last_in_seq = sequence
                if -self._lag_ticks <= drift <= self._jump_ticks:
                    if -self._drift_window < drift < self._drift_window:
                        self._transit -= drift / 64  # follow clock drift between sender and us
                    out_seq = (sequence + self._seq_offset) & 0xFFFF
                    out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
                    self._out_seq = out_seq
                    if ((out_ts - self._out_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000 > 0:
                        self._out_ts = out_ts
                    self._out_time = now
                    return out_seq, out_ts, False
                self._splice_timestamp(timestamp, now, delta)
                return self._advance(sequence, timestamp, now, True)
            if -MAX_MISORDER <= delta <= 0:  # late or duplicate: same offsets, no state change
                return (
                    (sequence + self._seq_offset) & 0xFFFF,
                    (timestamp + self._ts_offset) & 0xFFFFFFFF,
                    False,
                )
        elif self._previous is not None and ssrc == self._previous[0]:
            _, seq_offset, ts_offset, last_seq = self._previous
            if -MAX_MISORDER <= seq_delta(sequence, last_seq) <= 0:
                return (sequence + seq_offset) & 0xFFFF, (timestamp + ts_offset) & 0xFFFFFFFF, False
        self._new_source(ssrc, sequence, timestamp, now)
        return self._advance(sequence, timestamp, now, True)

    def rewrite(self, buf: bytearray | memoryview, now: float, payload_type: int | None = None) -> None:
        """Rewrite the RTP packet in `buf` in place: our SSRC, mapped sequence and
        timestamp, optional payload type."""
        if len(buf) < HEADER_SIZE:
            raise RtpError(f"RTP packet too short ({len(buf)} bytes)")
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(buf, 0)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        out_seq, out_ts, marker = self.map(ssrc, sequence, timestamp, now)
        if marker:
            b1 |= 0x80
        if payload_type is not None:
            b1 = (b1 & 0x80) | (payload_type & 0x7F)
        _HEADER.pack_into(buf, 0, b0, b1, out_seq, out_ts, self.ssrc)

    def next_own(self, now: float, ticks: int) -> tuple[int, int]:
        """Sequence and timestamp for a packet we generate ourselves (a prompt, DTMF) on this outgoing stream.

        `ticks` is the timestamp advance since our previous packet (160 for 20 ms at 8 kHz; 0 for the RFC 4733
        packets after the first of an event, which all carry the event's start). The next relayed packet is
        spliced after it.
        """
        if self._out_time is None:
            out_ts = (self._out_ts + self._frame_ticks) & 0xFFFFFFFF
        else:
            out_ts = (self._out_ts + ticks) & 0xFFFFFFFF
        self._out_seq = (self._out_seq + 1) & 0xFFFF
        self._out_ts = out_ts
        self._out_time = now
        if self._source is not None:
            self._remember_previous()
            self._source = None
        return self._out_seq, out_ts

    def _advance(self, sequence: int, timestamp: int, now: float, resynced: bool) -> tuple[int, int, bool]:
        out_seq = (sequence + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        self._out_seq = out_seq
        if ts_delta(out_ts, self._out_ts) > 0 or resynced:
            self._out_ts = out_ts
        self._out_time = now
        return out_seq, out_ts, resynced

    def _splice_point(self, now: float, packets: int) -> tuple[int, int]:
        if self._out_time is None:
            return (self._out_seq + 1) & 0xFFFF, (self._out_ts + self._frame_ticks) & 0xFFFFFFFF
        elapsed = round((now - self._out_time) * self.clock_rate)
        ticks = max(elapsed, self._frame_ticks * packets)
        return (self._out_seq + packets) & 0xFFFF, (self._out_ts + ticks) & 0xFFFFFFFF

    def _remember_previous(self) -> None:
        if self._source is not None:
            self._previous = (self._source, self._seq_offset, self._ts_offset, self._last_in_seq)

    def _new_source(self, ssrc: int, sequence: int, timestamp: int, now: float) -> None:
        self._remember_previous()
        out_seq, out_ts = self._splice_point(now, 1)
        self._source = ssrc
        self._seq_offset = out_seq - sequence
        self._ts_offset = out_ts - timestamp
        self._last_in_seq = sequence
        self._transit = now * self.clock_rate - timestamp
        self.resyncs += 1

    def _splice_timestamp(self, timestamp: int, now: float, packets: int) -> None:
        _, out_ts = self._splice_point(now, packets)
        self._ts_offset = out_ts - timestamp
        self._transit = now * self.clock_rate - timestamp
        self.resyncs += 1


# --- reception statistics (RFC 3550 appendix A) -------------------------------------------------------


class ReceiverStats:
    """Statistics of one received source (RFC 3550 A.1, A.3, A.8); feed it every packet with `update`.

    `probation` is the number of sequential packets needed before a source is valid (A.1's MIN_SEQUENTIAL);
    packets seen during probation are not counted.
    """

    def __init__(self, ssrc: int, clock_rate: int, *, probation: int = MIN_SEQUENTIAL) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = SEQ_MOD + 1
        self.probation = probation
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.octets = 0
        self.jitter_ticks = 0.0
        self.fraction_lost = 0  # of the last interval, 0..255 (set by `interval`)
        self.last_sr = 0  # middle 32 bits of the last SR's NTP timestamp
        self.last_sr_time: float | None = None
        self.last_arrival: float | None = None
        self._started = False
        self._last_ts = 0
        self._last_arrival_for_jitter: float | None = None

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, sequence: int, timestamp: int, now: float, payload_size: int = 0) -> bool:
        """Account for one packet; False when A.1 does not count it (probation, or a jump not yet
        confirmed)."""
        sequence &= 0xFFFF
        self.last_arrival = now
        if not self._started:
            self._started = True
            self._init_seq(sequence)
            self.max_seq = (sequence - 1) & 0xFFFF
            if self.probation == 0:
                self.max_seq = sequence
                self._count(timestamp, now, payload_size)
                return True
        udelta = (sequence - self.max_seq) & 0xFFFF
        if self.probation:
            if sequence == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = sequence
                if self.probation == 0:
                    self._init_seq(sequence)
                    self._count(timestamp, now, payload_size)
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = sequence
            return False
        if udelta < MAX_DROPOUT:
            if sequence < self.max_seq:
                self.cycles += SEQ_MOD
            self.max_seq = sequence
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if sequence == self.bad_seq:
                # two sequential packets after a big jump: the source restarted
                self._init_seq(sequence)
                self._last_arrival_for_jitter = None
            else:
                self.bad_seq = (sequence + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted as received
        self._count(timestamp, now, payload_size)
        return True

    def _count(self, timestamp: int, now: float, payload_size: int) -> None:
        self.received += 1
        self.octets += payload_size
        if self._last_arrival_for_jitter is not None:
            transit_change = (now - self._last_arrival_for_jitter) * self.clock_rate - ts_delta(
                timestamp, self._last_ts
            )
            self.jitter_ticks += (abs(transit_change) - self.jitter_ticks) / 16.0
        self._last_arrival_for_jitter = now
        self._last_ts = timestamp

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.received == 0 and self.probation:
            return 0
        return self.extended_max_seq - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Packets lost since the start, clamped to RTCP's signed 24 bits (duplicates can make it
        negative)."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    @property
    def loss_ratio(self) -> float:
        """Fraction of expected packets lost over the whole reception (0.0..1.0)."""
        expected = self.expected
        return max(0, expected - self.received) / expected if expected > 0 else 0.0

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as RTCP reports it."""
        return int(self.jitter_ticks)

    @property
    def jitter_seconds(self) -> float:
        return self.jitter_ticks / self.clock_rate

    def interval(self) -> tuple[int, int, int]:
        """Close a reporting interval (A.3): `(fraction_lost 0..255, lost, expected)` since the previous
        call."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        self.fraction_lost = fraction
        return fraction, lost_interval, expected_interval

    def on_sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember an SR from this source, for the LSR/DLSR fields of our next report block."""
        self.last_sr = (ntp_timestamp >> 16) & 0xFFFFFFFF
        self.last_sr_time = now
