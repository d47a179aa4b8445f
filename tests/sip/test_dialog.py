"""Dialogs, REFER/Replaces, session timers, and whole calls between two transaction layers on a fake clock."""

from __future__ import annotations

import asyncio
import heapq
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.sip.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogState,
    DialogTable,
    Replaces,
    SessionIntervalTooSmall,
    SessionTimer,
    SessionTimerSettings,
    SubscriptionState,
    build_request,
    negotiate_uac,
    negotiate_uas,
    parse_refer_to,
    parse_replaces,
    parse_session_expires,
    parse_sipfrag,
    parse_subscription_state,
    sipfrag,
)
from hotline.sip.errors import ParseError
from hotline.sip.headers import parse_name_addr
from hotline.sip.message import Request, Response, make_response, parse
from hotline.sip.transaction import (
    Address,
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    next_hop,
)
from hotline.sip.transport import Source, TransportLayer
from hotline.sip.uri import SipURI, parse_uri
from tests.integration.peers import free_port, run_sipp

INVITE_VIA_PROXIES = (
    "INVITE sip:bob@192.0.2.20:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP proxy2.example.com:5060;branch=z9hG4bK-p2\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-a\r\n"
    "Record-Route: <sip:proxy2.example.com;lr>, <sip:proxy1.example.com;lr>\r\n"
    "Max-Forwards: 69\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "From: Alice <sip:alice@example.com>;tag=alicetag\r\n"
    "Call-ID: call-xyz\r\n"
    "CSeq: 10 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.10:5060>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def parsed_request(text: str) -> Request:
    message = parse(text.encode())
    assert isinstance(message, Request)
    return message


def wire(message: Request | Response) -> Request | Response:
    """Through the wire format and back, as the peer would see it (with a Via, as the layer would add)."""
    if isinstance(message, Request) and "Via" not in message.headers:
        message = message.copy()
        message.headers.add("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKtest", first=True)
    return parse(message.encode())


def as_response(message: Request | Response) -> Response:
    assert isinstance(message, Response)
    return message


def as_request(message: Request | Response) -> Request:
    assert isinstance(message, Request)
    return message


def invite_from_alice() -> Request:
    return parsed_request(INVITE_VIA_PROXIES)


def uas_dialog() -> tuple[Dialog, Request]:
    invite = invite_from_alice()
    return Dialog.create_uas(invite, "<sip:bob@192.0.2.20:5060>", local_tag="bobtag"), invite


def uac_dialog(status: int = 200) -> tuple[Dialog, Request, Response]:
    """Alice's side: her INVITE, and Bob's response as it arrives through the proxies."""
    bob, invite = uas_dialog()
    response = as_response(wire(bob.make_response(invite, status, now=0.0)))
    # at Alice, the proxies' Vias are gone; the rest is what Bob sent
    own = as_request(wire(invite))
    own.headers.remove("Record-Route")
    return Dialog.create_uac(own, response, now=0.0), own, response


# --- creation -------------------------------------------------------------------------------------------


def test_uas_dialog_from_invite_and_its_responses() -> None:
    dialog, invite = uas_dialog()
    assert dialog.state is DialogState.EARLY and not dialog.is_uac
    assert dialog.id == DialogId("call-xyz", "bobtag", "alicetag")
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    assert [str(route.uri) for route in dialog.route_set] == [
        "sip:proxy2.example.com;lr",
        "sip:proxy1.example.com;lr",
    ]
    assert dialog.remote_seq == 10 and dialog.local_seq is None
    ringing = dialog.make_response(invite, 180)
    assert ringing.to.tag == "bobtag"
    assert ringing.headers.get_all("Record-Route") == invite.headers.get_all("Record-Route")
    assert [str(c.uri) for c in ringing.contacts] == ["sip:bob@192.0.2.20:5060"]
    assert dialog.state is DialogState.EARLY
    ok = dialog.make_response(invite, 200, now=0.0)
    assert ok.to.tag == "bobtag" and dialog.state is DialogState.CONFIRMED
    assert len(ok.vias) == 2


def test_uas_dialog_ends_with_a_failure_response_and_needs_a_contact() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 486)
    assert dialog.state is DialogState.TERMINATED
    invite.headers.remove("Contact")
    with pytest.raises(DialogError) as raised:
        Dialog.create_uas(invite, "<sip:bob@192.0.2.20>")
    assert raised.value.status == 400


