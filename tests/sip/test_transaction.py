"""The transaction layer on a fake clock: timers, retransmission, ACK, CANCEL, matching, routing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.message import Request, Response, make_response, parse
from hotline.sip.transaction import (
    Address,
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionLayer,
    TransactionState,
    TransactionTimeout,
    TransportError,
    next_hop,
    response_destination,
    uri_destination,
)

ALICE = Address("192.0.2.10", 5060)
BOB = Address("192.0.2.20", 5060)


class Wire:
    """The send callback: records what the layer hands to the transport."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request | Response, Address]] = []
        self.fail = False

    def __call__(self, message: Request | Response, destination: Address) -> None:
        if self.fail:
            raise ConnectionRefusedError("refused")

        # every message must survive the wire format
        def fields(m: Request | Response) -> list[tuple[str, str]]:
            return [(n, v) for n, v in m.headers.items() if n != "Content-Length"]

        assert fields(parse(message.encode())) == fields(message)
        self.sent.append((message, destination))

    def take(self) -> list[tuple[Request | Response, Address]]:
        sent, self.sent = self.sent, []
        return sent

    def statuses(self) -> list[int]:
        return [m.status for m, _ in self.sent if isinstance(m, Response)]

    def methods(self) -> list[str]:
        return [m.method for m, _ in self.sent if isinstance(m, Request)]


def run(layer: TransactionLayer, until: float) -> list[tuple[float, Event]]:
    """Fire every timer due up to `until`, in order; (time, event) for what reached the TU."""
    fired: list[tuple[float, Event]] = []
    for _ in range(10_000):
        deadline = layer.next_deadline()
        if deadline is None or deadline > until:
            return fired
        fired += [(deadline, event) for event in layer.on_timer(deadline)]
    raise AssertionError("timers did not settle")


def send_times(
    layer: TransactionLayer, wire: Wire, until: float
) -> tuple[list[float], list[tuple[float, Event]]]:
    """Times at which something was sent while running timers up to `until`."""
    times: list[float] = []
    events: list[tuple[float, Event]] = []
    for _ in range(10_000):
        deadline = layer.next_deadline()
        if deadline is None or deadline > until:
            break
        events += [(deadline, event) for event in layer.on_timer(deadline)]
        times += [deadline] * len(wire.take())
    return times, events


def request_text(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK776asdhds",
    cseq: int = 314159,
    to_tag: str | None = None,
    via_host: str = "192.0.2.10",
    rport: bool = True,
) -> bytes:
    via = f"SIP/2.0/UDP {via_host}:5060"
    if branch is not None:
        via += f";branch={branch}"
    if rport:
        via += ";rport"
    to = "Bob <sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:bob@192.0.2.20 SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"To: {to}",
        "From: Alice <sip:alice@example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.example.com",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:alice@192.0.2.10>",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def incoming(method: str = "INVITE", **kwargs: object) -> Request:
    message = parse(request_text(method, **kwargs))  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


def outgoing(method: str = "INVITE", cseq: int = 1) -> Request:
    """A request without Via: the layer adds one from sent_by."""
    text = (
        f"{method} sip:bob@192.0.2.20 SIP/2.0\r\nMax-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n"
        f"From: <sip:alice@example.com>;tag=abc\r\nCall-ID: call-1\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\nVia: SIP/2.0/UDP 0.0.0.0;branch=z9hG4bKplaceholder\r\n\r\n"
    )
    message = parse(text.encode())
    assert isinstance(message, Request)
    message.headers.remove("Via")
    return message


def reply(request: Request, status: int, to_tag: str | None = "bobtag") -> Response:
    """A response as the peer would send it: parsed from the wire."""
    response = make_response(request, status, to_tag=to_tag if status > 100 else None)
    parsed = parse(response.encode())
    assert isinstance(parsed, Response)
    return parsed


def client_layer(timers: TimerConfig | None = None) -> tuple[TransactionLayer, Wire]:
    wire = Wire()
    return TransactionLayer(wire, timers=timers, sent_by=lambda destination: ("192.0.2.10", 5060)), wire


