"""SDP parsing/building (RFC 4566) and offer/answer (RFC 3264)."""

from __future__ import annotations

import contextlib

import pytest
from aiortc import RTCPeerConnection
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.sdp import (
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    NegotiationError,
    Origin,
    SdpError,
    SdpLine,
    SessionDescription,
    answer,
    build_offer,
    codec_by_name,
    hold_offer,
    negotiated_audio,
    parse_sdp,
    reoffer,
    resume_offer,
)


def crlf(text: str) -> str:
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines())


# Written in the style of Chrome's audio+video WebRTC offer (UDP/TLS/RTP/SAVPF, BUNDLE, ICE, DTLS).
CHROME_OFFER = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 7b6c1a9e-5f2c-4a3e-9d0b-1c2d3e4f5a6b
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 46243 typ host generation 0 network-id 1
a=candidate:3851473512 1 udp 1686052607 203.0.113.7 46243 typ srflx raddr 192.168.0.196 rport 46243
a=ice-ufrag:Ti7S
a=ice-pwd:5Gy1V6ns1cKjJ8FQHmTQ7Ttp
a=ice-options:trickle
a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:98:55:29:2D:BF:B4:6E:D0:6A:8B:1C:B9:2B:57:8B:9C:7C:9A
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=sendrecv
a=msid:7b6c1a9e-5f2c-4a3e-9d0b-1c2d3e4f5a6b 9f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:4TOk42mSjXCkVIa6
a=ssrc:3735928559 msid:7b6c1a9e-5f2c-4a3e-9d0b-1c2d3e4f5a6b 9f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ti7S
a=ice-pwd:5Gy1V6ns1cKjJ8FQHmTQ7Ttp
a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:98:55:29:2D:BF:B4:6E:D0:6A:8B:1C:B9:2B:57:8B:9C:7C:9A
a=setup:actpass
a=mid:1
a=sendrecv
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
""")

# In the style of a Cisco desk phone: session bandwidth, opus on a non-default PT, iLBC modes, G.729.
CISCO_OFFER = crlf("""
v=0
o=Cisco-SIPUA 25822 0 IN IP4 192.168.1.45
s=SIP Call
b=AS:4064
t=0 0
m=audio 27824 RTP/AVP 114 9 124 0 8 116 18 101
c=IN IP4 192.168.1.45
b=TIAS:64000
a=rtpmap:114 opus/48000/2
a=fmtp:114 maxplaybackrate=16000;sprop-maxcapturerate=16000;maxaveragebitrate=64000;stereo=0;usedtx=0
a=rtpmap:9 G722/8000
a=rtpmap:124 iLBC/8000
a=fmtp:124 mode=20
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:116 iLBC/8000
a=fmtp:116 mode=30
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
""")

# In the style of a Yealink phone: session-level c=, fmtp before rtpmap, ptime.
YEALINK_OFFER = crlf("""
v=0
o=- 20001 20001 IN IP4 10.0.0.23
s=SDP data
c=IN IP4 10.0.0.23
t=0 0
m=audio 11796 RTP/AVP 0 8 18 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:9 G722/8000
a=fmtp:101 0-15
a=rtpmap:101 telephone-event/8000
a=ptime:20
a=sendrecv
""")

# In the style of a carrier SBC: PCMA first, maxptime, no rtpmap for static types.
CARRIER_OFFER = crlf("""
v=0
o=Sonus_UAC 27455 18215 IN IP4 203.0.113.10
s=SIP Media Capabilities
c=IN IP4 203.0.113.12
t=0 0
m=audio 21344 RTP/AVP 8 0 18 101
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=maxptime:20
""")

CARRIER_IPV6_OFFER = crlf("""
v=0
o=carrier 1 1 IN IP6 2001:db8::10
s=-
c=IN IP6 2001:db8::12
t=0 0
m=audio 30000 RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
""")

REAL_WORLD = [CHROME_OFFER, CISCO_OFFER, YEALINK_OFFER, CARRIER_OFFER, CARRIER_IPV6_OFFER]


# ---------------------------------------------------------------------------------------------------------
# Parsing and round trips


@pytest.mark.parametrize("text", REAL_WORLD, ids=["chrome", "cisco", "yealink", "carrier", "carrier-ipv6"])
def test_real_world_sdp_survives_parse_and_build_byte_for_byte(text: str) -> None:
    assert str(parse_sdp(text)) == text
    assert parse_sdp(text.encode()).encode() == text.encode()


async def test_aiortc_offer_passes_through_unchanged() -> None:
    """The browser-agent path hands aiortc's SDP through our parser; nothing may be lost or reordered."""
    peer = RTCPeerConnection()
    try:
        peer.addTransceiver("audio")
        peer.createDataChannel("cti")
        offer = await peer.createOffer()
    finally:
        await peer.close()
    sd = parse_sdp(offer.sdp)
    assert str(sd) == offer.sdp
    assert [m.media for m in sd.media] == ["audio", "application"]
    assert sd.media[0].has_attribute("fingerprint") and sd.media[0].has_attribute("ice-ufrag")