def test_uac_dialog_from_2xx_reverses_the_route_set() -> None:
    dialog, invite, _ = uac_dialog()
    assert dialog.is_uac and dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("call-xyz", "alicetag", "bobtag")
    assert [str(route.uri.host) for route in dialog.route_set] == ["proxy1.example.com", "proxy2.example.com"]
    assert str(dialog.remote_target) == "sip:bob@192.0.2.20:5060"
    assert dialog.local_seq == 10 and dialog.remote_seq is None
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@192.0.2.20:5060"
    assert bye.headers.get_all("Route") == ["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    assert (bye.from_.tag, bye.to.tag, bye.call_id) == ("alicetag", "bobtag", "call-xyz")
    assert (bye.cseq.number, bye.cseq.method) == (11, "BYE")
    assert "Via" not in bye.headers and "Contact" not in bye.headers
    with pytest.raises(DialogError):
        Dialog.create_uac(invite, make_response(invite, 200))  # no To tag, no dialog
    with pytest.raises(DialogError):
        Dialog.create_uac(invite, make_response(invite, 100, to_tag="x"))


def test_early_dialogs_from_forking_are_told_apart_by_remote_tag() -> None:
    invite = build_request(
        "INVITE",
        parse_uri("sip:bob@example.com"),
        "<sip:alice@example.com>",
        "<sip:bob@example.com>",
        contact="<sip:alice@192.0.2.10:5060>",
        call_id="fork-call",
    )
    invite.headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKfork")
    table = DialogTable()
    for tag, host in (("desk", "192.0.2.31"), ("mobile", "192.0.2.32")):
        ringing = make_response(invite, 180, to_tag=tag)
        ringing.headers.add("Contact", f"<sip:bob@{host}>")
        table.add(Dialog.create_uac(invite, as_response(wire(ringing))))
    local_tag = invite.from_.tag or ""
    early = table.early_dialogs("fork-call", local_tag)
    assert sorted(d.remote_tag for d in early) == ["desk", "mobile"]
    assert {str(d.remote_target) for d in early} == {"sip:bob@192.0.2.31", "sip:bob@192.0.2.32"}
    ok = make_response(invite, 200, to_tag="mobile")
    ok.headers.add("Contact", "<sip:bob@192.0.2.42>")
    mobile = table.match_response(ok)
    assert mobile is not None and mobile.remote_tag == "mobile"
    mobile.receive_response(ok, now=0.0)
    assert mobile.state is DialogState.CONFIRMED and str(mobile.remote_target) == "sip:bob@192.0.2.42"
    # the desk phone's early dialog ends when the call is answered elsewhere
    (desk,) = table.terminate_early("fork-call", local_tag)
    assert desk.remote_tag == "desk" and desk.terminated and len(table) == 1


def test_a_failure_response_ends_the_early_dialog() -> None:
    dialog, invite, _ = uac_dialog(status=180)
    assert dialog.state is DialogState.EARLY
    dialog.receive_response(make_response(invite, 480, to_tag="bobtag"))
    assert dialog.state is DialogState.TERMINATED


def test_the_2xx_recomputes_route_set_and_target_of_an_early_dialog() -> None:
    dialog, invite, _ = uac_dialog(status=183)
    ok = make_response(invite, 200, to_tag="bobtag")
    ok.headers.add("Record-Route", "<sip:edge.example.com;lr>")
    ok.headers.add("Contact", "<sip:bob@198.51.100.5:5062>")
    dialog.receive_response(as_response(wire(ok)), now=0.0)
    assert dialog.state is DialogState.CONFIRMED
    assert [str(r.uri) for r in dialog.route_set] == ["sip:edge.example.com;lr"]
    assert str(dialog.remote_target) == "sip:bob@198.51.100.5:5062"


# --- requests inside the dialog -------------------------------------------------------------------------


def test_strict_routing_puts_the_router_in_the_request_uri_and_the_target_last() -> None:
    dialog, _, _ = uac_dialog()
    dialog.route_set = [
        parse_name_addr("<sip:strict.example.com;method=INVITE>"),
        parse_name_addr("<sip:p2.example.com;lr>"),
    ]
    request = dialog.create_request("INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay")
    assert str(request.uri) == "sip:strict.example.com"
    assert request.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.20:5060>"]
    assert request.content_type == "application/dtmf-relay" and request.body == b"Signal=5\r\n"


def test_local_cseq_increases_and_ack_reuses_the_invite_number() -> None:
    dialog, _, _ = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.number == 11 and reinvite.contacts[0].uri == dialog.local_contact.uri
    options = dialog.create_request("OPTIONS")
    assert options.cseq.number == 12
    ack = dialog.create_ack()
    assert (ack.cseq.number, ack.cseq.method) == (11, "ACK")
    assert str(ack.uri) == str(dialog.remote_target) and ack.headers.get_all(
        "Route"
    ) == reinvite.headers.get_all("Route")
    with pytest.raises(ValueError):
        dialog.create_request("CANCEL")


def test_uas_picks_its_first_cseq_and_builds_every_in_dialog_method() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    numbers = []
    for method in ("UPDATE", "INFO", "OPTIONS", "NOTIFY", "REFER", "INVITE", "BYE"):
        request = dialog.create_request(method)
        numbers.append(request.cseq.number)
        assert str(request.uri) == "sip:alice@192.0.2.10:5060"
        assert request.headers.get_all("Route") == [
            "<sip:proxy2.example.com;lr>",
            "<sip:proxy1.example.com;lr>",
        ]
        assert (request.from_.tag, request.to.tag) == ("bobtag", "alicetag")
        assert ("Contact" in request.headers) == (method in ("UPDATE", "NOTIFY", "REFER", "INVITE"))
        assert wire(request).headers.get("CSeq") == f"{request.cseq.number} {method}"
    assert 1 <= numbers[0] < 2**31
    assert numbers == list(range(numbers[0], numbers[0] + 7))
    assert dialog.terminated  # BYE ends it
    with pytest.raises(DialogError):
        dialog.create_request("INFO")


def in_dialog_request(
    method: str, cseq: int, *, contact: str | None = None, to_tag: str = "bobtag"
) -> Request:
    text = (
        f"{method} sip:bob@192.0.2.20:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-{method}-{cseq}\r\n"
        f"To: Bob <sip:bob@example.com>;tag={to_tag}\r\n"
        "From: Alice <sip:alice@example.com>;tag=alicetag\r\n"
        "Call-ID: call-xyz\r\n"
        f"CSeq: {cseq} {method}\r\n"
    )
    if contact:
        text += f"Contact: {contact}\r\n"
    return parsed_request(text + "\r\n")


def test_a_lower_cseq_is_rejected_with_500() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    assert dialog.receive_request(in_dialog_request("ACK", 10)) is None
    assert dialog.receive_request(in_dialog_request("INFO", 12)) is None
    rejection = dialog.receive_request(in_dialog_request("INFO", 11))
    assert rejection is not None and rejection.status == 500 and rejection.to.tag == "bobtag"
    assert dialog.remote_seq == 12
    assert dialog.receive_request(in_dialog_request("OPTIONS", 13)) is None


def test_target_refresh_by_reinvite_applies_when_accepted() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    moved = in_dialog_request("INVITE", 11, contact="<sip:alice@203.0.113.7:5070>")
    assert dialog.receive_request(moved) is None
    assert str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    refused = dialog.make_response(moved, 488)
    assert refused.status == 488 and str(dialog.remote_target) == "sip:alice@192.0.2.10:5060"
    again = in_dialog_request("UPDATE", 12, contact="<sip:alice@203.0.113.7:5070>")
    assert dialog.receive_request(again) is None
    ok = dialog.make_response(again, 200, now=1.0)
    assert str(dialog.remote_target) == "sip:alice@203.0.113.7:5070"
    assert ok.contacts and "Record-Route" not in ok.headers  # only the dialog-creating response carries it
    # and the UAC side: a 2xx to its re-INVITE with a new Contact
    alice, _, _ = uac_dialog()
    reinvite = alice.create_request("INVITE")
    answer = make_response(reinvite, 200, to_tag="bobtag")
    answer.headers.add("Contact", "<sip:bob@198.51.100.9>")
    alice.receive_response(answer)
    assert str(alice.remote_target) == "sip:bob@198.51.100.9"


def test_reinvite_glare_gets_491_and_overlap_gets_500_with_retry_after() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    ours = dialog.create_request("INVITE")
    rejection = dialog.receive_request(in_dialog_request("INVITE", 11))
    assert rejection is not None and rejection.status == 491
    dialog.receive_response(make_response(ours, 200, to_tag="alicetag"))
    assert dialog.receive_request(in_dialog_request("INVITE", 12)) is None
    rejection = dialog.receive_request(in_dialog_request("INVITE", 13))
    assert rejection is not None and rejection.status == 500
    assert rejection.headers.get("Retry-After") is not None
    assert dialog.receive_request(in_dialog_request("ACK", 12)) is None


def test_a_failed_or_timed_out_reinvite_no_longer_blocks_the_peers() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    ours = dialog.create_request("INVITE")
    dialog.receive_response(make_response(ours, 488, to_tag="alicetag"))
    assert dialog.receive_request(in_dialog_request("INVITE", 11)) is None
    dialog.make_response(in_dialog_request("INVITE", 11), 200, now=1.0)
    lost = dialog.create_request("INVITE")  # this one times out: the TU feeds a synthetic 408
    dialog.receive_response(make_response(lost, 408, to_tag="alicetag"))
    assert dialog.terminated


def test_bye_ends_the_dialog_and_later_requests_get_481() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    bye = in_dialog_request("BYE", 11)
    assert dialog.receive_request(bye) is None
    dialog.make_response(bye, 200)
    assert dialog.terminated
    late = dialog.receive_request(in_dialog_request("INFO", 12))
    assert late is not None and late.status == 481


def test_481_or_408_to_an_in_dialog_request_ends_the_dialog() -> None:
    for status in (481, 408):
        dialog, _, _ = uac_dialog()
        info = dialog.create_request("INFO")
        dialog.receive_response(make_response(info, status, to_tag="bobtag"))
        assert dialog.terminated


def test_table_matches_requests_and_responses_by_our_tag_and_theirs() -> None:
    bob, invite = uas_dialog()
    table = DialogTable()
    table.add(bob)
    assert table.match_request(in_dialog_request("BYE", 11)) is bob
    assert table.match_request(in_dialog_request("BYE", 11, to_tag="nottag")) is None
    assert table.match_request(invite) is None  # no To tag: not in a dialog
    alice, _, ok = uac_dialog()
    table.add(alice)
    assert table.match_response(ok) is alice
    table.remove(alice)
    assert list(table) == [bob]


# --- REFER, NOTIFY, Replaces ----------------------------------------------------------------------------


def test_replaces_round_trip_and_bad_values() -> None:
    replaces = Replaces("98732@sip.example.com", to_tag="r33th4x0r", from_tag="ff87ff", early_only=True)
    assert str(replaces) == "98732@sip.example.com;to-tag=r33th4x0r;from-tag=ff87ff;early-only"
    assert parse_replaces(str(replaces)) == replaces
    assert parse_replaces("abc ; from-tag=1 ; to-tag=2") == Replaces("abc", "2", "1")
    for bad in ("", ";to-tag=1;from-tag=2", "abc;to-tag=1"):
        with pytest.raises(ParseError):
            parse_replaces(bad)


@given(
    call_id=st.from_regex(r"[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}-]{1,20}(@[a-z0-9.]{1,10})?", fullmatch=True),
    to_tag=st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,12}", fullmatch=True),
    from_tag=st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,12}", fullmatch=True),
    early_only=st.booleans(),
)
def test_replaces_survives_embedding_in_refer_to(
    call_id: str, to_tag: str, from_tag: str, early_only: bool
) -> None:
    replaces = Replaces(call_id, to_tag, from_tag, early_only)
    alice, _, _ = uac_dialog()
    refer = alice.create_refer(parse_uri("sip:carol@192.0.2.30:5060"), replaces=replaces)
    received = as_request(wire(refer))
    refer_to = parse_refer_to(received.headers.get("Refer-To") or "")
    assert refer_to.replaces == replaces
    assert str(refer_to.target.uri) == "sip:carol@192.0.2.30:5060"