def server_layer(timers: TimerConfig | None = None) -> tuple[TransactionLayer, Wire]:
    wire = Wire()
    return TransactionLayer(wire, timers=timers), wire


# --- client transactions --------------------------------------------------------------------------------


def test_invite_retransmits_with_timer_a_doubling_then_times_out_with_timer_b() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing(), BOB, now=0.0)
    assert wire.take()[0][1] == BOB
    times, events = send_times(layer, wire, until=100)
    # Timer A doubles from T1 without cap; Timer B ends it at 64*T1 = 32 s
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert [(t, type(e), e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [
        (32.0, TransactionTimeout, "B")
    ]
    assert tx.state is TransactionState.TERMINATED
    assert len(layer) == 0 and layer.next_deadline() is None


def test_the_layer_adds_a_via_with_magic_cookie_branch_and_rport() -> None:
    layer, wire = client_layer()
    request = outgoing("OPTIONS")
    tx = layer.send_request(request, BOB, now=0.0)
    ((sent, _),) = wire.take()
    assert isinstance(sent, Request)
    via = sent.via
    assert via.branch == tx.branch and tx.branch.startswith("z9hG4bK")
    assert (via.host, via.port, via.rport) == ("192.0.2.10", 5060, -1)
    assert sent.headers.items()[0][0] == "Via"


def test_timers_are_configurable() -> None:
    layer, wire = client_layer(TimerConfig(t1=0.1, t2=0.4))
    layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)
    wire.take()
    times, events = send_times(layer, wire, until=100)
    assert times[:5] == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5])
    assert [e.timer for _, e in events if isinstance(e, TransactionTimeout)] == ["F"]
    assert events[-1][0] == pytest.approx(6.4)


def test_non_invite_retransmits_doubling_up_to_t2_then_times_out_with_timer_f() -> None:
    layer, wire = client_layer()
    layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)
    wire.take()
    times, events = send_times(layer, wire, until=100)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [(32.0, "F")]


def test_non_invite_in_proceeding_retransmits_every_t2() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing("BYE"), BOB, now=0.0)
    run(layer, until=0.7)
    wire.take()
    events = layer.receive(reply(tx.request, 180), BOB, now=0.7)
    assert [type(e) for e in events] == [ResponseReceived]
    times, _ = send_times(layer, wire, until=14)
    assert times == [1.5, 5.5, 9.5, 13.5]


def test_non_invite_final_response_goes_up_once_and_timer_k_absorbs_retransmissions() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)
    wire.take()
    ok = reply(tx.request, 200)
    assert [type(e) for e in layer.receive(ok, BOB, now=0.2)] == [ResponseReceived]
    assert tx.state is TransactionState.COMPLETED
    assert layer.receive(ok, BOB, now=1.0) == []
    assert run(layer, until=4.9) == [] and wire.take() == []
    run(layer, until=5.2)  # Timer K = T4
    assert tx.state is TransactionState.TERMINATED
    assert layer.receive(ok, BOB, now=6.0) == []
    assert layer.stray_responses == 1


def test_invite_non_2xx_is_acked_by_the_transaction_with_the_same_branch() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing(), BOB, now=0.0)
    wire.take()
    assert [type(e) for e in layer.receive(reply(tx.request, 100), BOB, now=0.1)] == [ResponseReceived]
    busy = reply(tx.request, 486)
    events = layer.receive(busy, BOB, now=0.3)
    assert [type(e) for e in events] == [ResponseReceived]
    ((ack, destination),) = wire.take()
    assert isinstance(ack, Request) and destination == BOB
    assert ack.method == "ACK"
    assert ack.via.branch == tx.branch and len(ack.vias) == 1
    assert (ack.cseq.number, ack.cseq.method) == (1, "ACK")
    assert ack.to.tag == "bobtag" and ack.from_.tag == "abc"
    assert str(ack.uri) == str(tx.request.uri)
    # Timer D: retransmitted 486s are ACKed again and not passed up, for 32 s
    assert layer.receive(busy, BOB, now=2.0) == []
    assert wire.methods() == ["ACK"]
    wire.take()
    run(layer, until=32.2)
    assert tx.state is TransactionState.COMPLETED
    run(layer, until=32.4)
    assert tx.state is TransactionState.TERMINATED
    assert layer.receive(busy, BOB, now=33.0) == [] and wire.take() == []