def test_lf_only_line_endings_are_accepted_and_built_with_crlf() -> None:
    sd = parse_sdp(YEALINK_OFFER.replace("\r\n", "\n"))
    assert str(sd) == YEALINK_OFFER


def test_chrome_offer_fields() -> None:
    sd = parse_sdp(CHROME_OFFER)
    audio, video = sd.media
    assert sd.attribute_values("group") == ["BUNDLE 0 1"]
    assert (audio.media, audio.port, audio.protocol) == ("audio", 9, "UDP/TLS/RTP/SAVPF")
    assert audio.mid == "0" and video.mid == "1"
    assert audio.rtcp_mux and audio.rtcp is not None and audio.rtcp.port == 9
    assert audio.attribute_values("ice-ufrag") == ["Ti7S"]
    assert audio.attribute_values("setup") == ["actpass"]
    assert len(audio.attribute_values("candidate")) == 2
    opus = audio.rtpmap(111)
    assert opus is not None and (opus.encoding, opus.clock_rate, opus.channels) == ("opus", 48000, 2)
    assert opus.fmtp == "minptime=10;useinbandfec=1"
    assert [str(f) for f in audio.payload_formats()] == [
        "opus/48000/2",
        "red/48000/2",
        "G722/8000",
        "PCMU/8000",
        "PCMA/8000",
        "CN/8000",
        "telephone-event/48000",
        "telephone-event/8000",
    ]
    # 0.0.0.0 with ICE is the pre-candidate placeholder, not RFC 2543 hold.
    assert sd.effective_direction(audio) is Direction.SENDRECV


def test_cisco_offer_fields() -> None:
    sd = parse_sdp(CISCO_OFFER)
    (audio,) = sd.media
    assert sd.origin == Origin("Cisco-SIPUA", "25822", 0, "192.168.1.45", "IP4", "IN")
    assert sd.extra_lines == [SdpLine("b", "AS:4064")]
    assert audio.extra_lines == [SdpLine("b", "TIAS:64000")]
    assert audio.connection == Connection("192.168.1.45")
    assert audio.fmtp(18) == "annexb=yes"
    assert audio.direction is Direction.SENDRECV


def test_carrier_static_payload_types_without_rtpmap() -> None:
    (audio,) = parse_sdp(CARRIER_OFFER).media
    assert [str(f) for f in audio.payload_formats()] == [
        "PCMA/8000",
        "PCMU/8000",
        "G729/8000",
        "telephone-event/8000",
    ]
    assert audio.maxptime == 20 and audio.ptime is None


def test_ipv6_connection() -> None:
    sd = parse_sdp(CARRIER_IPV6_OFFER)
    assert sd.connection == Connection("2001:db8::12", "IP6")
    assert sd.origin.address_type == "IP6"


