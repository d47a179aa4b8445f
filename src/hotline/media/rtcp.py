"""RTCP packets (RFC 3550 section 6), sans-IO.

Packets (dataclasses with `serialize() -> bytes`):
- `ReportBlock(ssrc, fraction_lost, cumulative_lost, highest_sequence, jitter, lsr, dlsr)`
- `SenderReport(ssrc, ntp_timestamp, rtp_timestamp, packet_count, octet_count, reports, extension)`
- `ReceiverReport(ssrc, reports, extension)`
- `SourceDescription(chunks: list[SdesChunk])`, `SdesChunk(ssrc, items: list[tuple[int, bytes]])`
  with `.cname`
- `Bye(sources, reason)`
- `UnknownRtcp(packet_type, count, body)` for APP, feedback (RTPFB/PSFB), XR and anything else, kept verbatim.

Functions:
- `parse_compound(data) -> list[RtcpPacket]` (raises `RtcpError`), `serialize_compound(packets) -> bytes`.
- `ntp_timestamp(seconds) -> int`, `ntp_to_seconds(ntp) -> float`, `ntp_short(seconds) -> int`: NTP formats.
- `report_block(stats, now)`: a report block from `rtp.ReceiverStats`, closing its loss interval.
- `SenderStats`: counts what we send, for the sender info of an SR.
- `build_report(ssrc, sources, now, sender=None, cname=None) -> bytes`: a compound SR or RR (+ SDES CNAME).
- `round_trip_time(block, now) -> float | None`: RTT from a block's LSR/DLSR (section 6.4.1).

Times: `now` is seconds on any clock the caller owns (a monotonic one is fine) as long as the same clock is
used for our SR timestamps and for `now` when their echoes (LSR/DLSR) come back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hotline.media.rtp import RTP_VERSION, ReceiverStats

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204

SDES_END = 0
SDES_CNAME = 1

_COMMON = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IQIII")


class RtcpError(ValueError):
    """Data that is not a well-formed (compound) RTCP packet."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int = 0  # 0..255, fixed point /256
    cumulative_lost: int = 0  # signed 24 bits
    highest_sequence: int = 0  # extended highest sequence number received
    jitter: int = 0  # timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, 1/65536 s

    def serialize(self) -> bytes:
        lost = self.cumulative_lost
        if not -0x800000 <= lost <= 0x7FFFFF:
            raise RtcpError(f"cumulative lost {lost} out of range")
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"fraction lost {self.fraction_lost} out of range")
        return _REPORT_BLOCK.pack(
            self.ssrc & 0xFFFFFFFF,
            self.fraction_lost,
            (lost & 0xFFFFFF).to_bytes(3, "big"),
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def parse(cls, data: bytes | memoryview, offset: int) -> ReportBlock:
        ssrc, fraction, lost_bytes, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = int.from_bytes(lost_bytes, "big")
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, fraction, lost, highest, jitter, lsr, dlsr)

    @property
    def fraction_lost_ratio(self) -> float:
        return self.fraction_lost / 256.0


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int = 0  # 64-bit NTP format
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    def serialize(self) -> bytes:
        body = _SENDER_INFO.pack(
            self.ssrc & 0xFFFFFFFF,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )
        return _packet(SR, len(self.reports), body + _blocks(self.reports) + self.extension)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    def serialize(self) -> bytes:
        body = struct.pack("!I", self.ssrc & 0xFFFFFFFF) + _blocks(self.reports) + self.extension
        return _packet(RR, len(self.reports), body)