def test_no_retransmissions_and_zero_wait_timers_on_reliable_transports() -> None:
    layer, wire = client_layer()
    tcp = Address("192.0.2.20", 5060, "tcp")
    assert tcp.reliable and tcp.transport == "TCP"
    invite = layer.send_request(outgoing(), tcp, now=0.0)
    options = layer.send_request(outgoing("OPTIONS", cseq=2), tcp, now=0.0)
    wire.take()
    # no Timer A/E: the next deadlines are B and F at 32 s
    assert layer.next_deadline() == 32.0
    layer.receive(reply(invite.request, 486), tcp, now=1.0)
    layer.receive(reply(options.request, 200), tcp, now=1.0)
    assert wire.methods() == ["ACK"]
    # Timers D and K are zero: both transactions are gone at once
    assert invite.terminated and options.terminated and len(layer) == 0


def test_reliable_can_be_forced_per_transaction() -> None:
    layer, wire = client_layer()
    layer.send_request(outgoing("OPTIONS"), BOB, now=0.0, reliable=True)
    wire.take()
    times, events = send_times(layer, wire, until=100)
    assert times == [] and [e.timer for _, e in events if isinstance(e, TransactionTimeout)] == ["F"]


def test_invite_2xx_goes_up_and_retransmissions_get_the_tus_ack_again() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing(), BOB, now=0.0)
    wire.take()
    ok = reply(tx.request, 200)
    events = layer.receive(ok, BOB, now=0.2)
    assert [type(e) for e in events] == [ResponseReceived]
    assert tx.state is TransactionState.ACCEPTED
    assert wire.take() == []  # the transaction never ACKs a 2xx
    ack = outgoing("ACK")
    ack.headers.set("To", ok.headers.get("To") or "")
    layer.send_ack(ack, BOB)
    ((sent_ack, _),) = wire.take()
    assert (
        isinstance(sent_ack, Request) and sent_ack.via.branch != tx.branch
    )  # a new branch: not the INVITE's
    # the 2xx comes again (our ACK was lost): the layer answers with the same ACK, the TU is not bothered
    assert layer.receive(ok, BOB, now=0.7) == []
    assert wire.take() == [(sent_ack, BOB)]
    # a 2xx from another fork goes up: the TU must ACK (and probably BYE) that dialog too
    forked = reply(tx.request, 200, to_tag="carol")
    assert [type(e) for e in layer.receive(forked, BOB, now=0.8)] == [ResponseReceived]
    run(layer, until=32.3)  # Timer M = 64*T1
    assert tx.terminated and len(layer) == 0


def test_timer_b_stops_once_a_provisional_arrives() -> None:
    layer, wire = client_layer()
    tx = layer.send_request(outgoing(), BOB, now=0.0)
    layer.receive(reply(tx.request, 180), BOB, now=0.2)
    wire.take()
    assert run(layer, until=1000) == []
    assert tx.state is TransactionState.PROCEEDING and wire.take() == []


# --- server transactions --------------------------------------------------------------------------------


def test_invite_server_sends_100_at_once_and_absorbs_retransmissions() -> None:
    layer, wire = server_layer()
    events = layer.receive(incoming(), ALICE, now=0.0)
    assert [type(e) for e in events] == [RequestReceived]
    event = events[0]
    assert isinstance(event, RequestReceived) and isinstance(event.transaction, ServerTransaction)
    assert wire.statuses() == [100]
    ((trying, _),) = wire.take()
    assert isinstance(trying, Response) and trying.to.tag is None
    # a retransmitted INVITE gets the last provisional again and does not reach the TU
    assert layer.receive(incoming(), ALICE, now=0.5) == []
    assert wire.statuses() == [100]
    wire.take()
    tx = event.transaction
    assert layer.respond(tx, make_response(tx.request, 180, to_tag="t1"), now=0.6)
    assert layer.receive(incoming(), ALICE, now=1.5) == []
    assert wire.statuses() == [180, 180]