def test_refer_for_attended_transfer_names_the_consultation_dialog() -> None:
    # Alice talks to Bob (d1) and to Carol (d2), then asks Bob to call Carol replacing d2.
    alice_bob, _, _ = uac_dialog()
    carol_invite = build_request(
        "INVITE",
        parse_uri("sip:carol@192.0.2.30:5060"),
        "<sip:alice@example.com>",
        "<sip:carol@example.com>",
        contact="<sip:alice@192.0.2.10:5060>",
        call_id="consult-1",
    )
    carol_invite.headers.add("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKc")
    at_carol = Dialog.create_uas(as_request(wire(carol_invite)), "<sip:carol@192.0.2.30:5060>")
    carol_ok = as_response(wire(at_carol.make_response(carol_invite, 200, now=0.0)))
    alice_carol = Dialog.create_uac(carol_invite, carol_ok, now=0.0)
    refer = alice_bob.create_refer(
        alice_carol.remote_target,
        replaces=alice_carol.replaces_for_remote(),
        referred_by="<sip:alice@example.com>",
    )
    assert refer.method == "REFER" and refer.headers.get("Referred-By") == "<sip:alice@example.com>"
    assert "Contact" in refer.headers
    refer_to = parse_refer_to(as_request(wire(refer)).headers.get("Refer-To") or "")
    assert refer_to.replaces is not None
    # Bob's INVITE to Carol carries that Replaces; Carol's table finds her dialog with Alice
    carol_table = DialogTable()
    carol_table.add(at_carol)
    assert carol_table.find_replaced(refer_to.replaces) is at_carol
    assert at_carol.matches_replaces(refer_to.replaces)
    assert not alice_carol.matches_replaces(refer_to.replaces)