def test_multicast_connection_suffix_is_kept() -> None:
    text = crlf("""
    v=0
    o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
    s=SDP Seminar
    i=A Seminar on the session description protocol
    u=http://www.example.com/seminars/sdp.pdf
    e=j.doe@example.com (Jane Doe)
    c=IN IP4 224.2.17.12/127
    t=2873397496 2873404696
    r=7d 1h 0 25h
    a=recvonly
    m=audio 49170 RTP/AVP 0
    m=video 51372/2 RTP/AVP 99
    a=rtpmap:99 h263-1998/90000
    """)
    sd = parse_sdp(text)
    assert str(sd) == text
    assert sd.connection is not None and sd.connection.multicast_suffix == "127"
    assert sd.connection.address == "224.2.17.12"
    assert sd.timing == (2873397496, 2873404696)
    assert sd.media[1].port_count == 2
    # Session-level direction applies to streams without their own.
    assert sd.effective_direction(sd.media[0]) is Direction.RECVONLY


def test_unknown_line_types_are_kept() -> None:
    text = YEALINK_OFFER.replace("t=0 0\r\n", "t=0 0\r\ny=0123456789\r\n")
    sd = parse_sdp(text)
    assert SdpLine("y", "0123456789") in sd.extra_lines
    assert str(sd) == text


def test_legacy_hold_address_means_do_not_send_to_me() -> None:
    sd = parse_sdp(YEALINK_OFFER.replace("c=IN IP4 10.0.0.23", "c=IN IP4 0.0.0.0"))
    assert sd.effective_direction(sd.media[0]) is Direction.SENDONLY


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
        ("v=0\r\ns=-\r\n", "missing o="),
        ("v=0\r\no=- 1 x IN IP4 1.2.3.4\r\n", "o= line"),
        ("v=0\r\no=- 1 1 IN IP4\r\n", "o= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nthis is not sdp\r\n", "malformed SDP line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n", "port"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP\r\n", "without formats"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n", "m= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n", "rtpmap"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:fast\r\n", "ptime"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n", "c= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=now\r\n", "t= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "duplicate"),
    ],
)
def test_malformed_sdp_raises_sdp_error_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert reason in info.value.reason
    assert info.value.status == 488
    assert isinstance(info.value, ValueError)  # callers may catch ValueError


def test_direction_setter_replaces_in_place() -> None:
    sd = parse_sdp(YEALINK_OFFER)
    audio = sd.media[0]
    audio.direction = Direction.SENDONLY
    assert str(audio.attributes[-1]) == "a=sendonly"
    assert audio.direction is Direction.SENDONLY
    audio.direction = None
    assert audio.direction is None and sd.effective_direction(audio) is Direction.SENDRECV


# ---------------------------------------------------------------------------------------------------------
# Property tests

tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+", min_size=1, max_size=12
)
free_text = st.text(
    alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters="\r\n\x00"),
    max_size=30,
)
attribute_names = tokens.filter(lambda n: n.lower() not in {"rtpmap", "fmtp", "ptime", "maxptime", "rtcp"})

_SESSION_RANK = {"i": 3, "u": 4, "e": 5, "p": 6, "b": 8, "r": 9, "z": 10, "k": 11, "y": 12}
_MEDIA_RANK = {"i": 1, "b": 3, "k": 4, "y": 5}


@st.composite
def attributes(draw: st.DrawFn) -> Attribute:
    return Attribute(draw(attribute_names), draw(st.none() | free_text))


@st.composite
def rtpmaps(draw: st.DrawFn) -> Attribute:
    pt = draw(st.integers(0, 127))
    name = draw(tokens.filter(lambda t: "/" not in t))
    rate = draw(st.integers(1, 200_000))
    channels = draw(st.none() | st.integers(1, 8))
    return Attribute("rtpmap", f"{pt} {name}/{rate}" + (f"/{channels}" if channels else ""))


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    address = draw(
        st.sampled_from(["192.0.2.1", "0.0.0.0", "2001:db8::1", "::", "host.example.com"]) | tokens
    )
    return Connection(
        address,
        draw(st.sampled_from(["IP4", "IP6"])),
        "IN",
        draw(st.none() | st.sampled_from(["127", "127/3", "2"])),
    )