def test_invite_server_non_2xx_timer_g_then_timer_h_without_ack() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    wire.take()
    layer.respond(tx, make_response(tx.request, 486, to_tag="t1"), now=0.0)
    wire.take()
    times, events = send_times(layer, wire, until=100)
    # Timer G doubles from T1 up to T2; Timer H gives up at 64*T1 and tells the TU
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [(32.0, "H")]
    assert tx.terminated


def test_invite_server_ack_stops_retransmissions_and_timer_i_absorbs_acks() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    layer.respond(tx, make_response(tx.request, 603, to_tag="t1"), now=0.0)
    wire.take()
    run(layer, until=0.6)
    assert wire.statuses() == [603]
    wire.take()
    ack = incoming("ACK", to_tag="t1")
    assert layer.receive(ack, ALICE, now=0.7) == []  # the ACK of a non-2xx is the transaction's, not the TU's
    assert tx.state is TransactionState.CONFIRMED and tx.acked
    assert layer.receive(ack, ALICE, now=1.0) == []
    assert layer.receive(incoming(), ALICE, now=1.1) == []  # a late INVITE copy is absorbed too
    assert run(layer, until=5.6) == [] and wire.take() == []
    assert tx.state is TransactionState.CONFIRMED
    run(layer, until=5.8)  # Timer I = T4 after the ACK
    assert tx.terminated and len(layer) == 0


def test_invite_server_2xx_is_retransmitted_until_the_ack_which_goes_to_the_tu() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    wire.take()
    assert layer.respond(tx, make_response(tx.request, 200, to_tag="t1"), now=0.0)
    assert tx.state is TransactionState.ACCEPTED
    wire.take()
    times, _ = send_times(layer, wire, until=4.0)
    assert times == [0.5, 1.5, 3.5]
    # an INVITE retransmission in Accepted is absorbed (RFC 6026), no 2xx from it
    assert layer.receive(incoming(), ALICE, now=4.1) == [] and wire.take() == []
    ack = incoming("ACK", branch="z9hG4bKnewbranchforack", to_tag="t1")
    events = layer.receive(ack, ALICE, now=4.2)
    assert [type(e) for e in events] == [RequestReceived]
    assert isinstance(events[0], RequestReceived) and events[0].transaction is None
    assert tx.acked
    assert run(layer, until=40) == [] and wire.take() == []
    assert tx.terminated