def test_find_replaced_refusals() -> None:
    table = DialogTable()
    with pytest.raises(DialogError) as raised:
        table.find_replaced(Replaces("nope", "a", "b"))
    assert raised.value.status == 481
    confirmed, invite = uas_dialog()
    confirmed.make_response(invite, 200, now=0.0)
    table.add(confirmed)
    key = Replaces("call-xyz", to_tag="bobtag", from_tag="alicetag")
    assert table.find_replaced(key) is confirmed
    with pytest.raises(DialogError) as raised:
        table.find_replaced(Replaces("call-xyz", "bobtag", "alicetag", early_only=True))
    assert raised.value.status == 486
    confirmed.terminate()
    with pytest.raises(DialogError) as raised:
        table.find_replaced(key)
    assert raised.value.status == 603
    # an early dialog: replaceable only if we started it
    incoming_early, _ = uas_dialog()
    table.add(incoming_early)
    with pytest.raises(DialogError) as raised:
        table.find_replaced(key)
    assert raised.value.status == 481
    outgoing_early, _, _ = uac_dialog(status=180)
    table.add(outgoing_early)
    assert table.find_replaced(Replaces("call-xyz", "alicetag", "bobtag", early_only=True)) is outgoing_early


def test_refer_progress_notify_carries_sipfrag_and_ends_the_subscription() -> None:
    dialog, invite = uas_dialog()
    dialog.make_response(invite, 200, now=0.0)
    trying = as_request(wire(dialog.create_refer_notify(100)))
    assert trying.method == "NOTIFY" and trying.headers.get("Event") == "refer"
    assert trying.content_type == "message/sipfrag"
    assert trying.body == b"SIP/2.0 100 Trying\r\n"
    state = parse_subscription_state(trying.headers.get("Subscription-State") or "")
    assert state == SubscriptionState("active", expires=60)
    done = as_request(wire(dialog.create_refer_notify(200, refer_cseq=7)))
    assert done.headers.get("Event") == "refer;id=7"
    assert parse_sipfrag(done.body) == (200, "OK")
    state = parse_subscription_state(done.headers.get("Subscription-State") or "")
    assert (state.state, state.reason) == ("terminated", "noresource")
    assert done.cseq.number == trying.cseq.number + 1


def test_sipfrag_and_subscription_state_parsing() -> None:
    assert sipfrag(486) == b"SIP/2.0 486 Busy Here\r\n"
    assert sipfrag(503, "Trunk Down") == b"SIP/2.0 503 Trunk Down\r\n"
    assert parse_sipfrag(b"SIP/2.0 180 Ringing\r\nContact: <sip:x@y>\r\n") == (180, "Ringing")
    for bad in (b"", b"INVITE sip:x SIP/2.0", b"SIP/2.0 99 Low", b"SIP/2.0 2000 X"):
        with pytest.raises(ParseError):
            parse_sipfrag(bad)
    state = parse_subscription_state("Terminated;reason=timeout;retry-after=30")
    assert (state.state, state.reason, state.retry_after) == ("terminated", "timeout", 30)
    assert str(state) == "terminated;reason=timeout;retry-after=30"
    with pytest.raises(ParseError):
        parse_subscription_state("active;expires=soon")


# --- session timers (RFC 4028) --------------------------------------------------------------------------


def invite_with(headers: dict[str, str]) -> Request:
    invite = invite_from_alice()
    for name, value in headers.items():
        invite.headers.add(name, value)
    return invite


def test_session_expires_below_our_min_se_gets_422_with_min_se() -> None:
    settings = SessionTimerSettings(session_expires=1800, min_se=300)
    with pytest.raises(SessionIntervalTooSmall) as raised:
        negotiate_uas(invite_with({"Session-Expires": "120", "Supported": "timer"}), settings, 0.0)
    assert raised.value.min_se == 300 and raised.value.status == 422
    # in a dialog, the check answers for us
    dialog, invite = uas_dialog()
    dialog.session_settings = settings
    dialog.make_response(invite, 200, now=0.0)
    small = in_dialog_request("UPDATE", 11)
    small.headers.add("Session-Expires", "100")
    rejection = dialog.receive_request(small)
    assert rejection is not None and rejection.status == 422 and rejection.headers.get("Min-SE") == "300"
    # the UAC retries with at least the peer's Min-SE
    retry = SessionTimerSettings(session_expires=120, min_se=90).after_422(rejection)
    assert (retry.session_expires, retry.min_se) == (300, 300)


def test_refresher_choice() -> None:
    settings = SessionTimerSettings()
    # the UAC asked to refresh
    timer = negotiate_uas(
        invite_with({"Session-Expires": "600;refresher=uac", "Supported": "timer"}), settings, 10.0
    )
    assert (timer.interval, timer.refresher, timer.we_refresh) == (600, "uac", False)
    assert timer.response_headers() == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]
    # no preference, UAC supports timer: it refreshes
    timer = negotiate_uas(invite_with({"Session-Expires": "3600", "Supported": "timer"}), settings, 0.0)
    assert (timer.interval, timer.refresher) == (1800, "uac")  # we may shorten it
    # the UAC knows nothing of timers: we refresh, and keep the call alive ourselves
    timer = negotiate_uas(invite_from_alice(), settings, 0.0)
    assert (timer.interval, timer.refresher, timer.we_refresh) == (1800, "uas", True)
    assert timer.response_headers() == [("Session-Expires", "1800;refresher=uas")]
    # a request Min-SE above our wish wins
    timer = negotiate_uas(invite_with({"Min-SE": "2400", "Supported": "timer"}), settings, 0.0)
    assert timer.interval == 2400