def extra_lines(ranks: dict[str, int]) -> st.SearchStrategy[list[SdpLine]]:
    lines = st.lists(st.builds(SdpLine, st.sampled_from(sorted(ranks)), free_text), max_size=4)
    return lines.map(lambda found: sorted(found, key=lambda line: ranks[line.type]))


@st.composite
def media_descriptions(draw: st.DrawFn) -> MediaDescription:
    port = draw(st.integers(0, 65535))
    formats = draw(st.lists(tokens, min_size=0 if port == 0 else 1, max_size=6))
    attrs = draw(st.lists(attributes() | rtpmaps(), max_size=8))
    if draw(st.booleans()):
        attrs.insert(draw(st.integers(0, len(attrs))), Attribute("ptime", str(draw(st.integers(1, 200)))))
    return MediaDescription(
        draw(st.sampled_from(["audio", "video", "application"])),
        port,
        draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udp"])),
        formats,
        draw(st.none() | st.integers(1, 4)),
        draw(st.none() | connections()),
        attrs,
        draw(extra_lines(_MEDIA_RANK)),
    )


@st.composite
def session_descriptions(draw: st.DrawFn) -> SessionDescription:
    return SessionDescription(
        origin=Origin(
            draw(tokens),
            draw(tokens),
            draw(st.integers(0, 2**64)),
            draw(tokens),
            draw(st.sampled_from(["IP4", "IP6"])),
            "IN",
        ),
        session_name=draw(free_text),
        connection=draw(st.none() | connections()),
        timing=(draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))),
        attributes=draw(st.lists(attributes(), max_size=6)),
        media=draw(st.lists(media_descriptions(), max_size=3)),
        extra_lines=draw(extra_lines(_SESSION_RANK)),
    )


@settings(max_examples=100, deadline=None)
@given(session_descriptions())
def test_build_then_parse_gives_the_same_description(sd: SessionDescription) -> None:
    text = str(sd)
    parsed = parse_sdp(text)
    assert parsed == sd
    assert str(parsed) == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12), st.booleans())
def test_arbitrary_input_parses_or_raises_sdp_error(lines: list[str], with_header: bool) -> None:
    head = ["v=0", "o=- 1 1 IN IP4 192.0.2.1"] if with_header else []
    text = "\r\n".join(head + lines)
    try:
        sd = parse_sdp(text)
    except SdpError:
        return
    # Whatever parsed must also be readable by the typed views and survive a rebuild.
    for media in sd.media:
        media.payload_formats()
        _ = (media.ptime, media.maxptime, media.rtcp, media.direction, sd.effective_direction(media))
    assert parse_sdp(str(sd)) == parse_sdp(str(parse_sdp(str(sd))))
    with contextlib.suppress(NegotiationError):
        negotiated_audio(sd)


# ---------------------------------------------------------------------------------------------------------
# Offers


def test_build_offer_allocates_conventional_payload_types() -> None:
    offer = build_offer(
        ["opus", "PCMU", "PCMA", "telephone-event"], "192.0.2.5", 40000, ptime=20, session_id="42"
    )
    text = str(offer)
    assert "o=hotline 42 1 IN IP4 192.0.2.5\r\n" in text
    assert "c=IN IP4 192.0.2.5\r\n" in text
    assert "m=audio 40000 RTP/AVP 111 0 8 101\r\n" in text
    assert "a=rtpmap:111 opus/48000/2\r\n" in text
    assert "a=fmtp:101 0-16\r\n" in text
    assert "a=ptime:20\r\n" in text
    assert text.endswith("a=sendrecv\r\n")
    assert parse_sdp(text) == offer