def test_invite_server_2xx_without_ack_times_out_with_timer_l() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    layer.respond(event.transaction, make_response(event.transaction.request, 200, to_tag="t1"), now=0.0)
    wire.take()
    times, events = send_times(layer, wire, until=100)
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(t, e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [(32.0, "L")]


def test_the_tu_may_retransmit_a_2xx_itself_in_accepted() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    ok = make_response(tx.request, 200, to_tag="t1")
    layer.respond(tx, ok, now=0.0)
    assert layer.respond(tx, ok, now=0.1)
    assert not layer.respond(tx, make_response(tx.request, 500, to_tag="t1"), now=0.2)
    assert wire.statuses() == [100, 200, 200]


def test_non_invite_server_absorbs_in_trying_resends_final_and_timer_j() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming("OPTIONS"), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    assert wire.take() == []  # no 100 for non-INVITE
    assert layer.receive(incoming("OPTIONS"), ALICE, now=0.5) == [] and wire.take() == []
    assert layer.respond(tx, make_response(tx.request, 200, to_tag="t1"), now=0.6)
    assert layer.receive(incoming("OPTIONS"), ALICE, now=1.0) == []
    assert wire.statuses() == [200, 200]
    assert not layer.respond(tx, make_response(tx.request, 500), now=1.1)
    run(layer, until=32.5)
    assert tx.state is TransactionState.COMPLETED
    run(layer, until=32.7)  # Timer J = 64*T1 after the final response
    assert tx.terminated


def test_non_invite_server_on_reliable_transport_ends_with_its_final_response() -> None:
    layer, wire = server_layer()
    tcp_alice = Address("192.0.2.10", 40000, "TCP")
    (event,) = layer.receive(incoming("OPTIONS"), tcp_alice, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    layer.respond(event.transaction, make_response(event.transaction.request, 200), now=0.1)
    assert event.transaction.terminated and len(layer) == 0
    assert wire.take()[0][1] == tcp_alice  # the response goes back on the connection it came on


# --- CANCEL ---------------------------------------------------------------------------------------------


def test_cancel_of_a_ringing_invite_gets_200_and_the_invite_487() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    invite_tx = event.transaction
    layer.respond(invite_tx, make_response(invite_tx.request, 180, to_tag="ring"), now=0.1)
    wire.take()
    events = layer.receive(incoming("CANCEL"), ALICE, now=2.0)
    assert [type(e) for e in events] == [CancelReceived]
    cancelled = events[0]
    assert isinstance(cancelled, CancelReceived) and cancelled.invite_transaction is invite_tx
    sent = wire.take()
    statuses = [(m.status, m.cseq.method, m.to.tag) for m, _ in sent if isinstance(m, Response)]
    assert statuses == [(200, "CANCEL", "ring"), (487, "INVITE", "ring")]
    # the TU loses the race: its 200 is refused
    assert not layer.respond(invite_tx, make_response(invite_tx.request, 200, to_tag="ring"), now=2.1)
    # a retransmitted CANCEL gets the 200 again, the ACK for the 487 is absorbed
    assert layer.receive(incoming("CANCEL"), ALICE, now=2.5) == []
    assert wire.statuses() == [200]
    assert layer.receive(incoming("ACK", to_tag="ring"), ALICE, now=2.6) == []
    assert invite_tx.state is TransactionState.CONFIRMED


def test_cancel_without_a_transaction_gets_481_and_after_the_final_response_only_200() -> None:
    layer, wire = server_layer()
    assert layer.receive(incoming("CANCEL"), ALICE, now=0.0) == []
    assert wire.statuses() == [481]
    wire.take()
    (event,) = layer.receive(incoming(branch="z9hG4bKother"), ALICE, now=1.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    layer.respond(event.transaction, make_response(event.transaction.request, 200, to_tag="x"), now=1.1)
    wire.take()
    assert layer.receive(incoming("CANCEL", branch="z9hG4bKother"), ALICE, now=1.2) == []
    assert wire.statuses() == [200]  # no 487: the call was already answered


def test_client_cancel_waits_for_a_provisional_then_uses_the_invite_branch() -> None:
    layer, wire = client_layer()
    invite_tx = layer.send_request(outgoing(), BOB, now=0.0)
    wire.take()
    assert layer.cancel(invite_tx, now=0.1, reason='SIP;cause=487;text="cancelled"') is None
    assert wire.take() == []  # RFC 3261 §9.1: not before a provisional response
    events = layer.receive(reply(invite_tx.request, 180), BOB, now=0.2)
    assert [type(e) for e in events] == [ResponseReceived]
    ((cancel, destination),) = wire.take()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and destination == BOB
    assert cancel.via.branch == invite_tx.branch
    assert (cancel.cseq.number, cancel.cseq.method) == (1, "CANCEL")
    assert str(cancel.uri) == str(invite_tx.request.uri) and cancel.to.tag is None
    assert cancel.headers.get("Reason") == 'SIP;cause=487;text="cancelled"'
    cancel_tx = invite_tx.cancel_transaction
    assert cancel_tx is not None and cancel_tx.cancels is invite_tx
    assert layer.cancel(invite_tx, now=0.3) is None  # only once
    # responses with the same branch are told apart by CSeq method
    ok = reply(cancel, 200)
    (cancel_event,) = layer.receive(ok, BOB, now=0.3)
    assert isinstance(cancel_event, ResponseReceived) and cancel_event.transaction is cancel_tx
    (invite_event,) = layer.receive(reply(invite_tx.request, 487), BOB, now=0.4)
    assert isinstance(invite_event, ResponseReceived) and invite_event.transaction is invite_tx
    assert wire.methods() == ["ACK"]


def test_client_cancel_gives_up_64_t1_after_sending_it() -> None:
    layer, _wire = client_layer()
    invite_tx = layer.send_request(outgoing(), BOB, now=0.0)
    layer.receive(reply(invite_tx.request, 180), BOB, now=0.1)
    cancel_tx = layer.cancel(invite_tx, now=10.0)
    assert isinstance(cancel_tx, ClientTransaction)
    layer.receive(reply(cancel_tx.request, 200), BOB, now=10.1)
    events = run(layer, until=100)
    assert [(t, e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [(42.0, "cancel")]
    assert invite_tx.terminated


def test_cancel_after_the_final_response_sends_nothing() -> None:
    layer, wire = client_layer()
    invite_tx = layer.send_request(outgoing(), BOB, now=0.0)
    layer.cancel(invite_tx, now=0.1)
    layer.receive(reply(invite_tx.request, 200), BOB, now=0.2)
    wire.take()
    run(layer, until=0.5)
    assert layer.cancel(invite_tx, now=0.6) is None
    assert wire.take() == []
    with pytest.raises(ValueError):
        layer.cancel(layer.send_request(outgoing("OPTIONS", cseq=2), BOB, now=0.7), now=0.8)


def test_timer_c_cancels_an_invite_that_rings_too_long() -> None:
    layer, wire = client_layer(TimerConfig(timer_c=180.0))
    invite_tx = layer.send_request(outgoing(), BOB, now=0.0)
    layer.receive(reply(invite_tx.request, 180), BOB, now=1.0)
    layer.receive(reply(invite_tx.request, 183), BOB, now=50.0)  # a provisional restarts Timer C
    wire.take()
    events = run(layer, until=229.0)
    assert events == [] and wire.take() == []
    events = run(layer, until=230.2)
    assert [(t, e.timer) for t, e in events if isinstance(e, TransactionTimeout)] == [(230.0, "C")]
    assert wire.methods() == ["CANCEL"]


# --- matching -------------------------------------------------------------------------------------------


def test_stray_responses_are_dropped() -> None:
    layer, _wire = client_layer()
    tx = layer.send_request(outgoing(), BOB, now=0.0)
    unknown = reply(incoming(branch="z9hG4bKnobody"), 200)
    assert layer.receive(unknown, BOB, now=0.1) == []
    # right branch, but a sent-by we never put there (RFC 3261 §18.1.2)
    spoofed = reply(tx.request, 200)
    top = spoofed.via
    spoofed.headers.set("Via", str(type(top)(top.transport, "203.0.113.9", 5060, dict(top.params))))
    assert layer.receive(spoofed, BOB, now=0.2) == []
    # right branch, wrong method
    wrong_method = reply(tx.request, 200)
    wrong_method.headers.set("CSeq", "1 OPTIONS")
    assert layer.receive(wrong_method, BOB, now=0.3) == []
    assert layer.stray_responses == 3 and tx.state is TransactionState.CALLING


def test_requests_with_the_same_branch_from_different_sent_by_are_different_transactions() -> None:
    layer, _ = server_layer()
    first = layer.receive(incoming("OPTIONS"), ALICE, now=0.0)
    second = layer.receive(incoming("OPTIONS", via_host="192.0.2.99"), Address("192.0.2.99", 5060), now=0.0)
    assert len(first) == len(second) == 1 and len(layer) == 2


def test_rfc2543_requests_without_magic_cookie_are_matched_by_their_fields() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming(branch=None), ALICE, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    assert layer.receive(incoming(branch=None), ALICE, now=0.5) == []  # retransmission
    assert [type(e) for e in layer.receive(incoming(branch=None, cseq=314160), ALICE, now=0.6)] == [
        RequestReceived
    ]  # another CSeq: another transaction
    assert [type(e) for e in layer.receive(incoming("OPTIONS", branch=None), ALICE, now=0.7)] == [
        RequestReceived
    ]  # another method
    # an old-style branch without the cookie is compared as part of the Via
    assert len(layer.receive(incoming(branch="1234abc"), ALICE, now=0.8)) == 1
    layer.respond(tx, make_response(tx.request, 180, to_tag="r1"), now=1.0)
    wire.take()
    events = layer.receive(incoming("CANCEL", branch=None), ALICE, now=1.1)
    assert [type(e) for e in events] == [CancelReceived]
    assert wire.statuses() == [200, 487]
    # the ACK matches by To tag of the response
    assert layer.receive(incoming("ACK", branch=None, to_tag="other"), ALICE, now=1.2) != []
    assert tx.state is TransactionState.COMPLETED
    assert layer.receive(incoming("ACK", branch=None, to_tag="r1"), ALICE, now=1.3) == []
    assert tx.state is TransactionState.CONFIRMED


def test_malformed_header_values_are_dropped_not_raised() -> None:
    layer, _ = server_layer()
    request = incoming("OPTIONS")
    request.headers.set("CSeq", "notanumber OPTIONS")
    assert layer.receive(request, ALICE, now=0.0) == []
    assert layer.malformed_messages == 1


# --- response routing (RFC 3261 §18.2.2, RFC 3581) ------------------------------------------------------


def test_rport_requests_get_received_and_rport_and_answers_go_to_the_source() -> None:
    layer, wire = server_layer()
    nat = Address("198.51.100.7", 34567)
    (event,) = layer.receive(incoming("OPTIONS"), nat, now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    via = event.request.via
    assert (via.received, via.rport) == ("198.51.100.7", 34567)
    layer.respond(event.transaction, make_response(event.request, 200), now=0.0)
    ((response, destination),) = wire.take()
    assert destination == nat
    assert isinstance(response, Response) and response.via.rport == 34567


def test_without_rport_the_response_goes_to_received_and_the_via_port() -> None:
    layer, wire = server_layer()
    (event,) = layer.receive(incoming("OPTIONS", rport=False), Address("198.51.100.7", 34567), now=0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert event.request.via.received == "198.51.100.7" and event.request.via.rport is None
    layer.respond(event.transaction, make_response(event.request, 200), now=0.0)
    assert wire.take()[0][1] == Address("198.51.100.7", 5060)
    # same host as the Via: nothing added, answer to sent-by
    (event,) = layer.receive(incoming("INFO", rport=False), ALICE, now=0.0)
    assert isinstance(event, RequestReceived)
    assert event.request.via.received is None
    assert response_destination(event.request.via, ALICE) == ALICE


def test_stateless_responses_follow_the_same_routing() -> None:
    layer, wire = server_layer()
    request = incoming("OPTIONS")
    nat = Address("198.51.100.7", 34567)
    layer.respond_stateless(request, make_response(request, 400, "Bad Request"), nat)
    ((response, destination),) = wire.take()
    assert destination == nat and isinstance(response, Response) and response.status == 400
    assert len(layer) == 0


def test_response_destination_rules() -> None:
    via = incoming("OPTIONS", rport=False).via
    via.params["maddr"] = "224.0.1.75"
    assert response_destination(via, ALICE) == Address("224.0.1.75", 5060)
    tls = Address("192.0.2.10", 51000, "TLS")
    assert response_destination(via, tls) == tls


def test_next_hop_uses_the_first_route_else_the_request_uri() -> None:
    request = incoming("OPTIONS")
    assert next_hop(request) == Address("192.0.2.20", 5060, "UDP")
    request.headers.add("Route", "<sip:proxy.example.com:5070;transport=tcp;lr>")
    assert next_hop(request) == Address("proxy.example.com", 5070, "TCP")
    from hotline.sip.uri import parse_uri

    assert uri_destination(parse_uri("sips:bob@example.com")) == Address("example.com", 5061, "TLS")
    with pytest.raises(ValueError):
        uri_destination(parse_uri("tel:+15551234567"))


# --- transport errors -----------------------------------------------------------------------------------


def test_a_send_failure_ends_the_transaction_with_a_transport_error() -> None:
    layer, wire = client_layer()
    wire.fail = True
    tx = layer.send_request(outgoing("OPTIONS"), BOB, now=5.0)
    assert tx.terminated
    assert layer.next_deadline() == 5.0
    (event,) = layer.on_timer(5.0)
    assert isinstance(event, TransportError) and event.transaction is tx and event.destination == BOB
    assert layer.next_deadline() is None


def test_transport_failed_ends_every_transaction_to_that_destination() -> None:
    layer, _ = client_layer()
    tx1 = layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)
    tx2 = layer.send_request(outgoing("INFO", cseq=2), BOB, now=0.0)
    other = layer.send_request(outgoing("INFO", cseq=3), ALICE, now=0.0)
    events = layer.transport_failed(BOB, now=0.1)
    assert {e.transaction for e in events if isinstance(e, TransportError)} == {tx1, tx2}
    assert not other.terminated


def test_ack_is_not_sent_in_a_transaction_and_duplicate_branches_are_refused() -> None:
    layer, _ = client_layer()
    with pytest.raises(ValueError):
        layer.send_request(outgoing("ACK"), BOB, now=0.0)
    tx = layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)
    with pytest.raises(ValueError):
        layer.send_request(tx.request, BOB, now=0.0)
    no_via_layer = TransactionLayer(Wire())
    with pytest.raises(ValueError):
        no_via_layer.send_request(outgoing("OPTIONS"), BOB, now=0.0)


# --- a lossy link between two layers ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(st.booleans(), min_size=24, max_size=24), invite=st.booleans())
def test_over_any_loss_pattern_each_side_sees_the_request_and_the_final_once(
    losses: list[bool], invite: bool
) -> None:
    """Datagrams are dropped by a pattern; while one copy gets through in time, the server TU sees the
    request once and the client TU the final response once; otherwise the client times out."""
    pattern = iter(losses)
    queue: list[tuple[float, bytes, str]] = []
    now = 0.0

    def link(name: str) -> Wire:
        class Lossy(Wire):
            def __call__(self, message: Request | Response, destination: Address) -> None:
                if not next(pattern, False):
                    queue.append((now + 0.05, message.encode(), name))

        return Lossy()

    client = TransactionLayer(link("server"), sent_by=lambda d: ("192.0.2.10", 5060))
    server = TransactionLayer(link("client"))
    method = "INVITE" if invite else "OPTIONS"
    tx = client.send_request(outgoing(method), BOB, now=0.0)
    server_requests: list[Event] = []
    client_finals: list[Event] = []
    timeouts: list[Event] = []
    for _ in range(2000):
        deadlines = [d for d in (client.next_deadline(), server.next_deadline()) if d is not None]
        deadlines += [queue[0][0]] if queue else []
        if not deadlines:
            break
        now = min(deadlines)
        events: list[Event] = []
        if queue and queue[0][0] <= now:
            _, data, to = queue.pop(0)
            message = parse(data)
            if to == "server":
                events = server.receive(message, ALICE, now)
            else:
                events = client.receive(message, BOB, now)
        else:
            events = client.on_timer(now) + server.on_timer(now)
        for event in events:
            if isinstance(event, RequestReceived) and event.transaction is not None:
                server_requests.append(event)
                server.respond(event.transaction, make_response(event.request, 200, to_tag="s"), now)
            elif isinstance(event, ResponseReceived) and event.response.status >= 200:
                client_finals.append(event)
                if invite and event.response.status < 300:
                    ack = outgoing("ACK")
                    ack.headers.set("To", event.response.headers.get("To") or "")
                    client.send_ack(ack, BOB)
            elif isinstance(event, RequestReceived):
                pass  # the ACK for the 2xx
            elif isinstance(event, TransactionTimeout):
                timeouts.append(event)
    else:
        raise AssertionError("did not settle")
    assert len(server_requests) <= 1
    timed_out_client = [e for e in timeouts if isinstance(e, TransactionTimeout) and e.transaction is tx]
    if client_finals:
        assert len(client_finals) == 1 and not timed_out_client
    else:
        assert len(timed_out_client) == 1
    assert len(client) == 0 and len(server) == 0