def test_uac_reads_the_timer_from_the_2xx() -> None:
    invite = invite_from_alice()
    ok = make_response(invite, 200, to_tag="b", headers=[("Session-Expires", "900;refresher=uac")])
    timer = negotiate_uac(ok, now=100.0)
    assert timer is not None and timer.we_refresh and timer.interval == 900
    assert timer.refresh_at == 550.0 and timer.expires_at == 100 + 900 - 32
    assert negotiate_uac(make_response(invite, 200, to_tag="b"), now=0.0) is None
    # a dialog without session timers tolerates a peer that imposes one, with or without now
    alice, _, _ = uac_dialog()
    reinvite = alice.create_request("INVITE")
    imposed = make_response(
        reinvite, 200, to_tag="bobtag", headers=[("Session-Expires", "900;refresher=uas")]
    )
    alice.receive_response(imposed)
    assert alice.session_timer is None
    alice.receive_response(imposed, now=3.0)
    assert alice.session_timer is not None and not alice.session_timer.we_refresh
    alice.session_settings = SessionTimerSettings()
    with pytest.raises(ValueError):
        alice.receive_response(imposed)
    assert parse_session_expires("1800 ; refresher=UAS").refresher == "uas"
    with pytest.raises(ParseError):
        parse_session_expires("1800;refresher=both")


def test_session_timer_deadlines() -> None:
    timer = SessionTimer(interval=90, refresher="uac", we_refresh=True, refreshed_at=0.0)
    assert timer.refresh_at == 45.0 and timer.expires_at == 60.0  # 90 - min(32, 30)
    assert [timer.due(t) for t in (44.9, 45.0, 59.9, 60.0)] == [None, "refresh", "refresh", "expired"]
    passive = SessionTimer(interval=1800, refresher="uac", we_refresh=False, refreshed_at=0.0)
    assert passive.refresh_at is None and passive.next_deadline() == 1768.0
    assert passive.due(1767.9) is None and passive.due(1768.0) == "expired"


@given(interval=st.integers(min_value=90, max_value=86400), start=st.floats(min_value=0, max_value=1e6))
def test_a_refresher_always_refreshes_before_the_other_side_gives_up(interval: int, start: float) -> None:
    ours = SessionTimer(interval, "uac", True, start)
    theirs = SessionTimer(interval, "uac", False, start)
    assert ours.refresh_at is not None
    assert start < ours.refresh_at < theirs.expires_at < start + interval
    # time left for a refresh to get through
    assert theirs.expires_at - ours.refresh_at >= interval / 6 - 1e-6


def test_dialogs_negotiate_and_refresh_session_timers() -> None:
    settings = SessionTimerSettings(session_expires=600)
    invite = invite_with(dict(settings.request_headers()))
    bob = Dialog.create_uas(
        invite, "<sip:bob@192.0.2.20:5060>", local_tag="bobtag", session_settings=settings
    )
    with pytest.raises(ValueError):
        bob.make_response(invite, 200)  # needs now= to start the interval
    ok = bob.make_response(invite, 200, now=5.0)
    assert ok.headers.get("Session-Expires") == "600;refresher=uac" and ok.headers.get("Require") == "timer"
    assert "timer" in ok.headers.get_all("Supported")
    assert bob.session_timer is not None and not bob.session_timer.we_refresh
    alice = Dialog.create_uac(invite, as_response(wire(ok)), session_settings=settings, now=5.1)
    assert alice.session_timer is not None and alice.session_timer.refresh_at == pytest.approx(305.1)
    refresh = alice.create_request("UPDATE")
    assert refresh.headers.get("Session-Expires") == "600;refresher=uac"
    assert bob.receive_request(as_request(wire(refresh))) is None
    refreshed = bob.make_response(as_request(wire(refresh)), 200, now=300.0)
    assert bob.session_timer is not None and bob.session_timer.expires_at == 300.0 + 600 - 32
    alice.receive_response(as_response(wire(refreshed)), now=300.1)
    assert alice.session_timer is not None and alice.session_timer.refreshed_at == 300.1
    # when Bob sends a re-INVITE (hold), the refresher stays Alice: seen from Bob's UAC role that is "uas"
    hold = bob.create_request("INVITE")
    assert hold.headers.get("Session-Expires") == "600;refresher=uas"


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        SessionTimerSettings(session_expires=1800, min_se=60)
    with pytest.raises(ValueError):
        SessionTimerSettings(session_expires=100, min_se=120)


# --- whole calls between two transaction layers on a fake clock ----------------------------------------


