"""RTCP compound packets, reports built from reception statistics, and round-trip time."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.media.rtcp import (
    SDES_CNAME,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SenderStats,
    SourceDescription,
    UnknownRtcp,
    build_report,
    ntp_short,
    ntp_timestamp,
    ntp_to_seconds,
    parse_compound,
    report_block,
    round_trip_time,
    serialize_compound,
)
from hotline.media.rtp import ReceiverStats

u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)
words = st.binary(max_size=16).map(lambda b: b[: len(b) // 4 * 4])
sender_reports = st.builds(
    SenderReport,
    ssrc=u32,
    ntp_timestamp=st.integers(0, 2**64 - 1),
    rtp_timestamp=u32,
    packet_count=u32,
    octet_count=u32,
    reports=st.lists(blocks, max_size=4),
    extension=words,
)
receiver_reports = st.builds(ReceiverReport, ssrc=u32, reports=st.lists(blocks, max_size=4), extension=words)
sdes = st.builds(
    SourceDescription,
    st.lists(
        st.builds(SdesChunk, u32, st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=40)), max_size=3)),
        max_size=3,
    ),
)
byes = st.builds(Bye, st.lists(u32, max_size=4), st.none() | st.text(max_size=30))
unknown = st.builds(UnknownRtcp, st.sampled_from([204, 205, 206, 207]), st.integers(0, 31), words)
compounds = st.lists(st.one_of(sender_reports, receiver_reports, sdes, byes, unknown), min_size=1, max_size=5)


@given(compounds)
def test_compound_round_trip(packets: list[RtcpPacket]) -> None:
    parsed = parse_compound(serialize_compound(packets))
    assert parsed == packets


def test_receiver_report_known_bytes() -> None:
    data = bytes.fromhex(
        "81c9 0007 00001234"  # V=2 RC=1 PT=201 length=7, sender SSRC
        "0000abcd 19 fffffe 00010005 00000020 11223344 00008000"  # block: 25/256 lost, cumulative -2
    )
    (report,) = parse_compound(data)
    assert isinstance(report, ReceiverReport)
    assert report.ssrc == 0x1234
    block = report.reports[0]
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost) == (0xABCD, 0x19, -2)
    assert (block.highest_sequence, block.jitter, block.lsr, block.dlsr) == (0x10005, 32, 0x11223344, 0x8000)
    assert report.serialize() == data


def test_sdes_cname_and_bye_reason() -> None:
    data = serialize_compound(
        [
            ReceiverReport(1),
            SourceDescription([SdesChunk(1, [(SDES_CNAME, b"hotline@example")])]),
            Bye([1], "call ended"),
        ]
    )
    assert len(data) % 4 == 0
    rr, description, bye = parse_compound(data)
    assert isinstance(rr, ReceiverReport) and rr.reports == []
    assert isinstance(description, SourceDescription) and description.chunks[0].cname == "hotline@example"
    assert isinstance(bye, Bye) and bye.sources == [1] and bye.reason == "call ended"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\xc9", "too short"),
        (bytes.fromhex("41c9 0001 00000001"), "version"),
        (bytes.fromhex("80c9 0005 00000001"), "length"),
        (bytes.fromhex("a0c9 0001 00000001 80c9 0001 00000001"), "padding"),
        (bytes.fromhex("81c9 0001 00000001"), "RR shorter"),
        (bytes.fromhex("81ca 0002 00000001 01020000"), "SDES"),
        (bytes.fromhex("80c9 0001 00000001 80"), "trailing"),
    ],
)
def test_malformed_rtcp_raises(data: bytes, reason: str) -> None:
    with pytest.raises(RtcpError, match=reason):
        parse_compound(data)


@given(st.binary(max_size=80))
def test_parsing_arbitrary_bytes_never_crashes(data: bytes) -> None:
    with contextlib.suppress(RtcpError):  # anything else escaping would be a bug
        parse_compound(data)


def test_ntp_formats() -> None:
    assert ntp_timestamp(1.5) == (1 << 32) | (1 << 31)
    assert ntp_to_seconds(ntp_timestamp(1234.25)) == pytest.approx(1234.25)
    assert ntp_short(1.5) == 0x00018000


def test_report_block_from_statistics() -> None:
    stats = ReceiverStats(0xCAFE, 8000, probation=0)
    for seq in range(50):
        if seq not in (10, 11, 30):
            stats.update(seq, 160 * seq, 0.02 * seq)
    stats.on_sender_report(ntp_timestamp(100.0), now=0.5)
    block = report_block(stats, now=0.75)
    assert block.ssrc == 0xCAFE
    assert block.cumulative_lost == 3
    assert block.fraction_lost == 3 * 256 // 50
    assert block.highest_sequence == 49
    assert block.lsr == ntp_short(100.0)
    assert block.dlsr == 65536 // 4  # 0.25 s
    # the next interval starts clean
    for seq in range(50, 60):
        stats.update(seq, 160 * seq, 0.02 * seq)
    assert report_block(stats, now=1.0).fraction_lost == 0


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    # we sent an SR at t=10.0; the peer held it 0.25 s and its RR reached us at t=10.55
    block = ReportBlock(ssrc=1, lsr=ntp_short(10.0), dlsr=round(0.25 * 65536))
    assert round_trip_time(block, now=10.55) == pytest.approx(0.30, abs=2 / 65536)
    assert round_trip_time(ReportBlock(ssrc=1), now=10.55) is None


def test_build_report_sends_sr_when_sending_and_rr_otherwise() -> None:
    stats = ReceiverStats(0x22, 8000, probation=0)
    for seq in range(10):
        stats.update(seq, 160 * seq, 0.02 * seq)
    sender = SenderStats(0x11, 8000)
    only_receiving = parse_compound(build_report(0x11, [stats], 1.0, sender, cname="leg-1"))
    assert isinstance(only_receiving[0], ReceiverReport)
    assert isinstance(only_receiving[1], SourceDescription) and only_receiving[1].chunks[0].cname == "leg-1"
    for i in range(5):
        sender.on_sent(1000 + 160 * i, 160, 2.0 + 0.02 * i)
    sr = parse_compound(build_report(0x11, [stats], 2.1, sender))[0]
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (0x11, 5, 800)
    assert sr.rtp_timestamp == 1000 + 160 * 4 + 160  # extrapolated 20 ms past the last packet
    assert ntp_to_seconds(sr.ntp_timestamp) == pytest.approx(2.1)
    assert sr.reports[0].ssrc == 0x22 and sr.reports[0].highest_sequence == 9
