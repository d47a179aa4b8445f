"""SIP transactions (RFC 3261 §17 with the RFC 6026 corrections), sans-IO.

One `TransactionLayer` holds every client and server transaction of a SIP stack. The driver feeds it:

- `receive(message, source, now) -> list[Event]` for every parsed message that arrived;
- `on_timer(now) -> list[Event]` whenever `next_deadline()` (a float, or None when idle) has passed.

The transaction user (TU: dialogs, the UA core) calls:

- `send_request(request, destination, now, *, reliable=None) -> ClientTransaction`;
- `respond(server_transaction, response, now) -> bool` (False when the transaction no longer takes it);
- `cancel(invite_transaction, now, *, reason=None) -> ClientTransaction | None` (RFC 3261 §9.1);
- `send_ack(ack, destination)` for the ACK of a 2xx (it is not part of any transaction);
- `respond_stateless(request, response, source)` e.g. for a 400 to a request that never became a transaction;
- `transport_failed(destination, now) -> list[Event]` when the driver learns a destination is unreachable.

Outgoing messages go through the `send(message, destination)` callback given to the constructor; the driver
encodes and transmits them. If `send` raises `OSError` the transaction ends with a `TransportError` event,
delivered by the next `on_timer` (`next_deadline()` then returns the time of the failure).

Events: `RequestReceived` (a new request; `transaction` is None for ACK, which never makes a server
transaction), `ResponseReceived`, `CancelReceived` (a CANCEL matched a ringing INVITE: the layer already
answered the CANCEL with 200 and the INVITE with 487), `TransactionTimeout` (timer B, F, H, C, L or "cancel")
and `TransportError`.

Choices worth knowing:

- An INVITE server transaction sends 100 Trying immediately (RFC 3261 §17.2.1 allows it; it stops the
  caller's retransmissions at once and costs one datagram).
- A 2xx to an INVITE is retransmitted by the layer on the TU's behalf (RFC 3261 §13.3.1.4: T1 doubling up
  to T2, on every transport) until the ACK for it arrives, matched by Call-ID, CSeq number and tags; after
  64*T1 without an ACK the TU gets `TransactionTimeout(timer="L")` and should send BYE.
- After the TU sent an ACK for a 2xx with `send_ack`, retransmissions of that 2xx are answered with the same
  ACK by the layer; a 2xx from another fork (new To tag) goes up to the TU.
- Responses that match no client transaction are dropped (RFC 6026 §8.9) and counted in `stray_responses`.
- A request without a Via gets one from the `sent_by` callback (with a fresh branch and `rport`).
- Retransmissions only over unreliable transports (per transaction: `Address.reliable`, or the `reliable=`
  argument). Timers D, I, J, K are zero on reliable transports.
- Received requests get `received=`/`rport=` filled in their top Via (RFC 3261 §18.2.1, RFC 3581), and
  `response_destination(via, source)` computes where a response goes.
- `next_hop(request)` / `uri_destination(uri)` give the `Address` a request goes to (first Route, else the
  Request-URI; host names are left for the driver to resolve).
- Server transactions are matched by branch + sent-by + method (ACK matches INVITE), and for requests
  without the magic cookie by the RFC 2543 rules (Request-URI, tags, Call-ID, CSeq, top Via).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from hotline.sip.errors import ParseError
from hotline.sip.headers import Headers, Via, parse_name_addr
from hotline.sip.message import Request, Response, make_response, new_branch, new_tag
from hotline.sip.uri import URI, SipURI

__all__ = [
    "MAGIC_COOKIE",
    "Address",
    "CancelReceived",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransactionState",
    "TransactionTimeout",
    "TransportError",
    "build_ack",
    "build_cancel",
    "default_port",
    "next_hop",
    "response_destination",
    "stamp_via",
    "uri_destination",
]

MAGIC_COOKIE = "z9hG4bK"
RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def default_port(transport: str) -> int:
    """The port a URI or Via without one means (RFC 3261 §19.1.2, RFC 7118 for WebSocket)."""
    transport = transport.upper()
    if transport in ("TLS", "TLS-SCTP"):
        return 5061
    if transport == "WS":
        return 80
    if transport == "WSS":
        return 443
    return 5060


@dataclass(frozen=True)
class Address:
    """Where a message came from or goes to; in a destination `host` may be a name the driver resolves."""

    host: str
    port: int
    transport: str = "UDP"

    def __post_init__(self) -> None:
        object.__setattr__(self, "transport", self.transport.upper())

    @property
    def reliable(self) -> bool:
        return self.transport in RELIABLE_TRANSPORTS


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 timer values in seconds. `timer_c` (proxies: > 180 s) is off when None."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    timer_c: float | None = None

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.timer_d < 0:
            raise ValueError("timers need 0 < T1 <= T2, T4 > 0, D >= 0")
        if self.timer_c is not None and self.timer_c <= 0:
            raise ValueError("timer C must be positive")


class TransactionState(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class Transaction:
    """What client and server transactions share. Read-only for the TU."""

    def __init__(self, request: Request, branch: str, reliable: bool, state: TransactionState) -> None:
        self.request = request
        self.method = request.method
        self.branch = branch
        self.reliable = reliable
        self.state = state
        self.last_response: Response | None = None
        # timer name -> sequence number of its live heap entry; interval of the retransmission timers
        self._timers: dict[str, int] = {}
        self._intervals: dict[str, float] = {}

    @property
    def is_invite(self) -> bool:
        return self.method == "INVITE"

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"


class ClientTransaction(Transaction):
    def __init__(self, request: Request, branch: str, destination: Address, reliable: bool) -> None:
        initial = TransactionState.CALLING if request.method == "INVITE" else TransactionState.TRYING
        super().__init__(request, branch, reliable, initial)
        self.destination = destination
        self.cancel_transaction: ClientTransaction | None = None  # the CANCEL we sent for this INVITE
        self.cancels: ClientTransaction | None = None  # for a CANCEL: the INVITE it cancels
        self._cancel_pending = False
        self._cancel_reason: str | None = None
        self._ack: Request | None = None  # ACK for a non-2xx final response
        self._acks_2xx: dict[str | None, tuple[Request, Address]] = {}  # To tag -> the TU's ACK for that 2xx
        self._accepted_key: tuple[str, int, str | None] | None = None


class ServerTransaction(Transaction):
    def __init__(
        self, request: Request, branch: str, source: Address, reliable: bool, destination: Address
    ) -> None:
        initial = TransactionState.PROCEEDING if request.method == "INVITE" else TransactionState.TRYING
        super().__init__(request, branch, reliable, initial)
        self.source = source
        self.response_destination = destination
        self.acked = False  # an ACK arrived (for the non-2xx or the 2xx response)
        self._key: tuple[str, str, int, str] | None = None
        self._loose_key: tuple[str, str | None, str, int, tuple[object, ...]] | None = None
        self._accepted_key: tuple[str, int, str | None, str | None] | None = None


# --- events ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RequestReceived:
    request: Request
    source: Address
    transaction: ServerTransaction | None  # None for ACK


@dataclass(frozen=True, eq=False)
class ResponseReceived:
    response: Response
    transaction: ClientTransaction


@dataclass(frozen=True, eq=False)
class CancelReceived:
    """A CANCEL matched `invite_transaction` before its final response; 200 and 487 are already sent."""

    cancel: Request
    invite_transaction: ServerTransaction


@dataclass(frozen=True, eq=False)
class TransactionTimeout:
    """timer: "B"/"F" (no final response), "H" (no ACK for a non-2xx), "L" (no ACK for a 2xx),
    "C" (INVITE ringing too long: a CANCEL was sent), "cancel" (no final response 64*T1 after our CANCEL)."""

    transaction: Transaction
    timer: str


@dataclass(frozen=True, eq=False)
class TransportError:
    transaction: Transaction
    destination: Address
    error: str


Event = RequestReceived | ResponseReceived | CancelReceived | TransactionTimeout | TransportError


# --- helpers -----------------------------------------------------------------------------------------------


def stamp_via(via: Via, source: Address) -> Via:
    """The top Via as a server transport records it: received= when the host differs (RFC 3261 §18.2.1),
    rport= and received= when the client asked for rport (RFC 3581 §4)."""
    params = dict(via.params)
    if via.rport is not None:
        params["rport"] = str(source.port)
        params["received"] = source.host
    elif via.host.lower() != source.host.lower():
        params["received"] = source.host
    if params == via.params:
        return via
    return replace(via, params=params)


def response_destination(via: Via, source: Address) -> Address:
    """Where a response to a request with this (stamped) top Via goes (RFC 3261 §18.2.2, RFC 3581 §4).

    Reliable transports answer over the connection the request came on, i.e. back to `source`."""
    transport = via.transport.upper()
    if source.reliable:
        return source
    maddr = via.params.get("maddr")
    if maddr:
        return Address(maddr, via.port or default_port(transport), source.transport)
    host = via.received or via.host
    rport = via.rport
    port = rport if rport is not None and rport > 0 else (via.port or default_port(transport))
    return Address(host, port, source.transport)


def uri_destination(uri: URI) -> Address:
    """The address a sip:/sips: URI names, without DNS (RFC 3263 lookups are the driver's): maddr or host,
    the port or the transport's default, the transport parameter (TLS for sips:)."""
    if not isinstance(uri, SipURI):
        raise ValueError(f"cannot send to a {uri} URI")
    transport = uri.transport.upper()
    if uri.scheme == "sips":
        transport = {"TCP": "TLS", "WS": "WSS", "UDP": "TLS"}.get(transport, transport)
    host = uri.params.get("maddr") or uri.host
    return Address(host, uri.port or default_port(transport), transport)


def next_hop(request: Request) -> Address:
    """Where a request goes first: the top Route's URI, else the Request-URI (RFC 3261 §8.1.2)."""
    route = request.headers.get("Route")
    if route is not None:
        return uri_destination(parse_name_addr(route).uri)
    return uri_destination(request.uri)


def _copy_headers(source: Headers, target: Headers, *names: str) -> None:
    for name in names:
        for value in source.get_all(name):
            target.add(name, value)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final response (RFC 3261 §17.1.1.3)."""
    headers = Headers()
    headers.add("Via", str(invite.via))
    _copy_headers(invite.headers, headers, "Route")
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", response.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.number} ACK")
    return Request(method="ACK", uri=invite.uri, headers=headers, body=b"")


def build_cancel(invite: Request, reason: str | None = None) -> Request:
    """CANCEL for an INVITE we sent (RFC 3261 §9.1); `reason` is a Reason header value (RFC 3326)."""
    headers = Headers()
    headers.add("Via", str(invite.via))
    _copy_headers(invite.headers, headers, "Route")
    headers.add("Max-Forwards", "70")
    headers.add("From", invite.headers.get("From") or "")
    headers.add("To", invite.headers.get("To") or "")
    headers.add("Call-ID", invite.call_id)
    headers.add("CSeq", f"{invite.cseq.number} CANCEL")
    if reason:
        headers.add("Reason", reason)
    return Request(method="CANCEL", uri=invite.uri, headers=headers, body=b"")


def _via_identity(via: Via) -> tuple[object, ...]:
    """A top Via reduced to what makes two copies of the same request equal (RFC 2543 matching)."""
    params = tuple(sorted((k.lower(), v) for k, v in via.params.items()))
    return (via.transport.upper(), via.host.lower(), via.port, params)


def _has_cookie(branch: str | None) -> bool:
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def _replace_top_via(request: Request, via: Via) -> None:
    """Rewrite the first Via element in place, one element per line, the lines where they were."""
    vias = request.headers.get_all("Via")
    vias[0] = str(via)
    request.headers.set("Via", vias[-1])
    for value in reversed(vias[:-1]):
        request.headers.add("Via", value, first=True)


# --- the layer ---------------------------------------------------------------------------------------------

SendFunction = Callable[[Request | Response, Address], None]
SentByFunction = Callable[[Address], tuple[str, int | None]]


class TransactionLayer:
    """All transactions of one SIP stack. See the module docstring for the contract."""

    def __init__(
        self, send: SendFunction, *, timers: TimerConfig | None = None, sent_by: SentByFunction | None = None
    ) -> None:
        self._send_function = send
        self.timers = timers or TimerConfig()
        self._sent_by = sent_by
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str, int, str], ServerTransaction] = {}
        self._loose_servers: dict[
            tuple[str, str | None, str, int, tuple[object, ...]], list[ServerTransaction]
        ] = {}
        # INVITE transactions in the Accepted state, found by what a 2xx ACK carries (it has a new branch)
        self._accepted_servers: dict[tuple[str, int, str | None, str | None], ServerTransaction] = {}
        self._accepted_clients: dict[tuple[str, int, str | None], ClientTransaction] = {}
        self._heap: list[tuple[float, int, Transaction, str]] = []
        self._sequence = itertools.count()
        self._pending: list[Event] = []
        self._pending_since: float | None = None
        self._now = 0.0
        self.stray_responses = 0
        self.malformed_messages = 0

    # --- introspection

    @property
    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._clients.values())

    @property
    def server_transactions(self) -> list[ServerTransaction]:
        loose = [tx for group in self._loose_servers.values() for tx in group]
        return [*self._servers.values(), *loose]

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers) + sum(len(g) for g in self._loose_servers.values())

    # --- timers

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2]._timers.get(heap[0][3]) != heap[0][1]:
            heapq.heappop(heap)
        deadline = heap[0][0] if heap else None
        if self._pending_since is not None and (deadline is None or self._pending_since < deadline):
            return self._pending_since
        return deadline

    def on_timer(self, now: float) -> list[Event]:
        self._now = now
        events = self._take_pending()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, sequence, tx, name = heapq.heappop(heap)
            if tx._timers.get(name) != sequence:
                continue
            del tx._timers[name]
            events.extend(self._fire(tx, name, now))
            events.extend(self._take_pending())
        return events

    def _schedule(self, tx: Transaction, name: str, when: float) -> None:
        sequence = next(self._sequence)
        tx._timers[name] = sequence
        heapq.heappush(self._heap, (when, sequence, tx, name))

    def _stop(self, tx: Transaction, *names: str) -> None:
        for name in names:
            tx._timers.pop(name, None)

    def _take_pending(self) -> list[Event]:
        events, self._pending, self._pending_since = self._pending, [], None
        return events

    # --- sending

    def _transmit(self, tx: Transaction, message: Request | Response, destination: Address) -> bool:
        try:
            self._send_function(message, destination)
        except OSError as error:
            if not tx.terminated:
                self._terminate(tx)
                self._pending.append(TransportError(tx, destination, str(error) or type(error).__name__))
                if self._pending_since is None:
                    self._pending_since = self._now
            return False
        return True

    def send_request(
        self, request: Request, destination: Address, now: float, *, reliable: bool | None = None
    ) -> ClientTransaction:
        """Start a client transaction for `request` (not ACK) and send it to `destination`."""
        if request.method == "ACK":
            raise ValueError(
                "ACK is not sent in a transaction: use send_ack or let the INVITE transaction do it"
            )
        self._now = now
        branch = self._ensure_via(request, destination)
        key = (branch, request.method)
        if key in self._clients:
            raise ValueError(f"a client transaction with branch {branch} and method {request.method} exists")
        tx = ClientTransaction(
            request, branch, destination, destination.reliable if reliable is None else reliable
        )
        self._clients[key] = tx
        t = self.timers
        if tx.is_invite:
            if not tx.reliable:
                tx._intervals["A"] = t.t1
                self._schedule(tx, "A", now + t.t1)
            self._schedule(tx, "B", now + 64 * t.t1)
            if t.timer_c is not None:
                self._schedule(tx, "C", now + t.timer_c)
        else:
            if not tx.reliable:
                tx._intervals["E"] = t.t1
                self._schedule(tx, "E", now + t.t1)
            self._schedule(tx, "F", now + 64 * t.t1)
        self._transmit(tx, request, destination)
        return tx

    def _ensure_via(self, request: Request, destination: Address) -> str:
        if "Via" in request.headers:
            branch = request.via.branch
            if not _has_cookie(branch) or branch is None:
                raise ValueError("requests we send need a top Via branch starting with z9hG4bK")
            return branch
        if self._sent_by is None:
            raise ValueError("the request has no Via and the layer has no sent_by function")
        host, port = self._sent_by(destination)
        branch = new_branch()
        via = Via(
            transport=destination.transport, host=host, port=port, params={"branch": branch, "rport": None}
        )
        request.headers.add("Via", str(via), first=True)
        return branch

    def send_ack(self, ack: Request, destination: Address) -> None:
        """Send the ACK for a 2xx (RFC 3261 §13.2.2.4); the layer resends it if that 2xx comes again."""
        if ack.method != "ACK":
            raise ValueError("send_ack sends ACK requests only")
        self._ensure_via(ack, destination)
        tx = self._accepted_clients.get((ack.call_id, ack.cseq.number, ack.from_.tag))
        if tx is not None and tx.state is TransactionState.ACCEPTED:
            tx._acks_2xx[ack.to.tag] = (ack, destination)
        with contextlib.suppress(OSError):  # the 2xx will come again and the ACK with it
            self._send_function(ack, destination)

    def respond_stateless(self, request: Request, response: Response, source: Address) -> None:
        """Send a response outside any transaction (e.g. 400 for a request we could not accept at all)."""
        via = stamp_via(response.via, source)
        with contextlib.suppress(OSError):  # nothing to retry: the client retransmits
            self._send_function(response, response_destination(via, source))

    def cancel(
        self, transaction: ClientTransaction, now: float, *, reason: str | None = None
    ) -> ClientTransaction | None:
        """Cancel a pending INVITE (RFC 3261 §9.1). The CANCEL goes out once a provisional response has
        arrived: returns its transaction, or None when it is deferred, already sent, or no longer needed."""
        if not transaction.is_invite:
            raise ValueError("only INVITE transactions can be cancelled")
        self._now = now
        if transaction.cancel_transaction is not None or transaction._cancel_pending:
            return None
        if transaction.state is TransactionState.CALLING:
            transaction._cancel_pending = True
            transaction._cancel_reason = reason
            return None
        if transaction.state is TransactionState.PROCEEDING:
            return self._send_cancel(transaction, now, reason)
        return None

    def _send_cancel(self, invite_tx: ClientTransaction, now: float, reason: str | None) -> ClientTransaction:
        invite_tx._cancel_pending = False
        cancel = build_cancel(invite_tx.request, reason)
        cancel_tx = self.send_request(cancel, invite_tx.destination, now, reliable=invite_tx.reliable)
        cancel_tx.cancels = invite_tx
        invite_tx.cancel_transaction = cancel_tx
        if not invite_tx.terminated:
            self._schedule(invite_tx, "cancel", now + 64 * self.timers.t1)
        return cancel_tx

    def respond(self, transaction: ServerTransaction, response: Response, now: float) -> bool:
        """Send `response` in `transaction`. Returns False (sending nothing) when the transaction already
        has a final response that rules this one out, e.g. the INVITE was cancelled meanwhile."""
        if not 100 <= response.status <= 699:
            raise ValueError(f"invalid status {response.status}")
        self._now = now
        tx = transaction
        status = response.status
        t = self.timers
        State = TransactionState
        if tx.is_invite:
            if tx.state is State.PROCEEDING:
                tx.last_response = response
                if status >= 300:
                    tx.state = State.COMPLETED
                    if not tx.reliable:
                        tx._intervals["G"] = t.t1
                        self._schedule(tx, "G", now + t.t1)
                    self._schedule(tx, "H", now + 64 * t.t1)
                elif status >= 200:
                    tx.state = State.ACCEPTED
                    self._schedule(tx, "L", now + 64 * t.t1)
                    tx._intervals["2xx"] = t.t1
                    self._schedule(tx, "2xx", now + t.t1)
                    key = (tx.request.call_id, tx.request.cseq.number, tx.request.from_.tag, response.to.tag)
                    tx._accepted_key = key
                    self._accepted_servers[key] = tx
                self._transmit(tx, response, tx.response_destination)
                return True
            if tx.state is State.ACCEPTED and 200 <= status < 300:
                tx.last_response = response
                self._transmit(tx, response, tx.response_destination)
                return True
            return False
        if tx.state in (State.TRYING, State.PROCEEDING):
            tx.last_response = response
            if status < 200:
                tx.state = State.PROCEEDING
            else:
                tx.state = State.COMPLETED
            sent = self._transmit(tx, response, tx.response_destination)
            if sent and status >= 200:
                if tx.reliable:
                    self._terminate(tx)
                else:
                    self._schedule(tx, "J", now + 64 * t.t1)
            return True
        return False

    def transport_failed(self, destination: Address, now: float) -> list[Event]:
        """The driver could not reach `destination` (e.g. TCP connect refused, ICMP unreachable): every
        transaction sending there ends with a TransportError event."""
        self._now = now
        events: list[Event] = []
        for tx in list(self._clients.values()):
            if tx.destination == destination and not tx.terminated:
                self._terminate(tx)
                events.append(TransportError(tx, destination, "unreachable"))
        for stx in self.server_transactions:
            if stx.response_destination == destination and not stx.terminated:
                self._terminate(stx)
                events.append(TransportError(stx, destination, "unreachable"))
        return events

    # --- receiving

    def receive(self, message: Request | Response, source: Address, now: float) -> list[Event]:
        """Process one received message; returns what the TU must see (retransmissions are absorbed)."""
        self._now = now
        try:
            if isinstance(message, Request):
                events = self._receive_request(message, source, now)
            else:
                events = self._receive_response(message, now)
        except ParseError:
            # parse() validated the message; a header that fails on access means it is unusable: drop it
            self.malformed_messages += 1
            return self._take_pending()
        return events + self._take_pending()

    def _receive_response(self, response: Response, now: float) -> list[Event]:
        via = response.via
        cseq = response.cseq
        tx = self._clients.get((via.branch or "", cseq.method))
        if tx is None or tx.terminated:
            self.stray_responses += 1
            return []
        own_via = tx.request.via
        if (own_via.host.lower(), own_via.port) != (via.host.lower(), via.port):
            self.stray_responses += 1  # RFC 3261 §18.1.2: sent-by is not what we inserted
            return []
        if tx.is_invite:
            return self._client_invite_response(tx, response, now)
        return self._client_non_invite_response(tx, response, now)

    def _client_invite_response(self, tx: ClientTransaction, response: Response, now: float) -> list[Event]:
        State = TransactionState
        status = response.status
        t = self.timers
        if tx.state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                tx.state = State.PROCEEDING
                tx.last_response = response
                self._stop(tx, "A", "B")
                if t.timer_c is not None and "C" in tx._timers and status > 100:
                    self._schedule(tx, "C", now + t.timer_c)
                events: list[Event] = [ResponseReceived(response, tx)]
                if tx._cancel_pending:
                    self._send_cancel(tx, now, tx._cancel_reason)
                return events
            tx.last_response = response
            tx._cancel_pending = False
            self._stop(tx, "A", "B", "C", "cancel")
            if status < 300:
                tx.state = State.ACCEPTED
                self._schedule(tx, "M", now + 64 * t.t1)
                key = (tx.request.call_id, tx.request.cseq.number, tx.request.from_.tag)
                tx._accepted_key = key
                self._accepted_clients[key] = tx
                return [ResponseReceived(response, tx)]
            tx.state = State.COMPLETED
            tx._ack = build_ack(tx.request, response)
            self._transmit(tx, tx._ack, tx.destination)
            if tx.reliable or t.timer_d == 0:
                self._terminate(tx)
            else:
                self._schedule(tx, "D", now + t.timer_d)
            return [ResponseReceived(response, tx)]
        if tx.state is State.COMPLETED:
            if status >= 300 and tx._ack is not None:
                self._transmit(tx, tx._ack, tx.destination)
            return []
        if tx.state is State.ACCEPTED and 200 <= status < 300:
            sent = tx._acks_2xx.get(response.to.tag)
            if sent is None:
                return [ResponseReceived(response, tx)]
            with contextlib.suppress(OSError):
                self._send_function(*sent)
            return []
        return []

    def _client_non_invite_response(
        self, tx: ClientTransaction, response: Response, now: float
    ) -> list[Event]:
        State = TransactionState
        if tx.state not in (State.TRYING, State.PROCEEDING):
            return []  # Completed: absorb retransmitted finals
        tx.last_response = response
        if response.status < 200:
            tx.state = State.PROCEEDING
            return [ResponseReceived(response, tx)]
        tx.state = State.COMPLETED
        self._stop(tx, "E", "F")
        if tx.reliable:
            self._terminate(tx)
        else:
            self._schedule(tx, "K", now + self.timers.t4)
        return [ResponseReceived(response, tx)]

    def _match_server(self, request: Request, method: str) -> ServerTransaction | None:
        """The server transaction `request` belongs to, looking for a transaction of `method`."""
        via = request.via
        branch = via.branch
        if _has_cookie(branch) and branch is not None:
            key = (branch, via.host.lower(), via.port or default_port(via.transport), method)
            return self._servers.get(key)
        candidates = self._loose_servers.get(self._loose_key(request), [])
        to_tag = request.to.tag
        for tx in candidates:
            if tx.method != method or tx.terminated:
                continue
            if request.method == "ACK":
                sent_tag = tx.last_response.to.tag if tx.last_response is not None else None
                if sent_tag == to_tag:
                    return tx
            elif tx.request.to.tag == to_tag:
                return tx
        return None

    @staticmethod
    def _loose_key(request: Request) -> tuple[str, str | None, str, int, tuple[object, ...]]:
        return (
            str(request.uri),
            request.from_.tag,
            request.call_id,
            request.cseq.number,
            _via_identity(request.via),
        )

    def _receive_request(self, request: Request, source: Address, now: float) -> list[Event]:
        method = request.method
        # read what matching and responding need now, so a bad value drops the request before any state
        _ = (request.via, request.cseq, request.call_id, request.from_, request.to)
        State = TransactionState
        if method == "ACK":
            tx = self._match_server(request, "INVITE")
            if tx is not None:
                if tx.state is State.COMPLETED:
                    tx.state = State.CONFIRMED
                    tx.acked = True
                    self._stop(tx, "G", "H")
                    if tx.reliable:
                        self._terminate(tx)
                    else:
                        self._schedule(tx, "I", now + self.timers.t4)
                    return []
                if tx.state is not State.ACCEPTED:
                    return []  # Confirmed: absorb retransmitted ACKs
            # an ACK for a 2xx: a request of its own for the TU; it stops our 2xx retransmissions
            key = (request.call_id, request.cseq.number, request.from_.tag, request.to.tag)
            accepted = tx or self._accepted_servers.get(key)
            if accepted is not None and accepted.state is State.ACCEPTED:
                accepted.acked = True
                self._stop(accepted, "2xx")
            return [RequestReceived(request, source, None)]

        tx = self._match_server(request, method)
        if tx is not None:
            if tx.state in (State.PROCEEDING, State.COMPLETED) and tx.last_response is not None:
                self._transmit(tx, tx.last_response, tx.response_destination)
            return []  # Trying, Accepted (RFC 6026) and Confirmed absorb the retransmission

        via = request.via
        stamped = stamp_via(via, source)
        if stamped is not via:
            _replace_top_via(request, stamped)
        branch = via.branch
        new_tx = ServerTransaction(
            request, branch or "", source, source.reliable, response_destination(stamped, source)
        )
        if _has_cookie(branch) and branch is not None:
            new_tx._key = (branch, via.host.lower(), via.port or default_port(via.transport), method)
            self._servers[new_tx._key] = new_tx
        else:
            # key from the Via as received: retransmissions carry it unstamped
            new_tx._loose_key = (
                str(request.uri),
                request.from_.tag,
                request.call_id,
                request.cseq.number,
                _via_identity(via),
            )
            self._loose_servers.setdefault(new_tx._loose_key, []).append(new_tx)

        if method == "CANCEL":
            return self._receive_cancel(request, new_tx, now)
        if method == "INVITE":
            trying = make_response(request, 100)
            new_tx.last_response = trying
            self._transmit(new_tx, trying, new_tx.response_destination)
        return [RequestReceived(request, source, new_tx)]

    def _receive_cancel(self, cancel: Request, cancel_tx: ServerTransaction, now: float) -> list[Event]:
        invite_tx = self._match_cancelled(cancel, cancel_tx)
        if invite_tx is None:
            self.respond(cancel_tx, make_response(cancel, 481), now)
            return []
        to_tag = cancel.to.tag or self._local_tag(invite_tx)
        self.respond(cancel_tx, make_response(cancel, 200, to_tag=to_tag), now)
        if invite_tx.state is not TransactionState.PROCEEDING:
            return []  # already answered: the CANCEL has no effect (RFC 3261 §9.2)
        self.respond(invite_tx, make_response(invite_tx.request, 487, to_tag=to_tag), now)
        return [CancelReceived(cancel, invite_tx)]

    def _match_cancelled(self, cancel: Request, cancel_tx: ServerTransaction) -> ServerTransaction | None:
        if cancel_tx._loose_key is None:
            return self._match_server(cancel, "INVITE")
        # the CANCEL's Via is stamped by now: use the key taken from it as received
        for tx in self._loose_servers.get(cancel_tx._loose_key, []):
            if tx.method == "INVITE" and not tx.terminated and tx.request.to.tag == cancel.to.tag:
                return tx
        return None

    @staticmethod
    def _local_tag(tx: ServerTransaction) -> str:
        """The To tag the TU already used in this INVITE's responses, or a new one."""
        if tx.last_response is not None:
            tag = tx.last_response.to.tag
            if tag:
                return tag
        return new_tag()

    # --- timers firing

    def _fire(self, tx: Transaction, name: str, now: float) -> list[Event]:
        t = self.timers
        State = TransactionState
        if isinstance(tx, ClientTransaction):
            if name == "A" and tx.state is State.CALLING:
                self._retransmit(tx, name, now, cap=None)
                self._transmit(tx, tx.request, tx.destination)
            elif name == "E" and tx.state in (State.TRYING, State.PROCEEDING):
                if tx.state is State.PROCEEDING:
                    tx._intervals["E"] = t.t2  # Proceeding: every T2 (RFC 3261 §17.1.2.2)
                    self._schedule(tx, name, now + t.t2)
                else:
                    self._retransmit(tx, name, now, cap=t.t2)
                self._transmit(tx, tx.request, tx.destination)
            elif name in ("B", "F") and tx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                self._terminate(tx)
                return [TransactionTimeout(tx, name)]
            elif name == "C" and tx.state is State.PROCEEDING:
                if tx.cancel_transaction is None:
                    self._send_cancel(tx, now, None)
                return [TransactionTimeout(tx, name)]
            elif name == "cancel" and tx.state in (State.CALLING, State.PROCEEDING):
                self._terminate(tx)
                return [TransactionTimeout(tx, name)]
            elif name in ("D", "K", "M"):
                self._terminate(tx)
            return []
        assert isinstance(tx, ServerTransaction)
        resend_final = name == "G" and tx.state is State.COMPLETED
        resend_2xx = name == "2xx" and tx.state is State.ACCEPTED and not tx.acked
        if (resend_final or resend_2xx) and tx.last_response is not None:
            self._retransmit(tx, name, now, cap=t.t2)
            self._transmit(tx, tx.last_response, tx.response_destination)
        elif name == "H" and tx.state is State.COMPLETED:
            self._terminate(tx)
            return [TransactionTimeout(tx, name)]
        elif name == "L":
            acked = tx.acked
            self._terminate(tx)
            if not acked:
                return [TransactionTimeout(tx, name)]
        elif name in ("I", "J"):
            self._terminate(tx)
        return []

    def _retransmit(self, tx: Transaction, name: str, now: float, cap: float | None) -> None:
        """Schedule the next firing of retransmission timer `name` with a doubled interval."""
        interval = tx._intervals[name] * 2
        if cap is not None:
            interval = min(interval, cap)
        tx._intervals[name] = interval
        self._schedule(tx, name, now + interval)

    def _terminate(self, tx: Transaction) -> None:
        tx.state = TransactionState.TERMINATED
        tx._timers.clear()
        if isinstance(tx, ClientTransaction):
            if self._clients.get((tx.branch, tx.method)) is tx:
                del self._clients[(tx.branch, tx.method)]
            if tx._accepted_key is not None and self._accepted_clients.get(tx._accepted_key) is tx:
                del self._accepted_clients[tx._accepted_key]
            return
        assert isinstance(tx, ServerTransaction)
        if tx._key is not None and self._servers.get(tx._key) is tx:
            del self._servers[tx._key]
        if tx._loose_key is not None:
            group = self._loose_servers.get(tx._loose_key, [])
            if tx in group:
                group.remove(tx)
            if not group:
                self._loose_servers.pop(tx._loose_key, None)
        if tx._accepted_key is not None and self._accepted_servers.get(tx._accepted_key) is tx:
            del self._accepted_servers[tx._accepted_key]
