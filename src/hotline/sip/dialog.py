"""SIP dialogs (RFC 3261 §12-15), REFER (RFC 3515), Replaces (RFC 3891), session timers (RFC 4028); sans-IO.

A `Dialog` is the state two UAs share: Call-ID, tags, CSeq counters, route set, remote target.

- `Dialog.create_uas(request, local_contact, *, local_tag=None, session_settings=None)`: from an INVITE we
  received (early until `make_response` sends a 2xx, terminated by a 3xx-6xx).
- `Dialog.create_uac(request, response, *, session_settings=None, now=None)`: from a 1xx-with-To-tag (early)
  or a 2xx (confirmed) to our INVITE. Forked responses (other To tags) make other dialogs.
- `dialog.make_response(request, status, reason=None, *, headers=(), body=b"", content_type=None, now=None)`:
  a response inside the dialog: our To tag, Record-Route copied for the dialog-creating request, Contact
  where needed, session timer headers on 2xx to INVITE/UPDATE; updates the state (confirmed, target refresh,
  BYE ends the dialog).
- `dialog.receive_request(request, now=None) -> Response | None`: checks an in-dialog request; returns the
  rejection to send (500 lower CSeq, 491/500 re-INVITE glare, 422 session interval too small, 481 after the
  dialog ended) or None when the TU may go on.
- `dialog.receive_response(response, now=None)`: applies a response to a request we sent in the dialog.
  Feed it every final response, failures too (a re-INVITE stays "pending", and the peer's re-INVITEs get 491,
  until its final response arrives); on a transaction timeout feed `make_response(request, 408)` (RFC 3261
  §12.2.1.2: the dialog ends), on a transport error `make_response(request, 503)` (§8.1.3.1).
- `dialog.terminate()`: ends it for reasons it cannot see (CancelReceived, a timeout, a transport error).
- `dialog.create_request(method, *, body=b"", content_type=None, headers=())`: BYE, re-INVITE, UPDATE,
  INFO, OPTIONS, REFER, NOTIFY, ... with Request-URI and Route from the route set (loose routing, or the
  strict-routing fallback of §12.2.1.1). No Via: `TransactionLayer.send_request` adds it.
- `dialog.create_ack(cseq_number=None)`: the ACK for a 2xx, with the INVITE's CSeq number.
- `dialog.create_refer(refer_to, *, replaces=None, referred_by=None)`,
  `dialog.create_refer_notify(status, ...)`, `dialog.create_notify(event, subscription_state, ...)`;
  `dialog.replaces_for_remote()` is the Replaces a
  transfer target needs to find this dialog (attended transfer).
- `DialogTable`: dialogs by `DialogId`; `match_request`, `match_response`, `early_dialogs`, `terminate_early`,
  `find_replaced(replaces)` (RFC 3891 §3: 481/486/603 as `DialogError`).
- `build_request(method, request_uri, from_, to, *, contact=None, ...)`: an out-of-dialog request (RFC 3261
  §8.1.1), e.g. the initial INVITE.
- REFER/NOTIFY values: `Replaces`/`parse_replaces`, `ReferTo`/`parse_refer_to`, `SubscriptionState`/
  `parse_subscription_state`, `sipfrag(status)`/`parse_sipfrag(body)`.
- Session timers: `SessionTimerSettings(session_expires=1800, min_se=90)` with `request_headers()`,
  `after_422(response)`; `negotiate_uas(request, settings, now)` (raises `SessionIntervalTooSmall`, answer 422
  with `min_se_response`), `negotiate_uac(response, now)`; `SessionTimer.refresh_at` (we refresh at half the
  interval, when we are the refresher), `.expires_at` (interval - min(32, interval/3) after the last refresh:
  the session is dead, send BYE), `.due(now) -> "refresh" | "expired" | None`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from hotline.sip.errors import ParseError
from hotline.sip.headers import Headers, NameAddr, parse_name_addr, parse_params
from hotline.sip.message import Request, Response, make_response, new_call_id, new_tag
from hotline.sip.uri import URI, SipURI

__all__ = [
    "CONTACT_METHODS",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "DialogTable",
    "ReferTo",
    "Replaces",
    "SessionExpires",
    "SessionIntervalTooSmall",
    "SessionTimer",
    "SessionTimerSettings",
    "SubscriptionState",
    "build_request",
    "min_se_response",
    "negotiate_uac",
    "negotiate_uas",
    "parse_refer_to",
    "parse_replaces",
    "parse_session_expires",
    "parse_sipfrag",
    "parse_subscription_state",
    "sipfrag",
]

# Requests that change the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665, RFC 3515).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Requests, and their 1xx/2xx responses, that carry our Contact.
CONTACT_METHODS = TARGET_REFRESH_METHODS

Header = tuple[str, str]


class DialogError(ValueError):
    """A request or operation the dialog layer refuses; `status` is the SIP answer when one applies."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class DialogId:
    """Call-ID and the tags, seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The dialog a request we received belongs to: our tag is in To, theirs in From."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The dialog a response to our request belongs to: our tag is in From, theirs in To."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


def _without_tag(party: NameAddr) -> NameAddr:
    return replace(party, params={k: v for k, v in party.params.items() if k != "tag"})


def _with_tag(party: NameAddr, tag: str) -> NameAddr:
    params = {k: v for k, v in party.params.items() if k != "tag"}
    if tag:
        params["tag"] = tag
    return replace(party, params=params)


def _as_name_addr(value: NameAddr | URI | str) -> NameAddr:
    if isinstance(value, NameAddr):
        return value
    if isinstance(value, str):
        return parse_name_addr(value)
    return NameAddr(None, value, {})


def _record_route(message: Request | Response) -> list[NameAddr]:
    return [parse_name_addr(value) for value in message.headers.get_all("Record-Route")]


def _supports(message: Request | Response, option: str) -> bool:
    values = message.headers.get_all("Supported") + message.headers.get_all("Require")
    return any(value.strip().lower() == option for value in values)


class Dialog:
    """One dialog. Create it with `create_uas` or `create_uac`; attributes are readable state."""

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: URI,
        route_set: Sequence[NameAddr],
        local_contact: NameAddr,
        local_seq: int | None,
        remote_seq: int | None,
        is_uac: bool,
        state: DialogState,
        initial_cseq: int,
        secure: bool = False,
        session_settings: SessionTimerSettings | None = None,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = _without_tag(local_uri)
        self.remote_uri = _without_tag(remote_uri)
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_contact = local_contact
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.is_uac = is_uac  # our role in the request that created the dialog
        self.state = state
        self.secure = secure
        self.session_settings = session_settings
        self.session_timer: SessionTimer | None = None
        self._initial_cseq = initial_cseq
        self._last_invite_cseq: int | None = initial_cseq if is_uac else None
        self._outgoing_invite_cseq: int | None = None  # our (re-)INVITE waiting for its final response
        self._incoming_invite_cseq: int | None = None  # their (re-)INVITE we have not answered finally

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {self.state.value}>"

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def terminate(self) -> None:
        """End the dialog for a reason it cannot see itself (a CANCEL answered by the transaction layer,
        a transaction timeout, a transport error)."""
        self.state = DialogState.TERMINATED

    # --- creation

    @classmethod
    def create_uas(
        cls,
        request: Request,
        local_contact: NameAddr | URI | str,
        *,
        local_tag: str | None = None,
        session_settings: SessionTimerSettings | None = None,
    ) -> Dialog:
        """The dialog a request we received (normally an INVITE) creates on our side (RFC 3261 §12.1.1)."""
        contacts = request.contacts
        if not contacts:
            raise DialogError("a dialog-creating request needs a Contact", 400)
        secure = isinstance(request.uri, SipURI) and request.uri.scheme == "sips"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag or request.to.tag or new_tag(),
            remote_tag=request.from_.tag or "",
            local_uri=request.to,
            remote_uri=request.from_,
            remote_target=contacts[0].uri,
            route_set=_record_route(request),
            local_contact=_as_name_addr(local_contact),
            local_seq=None,
            remote_seq=request.cseq.number,
            is_uac=False,
            state=DialogState.EARLY,
            initial_cseq=request.cseq.number,
            secure=secure,
            session_settings=session_settings,
        )._note_incoming(request)

    def _note_incoming(self, request: Request) -> Dialog:
        if request.method == "INVITE":
            self._incoming_invite_cseq = request.cseq.number
        return self

    @classmethod
    def create_uac(
        cls,
        request: Request,
        response: Response,
        *,
        session_settings: SessionTimerSettings | None = None,
        now: float | None = None,
    ) -> Dialog:
        """The dialog a 101-299 response with a To tag creates for our request (RFC 3261 §12.1.2)."""
        if not 101 <= response.status <= 299:
            raise DialogError(f"a {response.status} response does not create a dialog")
        remote_tag = response.to.tag
        if not remote_tag:
            raise DialogError("a response without a To tag does not create a dialog")
        request_contacts = request.contacts
        if not request_contacts:
            raise DialogError("our dialog-creating request has no Contact")
        response_contacts = response.contacts
        secure = isinstance(request.uri, SipURI) and request.uri.scheme == "sips"
        dialog = cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_uri=request.from_,
            remote_uri=response.to,
            remote_target=response_contacts[0].uri if response_contacts else request.uri,
            route_set=list(reversed(_record_route(response))),
            local_contact=request_contacts[0],
            local_seq=request.cseq.number,
            remote_seq=None,
            is_uac=True,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            initial_cseq=request.cseq.number,
            secure=secure,
            session_settings=session_settings,
        )
        if response.status >= 200:
            dialog._apply_session_timer_uac(response, now)
        elif request.method == "INVITE":
            dialog._outgoing_invite_cseq = request.cseq.number
        return dialog

    # --- requests we send

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[Header] = (),
    ) -> Request:
        """A new request inside the dialog (RFC 3261 §12.2.1.1), with the next local CSeq."""
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} is not built here: use create_ack / TransactionLayer.cancel")
        if self.state is DialogState.TERMINATED:
            raise DialogError("the dialog has ended", 481)
        if self.local_seq is None:
            # RFC 3261 §12.2.1.1: chosen freely below 2**31; small leaves room for many requests
            self.local_seq = random.randint(1, 1 << 16)
        else:
            self.local_seq += 1
        number = self.local_seq
        extra: list[Header] = []
        if method in ("INVITE", "UPDATE") and self.session_settings is not None:
            extra += self._session_timer_request_headers()
        extra += list(headers)
        request = self._build(method, number, body=body, content_type=content_type, headers=extra)
        if method == "INVITE":
            self._outgoing_invite_cseq = number
            self._last_invite_cseq = number
        elif method == "BYE":
            # RFC 3261 §15.1.1: the session is over as soon as the BYE is handed to its transaction
            self.state = DialogState.TERMINATED
        return request

    def create_ack(
        self,
        cseq_number: int | None = None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[Header] = (),
    ) -> Request:
        """The ACK for a 2xx to our INVITE (RFC 3261 §13.2.2.4): CSeq number of that INVITE, new branch."""
        number = cseq_number if cseq_number is not None else self._last_invite_cseq
        if number is None:
            raise ValueError("no INVITE was sent in this dialog")
        return self._build("ACK", number, body=body, content_type=content_type, headers=list(headers))

    def _build(
        self, method: str, number: int, *, body: bytes, content_type: str | None, headers: Sequence[Header]
    ) -> Request:
        uri, routes = self.request_target()
        fields = Headers()
        fields.add("Max-Forwards", "70")
        for route in routes:
            fields.add("Route", route)
        fields.add("From", str(_with_tag(self.local_uri, self.local_tag)))
        fields.add("To", str(_with_tag(self.remote_uri, self.remote_tag)))
        fields.add("Call-ID", self.call_id)
        fields.add("CSeq", f"{number} {method}")
        if method in CONTACT_METHODS:
            fields.add("Contact", str(self.local_contact))
        for name, value in headers:
            fields.add(name, value)
        if body and content_type:
            fields.add("Content-Type", content_type)
        return Request(method=method, uri=uri, headers=fields, body=body)

    def request_target(self) -> tuple[URI, list[str]]:
        """Request-URI and Route values for our next request (RFC 3261 §12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if isinstance(first.uri, SipURI) and "lr" in first.uri.params:
            return self.remote_target, [str(route) for route in self.route_set]
        # strict router (RFC 2543): it becomes the Request-URI, the remote target goes last in Route
        uri = first.uri
        if isinstance(uri, SipURI):
            uri = uri.with_(headers={}, params={k: v for k, v in uri.params.items() if k != "method"})
        routes = [str(route) for route in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return uri, routes

    # --- REFER / NOTIFY (RFC 3515) and Replaces (RFC 3891)

    def create_refer(
        self,
        refer_to: NameAddr | URI | str,
        *,
        replaces: Replaces | None = None,
        referred_by: NameAddr | URI | str | None = None,
        headers: Iterable[Header] = (),
    ) -> Request:
        """REFER asking the peer to call `refer_to`; with `replaces`, an attended transfer (RFC 5589 §7)."""
        target = _as_name_addr(refer_to)
        if replaces is not None:
            if not isinstance(target.uri, SipURI):
                raise ValueError("Replaces can only be embedded in a sip:/sips: Refer-To")
            embedded = {**target.uri.headers, "Replaces": str(replaces)}
            target = replace(target, uri=target.uri.with_(headers=embedded))
        extra: list[Header] = [("Refer-To", str(target))]
        if referred_by is not None:
            extra.append(("Referred-By", str(_as_name_addr(referred_by))))
        return self.create_request("REFER", headers=[*extra, *headers])

    def create_notify(
        self,
        event: str,
        subscription_state: SubscriptionState,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[Header] = (),
    ) -> Request:
        extra: list[Header] = [("Event", event), ("Subscription-State", str(subscription_state))]
        return self.create_request("NOTIFY", body=body, content_type=content_type, headers=[*extra, *headers])

    def create_refer_notify(
        self, status: int, reason: str | None = None, *, refer_cseq: int | None = None, expires: int = 60
    ) -> Request:
        """NOTIFY of a REFER's progress (RFC 3515 §2.4.5): a message/sipfrag status line; a final status
        (>= 200) ends the implicit subscription."""
        if status >= 200:
            state = SubscriptionState("terminated", reason="noresource")
        else:
            state = SubscriptionState("active", expires=expires)
        event = "refer" if refer_cseq is None else f"refer;id={refer_cseq}"
        return self.create_notify(
            event, state, body=sipfrag(status, reason), content_type="message/sipfrag;version=2.0"
        )

    def replaces_for_remote(self, *, early_only: bool = False) -> Replaces:
        """The Replaces a third party sends our peer to take over this dialog (tags seen from the peer)."""
        return Replaces(self.call_id, to_tag=self.remote_tag, from_tag=self.local_tag, early_only=early_only)

    def matches_replaces(self, replaces: Replaces) -> bool:
        """Whether an incoming Replaces names this dialog (to-tag is our tag, from-tag theirs)."""
        return (replaces.call_id, replaces.to_tag, replaces.from_tag) == (
            self.call_id,
            self.local_tag,
            self.remote_tag,
        )

    # --- requests we receive

    def receive_request(self, request: Request, now: float | None = None) -> Response | None:
        """Check an in-dialog request (RFC 3261 §12.2.2, §14.2, RFC 4028 §8). Returns the response that
        rejects it, or None: the TU goes on and answers with `make_response`."""
        del now  # kept for symmetry; session timer state changes when the 2xx is sent
        method = request.method
        if method == "ACK":
            return None
        if self.state is DialogState.TERMINATED:
            return make_response(request, 481, "Call/Transaction Does Not Exist")
        if method == "CANCEL":
            return None  # CANCEL carries the CSeq of the request it cancels
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            return make_response(request, 500, "Out of order CSeq")
        self.remote_seq = number
        if method == "INVITE":
            if self._outgoing_invite_cseq is not None:
                return make_response(request, 491, "Request Pending")
            if self._incoming_invite_cseq is not None:
                response = make_response(request, 500, "Previous INVITE still pending")
                response.headers.add("Retry-After", str(random.randint(0, 10)))
                return response
        if method in ("INVITE", "UPDATE") and self.session_settings is not None:
            try:
                negotiate_uas(request, self.session_settings, 0.0)
            except SessionIntervalTooSmall as error:
                return min_se_response(request, error.min_se)
        if method == "INVITE":
            self._incoming_invite_cseq = number
        return None

    def make_response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[Header] = (),
        body: bytes = b"",
        content_type: str | None = None,
        now: float | None = None,
    ) -> Response:
        """A response to a request of this dialog, updating the dialog for what it says.

        `now` is needed for a 2xx to INVITE/UPDATE when session timers are on (it starts the interval)."""
        method = request.method
        to_tag = self.local_tag if status > 100 and not request.to.tag else None
        response = make_response(request, status, reason, to_tag=to_tag, body=body)
        initial = (
            not self.is_uac
            and method == "INVITE"
            and request.cseq.number == self._initial_cseq
            and request.to.tag is None
        )
        if 101 <= status <= 299:
            if initial:
                for value in request.headers.get_all("Record-Route"):
                    response.headers.add("Record-Route", value)
            if method in CONTACT_METHODS and "Contact" not in response.headers:
                response.headers.add("Contact", str(self.local_contact))
        for name, value in headers:
            response.headers.add(name, value)
        if body and content_type:
            response.headers.set("Content-Type", content_type)
        if method == "INVITE" and status >= 200 and request.cseq.number == self._incoming_invite_cseq:
            self._incoming_invite_cseq = None
        if 200 <= status <= 299:
            if method in ("INVITE", "UPDATE") and self.session_settings is not None:
                self._apply_session_timer_uas(request, response, now)
            if initial and self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED
            elif method in TARGET_REFRESH_METHODS and not initial:
                contacts = request.contacts
                if contacts:
                    self.remote_target = contacts[0].uri
            if method == "BYE":
                self.state = DialogState.TERMINATED
        elif status >= 300 and initial and self.state is DialogState.EARLY:
            self.state = DialogState.TERMINATED
        return response

    # --- responses we receive

    def receive_response(self, response: Response, now: float | None = None) -> None:
        """Apply a response to a request this dialog sent (or to the INVITE that created it)."""
        cseq = response.cseq
        status = response.status
        if cseq.method == "INVITE" and status >= 200 and cseq.number == self._outgoing_invite_cseq:
            self._outgoing_invite_cseq = None
        initial = self.is_uac and cseq.method == "INVITE" and cseq.number == self._initial_cseq
        if initial:
            if status >= 300:
                if self.state is DialogState.EARLY:
                    self.state = DialogState.TERMINATED
                return
            if response.to.tag != self.remote_tag:
                return
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
            if status >= 200 and self.state is DialogState.EARLY:
                # RFC 3261 §13.2.2.4: the 2xx recomputes the route set
                self.state = DialogState.CONFIRMED
                self.route_set = list(reversed(_record_route(response)))
        elif status in (408, 481):
            self.state = DialogState.TERMINATED  # RFC 3261 §12.2.1.2
            return
        elif 200 <= status <= 299 and cseq.method in TARGET_REFRESH_METHODS:
            contacts = response.contacts
            if contacts:
                self.remote_target = contacts[0].uri
        if 200 <= status <= 299 and cseq.method in ("INVITE", "UPDATE"):
            self._apply_session_timer_uac(response, now)
        elif status == 422 and self.session_settings is not None:
            self.session_settings = self.session_settings.after_422(response)

    # --- session timers

    def _session_timer_request_headers(self) -> list[Header]:
        assert self.session_settings is not None
        timer = self.session_timer
        if timer is None:
            return self.session_settings.request_headers()
        # a refresh: keep the interval, and the refresher seen from the roles of this transaction
        refresher = "uac" if timer.we_refresh else "uas"
        return self.session_settings.request_headers(interval=timer.interval, refresher=refresher)

    def _apply_session_timer_uas(self, request: Request, response: Response, now: float | None) -> None:
        assert self.session_settings is not None
        if now is None:
            raise ValueError("make_response needs now= for a 2xx when session timers are on")
        try:
            timer = negotiate_uas(request, self.session_settings, now)
        except SessionIntervalTooSmall:
            # the TU answered 2xx without checking: take the smallest interval both sides allow
            timer = negotiate_uas(request, replace(self.session_settings, min_se=90), now)
        self.session_timer = timer
        for name, value in timer.response_headers():
            response.headers.add(name, value)
        if not any(value.strip().lower() == "timer" for value in response.headers.get_all("Supported")):
            response.headers.add("Supported", "timer")

    def _apply_session_timer_uac(self, response: Response, now: float | None) -> None:
        if "Session-Expires" not in response.headers:
            self.session_timer = None  # RFC 4028 §7.2: no Session-Expires, no session expiration
            return
        if now is None:
            if self.session_settings is not None:
                raise ValueError("receive_response needs now= for a 2xx when session timers are on")
            return  # a TU that does not use session timers; the peer refreshes or not, as it likes
        self.session_timer = negotiate_uac(response, now)


# --- the table of dialogs ----------------------------------------------------------------------------------


class DialogTable:
    """Dialogs of a UA by id; how incoming messages find theirs."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        if self._dialogs.get(dialog.id) is dialog:
            del self._dialogs[dialog.id]

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def match_request(self, request: Request) -> Dialog | None:
        """The dialog of a request we received, or None (answer 481 unless it creates a dialog)."""
        if not request.to.tag:
            return None
        return self._dialogs.get(DialogId.of_request(request))

    def match_response(self, response: Response) -> Dialog | None:
        return self._dialogs.get(DialogId.of_response(response))

    def early_dialogs(self, call_id: str, local_tag: str) -> list[Dialog]:
        """The early dialogs one of our INVITEs created, one per fork (remote tag)."""
        return [
            dialog
            for dialog in self._dialogs.values()
            if dialog.call_id == call_id
            and dialog.local_tag == local_tag
            and dialog.state is DialogState.EARLY
        ]

    def terminate_early(self, call_id: str, local_tag: str) -> list[Dialog]:
        """End and remove the early dialogs of an INVITE (it failed, or another fork answered)."""
        ended = self.early_dialogs(call_id, local_tag)
        for dialog in ended:
            dialog.state = DialogState.TERMINATED
            self.remove(dialog)
        return ended

    def find_replaced(self, replaces: Replaces) -> Dialog:
        """The dialog an INVITE's Replaces names (RFC 3891 §3); DialogError(481/486/603) when it must fail."""
        dialog = self._dialogs.get(DialogId(replaces.call_id, replaces.to_tag, replaces.from_tag))
        if dialog is None:
            raise DialogError("no dialog matches Replaces", 481)
        if dialog.state is DialogState.TERMINATED:
            raise DialogError("the replaced dialog has ended", 603)
        if dialog.state is DialogState.EARLY and not dialog.is_uac:
            raise DialogError("Replaces names an early dialog this UA did not initiate", 481)
        if dialog.state is DialogState.CONFIRMED and replaces.early_only:
            raise DialogError("Replaces is early-only and the dialog is confirmed", 486)
        return dialog


# --- out-of-dialog requests --------------------------------------------------------------------------------


def build_request(
    method: str,
    request_uri: URI,
    from_: NameAddr | URI | str,
    to: NameAddr | URI | str,
    *,
    contact: NameAddr | URI | str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    from_tag: str | None = None,
    route: Sequence[NameAddr | URI | str] = (),
    body: bytes = b"",
    content_type: str | None = None,
    headers: Iterable[Header] = (),
) -> Request:
    """A request outside any dialog (RFC 3261 §8.1.1): From gets a tag, To none; no Via (the transaction
    layer adds it)."""
    method = method.upper()
    fields = Headers()
    fields.add("Max-Forwards", "70")
    for value in route:
        fields.add("Route", str(_as_name_addr(value)))
    from_party = _as_name_addr(from_)
    fields.add("From", str(_with_tag(from_party, from_tag or from_party.tag or new_tag())))
    fields.add("To", str(_as_name_addr(to)))
    fields.add("Call-ID", call_id or new_call_id())
    fields.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        fields.add("Contact", str(_as_name_addr(contact)))
    for name, value in headers:
        fields.add(name, value)
    if body and content_type:
        fields.add("Content-Type", content_type)
    return Request(method=method, uri=request_uri, headers=fields, body=body)


# --- Replaces, Refer-To, Subscription-State, sipfrag ------------------------------------------------------


@dataclass(frozen=True)
class Replaces:
    """RFC 3891 Replaces: `call-id;to-tag=..;from-tag=..[;early-only]`."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        text = f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}"
        return text + ";early-only" if self.early_only else text


def parse_replaces(text: str) -> Replaces:
    call_id, semi, rest = text.strip().partition(";")
    call_id = call_id.strip()
    if not call_id:
        raise ParseError(f"Replaces without Call-ID: {text[:80]!r}")
    params = parse_params(semi + rest) if semi else {}
    to_tag = params.get("to-tag")
    from_tag = params.get("from-tag")
    if to_tag is None or from_tag is None:
        raise ParseError(f"Replaces needs to-tag and from-tag: {text[:80]!r}")
    return Replaces(call_id, to_tag, from_tag, "early-only" in params)


@dataclass(frozen=True)
class ReferTo:
    """A parsed Refer-To: the target without embedded headers, the embedded Replaces, the other headers."""

    target: NameAddr
    replaces: Replaces | None = None
    headers: tuple[Header, ...] = ()


def parse_refer_to(text: str) -> ReferTo:
    """Refer-To (RFC 3515 §2.1); an embedded `?Replaces=` (RFC 3891) is decoded and parsed."""
    party = parse_name_addr(text)
    uri = party.uri
    if not isinstance(uri, SipURI) or not uri.headers:
        return ReferTo(party)
    replaces: Replaces | None = None
    others: list[Header] = []
    for name, value in uri.headers.items():
        if name.lower() == "replaces":
            replaces = parse_replaces(value)
        else:
            others.append((name, value))
    return ReferTo(replace(party, uri=uri.with_(headers={})), replaces, tuple(others))


@dataclass(frozen=True)
class SubscriptionState:
    """Subscription-State (RFC 6665 §8.2.3): active, pending or terminated; expires, reason, retry-after."""

    state: str
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None

    def __str__(self) -> str:
        text = self.state
        if self.reason is not None:
            text += f";reason={self.reason}"
        if self.expires is not None:
            text += f";expires={self.expires}"
        if self.retry_after is not None:
            text += f";retry-after={self.retry_after}"
        return text


def _delta_seconds(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 10):
        raise ParseError(f"bad {what}: {value[:20]!r}")
    return int(value)


def parse_subscription_state(text: str) -> SubscriptionState:
    state, semi, rest = text.strip().partition(";")
    state = state.strip().lower()
    if not state:
        raise ParseError("empty Subscription-State")
    params = parse_params(semi + rest) if semi else {}
    return SubscriptionState(
        state,
        expires=_delta_seconds(params.get("expires"), "Subscription-State expires"),
        reason=params.get("reason"),
        retry_after=_delta_seconds(params.get("retry-after"), "Subscription-State retry-after"),
    )


def sipfrag(status: int, reason: str | None = None) -> bytes:
    """A message/sipfrag body holding a status line, e.g. b"SIP/2.0 200 OK\\r\\n" (RFC 3420, RFC 3515)."""
    from hotline.sip.message import REASONS

    if not 100 <= status <= 699:
        raise ValueError(f"invalid status {status}")
    phrase = reason if reason is not None else REASONS.get(status, "Unknown")
    return f"SIP/2.0 {status} {phrase}\r\n".encode()


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """The status code and reason of a message/sipfrag body whose first line is a status line."""
    line = body.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != "SIP/2.0" or not (len(code) == 3 and code.isascii() and code.isdigit()):
        raise ParseError(f"sipfrag without a status line: {line[:80]!r}")
    status = int(code)
    if not 100 <= status <= 699:
        raise ParseError(f"sipfrag status out of range: {status}")
    return status, reason.strip()


# --- session timers (RFC 4028) -----------------------------------------------------------------------------

SESSION_MIN_SE_FLOOR = 90  # RFC 4028 §4: Min-SE is never below 90 seconds


@dataclass(frozen=True)
class SessionExpires:
    delta: int
    refresher: str | None = None  # "uac" | "uas"

    def __str__(self) -> str:
        return f"{self.delta};refresher={self.refresher}" if self.refresher else str(self.delta)


def parse_session_expires(text: str) -> SessionExpires:
    delta_text, semi, rest = text.strip().partition(";")
    delta = _delta_seconds(delta_text, "Session-Expires")
    assert delta is not None
    params = parse_params(semi + rest) if semi else {}
    refresher = params.get("refresher")
    if refresher is not None:
        refresher = refresher.lower()
        if refresher not in ("uac", "uas"):
            raise ParseError(f"bad Session-Expires refresher {refresher[:20]!r}")
    return SessionExpires(delta, refresher)


def _min_se(message: Request | Response) -> int | None:
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    return _delta_seconds(value.split(";", 1)[0], "Min-SE")


class SessionIntervalTooSmall(DialogError):
    """The requested Session-Expires is below our Min-SE: answer 422 with `min_se_response`."""

    def __init__(self, min_se: int) -> None:
        super().__init__("Session Interval Too Small", 422)
        self.min_se = min_se


@dataclass(frozen=True)
class SessionTimerSettings:
    """What we ask for (session_expires) and the least we accept (min_se), in seconds."""

    session_expires: int = 1800
    min_se: int = SESSION_MIN_SE_FLOOR

    def __post_init__(self) -> None:
        if self.min_se < SESSION_MIN_SE_FLOOR or self.session_expires < self.min_se:
            raise ValueError("need 90 <= min_se <= session_expires")

    def request_headers(self, *, interval: int | None = None, refresher: str | None = None) -> list[Header]:
        """Session-Expires, Min-SE and Supported: timer for an INVITE/UPDATE we send (RFC 4028 §7.1)."""
        expires = SessionExpires(max(interval or self.session_expires, self.min_se), refresher)
        return [("Session-Expires", str(expires)), ("Min-SE", str(self.min_se)), ("Supported", "timer")]

    def after_422(self, response: Response) -> SessionTimerSettings:
        """The settings for the retry after a 422: at least the peer's Min-SE (RFC 4028 §7.4)."""
        peer_min = _min_se(response)
        if peer_min is None:
            raise DialogError("422 without Min-SE")
        min_se = max(self.min_se, peer_min)
        return SessionTimerSettings(max(self.session_expires, min_se), min_se)


@dataclass
class SessionTimer:
    """A negotiated session timer. `refresher` names the role in the transaction that negotiated it."""

    interval: int
    refresher: str
    we_refresh: bool
    refreshed_at: float

    @property
    def refresh_at(self) -> float | None:
        """When we send the refresh (re-INVITE/UPDATE): half the interval, if we are the refresher."""
        return self.refreshed_at + self.interval / 2 if self.we_refresh else None

    @property
    def expires_at(self) -> float:
        """When the session is dead without a refresh: send BYE (RFC 4028 §10)."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)

    def next_deadline(self) -> float:
        refresh = self.refresh_at
        return self.expires_at if refresh is None else min(refresh, self.expires_at)

    def due(self, now: float) -> str | None:
        """ "expired" once expires_at passed, "refresh" once refresh_at passed, else None."""
        if now >= self.expires_at:
            return "expired"
        refresh = self.refresh_at
        if refresh is not None and now >= refresh:
            return "refresh"
        return None

    def response_headers(self) -> list[Header]:
        headers: list[Header] = [("Session-Expires", str(SessionExpires(self.interval, self.refresher)))]
        if self.refresher == "uac":
            headers.append(("Require", "timer"))  # RFC 4028 §9
        return headers


def negotiate_uas(request: Request, settings: SessionTimerSettings, now: float) -> SessionTimer:
    """Our session timer as the UAS of an INVITE/UPDATE (RFC 4028 §9). Raises SessionIntervalTooSmall."""
    supported = _supports(request, "timer")
    request_min = max(_min_se(request) or SESSION_MIN_SE_FLOOR, SESSION_MIN_SE_FLOOR)
    value = request.headers.get("Session-Expires")
    if value is not None:
        asked = parse_session_expires(value)
        if asked.delta < settings.min_se:
            raise SessionIntervalTooSmall(settings.min_se)
        # we may shorten it, never below either side's minimum
        interval = max(min(asked.delta, settings.session_expires), request_min, settings.min_se)
        refresher = asked.refresher or ("uac" if supported else "uas")
    else:
        interval = max(settings.session_expires, request_min)
        refresher = "uac" if supported else "uas"
    return SessionTimer(interval, refresher, refresher == "uas", now)


def negotiate_uac(response: Response, now: float) -> SessionTimer | None:
    """The session timer a 2xx to our INVITE/UPDATE sets (RFC 4028 §7.2); None without Session-Expires."""
    value = response.headers.get("Session-Expires")
    if value is None:
        return None
    granted = parse_session_expires(value)
    refresher = granted.refresher or "uac"
    return SessionTimer(granted.delta, refresher, refresher == "uac", now)


def min_se_response(request: Request, min_se: int) -> Response:
    """422 Session Interval Too Small carrying our Min-SE (RFC 4028 §8.1)."""
    response = make_response(request, 422, "Session Interval Too Small")
    response.headers.add("Min-SE", str(min_se))
    return response