class Network:
    """UDP between phones: each datagram takes `delay` seconds; `lose(rule)` drops the next matching one."""

    def __init__(self, delay: float = 0.02) -> None:
        self.now = 0.0
        self.delay = delay
        self.phones: dict[Address, Phone] = {}
        self.in_flight: list[tuple[float, int, bytes, Address, Address]] = []
        self.sequence = 0
        self.loss_rules: list[Callable[[Request | Response], bool]] = []
        self.lost: list[str] = []
        self.isolated: set[Address] = set()

    def lose(self, rule: Callable[[Request | Response], bool]) -> None:
        self.loss_rules.append(rule)

    def send(self, source: Address, message: Request | Response, destination: Address) -> None:
        label = (
            f"{message.method}" if isinstance(message, Request) else f"{message.status} {message.cseq.method}"
        )
        if source in self.isolated or destination in self.isolated:
            self.lost.append(label)
            return
        for rule in self.loss_rules:
            if rule(message):
                self.loss_rules.remove(rule)
                self.lost.append(label)
                return
        self.sequence += 1
        heapq.heappush(
            self.in_flight, (self.now + self.delay, self.sequence, message.encode(), source, destination)
        )

    def run(self, until: float) -> None:
        for _ in range(100_000):
            candidates = [(phone.next_deadline(), phone) for phone in self.phones.values()]
            timers = [(deadline, phone) for deadline, phone in candidates if deadline is not None]
            next_timer = min(timers, key=lambda item: item[0]) if timers else None
            next_packet = self.in_flight[0][0] if self.in_flight else None
            if next_packet is not None and (next_timer is None or next_packet <= next_timer[0]):
                if next_packet > until:
                    break
                self.now, _, data, source, destination = heapq.heappop(self.in_flight)
                phone = self.phones[destination]
                if not phone.crashed:
                    phone.handle(phone.layer.receive(parse(data), source, self.now))
            elif next_timer is not None:
                if next_timer[0] > until:
                    break
                self.now = next_timer[0]
                next_timer[1].on_timer(self.now)
            else:
                break
        else:
            raise AssertionError("the network did not settle")
        self.now = until


class Phone:
    """A minimal UA core on top of the transaction layer and dialogs: what the switch will do, in small.

    It runs on the fake `Network` (`Phone.on(network, ...)`) or on a real transport: it only needs a clock,
    a send function and its own address."""

    def __init__(
        self,
        name: str,
        address: Address,
        *,
        clock: Callable[[], float],
        send: Callable[[Request | Response, Address], None],
        sent_by: Callable[[Address], tuple[str, int | None]],
        session: SessionTimerSettings | None = None,
        auto_answer: bool = False,
    ) -> None:
        self.name = name
        self.address = address
        self.clock = clock
        self.uri = SipURI(user=name, host=address.host, port=address.port)
        self.contact = f"<sip:{name}@{address.host}:{address.port}>"
        self.session = session
        self.auto_answer = auto_answer
        self.layer = TransactionLayer(send, sent_by=sent_by)
        self.dialogs = DialogTable()
        self.log: list[str] = []  # what reached this UA core, in order
        self.invite: Request | None = None
        self.invite_tx: ClientTransaction | None = None
        self.ringing: dict[DialogId, tuple[ServerTransaction, Request]] = {}
        self.outgoing: dict[ClientTransaction, Dialog] = {}
        self.refreshing: set[DialogId] = set()
        self.failures: list[Event] = []
        self.crashed = False

    @classmethod
    def on(cls, network: Network, name: str, host: str, session: SessionTimerSettings | None = None) -> Phone:
        address = Address(host, 5060)
        phone = cls(
            name,
            address,
            clock=lambda: network.now,
            send=lambda message, destination: network.send(address, message, destination),
            sent_by=lambda destination: (host, 5060),
            session=session,
        )
        network.phones[address] = phone
        return phone

    @property
    def dialog(self) -> Dialog:
        (dialog,) = [d for d in self.dialogs if not d.terminated] or list(self.dialogs)
        return dialog

    def call(self, callee: Phone | SipURI) -> None:
        target = callee.uri if isinstance(callee, Phone) else callee
        headers = self.session.request_headers() if self.session else []
        self.invite = build_request(
            "INVITE", target, f"<sip:{self.name}@example.com>", f"<{target}>",
            contact=self.contact, headers=headers,
        )  # fmt: skip
        self.invite_tx = self.layer.send_request(self.invite, next_hop(self.invite), self.clock())

    def answer(self) -> None:
        for dialog_id, (tx, invite) in list(self.ringing.items()):
            dialog = self.dialogs.get(dialog_id)
            assert dialog is not None
            now = self.clock()
            self.layer.respond(tx, dialog.make_response(invite, 200, now=now), now)
            del self.ringing[dialog_id]

    def hang_up(self) -> None:
        if self.invite_tx is not None and self.dialog.state is not DialogState.CONFIRMED:
            self.layer.cancel(self.invite_tx, self.clock())
        else:
            self.send_in_dialog(self.dialog, "BYE")

    def send_in_dialog(self, dialog: Dialog, method: str) -> None:
        request = dialog.create_request(method)
        tx = self.layer.send_request(request, next_hop(request), self.clock())
        self.outgoing[tx] = dialog

    def next_deadline(self) -> float | None:
        if self.crashed:
            return None
        deadlines = [self.layer.next_deadline()]
        for dialog in self.dialogs:
            timer = dialog.session_timer
            if timer is not None and not dialog.terminated:
                refresh = None if dialog.id in self.refreshing else timer.refresh_at
                deadlines += [refresh, timer.expires_at]
        found = [d for d in deadlines if d is not None]
        return min(found) if found else None

    def on_timer(self, now: float) -> None:
        self.handle(self.layer.on_timer(now))
        for dialog in self.dialogs:
            timer = dialog.session_timer
            if timer is None or dialog.terminated:
                continue
            due = timer.due(now)
            if due == "expired":
                self.log.append("session expired")
                self.send_in_dialog(dialog, "BYE")
            elif due == "refresh" and dialog.id not in self.refreshing:
                self.refreshing.add(dialog.id)
                self.send_in_dialog(dialog, "UPDATE")

    def handle(self, events: list[Event]) -> None:
        now = self.clock()
        for event in events:
            if isinstance(event, RequestReceived):
                self.on_request(event.request, event.transaction, now)
            elif isinstance(event, ResponseReceived):
                self.on_response(event.response, event.transaction, now)
            elif isinstance(event, CancelReceived):
                self.log.append("CANCEL")
                for dialog_id, (tx, _) in list(self.ringing.items()):
                    if tx is event.invite_transaction:
                        dialog = self.dialogs.get(dialog_id)
                        assert dialog is not None
                        dialog.terminate()
                        del self.ringing[dialog_id]
            elif isinstance(event, TransactionTimeout | TransportError):
                self.failures.append(event)
                dialog = self.outgoing.get(event.transaction)
                if dialog is not None:
                    dialog.terminate()

    def on_request(self, request: Request, tx: ServerTransaction | None, now: float) -> None:
        self.log.append(request.method)
        if request.method == "ACK":
            dialog = self.dialogs.match_request(request)
            assert dialog is not None
            dialog.receive_request(request, now)
            return
        assert tx is not None
        if request.method == "INVITE" and not request.to.tag:
            dialog = Dialog.create_uas(request, self.contact, session_settings=self.session)
            self.dialogs.add(dialog)
            self.ringing[dialog.id] = (tx, request)
            self.layer.respond(tx, dialog.make_response(request, 180), now)
            if self.auto_answer:
                self.answer()
            return
        dialog = self.dialogs.match_request(request)
        if dialog is None:
            self.layer.respond(tx, make_response(request, 481), now)
            return
        rejection = dialog.receive_request(request, now)
        if rejection is not None:
            self.layer.respond(tx, rejection, now)
            return
        self.layer.respond(tx, dialog.make_response(request, 200, now=now), now)

    def on_response(self, response: Response, tx: ClientTransaction, now: float) -> None:
        self.log.append(f"{response.status} {response.cseq.method}")
        status = response.status
        if tx is self.invite_tx and self.invite is not None:
            dialog = self.dialogs.match_response(response)
            if 101 <= status <= 299 and response.to.tag:
                if dialog is None:
                    dialog = Dialog.create_uac(self.invite, response, session_settings=self.session, now=now)
                    self.dialogs.add(dialog)
                else:
                    dialog.receive_response(response, now)
            if 200 <= status <= 299 and dialog is not None:
                ack = dialog.create_ack()
                self.layer.send_ack(ack, next_hop(ack))
            elif status >= 300:
                self.dialogs.terminate_early(self.invite.call_id, self.invite.from_.tag or "")
            return
        dialog = self.outgoing.get(tx)
        if dialog is None:
            return  # e.g. the 200 to our CANCEL
        dialog.receive_response(response, now)
        if status >= 200:
            self.refreshing.discard(dialog.id)
        if response.cseq.method == "INVITE" and 200 <= status <= 299:
            ack = dialog.create_ack()
            self.layer.send_ack(ack, next_hop(ack))