def test_build_offer_rejects_unknown_codec() -> None:
    with pytest.raises(ValueError, match="G729"):
        build_offer(["G729"], "192.0.2.5", 40000)
    with pytest.raises(ValueError):
        build_offer([], "192.0.2.5", 40000)


def test_codec_by_name_variants() -> None:
    assert codec_by_name("pcmu").static_payload_type == 0
    assert codec_by_name("G722/8000").sample_rate == 16000
    assert codec_by_name("opus/48000/2").channels == 2
    assert codec_by_name("telephone-event/48000").clock_rate == 48000
    with pytest.raises(ValueError):
        codec_by_name("opus/8000")


def test_ipv6_offer() -> None:
    offer = build_offer(["PCMA"], "2001:db8::5", 40000)
    text = str(offer)
    assert "o=hotline " in text and " IN IP6 2001:db8::5\r\n" in text
    assert "c=IN IP6 2001:db8::5\r\n" in text


# ---------------------------------------------------------------------------------------------------------
# Answers


def formats_of(sd: SessionDescription) -> list[str]:
    return [str(f) for f in sd.media[0].payload_formats()]


def test_answer_keeps_offer_order_and_adds_telephone_event() -> None:
    offer = parse_sdp(YEALINK_OFFER)
    result = answer(offer, ["PCMA", "PCMU", "telephone-event"], "192.0.2.9", 30000, session_id="7")
    assert result.media[0].formats == ["0", "8", "101"]
    assert result.media[0].fmtp(101) == "0-15"  # intersection of their 0-15 and our 0-16
    assert result.media[0].direction is Direction.SENDRECV
    assert result.connection == Connection("192.0.2.9")
    assert result.media[0].port == 30000


def test_answer_can_prefer_our_order_and_limit_codecs() -> None:
    offer = parse_sdp(YEALINK_OFFER)
    ours = answer(offer, ["PCMA", "PCMU", "telephone-event"], "192.0.2.9", 30000, prefer_local_order=True)
    assert ours.media[0].formats == ["8", "0", "101"]
    # The offer lists PCMU, PCMA, G729, G722: the offerer's order decides unless we prefer ours.
    single = answer(offer, ["G722", "PCMA"], "192.0.2.9", 30000, max_codecs=1)
    assert formats_of(single) == ["PCMA/8000"]
    ours_first = answer(offer, ["G722", "PCMA"], "192.0.2.9", 30000, max_codecs=1, prefer_local_order=True)
    assert formats_of(ours_first) == ["G722/8000"]


def test_answer_without_common_codec_explains_for_488() -> None:
    offer = parse_sdp(
        CARRIER_OFFER.replace("m=audio 21344 RTP/AVP 8 0 18 101", "m=audio 21344 RTP/AVP 18 101")
    )
    with pytest.raises(NegotiationError) as info:
        answer(offer, ["opus", "PCMU", "telephone-event"], "192.0.2.9", 30000)
    assert info.value.status == 488
    assert "no common codec" in info.value.reason
    assert "G729/8000" in info.value.reason and "PCMU/8000" in info.value.reason


def test_answer_keeps_the_offers_dynamic_payload_type() -> None:
    offer = parse_sdp(CISCO_OFFER)
    result = answer(offer, ["opus", "telephone-event"], "192.0.2.9", 30000)
    assert result.media[0].formats == ["114", "101"]
    opus = result.media[0].rtpmap(114)
    assert opus is not None and opus.encoding == "opus" and opus.fmtp == "minptime=10;useinbandfec=1"
    negotiated = negotiated_audio(offer, result)
    assert negotiated.codec.payload_type == 114
    assert negotiated.telephone_event_payload_type == 101


