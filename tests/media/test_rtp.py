"""RTP packets, byte-level rewriting, stream splicing and RFC 3550 reception statistics."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.media.rtp import (
    ReceiverStats,
    RtpError,
    RtpExtension,
    RtpPacket,
    StreamRewriter,
    is_rtcp,
    is_rtp,
    make_packet,
    payload_bounds,
    read_header,
    rewrite_header,
    seq_delta,
    ts_delta,
)

u32 = st.integers(0, 0xFFFFFFFF)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=u32,
    ssrc=u32,
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(u32, max_size=15).map(tuple),
    extension=st.none()
    | st.builds(
        RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_gives_the_same_packet(packet: RtpPacket) -> None:
    data = packet.serialize()
    assert RtpPacket.parse(data) == packet
    assert read_header(data) == (
        packet.marker,
        packet.payload_type,
        packet.sequence,
        packet.timestamp,
        packet.ssrc,
    )
    start, end = payload_bounds(data)
    assert data[start:end] == packet.payload
    # RFC 5761: marker + PT 64-95 reads as RTCP packet types 192-223
    assert is_rtp(data) == (not (packet.marker and 64 <= packet.payload_type <= 95))


def test_parse_known_bytes() -> None:
    # V=2 P=0 X=0 CC=1, M=1 PT=0, seq 0x1234, ts 0x11223344, ssrc 0xdeadbeef, csrc 7, payload
    data = bytes.fromhex("81 80 1234 11223344 deadbeef 00000007") + b"\xff" * 160
    packet = RtpPacket.parse(data)
    assert (packet.marker, packet.payload_type, packet.sequence) == (True, 0, 0x1234)
    assert (packet.timestamp, packet.ssrc, packet.csrc) == (0x11223344, 0xDEADBEEF, (7,))
    assert packet.payload == b"\xff" * 160
    assert packet.version == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00\x00", "too short"),
        (bytes.fromhex("40 00 0001 00000000 00000001"), "version"),
        (bytes.fromhex("83 00 0001 00000000 00000001 00000002"), "CSRC"),
        (bytes.fromhex("90 00 0001 00000000 00000001 bede 0002 00000000"), "extension"),
        (bytes.fromhex("a0 00 0001 00000000 00000001 aabb 00"), "padding"),
        (bytes.fromhex("a0 00 0001 00000000 00000001 aabb 09"), "padding"),
    ],
)
def test_malformed_packets_raise_rtp_error(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError, match=reason):
        RtpPacket.parse(data)


@given(st.binary(max_size=64))
def test_parsing_arbitrary_bytes_never_crashes(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert packet.serialize() == data or packet.padding  # padding bytes' content is not kept


def test_demultiplexing_rtp_and_rtcp() -> None:
    rtp = RtpPacket(payload_type=0, payload=b"x").serialize()
    rtcp = bytes.fromhex("80c9 0001 00000001")  # empty RR
    stun = bytes.fromhex("0001 0000 2112a442") + bytes(12)
    assert is_rtp(rtp) and not is_rtcp(rtp)
    assert is_rtcp(rtcp) and not is_rtp(rtcp)
    assert not is_rtp(stun) and not is_rtcp(stun)


def test_rewrite_header_changes_only_the_given_fields() -> None:
    original = RtpPacket(8, 100, 5000, 0x1111, b"payload", marker=False, csrc=(9,)).serialize()
    buf = bytearray(original)
    rewrite_header(buf, ssrc=0x2222, sequence=7, timestamp=0xFFFFFFFF + 3, payload_type=0, marker=True)
    packet = RtpPacket.parse(buf)
    assert (packet.ssrc, packet.sequence, packet.timestamp) == (0x2222, 7, 2)
    assert (packet.payload_type, packet.marker, packet.csrc, packet.payload) == (0, True, (9,), b"payload")
    rewrite_header(buf, sequence=8)
    assert RtpPacket.parse(buf).sequence == 8
    assert RtpPacket.parse(buf).ssrc == 0x2222
    with pytest.raises(RtpError):
        rewrite_header(bytearray(5), sequence=1)


def test_signed_deltas_wrap() -> None:
    assert seq_delta(2, 65534) == 4
    assert seq_delta(65534, 2) == -4
    assert ts_delta(10, 0xFFFFFFF0) == 26
    assert ts_delta(0xFFFFFFF0, 10) == -26


# --- StreamRewriter ----------------------------------------------------------------------------------------


def _packet(ssrc: int, seq: int, ts: int, pt: int = 0) -> bytearray:
    return bytearray(RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, b"\x00" * 160).serialize())


def _relay(rewriter: StreamRewriter, ssrc: int, seq: int, ts: int, now: float) -> RtpPacket:
    buf = _packet(ssrc, seq, ts)
    rewriter.rewrite(buf, now)
    return RtpPacket.parse(buf)


def test_one_source_keeps_its_timing_loss_and_order_under_our_ssrc() -> None:
    rewriter = StreamRewriter(0xABC, 8000, first_sequence=1000, first_timestamp=50_000)
    out = [_relay(rewriter, 0x1, 65530 + i, 7_000_000 + 160 * i, i * 0.02) for i in range(10)]
    assert [p.sequence for p in out] == [1000 + i for i in range(10)]  # across the incoming wrap
    assert [p.timestamp for p in out] == [50_000 + 160 * i for i in range(10)]
    assert {p.ssrc for p in out} == {0xABC}
    assert out[0].marker and not any(p.marker for p in out[1:])
    # a gap (loss) stays a gap, a late packet keeps its place
    later = _relay(rewriter, 0x1, 65530 + 12, 7_000_000 + 160 * 12, 0.24)
    late = _relay(rewriter, 0x1, 65530 + 11, 7_000_000 + 160 * 11, 0.245)
    assert (later.sequence, later.timestamp) == (1012, 50_000 + 160 * 12)
    assert (late.sequence, late.timestamp) == (1011, 50_000 + 160 * 11)
    assert rewriter.resyncs == 1


def test_new_ssrc_is_spliced_after_the_last_packet() -> None:
    rewriter = StreamRewriter(0xABC, 8000, first_sequence=0, first_timestamp=0)
    for i in range(5):
        _relay(rewriter, 0x1, 100 + i, 1000 + 160 * i, i * 0.02)
    # re-INVITE: the far end restarts with a new SSRC and random numbers, 60 ms after its last packet
    first = _relay(rewriter, 0x2, 40_000, 3_000_000_000, 0.08 + 0.06)
    second = _relay(rewriter, 0x2, 40_001, 3_000_000_160, 0.08 + 0.08)
    assert first.sequence == 5 and first.marker
    assert first.timestamp == 4 * 160 + 480  # the 60 ms that passed
    assert (second.sequence, second.timestamp, second.marker) == (6, 4 * 160 + 640, False)
    # a straggler of the old source still lands before the splice
    straggler = _relay(rewriter, 0x1, 103, 1000 + 160 * 3, 0.17)
    assert (straggler.sequence, straggler.timestamp) == (3, 480)


def test_sequence_jump_within_one_ssrc_is_spliced() -> None:
    rewriter = StreamRewriter(7, 8000)
    for i in range(3):
        _relay(rewriter, 0x1, 10 + i, 160 * i, i * 0.02)
    jumped = _relay(rewriter, 0x1, 30_000, 480, 0.06)
    assert jumped.sequence == 3 and jumped.marker and jumped.timestamp == 480


def test_timestamp_jump_keeps_sequence_and_resyncs_timestamp() -> None:
    rewriter = StreamRewriter(7, 8000)
    for i in range(3):
        _relay(rewriter, 0x1, 10 + i, 160 * i, i * 0.02)
    jumped = _relay(rewriter, 0x1, 13, 160 * 3 + 8000 * 3600, 0.06)
    after = _relay(rewriter, 0x1, 14, 160 * 4 + 8000 * 3600, 0.08)
    assert (jumped.sequence, jumped.timestamp, jumped.marker) == (3, 480, True)
    assert (after.sequence, after.timestamp, after.marker) == (4, 640, False)


def test_telephone_events_and_silence_gaps_are_not_mistaken_for_jumps() -> None:
    rewriter = StreamRewriter(7, 8000)
    _relay(rewriter, 0x1, 1, 0, 0.0)
    # a 2-second key press: 100 packets that all carry the event's start timestamp
    for i in range(100):
        _relay(rewriter, 0x1, 2 + i, 160, 0.02 * (i + 1))
    audio = _relay(rewriter, 0x1, 102, 160 * 102, 0.02 * 102)
    # 5 s of silence suppression: timestamps advance with the wall clock
    resumed = _relay(rewriter, 0x1, 103, 160 * 103 + 40_000, 0.02 * 103 + 5.0)
    assert (audio.timestamp, resumed.timestamp) == (160 * 102, 160 * 103 + 40_000)
    assert not audio.marker and not resumed.marker
    assert rewriter.resyncs == 1


def test_own_packets_interleave_with_relayed_ones() -> None:
    rewriter = StreamRewriter(7, 8000)
    _relay(rewriter, 0x1, 500, 9000, 0.0)
    assert rewriter.next_own(0.02, 160) == (1, 160)
    assert rewriter.next_own(0.04, 160) == (2, 320)
    back = _relay(rewriter, 0x1, 503, 9000 + 480, 0.06)
    assert (back.sequence, back.timestamp, back.marker) == (3, 480, True)


sources = st.lists(
    st.tuples(u32, st.integers(0, 0xFFFF), u32, st.integers(1, 30), st.floats(0.0, 3.0)),
    min_size=1,
    max_size=6,
    unique_by=lambda source: source[0],  # each source its own SSRC
)


@given(sources)
def test_any_succession_of_sources_gives_one_gapless_stream(
    plan: list[tuple[int, int, int, int, float]],
) -> None:
    rewriter = StreamRewriter(0x5151, 8000, first_sequence=65000, first_timestamp=0xFFFFF000)
    now = 0.0
    out = []
    for ssrc, seq, ts, count, pause in plan:
        now += pause
        for i in range(count):
            out.append(_relay(rewriter, ssrc, seq + i, ts + 160 * i, now))
            now += 0.02
    for before, after in itertools.pairwise(out):
        assert seq_delta(after.sequence, before.sequence) == 1
        assert ts_delta(after.timestamp, before.timestamp) >= 160
    assert all(p.ssrc == 0x5151 for p in out)


# --- ReceiverStats ---------------------------------------------------------------------------------------


def test_probation_skips_the_first_packet_then_counts() -> None:
    stats = ReceiverStats(1, 8000)
    assert stats.update(10, 0, 0.0) is False
    assert stats.update(11, 160, 0.02) is True
    assert stats.update(12, 320, 0.04) is True
    assert (stats.received, stats.expected, stats.cumulative_lost) == (2, 2, 0)


def test_sequence_wrap_extends_the_highest_sequence() -> None:
    stats = ReceiverStats(1, 8000, probation=0)
    for i, seq in enumerate(list(range(65530, 65536)) + list(range(0, 6))):
        stats.update(seq, 160 * i, 0.02 * i)
    assert stats.extended_max_seq == 65536 + 5
    assert stats.cycles == 65536
    assert (stats.expected, stats.received, stats.cumulative_lost) == (12, 12, 0)


def test_loss_counts_and_fraction_per_interval() -> None:
    stats = ReceiverStats(1, 8000, probation=0)
    lost = {5, 17, 18, 40, 41, 42, 60, 77, 80, 95}
    for seq in range(100):
        if seq not in lost:
            stats.update(seq, 160 * seq, 0.02 * seq)
    assert stats.cumulative_lost == 10
    assert stats.interval() == (25, 10, 100)  # 10/100 * 256 = 25.6, truncated
    for seq in range(100, 150):  # a clean interval
        stats.update(seq, 160 * seq, 0.02 * seq)
    assert stats.interval() == (0, 0, 50)
    assert stats.loss_ratio == pytest.approx(10 / 150)


def test_duplicates_make_loss_negative() -> None:
    stats = ReceiverStats(1, 8000, probation=0)
    for seq in (1, 2, 2, 3, 3, 3):
        stats.update(seq, 160 * seq, 0.02 * seq)
    assert stats.cumulative_lost == -3
    assert stats.interval()[0] == 0


def test_interarrival_jitter_hand_computed() -> None:
    stats = ReceiverStats(1, 8000, probation=0)
    stats.update(0, 0, 0.0)
    stats.update(1, 160, 0.020)
    assert stats.jitter_ticks == 0.0  # constant transit time
    stats.update(2, 320, 0.050)  # 10 ms late: D = 80 ticks, J = 80/16
    assert stats.jitter_ticks == pytest.approx(5.0)
    stats.update(3, 480, 0.060)  # back on time: D = 80 again, J = 5 + 75/16
    assert stats.jitter_ticks == pytest.approx(9.6875)
    assert stats.jitter == 9
    assert stats.jitter_seconds == pytest.approx(9.6875 / 8000)


def test_restart_after_a_big_jump_is_confirmed_by_a_second_packet() -> None:
    stats = ReceiverStats(1, 8000, probation=0)
    for seq in range(10):
        stats.update(seq, 160 * seq, 0.02 * seq)
    assert stats.update(20_000, 0, 0.2) is False
    assert stats.update(20_001, 160, 0.22) is True
    assert (stats.base_seq, stats.received, stats.cumulative_lost) == (20_001, 1, 0)


def test_header_layout_matches_rfc_3550() -> None:
    data = RtpPacket(96, 0xBEEF, 0x01020304, 0x0A0B0C0D, b"", marker=True).serialize()
    assert data == struct.pack("!BBHII", 0x80, 0x80 | 96, 0xBEEF, 0x01020304, 0x0A0B0C0D)
    assert make_packet(96, 0xBEEF, 0x01020304, 0x0A0B0C0D, b"", marker=True) == data
    assert make_packet(0, 65536 + 5, 2**32 + 7, 1, b"ab") == RtpPacket(0, 5, 7, 1, b"ab").serialize()