def two_phones(session: SessionTimerSettings | None = None) -> tuple[Network, Phone, Phone]:
    network = Network()
    return (
        network,
        Phone.on(network, "alice", "192.0.2.10", session),
        Phone.on(network, "bob", "192.0.2.20", session),
    )


def test_a_whole_call_invite_answer_reinvite_bye() -> None:
    network, alice, bob = two_phones()
    alice.call(bob)
    network.run(until=2.0)
    assert bob.log == ["INVITE"]
    assert alice.log == ["100 INVITE", "180 INVITE"]
    assert alice.dialog.state is DialogState.EARLY and bob.dialog.state is DialogState.EARLY
    bob.answer()
    network.run(until=3.0)
    assert alice.log[-1] == "200 INVITE" and bob.log == ["INVITE", "ACK"]
    assert alice.dialog.state is DialogState.CONFIRMED and bob.dialog.state is DialogState.CONFIRMED
    assert alice.dialog.id == DialogId(bob.dialog.call_id, bob.dialog.remote_tag, bob.dialog.local_tag)
    alice.send_in_dialog(alice.dialog, "INVITE")  # re-INVITE (e.g. hold)
    network.run(until=4.0)
    assert bob.log == ["INVITE", "ACK", "INVITE", "ACK"]
    assert alice.log[-1] == "200 INVITE"
    bob.send_in_dialog(bob.dialog, "INFO")
    network.run(until=5.0)
    assert alice.log[-1] == "INFO" and bob.log[-1] == "200 INFO"
    alice.hang_up()
    network.run(until=100.0)
    assert bob.log[-1] == "BYE" and alice.log[-1] == "200 BYE"
    assert alice.dialog.terminated and bob.dialog.terminated
    assert network.lost == [] and alice.failures == [] and bob.failures == []
    assert len(alice.layer) == 0 and len(bob.layer) == 0  # every transaction ended


