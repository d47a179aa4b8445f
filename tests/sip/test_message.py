"""Whole SIP messages: parsing (tolerant and strict cases, inspired by RFC 4475), serialization, typed
accessors, make_response (RFC 3261 §8.2.6), identifiers, and TCP framing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.errors import ParseError
from hotline.sip.headers import Headers, quote
from hotline.sip.message import (
    REASONS,
    Request,
    Response,
    StreamFramer,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse,
)
from hotline.sip.uri import SipURI, TelURI, parse_uri

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def crlf(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def invite(*extra: str, body: bytes = SDP, length: int | None = None) -> bytes:
    return crlf(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.example.com>",
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body) if length is None else length}",
        *extra,
        body=body,
    )


def request(data: bytes) -> Request:
    message = parse(data)
    assert isinstance(message, Request)
    return message


def response(data: bytes) -> Response:
    message = parse(data)
    assert isinstance(message, Response)
    return message


def parse_error(data: bytes) -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse(data)
    return caught.value


# --- parsing what phones send -------------------------------------------------------------------------


def test_invite_with_sdp() -> None:
    message = request(invite())
    assert message.method == "INVITE"
    assert message.uri == parse_uri("sip:bob@biloxi.example.com")
    assert message.body == SDP
    assert message.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (message.cseq.number, message.cseq.method) == (314159, "INVITE")
    assert message.via.branch == "z9hG4bKnashds8"
    assert message.from_.display == "Alice" and message.from_.tag == "1928301774"
    assert message.to.tag is None and message.to.display == "Bob"
    assert [str(c.uri) for c in message.contacts] == ["sip:alice@pc33.atlanta.example.com"]
    assert message.max_forwards == 70
    assert message.content_type == "application/sdp"
    assert message.expires is None
    message.validate()


def test_response_with_utf8_reason_and_multiple_vias() -> None:
    data = crlf(
        "SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое",
        "Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp",
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKq",
        "Call-ID: unreason.1234ksdfak3j2erwedfsASdf",
        "CSeq: 35 INVITE",
        "From: sip:user@example.com;tag=11141343",
        "To: sip:user@example.edu;tag=2229",
        "Content-Length: 0",
    )
    message = response(data)
    assert message.status == 200
    assert message.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert [via.host for via in message.vias] == ["192.0.2.198", "proxy.example.com", "192.0.2.1"]
    assert message.via.transport == "UDP"
    assert message.from_.tag == "11141343" and message.to.tag == "2229"
    assert message.body == b""


def test_response_without_reason_phrase() -> None:
    for start in ("SIP/2.0 100 ", "SIP/2.0 100"):
        message = response(
            crlf(
                start,
                "Via: SIP/2.0/UDP a;branch=z9hG4bK1",
                "Call-ID: x",
                "CSeq: 1 INVITE",
                "From: <sip:a@b>;tag=1",
                "To: <sip:c@d>",
            )
        )
        assert (message.status, message.reason) == (100, "Trying")  # the default phrase fills the gap


def test_tortuous_whitespace_folding_and_compact_forms() -> None:
    # in the spirit of RFC 4475 wsinv, with our own content
    data = (
        b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
        b"TO :\r\n"
        b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
        b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
        b"  ;\r\n"
        b"  tag = 98asjd8\r\n"
        b"MaX-fOrWaRdS: 0068\r\n"
        b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
        b"Content-Length   : 4\r\n"
        b"cseq: 0009\r\n"
        b"  INVITE\r\n"
        b"Via  : SIP  /   2.0\r\n"
        b" /UDP\r\n"
        b"    192.0.2.2;branch=390skdjuw\r\n"
        b"s :\r\n"
        b"NewFangledHeader:   newfangled value\r\n"
        b" continued newfangled value\r\n"
        b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
        b"c: application/sdp\r\n"
        b"Route:\r\n"
        b" <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
        b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
        b"  branch  =   z9hG4bK9ikj8  ,\r\n"
        b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
        b" z9hG4bK30239\r\n"
        b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
        b"      newvalue ;\r\n"
        b"  secondparam ; q = 0.33\r\n"
        b"\r\n"
        b"v=0\n"
    )
    message = request(data)
    assert message.to.tag == "1918181833n"
    assert message.from_.display == 'J Rosenberg \\"' and message.from_.tag == "98asjd8"
    assert message.max_forwards == 68
    assert message.cseq.number == 9 and message.cseq.method == "INVITE"
    assert [(via.transport, via.host, via.branch) for via in message.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert message.headers.get("Subject") == ""
    assert message.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert message.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert message.content_type == "application/sdp"
    [contact] = message.contacts
    assert contact.display == 'Quoted string ""' and contact.params["q"] == "0.33"
    assert isinstance(message.uri, SipURI) and message.uri.params == {"unknownparam": None}
    assert message.body == b"v=0\n"
    message.validate()
    # serialized with long names, one line per header, and parsed back the same
    encoded = message.encode()
    assert b"\r\nContent-Type: application/sdp\r\n" in encoded and b"\r\n " not in encoded
    assert parse(encoded) == message


def test_lf_only_lines_leading_crlf_lowercase_names_and_missing_max_forwards() -> None:
    data = (
        b"\r\n\r\nOPTIONS sip:pbx.example.com SIP/2.0\n"
        b"via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1;rport\n"
        b"to: <sip:pbx.example.com>\n"
        b"from: <sip:probe@192.0.2.9>;tag=a   \n"
        b"call-id: 1@192.0.2.9\n"
        b"cseq: 1 OPTIONS\t\n"
        b"\n"
    )
    message = request(data)
    assert message.method == "OPTIONS"
    assert message.max_forwards is None
    assert message.from_.tag == "a"
    assert message.cseq.method == "OPTIONS"
    assert message.headers.items()[0] == ("Via", "SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK1;rport")
    assert message.body == b""


def test_the_first_empty_line_ends_the_headers_whatever_the_line_ends() -> None:
    head = b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\n"
    head += b"To: <sip:a@b>\nCall-ID: c\nCSeq: 1 OPTIONS\n"
    assert request(head + b"\nbody\r\n\r\nmore").body == b"body\r\n\r\nmore"
    assert request(head + b"\r\nbody\n\nmore").body == b"body\n\nmore"
    crlf_head = head.replace(b"\n", b"\r\n")
    assert request(crlf_head + b"\r\nx\n\ny").body == b"x\n\ny"


def test_syntax_errors_carry_no_message() -> None:
    assert parse_error(invite().replace(b"Alice", b"Al\x01ce")).message is None
    assert parse_error(invite().replace(b"Max-Forwards: 70", b"Max-Forwards 70")).message is None


def test_mixed_line_endings_and_extra_spaces_in_the_request_line() -> None:
    data = (
        b"INVITE  sip:bob@example.com   SIP/2.0 \r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\n"
        b"To: <sip:bob@example.com>\r\n"
        b"From: <sip:a@example.com>;tag=x\n"
        b"Call-ID: q\r\n"
        b"CSeq: 2 INVITE\n"
        b"\r\n"
        b"body"
    )
    message = request(data)
    assert message.uri == parse_uri("sip:bob@example.com")
    assert message.body == b"body"


def test_unusual_method_token_and_header_names() -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    data = crlf(
        f"{method} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com SIP/2.0",
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        "To: <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
        '"\\"\\"" ;tag=_token~1\'+`*%!-.',
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        f"CSeq: 139122385 {method}",
        "Max-Forwards: 255",
        "extensionHeader-!.%*+_`'~:\ufeff大停電",
    )
    message = request(data)
    assert message.method == method
    assert message.cseq.method == method
    assert message.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert message.from_.display == "token1~` token2'+_ token3*%!.-"
    assert message.from_.params["fromparam''~+*_!.-%"] == '"\\"\\""'
    assert message.from_.tag == "_token~1'+`*%!-."
    assert message.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert message.headers.get("EXTENSIONHEADER-!.%*+_`'~") == "\ufeff大停電"
    assert message.via.branch == "z9hG4bK-.!%66*_+`'~"


def test_escaped_method_is_its_own_method() -> None:
    data = crlf(
        "RE%47IST%45R sip:registrar.example.com SIP/2.0",
        'To: "%Z%45" <sip:resource@example.com>',
        'From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23',
        "Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
        "Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234",
        "CSeq: 29344 RE%47IST%45R",
        "Max-Forwards: 70",
        "Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
        "Content-Length: 0",
    )
    message = request(data)
    assert message.method == "RE%47IST%45R"
    assert message.to.display == "%Z%45"
    [contact] = message.contacts
    assert contact.uri.user == "caller"
    assert isinstance(contact.uri, SipURI) and contact.uri.params == {"lr": None, "name": "value%41"}


def test_novel_schemes_in_headers_and_tel_request_uri() -> None:
    data = crlf(
        "OPTIONS tel:+1-201-555-0123 SIP/2.0",
        "Via: SIP/2.0/UDP host4.example.com;branch=z9hG4bKkdju43234",
        "To: soap.beep://192.0.2.103:3002",
        "From: <http://www.example.com>;tag=bkfa",
        "Call-ID: novelsc.asdfasser0q239nwsdfasdkl34",
        "CSeq: 3923423 OPTIONS",
        "Max-Forwards: 7",
    )
    message = request(data)
    assert isinstance(message.uri, TelURI)
    assert message.to.uri.scheme == "soap.beep"  # type: ignore[union-attr]
    assert str(message.from_.uri) == "http://www.example.com"


def test_multipart_body_is_kept_as_bytes() -> None:
    body = (
        b"--boundary42\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n"
        b"--boundary42\r\nContent-Type: image/gif\r\n\r\nGIF89a\x00\xff\xfe\r\n\x00\r\n\r\n"
        b"--boundary42--\r\n"
    )
    data = invite("MIME-Version: 1.0", body=body).replace(
        b"Content-Type: application/sdp\r\nContent-Length",
        b'Content-Type: multipart/mixed;boundary="boundary42"\r\nContent-Length',
    )
    message = request(data)
    assert message.body == body
    assert message.content_type == "multipart/mixed"
    assert message.headers.get("Content-Type") == 'multipart/mixed;boundary="boundary42"'


def test_bytes_beyond_content_length_are_dropped_and_missing_length_takes_the_rest() -> None:
    two = invite(body=b"v=0\r\n") + invite(body=b"v=0\r\n")
    assert request(two).body == b"v=0\r\n"
    without_length = invite(body=b"abc").replace(b"Content-Length: 3\r\n", b"")
    assert request(without_length).body == b"abc"
    assert request(invite(body=b"abcdef", length=2)).body == b"ab"


def test_non_ascii_utf8_display_names_are_fine_but_body_is_not_decoded() -> None:
    data = invite(body=b"\xff\xfe\x00binary").replace(b'"Alice"', '"Zoë Ångström"'.encode())
    message = request(data)
    assert message.from_.display == "Zoë Ångström"
    assert message.body == b"\xff\xfe\x00binary"


# --- rejections ---------------------------------------------------------------------------------------


def test_unsupported_version_is_505_and_keeps_the_message_for_the_answer() -> None:
    error = parse_error(invite().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1))
    assert error.status == 505
    assert isinstance(error.message, Request)
    answer = make_response(error.message, error.status)
    assert answer.encode().startswith(b"SIP/2.0 505 Version Not Supported\r\n")
    assert parse(answer.encode()).call_id == "a84b4c76e66710@pc33.atlanta.example.com"


def test_unknown_request_uri_scheme_is_416() -> None:
    data = invite().replace(
        b"INVITE sip:bob@biloxi.example.com", b"INVITE nobodyKnowsThisScheme:totallyopaque"
    )
    error = parse_error(data)
    assert error.status == 416
    assert isinstance(error.message, Request)


def test_oversized_datagram_is_513() -> None:
    data = invite(body=b"a" * 70000)
    error = parse_error(data)
    assert error.status == 513 and error.message is None
    assert request(invite(body=b"a" * 60000)).body == b"a" * 60000
    assert parse(data, max_size=1 << 20).body == b"a" * 70000


def test_cseq_method_mismatch_is_400_or_501_for_an_unknown_method() -> None:
    error = parse_error(invite().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK"))
    assert error.status == 400 and "CSeq" in error.reason
    unknown = invite().replace(b"INVITE sip:", b"NEWMETHOD sip:")
    assert parse_error(unknown).status == 501


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_400(header: str) -> None:
    lines = invite().split(b"\r\n")
    data = b"\r\n".join(line for line in lines if not line.startswith(header.encode() + b":"))
    error = parse_error(data)
    assert error.status == 400 and header in error.reason
    assert error.message is not None


@pytest.mark.parametrize(
    "extra",
    [
        "Call-ID: second@x",
        "From: <sip:b@c>;tag=2",
        "To: <sip:b@c>",
        "CSeq: 2 INVITE",
        "Max-Forwards: 70",
        "l: 3",
        "Content-Type: text/plain",
    ],
)
def test_repeated_single_value_header_is_400(extra: str) -> None:
    assert "more than one" in parse_error(invite(extra)).reason


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (invite(length=len(SDP) + 1), "exceeds"),
        (invite(length=-1), "Content-Length"),
        (invite().replace(b"Content-Length: ", b"Content-Length: 1e3"), "Content-Length"),
        (invite().replace(b"Content-Length: ", b"Content-Length: 99999999999999999999"), "Content-Length"),
        (invite().replace(b"Content-Length: ", "Content-Length: ١٢".encode()), "Content-Length"),
        (
            invite().replace(b"INVITE sip:bob@biloxi.example.com", b"INVITE <sip:bob@biloxi.example.com>"),
            "URI",
        ),
        (
            invite().replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@biloxi.example.com; lr SIP"),
            "request line",
        ),
        (
            invite().replace(b"sip:bob@biloxi.example.com SIP", b"sip:bob@biloxi.example.com?Route=x SIP"),
            "headers",
        ),
        (invite().replace(b"INVITE sip", b"INV@ITE sip"), "method"),
        (invite().replace(b"SIP/2.0\r\n", b"HTTP/1.1\r\n", 1), "request line"),
        (invite().replace(b"Alice", b"Al\xe9ce"), "UTF-8"),
        (invite().replace(b"Alice", b"Al\x01ce"), "control"),
        (invite().replace(b"Alice", b"Al\rce"), "control"),
        (invite().replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "colon"),
        (invite().replace(b"Max-Forwards: 70", b"Max Forwards: 70"), "header name"),
        (b" " + invite(), "start line"),
        (invite().replace(b"\r\n\r\n", b"\r\n"), "empty line"),
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (b"SIP/2.0 2000 OK\r\n\r\n", "status"),
        (b"SIP/2.0 099 OK\r\n\r\n", "status"),
        (b"SIP/2.0 4294967301 OK\r\n\r\n", "status"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data: bytes, fragment: str) -> None:
    error = parse_error(data)
    assert fragment.lower() in error.reason.lower()
    assert error.status == 400


def test_folded_line_before_any_header_is_rejected() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\n continued\r\nVia: SIP/2.0/UDP a\r\n\r\n"
    assert "continuation" in parse_error(data).reason


def test_accessors_raise_parse_error_for_malformed_values_and_validate_reports_the_message() -> None:
    message = request(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 300"))
    with pytest.raises(ParseError):
        _ = message.max_forwards
    with pytest.raises(ParseError) as caught:
        message.validate()
    assert caught.value.message is message
    broken_from = request(invite().replace(b'"Alice" <sip:', b'"Alice <sip:'))
    with pytest.raises(ParseError):
        _ = broken_from.from_
    broken_via = request(invite().replace(b"SIP/2.0/UDP pc33", b"SIP/2.0/UDP pc33 x"))
    with pytest.raises(ParseError):
        _ = broken_via.vias
    no_via = Request("OPTIONS", parse_uri("sip:a@b"))
    with pytest.raises(ParseError):
        _ = no_via.via
    with pytest.raises(ParseError):
        _ = no_via.vias
    with pytest.raises(ParseError):
        _ = no_via.call_id


def test_expires_contacts_wildcard_and_content_type() -> None:
    register = crlf(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKr",
        "To: <sip:201@pbx.example.com>",
        "From: <sip:201@pbx.example.com>;tag=1",
        "Call-ID: reg1",
        "CSeq: 2 REGISTER",
        "Contact: *",
        "Expires: 0",
        "Content-Type: Application/SDP ; charset=utf-8",
    )
    message = request(register)
    assert message.contact_wildcard and message.contacts == []
    assert message.expires == 0
    assert message.content_type == "application/sdp"
    huge = request(register.replace(b"Expires: 0", b"Expires: 280297596632815"))
    assert huge.expires == 2**32 - 1
    mixed = request(register.replace(b"Contact: *", b"Contact: *, <sip:a@b>"))
    assert not mixed.contact_wildcard
    with pytest.raises(ParseError):
        _ = mixed.contacts
    with pytest.raises(ParseError):
        _ = request(register.replace(b"Expires: 0", b"Expires: soon")).expires
    with pytest.raises(ParseError):
        _ = request(register.replace(b"Application/SDP", b"sdp")).content_type


# --- serialization ------------------------------------------------------------------------------------


def test_response_reason_defaults_from_the_status() -> None:
    assert Response(180).reason == "Ringing"
    assert Response(299).reason == "OK"
    assert Response(486, "Agent Busy").reason == "Agent Busy"
    assert Response(180).encode().startswith(b"SIP/2.0 180 Ringing\r\n")


def test_encode_writes_content_length_from_the_body() -> None:
    message = request(invite())
    message.body = b"v=1\r\n"
    encoded = message.encode()
    assert encoded.endswith(b"Content-Length: 5\r\n\r\nv=1\r\n")
    assert encoded.count(b"Content-Length") == 1
    built = Request("OPTIONS", parse_uri("sip:pbx.example.com"), Headers([("Call-ID", "x")]))
    assert built.encode() == b"OPTIONS sip:pbx.example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"


def test_encode_parse_round_trip_keeps_order_and_values() -> None:
    message = request(invite("X-Custom: keep me", "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>"))
    again = parse(message.encode())
    assert again == message
    assert again.headers.items() == message.headers.items()


def test_copy_is_independent() -> None:
    message = request(invite())
    copy = message.copy()
    copy.headers.set("Max-Forwards", "69")
    assert message.max_forwards == 70 and copy.max_forwards == 69
    assert copy.uri == message.uri and copy.body == message.body


# --- make_response ------------------------------------------------------------------------------------


def test_make_response_copies_what_8_2_6_says() -> None:
    data = invite(
        "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp2",
        "Record-Route: <sip:proxy.example.com;lr>",
        "Timestamp: 54.3",
    )
    message = request(data)
    ringing = make_response(message, 180, to_tag="as8d7f")
    assert ringing.reason == "Ringing"
    assert ringing.headers.get_all("Via") == [
        "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8",
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp2",
    ]
    assert ringing.to.tag == "as8d7f" and ringing.to.display == "Bob"
    assert ringing.from_ == message.from_
    assert ringing.call_id == message.call_id and ringing.cseq == message.cseq
    assert not {"Record-Route", "Contact", "Timestamp"} & {name for name, _ in ringing.headers.items()}
    assert "Timestamp" in make_response(message, 100).headers
    assert make_response(message, 100).to.tag is None
    parsed = response(ringing.encode())
    assert parsed.to.tag == "as8d7f"


def test_make_response_keeps_an_existing_to_tag_and_adds_headers_and_body() -> None:
    message = request(
        invite().replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: sip:bob@biloxi.example.com;tag=old")
    )
    extra = [("Contact", "<sip:bob@192.0.2.4>"), ("Content-Type", "application/sdp")]
    ok = make_response(message, 200, "Fine", to_tag="new", headers=extra, body=SDP)
    assert ok.to.tag == "old"
    assert ok.reason == "Fine"
    assert ok.headers.get("Contact") == "<sip:bob@192.0.2.4>"
    assert response(ok.encode()).body == SDP
    busy = make_response(message, 486, headers={"Retry-After": "60"})
    assert busy.reason == "Busy Here" and busy.headers.get("Retry-After") == "60"
    assert make_response(message, 499).reason == "Client Error"
    assert make_response(message, 200, to_tag="x").to.tag == "old"
    with pytest.raises(ValueError):
        make_response(message, 99)
    with pytest.raises(ValueError):
        make_response(message, 200, to_tag="bad tag")


def test_reasons_cover_the_rfc_3261_codes() -> None:
    for code in (
        100,
        180,
        181,
        182,
        183,
        200,
        300,
        301,
        302,
        305,
        380,
        400,
        401,
        402,
        403,
        404,
        405,
        406,
        407,
    ):
        assert code in REASONS
    for code in (408, 410, 413, 414, 415, 416, 420, 421, 423, 480, 481, 482, 483, 484, 485, 486, 487, 488):
        assert code in REASONS
    for code in (491, 493, 500, 501, 502, 503, 504, 505, 513, 600, 603, 604, 606):
        assert code in REASONS


def test_identifiers_are_unique_tokens() -> None:
    branches = {new_branch() for _ in range(200)}
    assert len(branches) == 200 and all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)
    tags = {new_tag() for _ in range(200)} | {new_call_id() for _ in range(200)}
    assert len(tags) == 400
    assert all(re.fullmatch(r"[A-Za-z0-9\-.!%*_+`'~]{8,}", value) for value in tags | branches)


# --- stream framing -----------------------------------------------------------------------------------


def test_framer_cuts_a_stream_fed_byte_by_byte() -> None:
    stream = invite() + invite(body=b"") + invite(body=b"xyz")
    framer = StreamFramer()
    messages: list[bytes] = []
    for index in range(len(stream)):
        messages += framer.feed(stream[index : index + 1])
    assert messages == [invite(), invite(body=b""), invite(body=b"xyz")]
    assert framer.buffered == 0


def test_framer_handles_many_messages_in_one_chunk_and_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.keepalive_pings == 1
    assert framer.feed(b"\r\n") == [] and framer.feed(b"\r\n" + invite() + b"\r\n\r\n" + invite()[:10]) == [
        invite()
    ]
    assert framer.keepalive_pings == 3
    assert framer.feed(invite()[10:]) == [invite()]
    assert framer.feed(b"\r\n") == []
    assert framer.keepalive_pings == 3


def test_framer_accepts_lf_only_messages() -> None:
    lf = invite(body=b"a\n").replace(b"\r\n", b"\n")
    framer = StreamFramer()
    assert framer.feed(lf[:30]) == []
    assert framer.feed(lf[30:] + lf) == [lf, lf]
    assert request(lf).body == b"a\n"


def test_framer_requires_content_length_and_the_error_is_final() -> None:
    framer = StreamFramer()
    without = invite().replace(b"Content-Length: ", b"X-Length: ")
    with pytest.raises(ParseError) as caught:
        framer.feed(without)
    assert "Content-Length" in caught.value.reason
    with pytest.raises(ParseError):
        framer.feed(invite())
    assert framer.error is caught.value


def test_framer_returns_complete_messages_before_an_error_then_raises() -> None:
    framer = StreamFramer()
    assert framer.feed(invite() + invite(length=-5)) == [invite()]
    assert framer.error is not None
    with pytest.raises(ParseError):
        framer.feed(b"")


def test_framer_limits_header_block_and_message_size() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError) as caught:
        for _ in range(100):
            framer.feed(b"X-Filler: " + b"a" * 1000 + b"\r\n")
    assert caught.value.status == 513
    big = StreamFramer()
    with pytest.raises(ParseError) as caught:
        big.feed(invite(length=70000))
    assert caught.value.status == 513
    assert StreamFramer(max_message_size=1 << 20).feed(invite(body=b"b" * 70000)) == [
        invite(body=b"b" * 70000)
    ]


def test_framer_conflicting_or_folded_content_length() -> None:
    with pytest.raises(ParseError):
        StreamFramer().feed(invite("l: 7"))
    folded = invite().replace(b"Content-Length: ", b"Content-Length:\r\n ")
    assert StreamFramer().feed(folded) == [folded]
    assert request(folded).body == SDP


# --- round trips --------------------------------------------------------------------------------------

_TOKEN = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,10}", fullmatch=True)
_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x85\xa0"), max_size=30
).map(lambda text: text.strip(" \t"))
_USER = st.from_regex(r"[a-z0-9+.\-]{1,10}", fullmatch=True)
_EXTRA_NAMES = st.sampled_from(["Subject", "User-Agent", "X-Account", "Organization", "Warning", "P-Note"])


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["INVITE", "REGISTER", "BYE", "OPTIONS"]) | _TOKEN)
    headers = Headers()
    for _ in range(draw(st.integers(1, 3))):
        headers.add(
            "Via",
            f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} h.example.com;branch=z9hG4bK{draw(_TOKEN)}",
        )
    headers.add("From", f"{quote(draw(_VALUE))} <sip:{draw(_USER)}@a.example.com>;tag={draw(_TOKEN)}")
    headers.add("To", f"<sip:{draw(_USER)}@b.example.com>")
    headers.add("Call-ID", draw(_TOKEN))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for _ in range(draw(st.integers(0, 4))):
        headers.add(draw(_EXTRA_NAMES | _TOKEN.map(lambda token: "X-" + token)), draw(_VALUE))
    body = draw(st.binary(max_size=200))
    headers.add("Content-Length", str(len(body)))
    if draw(st.booleans()):
        uri = SipURI(user=draw(_VALUE.filter(bool)), host="example.com")
        return Request(method, uri, headers, body)
    status = draw(st.integers(100, 699))
    return Response(status, draw(_VALUE), headers, body)


@settings(max_examples=150, deadline=None)
@given(messages())
def test_structured_messages_survive_encode_and_parse(message: Request | Response) -> None:
    encoded = message.encode()
    parsed = parse(encoded)
    assert parsed == message
    assert parsed.encode() == encoded
    framer = StreamFramer()
    assert framer.feed(encoded[:7]) + framer.feed(encoded[7:]) == [encoded]
