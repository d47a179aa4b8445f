"""Header multi-map and typed header values: Via, name-addr, CSeq, parameters, quoted strings."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.errors import ParseError
from hotline.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    quote,
    split_list,
    unquote,
)
from hotline.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri

# --- Headers ------------------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_compact_forms_map_to_long_names() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a"), ("i", "abc@x"), ("call-id", "other"), ("X-Custom", "1")])
    assert headers.get("VIA") == "SIP/2.0/UDP a"
    assert headers.get("Call-ID") == "abc@x"
    assert headers.get_all("I") == ["abc@x", "other"]
    assert headers.get("x-custom") == "1"
    assert headers.items() == [
        ("Via", "SIP/2.0/UDP a"),
        ("Call-ID", "abc@x"),
        ("Call-ID", "other"),
        ("X-Custom", "1"),
    ]
    assert "CALL-ID" in headers and "i" in headers and "Route" not in headers
    assert headers.get("Route") is None and headers.get_all("Route") == []


@pytest.mark.parametrize(
    ("compact", "canonical"),
    [
        ("v", "Via"),
        ("f", "From"),
        ("t", "To"),
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("s", "Subject"),
        ("e", "Content-Encoding"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
        ("y", "Identity"),
        ("a", "Accept-Contact"),
        ("www-authenticate", "WWW-Authenticate"),
        ("cseq", "CSeq"),
        ("X-Unknown", "X-Unknown"),
    ],
)
def test_canonical_names(compact: str, canonical: str) -> None:
    assert canonical_name(compact) == canonical
    assert canonical_name(compact.upper()) == (canonical if compact != "X-Unknown" else "X-UNKNOWN")


def test_list_headers_split_into_elements_respecting_quotes_and_brackets() -> None:
    headers = Headers()
    headers.add("Contact", '"Doe, John" <sip:jd@a.example.com;x=1,2>;q=0.5, <sip:b@b.example.com>')
    headers.add("Contact", "sip:c@c.example.com;expires=60")
    headers.add("Allow", "INVITE,ACK ,  BYE,,")
    headers.add("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2")
    assert headers.get_all("Contact") == [
        '"Doe, John" <sip:jd@a.example.com;x=1,2>;q=0.5',
        "<sip:b@b.example.com>",
        "sip:c@c.example.com;expires=60",
    ]
    assert headers.get("Contact") == '"Doe, John" <sip:jd@a.example.com;x=1,2>;q=0.5'
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert len(headers.get_all("Via")) == 2


def test_credentials_and_other_single_headers_are_never_split() -> None:
    challenge = 'Digest realm="a,b", nonce="x", qop="auth,auth-int", algorithm=MD5'
    headers = Headers(
        [
            ("WWW-Authenticate", challenge),
            ("Authorization", 'Digest username="bob", uri="sip:a", response="f"'),
            ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
            ("Subject", "one, two"),
        ]
    )
    assert headers.get_all("WWW-Authenticate") == [challenge]
    assert headers.get("Authorization") == 'Digest username="bob", uri="sip:a", response="f"'
    assert headers.get("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert headers.get_all("Subject") == ["one, two"]


def test_split_list_never_raises_on_unbalanced_input() -> None:
    assert split_list('"abc, <sip:a>') == ['"abc, <sip:a>']
    assert split_list("<sip:a, b") == ["<sip:a, b"]
    assert split_list('a, "b\\", c", d') == ["a", '"b\\", c"', "d"]


def test_add_first_set_remove_copy() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP b"), ("From", "<sip:a@x>"), ("Via", "SIP/2.0/UDP c")])
    headers.add("Via", "SIP/2.0/UDP a", first=True)
    assert headers.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    headers.add("Route", "<sip:r>", first=True)  # none yet: goes on top
    assert headers.items()[0] == ("Route", "<sip:r>")
    copy = headers.copy()
    headers.set("via", "SIP/2.0/TCP z")
    assert headers.items() == [("Route", "<sip:r>"), ("Via", "SIP/2.0/TCP z"), ("From", "<sip:a@x>")]
    assert len(copy.get_all("Via")) == 3
    headers.set("Max-Forwards", "70")
    assert headers.items()[-1] == ("Max-Forwards", "70")
    headers.remove("ROUTE")
    headers.remove("Not-There")
    assert "Route" not in headers and len(headers) == 3
    assert headers == Headers([("v", "SIP/2.0/TCP z"), ("f", "<sip:a@x>"), ("Max-Forwards", "70")])
    assert headers != copy


def test_values_are_stripped_and_injection_is_refused() -> None:
    headers = Headers()
    headers.add("Subject", "  hello \t")
    assert headers.get("Subject") == "hello"
    with pytest.raises(ValueError):
        headers.add("Subject", "x\r\nVia: SIP/2.0/UDP evil")
    with pytest.raises(ValueError):
        headers.add("Bad Name", "x")
    with pytest.raises(ValueError):
        headers.set("Subject", "a\nb")


# --- quoted strings and parameters --------------------------------------------------------------------


def test_quote_and_unquote() -> None:
    assert quote('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    assert unquote('"say \\"hi\\" \\\\o/"') == 'say "hi" \\o/'
    assert unquote("token") == "token"
    assert quote("two\r\nlines") == '"two  lines"'
    for bad in ['"open', '"a" b', '"trailing\\"']:
        with pytest.raises(ParseError):
            unquote(bad)


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=40))
def test_quote_round_trip(text: str) -> None:
    assert unquote(quote(text)) == text


def test_parse_params_with_whitespace_quotes_and_flags() -> None:
    params = parse_params(' ; Expires = 3600 ;+sip.instance="<urn:uuid:1;2>" ; lr;received=[2001:db8::1]')
    assert params == {
        "expires": "3600",
        "+sip.instance": '"<urn:uuid:1;2>"',
        "lr": None,
        "received": "[2001:db8::1]",
    }
    assert parse_params("tag=a;tag=b") == {"tag": "a"}
    assert parse_params("") == {}


@pytest.mark.parametrize("text", ["a=", ";;a", "a b=1", "a=b c", 'a="x', 'a="x"y', "a=<x>", "=1", "a=b,c"])
def test_bad_params_raise(text: str) -> None:
    with pytest.raises(ParseError):
        parse_params(text)


# --- Via ----------------------------------------------------------------------------------------------


def test_via_parts() -> None:
    via = parse_via("SIP/2.0/udp pc33.atlanta.example.com:5066;branch=z9hG4bK776;rport;received=192.0.2.1")
    assert (via.transport, via.host, via.port) == ("UDP", "pc33.atlanta.example.com", 5066)
    assert via.branch == "z9hG4bK776"
    assert via.received == "192.0.2.1"
    assert via.rport == -1
    assert via.sent_by == "pc33.atlanta.example.com:5066"
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.example.com:5066;branch=z9hG4bK776;rport;received=192.0.2.1"


def test_via_rport_states() -> None:
    assert parse_via("SIP/2.0/UDP a;branch=z9hG4bK1").rport is None
    assert parse_via("SIP/2.0/UDP a;rport=5070").rport == 5070
    with pytest.raises(ParseError):
        _ = parse_via("SIP/2.0/UDP a;rport=99999").rport
    with pytest.raises(ParseError):
        _ = parse_via("SIP/2.0/UDP a;rport=x").rport


def test_via_with_lws_everywhere_the_grammar_allows_it() -> None:
    via = parse_via("SIP  /   2.0  / TCP     spindle.example.com :  6060 ;  branch  =   z9hG4bK9ikj8  ")
    assert (via.transport, via.host, via.port, via.branch) == (
        "TCP",
        "spindle.example.com",
        6060,
        "z9hG4bK9ikj8",
    )


def test_via_ipv6() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;received=[2001:db8::9:255]")
    assert (via.host, via.port) == ("2001:db8::9:1", 6050)
    assert via.received == "[2001:db8::9:255]"
    assert via.sent_by == "[2001:db8::9:1]:6050"
    assert parse_via(str(via)) == via


def test_via_constructed_by_keyword() -> None:
    via = Via(transport="tls", host="192.0.2.7", port=5061, params={"branch": "z9hG4bKx", "rport": None})
    assert str(via) == "SIP/2.0/TLS 192.0.2.7:5061;branch=z9hG4bKx;rport"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/3.0/UDP a",
        "HTTP/2.0/UDP a",
        "SIP/2.0 a",
        "SIP/2.0/U:DP a",
        "SIP/2.0/UDP a b",
        "SIP/2.0/UDP a:99999",
        "SIP/2.0/UDP 2001:db8::1",
        "SIP/2.0/UDP [2001:db8::1",
        "SIP/2.0/UDP a;branch=",
        "SIP/2.0/UDP a;;branch=1",
        "SIP/2.0/UDP a,SIP/2.0/UDP b",
    ],
)
def test_bad_via_raises(text: str) -> None:
    with pytest.raises(ParseError):
        parse_via(text)


# --- name-addr ----------------------------------------------------------------------------------------


def test_quoted_display_name_with_escapes() -> None:
    value = parse_name_addr('"J Rosenberg \\"Jr\\" \\\\" <sip:jdrosen@example.com>;tag=98asjd8')
    assert value.display == 'J Rosenberg "Jr" \\'
    assert isinstance(value.uri, SipURI) and value.uri.user == "jdrosen"
    assert value.tag == "98asjd8"


def test_name_addr_forms() -> None:
    assert parse_name_addr("Bob <sip:bob@biloxi.com>").display == "Bob"
    assert parse_name_addr("  Agent  201   <sip:201@pbx>").display == "Agent  201"
    assert parse_name_addr('"caller"<sip:caller@example.com>').display == "caller"  # no LWS before '<'
    assert parse_name_addr("<sip:bob@biloxi.com>").display is None
    assert parse_name_addr("Jürgen Müller <sip:j@example.de>").display == "Jürgen Müller"
    assert parse_name_addr('"" <sip:a@b>').display == ""
    tel = parse_name_addr("<tel:+15551234;phone-context=x>;tag=1")
    assert isinstance(tel.uri, TelURI) and tel.uri.params == {"phone-context": "x"} and tel.tag == "1"
    opaque = parse_name_addr("<http://www.example.com>;tag=9")
    assert opaque.uri == AbsoluteURI("http", "//www.example.com") and opaque.tag == "9"


def test_addr_spec_parameters_belong_to_the_header_but_name_addr_keeps_uri_parameters() -> None:
    bare = parse_name_addr("sip:alice@atlanta.com;tag=88sja8x ; expires = 60")
    assert bare.display is None
    assert bare.uri == parse_uri("sip:alice@atlanta.com")
    assert bare.params == {"tag": "88sja8x", "expires": "60"}
    bracketed = parse_name_addr("<sip:alice@atlanta.com;transport=tcp>;tag=88sja8x")
    assert isinstance(bracketed.uri, SipURI) and bracketed.uri.params == {"transport": "tcp"}
    assert bracketed.params == {"tag": "88sja8x"}


def test_contact_params_with_newlines_folded_away() -> None:
    value = parse_name_addr('"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ;'
                           "  secondparam ; q = 0.33")  # fmt: skip
    assert value.display == 'Quoted string ""'
    assert value.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",  # RFC 4475 baddn: needs quotes
        '"Mr. J. User <sip:j.user@example.com>',  # RFC 4475 quotbal: unbalanced quote
        '"Mr J" sip:j@example.com',
        "<sip:j@example.com",
        "<sip:j@example.com> junk",
        "<sip:j@example.com>;tag=",
        "sip:user@example.com?Route=%3Csip:example.com%3E",  # RFC 4475 regbadct: '?' needs <>
        "sip:a@example.com, sip:b@example.com",
        "<not a uri>",
        "<>",
    ],
)
def test_bad_name_addr_raises(text: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(text)


def test_name_addr_serializes_and_round_trips() -> None:
    value = NameAddr('Alice "A"', parse_uri("sip:alice@atlanta.com;transport=tcp"), {"tag": "1928"})
    text = str(value)
    assert text == '"Alice \\"A\\"" <sip:alice@atlanta.com;transport=tcp>;tag=1928'
    assert parse_name_addr(text) == value
    assert str(NameAddr(None, parse_uri("sip:b@c"), {})) == "<sip:b@c>"


# --- CSeq ---------------------------------------------------------------------------------------------


def test_cseq() -> None:
    assert parse_cseq("314159 INVITE") == CSeq(314159, "INVITE")
    assert parse_cseq("0009 \t INVITE ") == CSeq(9, "INVITE")
    assert parse_cseq("4294967295 RE%47IST%45R") == CSeq(2**32 - 1, "RE%47IST%45R")
    assert str(CSeq(1, "BYE")) == "1 BYE"


@pytest.mark.parametrize(
    "text",
    ["", "1", "INVITE", "-1 INVITE", "1x INVITE", "4294967296 INVITE", "1 INV ITE", "1 INVITE;", "١ INVITE"],
)
def test_bad_cseq_raises(text: str) -> None:
    with pytest.raises(ParseError):
        parse_cseq(text)


# --- round trips --------------------------------------------------------------------------------------

_TOKEN = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)
_PARAM_VALUE = st.one_of(
    st.none(),
    st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]{1,16}", fullmatch=True),
    st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=16).map(quote),
)
_PARAMS = st.dictionaries(_TOKEN.map(str.lower), _PARAM_VALUE, max_size=4)
_URI = st.sampled_from(
    [
        "sip:alice@atlanta.example.com",
        "sips:bob@[2001:db8::1]:5061;transport=tcp",
        "sip:+15551234567@gw.example.net;user=phone",
        "tel:+1-555-0100",
        "sip:pbx.example.com;lr",
        "urn:service:sos",
    ]
).map(parse_uri)


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(
    transport=_TOKEN.map(str.upper),
    host=st.sampled_from(["a.example.com", "192.0.2.1", "2001:db8::7", "host-1"]),
    port=st.none() | st.integers(0, 65535),
    params=_PARAMS,
)
def test_via_round_trip(transport: str, host: str, port: int | None, params: dict[str, str | None]) -> None:
    via = Via(transport, host, port, params)
    assert parse_via(str(via)) == via


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(
    display=st.none() | st.text(alphabet=st.characters(blacklist_characters="\r\n"), min_size=1, max_size=20),
    uri=_URI,
    params=_PARAMS,
)
def test_name_addr_round_trip(display: str | None, uri: SipURI, params: dict[str, str | None]) -> None:
    value = NameAddr(display, uri, params)
    assert parse_name_addr(str(value)) == value


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(st.text(max_size=80))
def test_typed_parsers_raise_only_parse_error(text: str) -> None:
    for parser in (parse_via, parse_name_addr, parse_cseq, parse_params, unquote):
        with contextlib.suppress(ParseError):
            parser(text)