def test_lost_datagrams_are_recovered_by_retransmission() -> None:
    network, alice, bob = two_phones()
    network.lose(lambda m: isinstance(m, Request) and m.method == "INVITE")  # the first INVITE
    network.lose(lambda m: isinstance(m, Response) and m.status == 180)  # the 180 (only sent once)
    network.lose(lambda m: isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE")
    network.lose(lambda m: isinstance(m, Request) and m.method == "ACK")
    alice.call(bob)
    network.run(until=2.0)
    assert bob.log == ["INVITE"]  # arrived on Timer A's first retransmission
    bob.answer()
    network.run(until=5.0)
    # the first 200 was lost, the second got through; its ACK was lost, so a third 200 came and the
    # transaction layer ACKed it again: Alice's core saw one 200, Bob's core one ACK
    assert alice.log.count("200 INVITE") == 1 and bob.log == ["INVITE", "ACK"]
    assert alice.dialog.state is DialogState.CONFIRMED
    network.lose(lambda m: isinstance(m, Request) and m.method == "BYE")
    network.lose(lambda m: isinstance(m, Response) and m.cseq.method == "BYE")
    alice.hang_up()
    network.run(until=100.0)
    assert bob.log.count("BYE") == 1 and alice.log.count("200 BYE") == 1
    assert network.lost == ["INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"]
    assert bob.dialog.terminated and alice.dialog.terminated
    assert alice.failures == [] and bob.failures == []


def test_cancel_of_a_ringing_call() -> None:
    network, alice, bob = two_phones()
    alice.call(bob)
    network.run(until=3.0)
    assert alice.dialog.state is DialogState.EARLY and bob.dialog.state is DialogState.EARLY
    network.lose(lambda m: isinstance(m, Request) and m.method == "CANCEL")  # recovered by Timer E
    alice.hang_up()
    network.run(until=60.0)
    assert bob.log == ["INVITE", "CANCEL"]  # the ACK for the 487 stays in the transaction layer
    assert alice.log[-2:] == ["200 CANCEL", "487 INVITE"]
    assert len(alice.dialogs) == 0  # the early dialog ended with the 487 and left the table
    assert bob.dialog.terminated and not bob.ringing
    assert network.lost == ["CANCEL"]
    assert len(alice.layer) == 0 and len(bob.layer) == 0
    bob.answer()  # too late: nothing left to answer
    network.run(until=70.0)
    assert "200 INVITE" not in alice.log


def test_session_timers_keep_a_live_call_and_end_a_dead_one() -> None:
    settings = SessionTimerSettings(session_expires=300)
    network, alice, bob = two_phones(settings)
    alice.call(bob)
    network.run(until=1.0)
    bob.answer()
    network.run(until=2.0)
    assert alice.dialog.session_timer is not None and alice.dialog.session_timer.we_refresh
    assert bob.dialog.session_timer is not None and not bob.dialog.session_timer.we_refresh
    network.run(until=1000.0)
    # Alice refreshed with UPDATE every 150 s, so Bob kept the call
    assert bob.log.count("UPDATE") == 6 and not bob.dialog.terminated
    last_refresh = bob.dialog.session_timer.refreshed_at
    # Alice's phone dies silently; Bob ends the call at expiry (300 - min(32, 100) after the last refresh)
    alice.crashed = True
    network.isolated.add(alice.address)
    network.run(until=last_refresh + 267.0)
    assert "session expired" not in bob.log
    network.run(until=last_refresh + 269.0)
    assert bob.log[-1] == "session expired" and bob.dialog.terminated
    network.run(until=last_refresh + 400.0)
    # the BYE got no answer: Timer F ended its transaction; nothing is left hanging
    assert [e.timer for e in bob.failures if isinstance(e, TransactionTimeout)] == ["F"]
    assert len(bob.layer) == 0


# --- real peers: SIPp over UDP on 127.0.0.1, through the real transport layer ---------------------------

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is not installed")


class LiveDriver:
    """Runs a Phone on the asyncio transport with the loop's clock: the glue a SIP stack needs, in small."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = TransportLayer(self.on_message)
        self.phone: Phone | None = None
        self.timer: asyncio.TimerHandle | None = None

    async def start(self, name: str, *, auto_answer: bool) -> Phone:
        point = await self.transport.listen("UDP", "127.0.0.1", 0)
        self.phone = Phone(
            name,
            Address("127.0.0.1", point.port),
            clock=self.loop.time,
            send=self.transport.send_nowait,
            sent_by=self.transport.local_address_for,
            auto_answer=auto_answer,
        )
        return self.phone

    def on_message(self, message: Request | Response, source: Source) -> None:
        assert self.phone is not None
        address = Address(source.host, source.port, str(source.transport))
        self.phone.handle(self.phone.layer.receive(message, address, self.loop.time()))
        self.rearm()

    def act(self, action: Callable[[], None]) -> None:
        """Run a UA core action (call, hang up) and re-arm the timer for what it scheduled."""
        action()
        self.rearm()

    def rearm(self) -> None:
        assert self.phone is not None
        if self.timer is not None:
            self.timer.cancel()
        deadline = self.phone.next_deadline()
        self.timer = None if deadline is None else self.loop.call_at(deadline, self.fire)

    def fire(self) -> None:
        assert self.phone is not None
        self.timer = None
        self.phone.on_timer(self.loop.time())
        self.rearm()

    async def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        await self.transport.close()


async def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


@needs_sipp
@pytest.mark.integration
async def test_sipp_calls_us_and_hangs_up(tmp_path: Path) -> None:
    driver = LiveDriver()
    phone = await driver.start("hotline", auto_answer=True)
    try:
        args = ["-sn", "uac", "-s", "hotline", "-m", "3", "-r", "10", "-d", "100", "-timeout", "20s"]
        args += ["-i", "127.0.0.1", "-p", str(free_port()), f"127.0.0.1:{phone.address.port}"]
        result = await asyncio.to_thread(run_sipp, args, tmp_path, 40.0)
    finally:
        await driver.close()
    assert (result.successful, result.failed) == (3, 0), result.stdout[-3000:]
    assert [phone.log.count(method) for method in ("INVITE", "ACK", "BYE")] == [3, 3, 3]
    assert len(phone.dialogs) == 3 and all(dialog.terminated for dialog in phone.dialogs)
    assert phone.failures == []


@needs_sipp
@pytest.mark.integration
async def test_we_call_sipp_and_hang_up(tmp_path: Path) -> None:
    driver = LiveDriver()
    phone = await driver.start("alice", auto_answer=False)
    port = free_port()
    args = ["-sn", "uas", "-m", "1", "-timeout", "20s", "-i", "127.0.0.1", "-p", str(port)]
    sipp = asyncio.create_task(asyncio.to_thread(run_sipp, args, tmp_path, 40.0))
    try:
        await asyncio.sleep(0.2)  # if SIPp is not listening yet, Timer A retransmits the INVITE
        driver.act(lambda: phone.call(SipURI(user="service", host="127.0.0.1", port=port)))
        assert await wait_for(lambda: "200 INVITE" in phone.log, 10.0), phone.log
        assert phone.dialog.state is DialogState.CONFIRMED
        driver.act(phone.hang_up)
        assert await wait_for(lambda: "200 BYE" in phone.log, 10.0), phone.log
        result = await asyncio.wait_for(sipp, 30.0)
    finally:
        await driver.close()
    assert (result.successful, result.failed) == (1, 0), result.stdout[-3000:]
    assert phone.dialog.terminated and phone.failures == []