def test_telephone_event_absent_or_unsupported() -> None:
    no_dtmf_offer = parse_sdp(
        CARRIER_OFFER.replace("RTP/AVP 8 0 18 101", "RTP/AVP 8 0").replace(
            "a=rtpmap:101 telephone-event/8000\r\n", ""
        )
    )
    result = answer(no_dtmf_offer, ["PCMA", "telephone-event"], "192.0.2.9", 30000)
    assert result.media[0].formats == ["8"]
    assert negotiated_audio(no_dtmf_offer, result).telephone_event is None
    no_dtmf_here = answer(parse_sdp(CARRIER_OFFER), ["PCMA"], "192.0.2.9", 30000)
    assert no_dtmf_here.media[0].formats == ["8"]


def test_telephone_event_clock_follows_the_audio_codec() -> None:
    offer = parse_sdp(CHROME_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"))
    with_opus = answer(offer, ["opus", "telephone-event"], "192.0.2.9", 30000)
    assert formats_of(with_opus) == ["opus/48000/2", "telephone-event/48000"]
    with_pcmu = answer(offer, ["PCMU", "telephone-event"], "192.0.2.9", 30000)
    assert formats_of(with_pcmu) == ["PCMU/8000", "telephone-event/8000"]
    assert with_pcmu.media[0].formats == ["0", "126"]


def test_telephone_event_with_no_common_events_is_dropped() -> None:
    offer = parse_sdp(CARRIER_OFFER.replace("a=fmtp:101 0-15", "a=fmtp:101 32-40"))
    assert answer(offer, ["PCMA", "telephone-event"], "192.0.2.9", 30000).media[0].formats == ["8"]


@pytest.mark.parametrize(
    ("offered", "wanted", "expected"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
    ],
)
def test_answer_mirrors_direction(offered: str, wanted: Direction, expected: Direction) -> None:
    offer = parse_sdp(YEALINK_OFFER.replace("a=sendrecv", f"a={offered}"))
    result = answer(offer, ["PCMU"], "192.0.2.9", 30000, direction=wanted)
    assert result.media[0].direction is expected


def test_answer_to_legacy_hold_is_recvonly() -> None:
    offer = parse_sdp(YEALINK_OFFER.replace("c=IN IP4 10.0.0.23", "c=IN IP4 0.0.0.0"))
    result = answer(offer, ["PCMU"], "192.0.2.9", 30000)
    assert result.media[0].direction is Direction.RECVONLY
    assert not negotiated_audio(offer, result).can_send


def test_answer_rejects_other_streams_with_port_zero() -> None:
    offer = parse_sdp(CHROME_OFFER.replace("UDP/TLS/RTP/SAVPF 111", "RTP/AVP 111"))
    result = answer(offer, ["PCMU"], "192.0.2.9", 30000)
    assert [(m.media, m.port) for m in result.media] == [("audio", 30000), ("video", 0)]
    assert result.media[1].formats == ["96", "97"]
    assert result.media[1].protocol == "UDP/TLS/RTP/SAVPF"
    assert result.media[0].mid == "0" and result.media[1].mid == "1"
    # The answer must parse back to itself: a rejected line still lists formats.
    assert parse_sdp(str(result)) == result


def test_answer_accepts_only_the_first_usable_audio_stream() -> None:
    second = "m=audio 21346 RTP/AVP 0\r\n"
    offer = parse_sdp(
        CARRIER_OFFER.replace("m=audio 21344 RTP/AVP 8 0 18 101", "m=audio 21344 RTP/AVP 18") + second
    )
    result = answer(offer, ["PCMU"], "192.0.2.9", 30000)
    assert [m.port for m in result.media] == [0, 30000]
    negotiated = negotiated_audio(offer, result)
    assert negotiated.remote_port == 21346


def test_answer_to_webrtc_offer_reports_unsupported_protocol() -> None:
    with pytest.raises(NegotiationError, match="UDP/TLS/RTP/SAVPF"):
        answer(parse_sdp(CHROME_OFFER), ["opus", "PCMU"], "192.0.2.9", 30000)


def test_answer_without_audio_stream() -> None:
    offer = parse_sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n")
    with pytest.raises(NegotiationError, match="no audio stream"):
        answer(offer, ["PCMU"], "192.0.2.9", 30000)


def test_answer_rtcp_mux_only_when_both_want_it() -> None:
    offer = parse_sdp(YEALINK_OFFER + "a=rtcp-mux\r\n")
    assert answer(offer, ["PCMU"], "192.0.2.9", 30000, rtcp_mux=True).media[0].rtcp_mux
    assert not answer(offer, ["PCMU"], "192.0.2.9", 30000).media[0].rtcp_mux
    assert not answer(parse_sdp(YEALINK_OFFER), ["PCMU"], "192.0.2.9", 30000, rtcp_mux=True).media[0].rtcp_mux


def test_ipv6_answer_and_negotiation() -> None:
    offer = parse_sdp(CARRIER_IPV6_OFFER)
    result = answer(offer, ["PCMA", "telephone-event"], "2001:db8::99", 30000, ptime=20)
    text = str(result)
    assert (
        "c=IN IP6 2001:db8::99\r\n" in text and "IN IP6 2001:db8::99\r\n" in text.split("\r\n", 2)[1] + "\r\n"
    )
    assert result.media[0].fmtp(101) == "0-16"
    negotiated = negotiated_audio(result, offer)  # the offerer's view of our answer
    assert negotiated.remote_address == "2001:db8::99" and negotiated.remote_port == 30000
    assert negotiated.ptime == 20
    back = negotiated_audio(offer, result)  # our view of their offer
    assert back.remote_address == "2001:db8::12"
    assert back.codec.encoding == "PCMA"


def test_answer_to_reinvite_keeps_session_and_bumps_version_only_on_change() -> None:
    offer = parse_sdp(YEALINK_OFFER)
    first = answer(offer, ["PCMU"], "192.0.2.9", 30000, session_id="555")
    same = answer(offer, ["PCMU"], "192.0.2.9", 30000, previous=first)
    assert same.origin.session_id == "555"
    assert same.origin.session_version == first.origin.session_version
    assert same == first
    held_offer = parse_sdp(YEALINK_OFFER.replace("a=sendrecv", "a=sendonly"))
    changed = answer(held_offer, ["PCMU"], "192.0.2.9", 30000, previous=first)
    assert changed.origin.session_id == "555"
    assert changed.origin.session_version == first.origin.session_version + 1
    assert changed.media[0].direction is Direction.RECVONLY


# ---------------------------------------------------------------------------------------------------------
# Re-offers and the negotiated result


def test_hold_and_resume_reoffers() -> None:
    offer = build_offer(["PCMU", "telephone-event"], "192.0.2.5", 40000, session_id="9")
    held = hold_offer(offer)
    assert held.origin.session_id == "9"
    assert held.origin.session_version == offer.origin.session_version + 1
    assert held.media[0].direction is Direction.SENDONLY
    assert sum(1 for a in held.media[0].attributes if a.key in {d.value for d in Direction}) == 1
    # The phone answers our hold: it only receives.
    phone_answer = answer(held, ["PCMU", "telephone-event"], "10.0.0.23", 11796)
    assert phone_answer.media[0].direction is Direction.RECVONLY
    ours = negotiated_audio(phone_answer, held)
    assert ours.can_send and not ours.can_receive
    resumed = resume_offer(held)
    assert resumed.origin.session_version == offer.origin.session_version + 2
    assert resumed.media[0].direction is Direction.SENDRECV
    # Holding a stream that only receives makes it inactive (RFC 3264 §8.4).
    recv_only = reoffer(offer, direction=Direction.RECVONLY)
    assert hold_offer(recv_only).media[0].direction is Direction.INACTIVE


def test_reoffer_moves_media() -> None:
    offer = build_offer(["PCMU"], "192.0.2.5", 40000)
    moved = reoffer(offer, address="2001:db8::7", port=41000)
    assert moved.connection == Connection("2001:db8::7", "IP6")
    assert moved.origin.address == "2001:db8::7" and moved.origin.address_type == "IP6"
    assert moved.media[0].port == 41000
    assert offer.media[0].port == 40000  # the previous description is not modified


def test_negotiated_audio_from_an_answer() -> None:
    offer = build_offer(["opus", "PCMU", "telephone-event"], "192.0.2.5", 40000)
    remote = parse_sdp(
        crlf("""
        v=0
        o=- 1 2 IN IP4 198.51.100.7
        s=-
        c=IN IP4 198.51.100.7
        t=0 0
        m=audio 50000 RTP/AVP 96 0 97
        a=rtpmap:96 opus/48000/2
        a=rtpmap:97 telephone-event/8000
        a=rtcp:50011 IN IP4 198.51.100.8
        a=ptime:40
        a=sendrecv
        """)
    )
    result = negotiated_audio(remote, offer)
    assert (result.remote_address, result.remote_port) == ("198.51.100.7", 50000)
    assert result.remote_rtcp == ("198.51.100.8", 50011)
    # The peer remapped dynamic types: we send with its numbers and receive with ours.
    assert {pt: str(f) for pt, f in result.payload_types.items()} == {
        96: "opus/48000/2",
        0: "PCMU/8000",
        97: "telephone-event/8000",
    }
    assert {pt: str(f) for pt, f in result.receive_payload_types.items()} == {
        111: "opus/48000/2",
        0: "PCMU/8000",
        101: "telephone-event/8000",
    }
    assert result.codec.payload_type == 96
    assert result.telephone_event_payload_type == 97
    assert result.ptime == 40
    assert result.direction is Direction.SENDRECV and result.can_send and result.can_receive


def test_negotiated_audio_rtcp_defaults() -> None:
    offer = parse_sdp(YEALINK_OFFER)
    assert negotiated_audio(offer).remote_rtcp == ("10.0.0.23", 11797)
    muxed = parse_sdp(YEALINK_OFFER + "a=rtcp-mux\r\n")
    result = negotiated_audio(muxed)
    assert result.rtcp_mux and result.remote_rtcp == ("10.0.0.23", 11796)


def test_negotiated_audio_errors() -> None:
    offer = parse_sdp(CARRIER_OFFER.replace("RTP/AVP 8 0 18 101", "RTP/AVP 18"))
    with pytest.raises(NegotiationError, match="no common codec"):
        negotiated_audio(offer)
    rejected = parse_sdp(CARRIER_OFFER.replace("m=audio 21344", "m=audio 0"))
    with pytest.raises(NegotiationError, match="no active audio stream"):
        negotiated_audio(rejected)
    no_address = parse_sdp(CARRIER_OFFER.replace("c=IN IP4 203.0.113.12\r\n", ""))
    with pytest.raises(NegotiationError, match="connection address"):
        negotiated_audio(no_address)


def test_offer_answer_round_trip_between_two_of_our_stacks() -> None:
    offer = build_offer(["G722", "PCMA", "telephone-event"], "192.0.2.5", 40000, ptime=20)
    wire_offer = parse_sdp(offer.encode())
    result = answer(wire_offer, ["PCMA", "G722", "telephone-event"], "192.0.2.6", 42000, ptime=30)
    wire_answer = parse_sdp(result.encode())
    caller = negotiated_audio(wire_answer, offer)
    callee = negotiated_audio(wire_offer, result)
    assert caller.codec.encoding == callee.codec.encoding == "G722"
    assert caller.codec.codec is not None and caller.codec.codec.sample_rate == 16000
    assert (caller.remote_address, caller.remote_port, caller.ptime) == ("192.0.2.6", 42000, 30)
    assert (callee.remote_address, callee.remote_port, callee.ptime) == ("192.0.2.5", 40000, 20)
    assert caller.telephone_event_payload_type == callee.telephone_event_payload_type == 101