@dataclass(slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(slots=True)
class SourceDescription:
    chunks: list[SdesChunk] = field(default_factory=list)

    def serialize(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc & 0xFFFFFFFF)
            for item_type, value in chunk.items:
                if not 1 <= item_type <= 255 or len(value) > 255:
                    raise RtcpError("SDES item type must be 1..255 and its value at most 255 bytes")
                body += bytes((item_type, len(value))) + value
            body += b"\x00"  # END item, then pad the chunk to a 32-bit boundary
            body += bytes(-len(body) % 4)
        return _packet(SDES, len(self.chunks), bytes(body))


@dataclass(slots=True)
class Bye:
    sources: list[int] = field(default_factory=list)
    reason: str | None = None

    def serialize(self) -> bytes:
        body = b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in self.sources)
        if self.reason is not None:
            text = self.reason.encode("utf-8")[:255]
            body += bytes((len(text),)) + text
            body += bytes(-len(body) % 4)
        return _packet(BYE, len(self.sources), body)


@dataclass(slots=True)
class UnknownRtcp:
    packet_type: int
    count: int  # the 5-bit field after the version (report count or subtype)
    body: bytes = b""

    def serialize(self) -> bytes:
        if len(self.body) % 4:
            raise RtcpError("RTCP packet body must be a multiple of 4 bytes")
        return _packet(self.packet_type, self.count, self.body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise RtcpError(f"at most 31 items in one RTCP packet, got {count}")
    if len(body) % 4:
        raise RtcpError("RTCP packet body must be a multiple of 4 bytes")
    return _COMMON.pack((RTP_VERSION << 6) | count, packet_type, len(body) // 4) + body


def _blocks(reports: Sequence[ReportBlock]) -> bytes:
    return b"".join(block.serialize() for block in reports)


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    return b"".join(packet.serialize() for packet in packets)


def parse_compound(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Every packet of a compound RTCP datagram (RFC 3550 A.2 checks, lenient on the first packet's type
    so that reduced-size RTCP (RFC 5506) is accepted)."""
    view = memoryview(bytes(data))
    if len(view) < 4:
        raise RtcpError(f"RTCP packet too short ({len(view)} bytes)")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(view):
        if len(view) - offset < 4:
            raise RtcpError("trailing bytes after the last RTCP packet")
        first, packet_type, words = _COMMON.unpack_from(view, offset)
        if first >> 6 != RTP_VERSION:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(view):
            raise RtcpError("RTCP length field exceeds the datagram")
        body_end = end
        if first & 0x20:
            if end != len(view):
                raise RtcpError("padding only allowed on the last packet of a compound")
            pad = view[end - 1]
            if pad == 0 or pad > 4 * words:
                raise RtcpError(f"bad RTCP padding length {pad}")
            body_end -= pad
        packets.append(_parse_one(packet_type, first & 0x1F, view[offset + 4 : body_end]))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: memoryview) -> RtcpPacket:
    if packet_type == SR:
        if len(body) < 24 + 24 * count:
            raise RtcpError("SR shorter than its report count says")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 0)
        reports = [ReportBlock.parse(body, 24 + 24 * i) for i in range(count)]
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports, bytes(body[24 + 24 * count :]))
    if packet_type == RR:
        if len(body) < 4 + 24 * count:
            raise RtcpError("RR shorter than its report count says")
        (ssrc,) = struct.unpack_from("!I", body, 0)
        reports = [ReportBlock.parse(body, 4 + 24 * i) for i in range(count)]
        return ReceiverReport(ssrc, reports, bytes(body[4 + 24 * count :]))
    if packet_type == SDES:
        return SourceDescription(_parse_sdes(body, count))
    if packet_type == BYE:
        if len(body) < 4 * count:
            raise RtcpError("BYE shorter than its source count says")
        sources = list(struct.unpack_from(f"!{count}I", body, 0))
        reason = None
        rest = body[4 * count :]
        if len(rest) > 0:
            length = rest[0]
            if 1 + length > len(rest):
                raise RtcpError("BYE reason longer than the packet")
            reason = bytes(rest[1 : 1 + length]).decode("utf-8", "replace")
        return Bye(sources, reason)
    return UnknownRtcp(packet_type, count, bytes(body))


def _parse_sdes(body: memoryview, count: int) -> list[SdesChunk]:
    chunks = []
    offset = 0
    for _ in range(count):
        if offset + 4 > len(body):
            raise RtcpError("SDES shorter than its chunk count says")
        (ssrc,) = struct.unpack_from("!I", body, offset)
        offset += 4
        items = []
        while True:
            if offset >= len(body):
                raise RtcpError("SDES chunk without END item")
            item_type = body[offset]
            if item_type == SDES_END:
                offset += 1
                offset += -offset % 4
                break
            if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                raise RtcpError("SDES item longer than the packet")
            length = body[offset + 1]
            items.append((item_type, bytes(body[offset + 2 : offset + 2 + length])))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, items))
    return chunks


# --- time formats ---------------------------------------------------------------------------------------


def ntp_timestamp(seconds: float) -> int:
    """64-bit NTP format (32.32 fixed point) of `seconds` (any epoch the caller uses consistently)."""
    whole = int(seconds)
    return ((whole & 0xFFFFFFFF) << 32) | int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF


def ntp_to_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / (1 << 32)


def ntp_short(seconds: float) -> int:
    """Middle 32 bits of the NTP format (16.16 fixed point), as LSR and DLSR use."""
    return (ntp_timestamp(seconds) >> 16) & 0xFFFFFFFF


# --- reports from statistics ------------------------------------------------------------------------------


def report_block(stats: ReceiverStats, now: float) -> ReportBlock:
    """The report block for one received source; closes the source's loss interval (RFC 3550 A.3)."""
    fraction, _, _ = stats.interval()
    dlsr = 0
    if stats.last_sr_time is not None:
        dlsr = max(0, min(0xFFFFFFFF, round((now - stats.last_sr_time) * 65536)))
    return ReportBlock(
        ssrc=stats.ssrc,
        fraction_lost=fraction,
        cumulative_lost=stats.cumulative_lost,
        highest_sequence=stats.extended_max_seq & 0xFFFFFFFF,
        jitter=stats.jitter,
        lsr=stats.last_sr if stats.last_sr_time is not None else 0,
        dlsr=dlsr,
    )


class SenderStats:
    """What we sent on one SSRC: packet and octet counts and the RTP clock, for SR sender info."""

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.packet_count = 0
        self.octet_count = 0
        self.last_timestamp = 0
        self.last_sent: float | None = None

    def on_sent(self, timestamp: int, payload_size: int, now: float) -> None:
        self.packet_count += 1
        self.octet_count += payload_size
        self.last_timestamp = timestamp
        self.last_sent = now

    def rtp_timestamp_at(self, now: float) -> int:
        """The RTP timestamp corresponding to `now`, extrapolated from the last packet sent."""
        if self.last_sent is None:
            return self.last_timestamp
        return (self.last_timestamp + round((now - self.last_sent) * self.clock_rate)) & 0xFFFFFFFF


def build_report(
    ssrc: int,
    sources: Iterable[ReceiverStats],
    now: float,
    sender: SenderStats | None = None,
    cname: str | None = None,
) -> bytes:
    """A compound RTCP packet: SR once `sender` has sent media, else RR, with a block per received source
    (at most 31; each block closes that source's loss interval), then SDES CNAME when given."""
    blocks = [report_block(stats, now) for stats in sources if stats.received > 0][:31]
    packets: list[RtcpPacket]
    if sender is not None and sender.packet_count > 0:
        packets = [
            SenderReport(
                ssrc,
                ntp_timestamp(now),
                sender.rtp_timestamp_at(now),
                sender.packet_count,
                sender.octet_count,
                blocks,
            )
        ]
    else:
        packets = [ReceiverReport(ssrc, blocks)]
    if cname is not None:
        packets.append(SourceDescription([SdesChunk(ssrc, [(SDES_CNAME, cname.encode("utf-8"))])]))
    return serialize_compound(packets)


def round_trip_time(block: ReportBlock, now: float) -> float | None:
    """RTT in seconds from a report block about our stream: A - LSR - DLSR (section 6.4.1);
    None without an SR."""
    if block.lsr == 0:
        return None
    arrival = ntp_short(now)
    rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:  # negative: clocks or report inconsistent
        return None
    return rtt / 65536.0
