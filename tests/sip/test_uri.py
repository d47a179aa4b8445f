"""SIP/SIPS/tel URIs: parsing, escaping, IPv6, serialization round trips (RFC 3261 §19.1, RFC 3966)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.errors import ParseError
from hotline.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


def test_full_sip_uri_splits_into_its_parts() -> None:
    uri = sip("sip:alice:secret@atlanta.example.com:5070;transport=TCP;lr;maddr=239.255.255.1?subject=hi&x=1")
    assert uri.scheme == "sip"
    assert (uri.user, uri.password) == ("alice", "secret")
    assert (uri.host, uri.port) == ("atlanta.example.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"}
    assert uri.headers == {"subject": "hi", "x": "1"}
    assert uri.transport == "tcp"


def test_parsed_uri_serializes_to_the_exact_text_it_came_from() -> None:
    text = "SIP:Alice@Atlanta.Example.COM;Transport=udp;LR"
    uri = sip(text)
    assert str(uri) == text
    assert uri.scheme == "sip"
    assert uri.params == {"transport": "udp", "lr": None}


def test_host_only_and_default_transport() -> None:
    uri = sip("sip:pbx.example.com")
    assert uri.user is None and uri.password is None and uri.port is None
    assert uri.transport == "udp"
    assert sip("sips:pbx.example.com").transport == "tls"
    assert sip("sip:pbx.example.com;transport=ws").transport == "ws"


def test_constructed_uri_serializes_with_brackets_and_escapes() -> None:
    uri = SipURI(
        user="john doe", host="2001:db8::1", port=5060, params={"transport": "tcp", "lr": None}, headers={}
    )
    assert str(uri) == "sip:john%20doe@[2001:db8::1]:5060;transport=tcp;lr"
    assert parse_uri(str(uri)) == uri


def test_ipv6_references() -> None:
    uri = sip("sip:[2001:db8::10]:5070")
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    # RFC 4475 ipv6: the last group inside brackets is an address part, not a port
    assert sip("sip:user@[2001:db8::10:5070]").host == "2001:db8::10:5070"
    assert sip("sip:[::ffff:192.0.2.1]").host == "::ffff:192.0.2.1"


@pytest.mark.parametrize(
    "text",
    [
        "sip:2001:db8::10",  # IPv6 without brackets
        "sip:[2001:db8:::192.0.2.1]",  # three colons
        "sip:[2001:db8::10",  # unterminated
        "sip:[2001:db8::10]x",
        "sip:[fe80::1%25eth0]",  # zone ids have no place here
        "sip:[example.com]",
    ],
)
def test_bad_ipv6_references_are_rejected(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400


def test_escapes_are_decoded_and_reapplied() -> None:
    uri = sip("sip:%61lice@atlanta.com;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "alice"
    assert uri.params == {"lr": None, "name": "value%41"}
    assert str(uri.with_(port=5060)) == "sip:alice@atlanta.com:5060;lr;name=value%2541"


def test_escaped_at_sign_and_semicolon_in_user_part() -> None:
    # RFC 4475 semiuri: the user part holds ';' and an escaped '@'
    uri = sip("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == {}
    assert str(uri.with_(port=5062)) == "sip:user;par=u%40example.net@example.com:5062"


def test_escaped_nul_in_user_part() -> None:
    assert sip("sip:null-%00-null@example.com").user == "null-\x00-null"


def test_unusual_but_legal_user_and_password() -> None:
    # the characters RFC 4475 intmeth packs into a userinfo
    uri = sip(
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
        "@example.com"
    )
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"


def test_unescaped_hash_in_user_part_is_tolerated() -> None:
    assert sip("sip:*31#201@pbx.example.com").user == "*31#201"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@example.com",
        ":alice@example.com",
        "1sip:alice@example.com",
        "sip:",
        "sip:alice@",
        "sip:@example.com",
        "sip:alice@example.com:",
        "sip:alice@example.com:abc",
        "sip:alice@example.com:65536",
        "sip:alice@example.com:123456",
        "sip:alice@exa mple.com",
        "sip:alice@example.com>",
        "<sip:alice@example.com>",
        'sip:"alice"@example.com',
        "sip:alice@ex@ample.com",
        "sip:alice@256.1.1.1",
        "sip:alice@1.2.3",
        "sip:alice@-example.com",
        "sip:alice@example.com;lr=",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com?=x",
        "sip:al%ice@example.com",
        "sip:alice%4@example.com",
        "sip:alicé@example.com",
        "tel:",
        "tel:+1 555",
        "tel:abc-xyz",
        "tel:+-",
        "http:",
    ],
)
def test_malformed_uris_raise_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com;ext=22")
    assert isinstance(uri, TelURI)
    assert uri.number == "+1-201-555-0123"
    assert uri.params == {"phone-context": "example.com", "ext": "22"}
    assert uri.user == "+1-201-555-0123" and uri.host == ""
    assert str(TelURI("7042", {"phone-context": "+1-201"})) == "tel:7042;phone-context=+1-201"
    assert parse_uri("tel:*69#").user == "*69#"


def test_other_schemes_are_kept_opaque() -> None:
    uri = parse_uri("http://www.example.com/a?b=c")
    assert uri == AbsoluteURI("http", "//www.example.com/a?b=c")
    assert str(uri) == "http://www.example.com/a?b=c"
    assert uri.user is None and uri.host == ""
    assert parse_uri("URN:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6") == AbsoluteURI(
        "urn", "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
    )
    assert isinstance(parse_uri("soap.beep://192.0.2.103:3002"), AbsoluteURI)


def test_uris_are_hashable_and_compare_by_value() -> None:
    parsed = sip("sip:bob@biloxi.example.com;transport=tcp")
    built = SipURI("sip", "bob", None, "biloxi.example.com", None, {"transport": "tcp"}, {})
    assert parsed == built
    assert {parsed, built} == {built}
    assert parsed != sip("sip:bob@biloxi.example.com")


def test_with_returns_a_changed_copy() -> None:
    uri = sip("sip:bob@biloxi.example.com;transport=tcp")
    moved = uri.with_(host="192.0.2.4", port=5080)
    assert str(moved) == "sip:bob@192.0.2.4:5080;transport=tcp"
    assert str(uri) == "sip:bob@biloxi.example.com;transport=tcp"


# --- round trips --------------------------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True)
_HOSTNAME = st.builds(
    lambda labels, top: ".".join([*labels, top]),
    st.lists(_LABEL, max_size=3),
    st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True),
)
_HOST = st.one_of(
    _HOSTNAME,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: ipaddress.IPv6Address(address).compressed),
)
_PARAM_NAME = st.from_regex(r"[a-z0-9\-_.!~*'+`]{1,12}", fullmatch=True)
_TEXT = st.text(min_size=1, max_size=20)


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.none() | _TEXT,
    password=st.none() | _TEXT,
    host=_HOST,
    port=st.none() | st.integers(0, 65535),
    params=st.dictionaries(_PARAM_NAME, st.none() | _TEXT, max_size=4),
    headers=st.dictionaries(_TEXT, st.text(max_size=20), max_size=3),
)
def test_sip_uri_round_trip(
    scheme: str,
    user: str | None,
    password: str | None,
    host: str,
    port: int | None,
    params: dict[str, str | None],
    headers: dict[str, str],
) -> None:
    uri = SipURI(scheme, user, None if user is None else password, host, port, params, headers)
    text = str(uri)
    parsed = parse_uri(text)
    assert parsed == uri
    assert str(parsed) == text


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(
    number=st.from_regex(r"\+?[0-9][0-9\-.()]{0,14}|[0-9A-F*#]{1,8}", fullmatch=True),
    params=st.dictionaries(_PARAM_NAME, st.none() | _TEXT, max_size=3),
)
def test_tel_uri_round_trip(number: str, params: dict[str, str | None]) -> None:
    uri = TelURI(number, params)
    assert parse_uri(str(uri)) == uri


@settings(deadline=None)  # a loaded CI machine must not fail on timing
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_parse_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except ParseError:
        return
    assert str(uri)
