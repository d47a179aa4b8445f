"""The SIP user-agent core: the asyncio driver that ties transports, transactions and dialogs together.

`SipStack` is what the switch talks to:

- `on_request(method, handler)`: out-of-dialog requests (INVITE, REGISTER, MESSAGE ...) go to `handler`
  as an `IncomingRequest`; an INVITE handler gets a `ServerInvite` to ring, accept or reject. OPTIONS is
  answered by the stack itself unless a handler is registered.
- `invite(request, destination) -> ClientInvite`, `request(request, destination) -> Response` for
  requests we originate, with digest authentication against carriers when credentials are given.
- `InviteSession` (both directions once established): `bye()`, `reinvite(sdp)`, `request(method)`; an
  owner sets `on_request` to see in-dialog requests (re-INVITE, INFO, REFER ...) and awaits `ended`.

The clock is the event loop's monotonic `loop.time()`; the sans-IO layers get it as `now`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from hotline.log import get_logger
from hotline.sip.auth import AuthError, DigestClient
from hotline.sip.dialog import Dialog, DialogError, DialogTable, SessionTimerSettings
from hotline.sip.errors import ParseError
from hotline.sip.headers import NameAddr
from hotline.sip.message import Request, Response, make_response, new_tag
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
    TransactionTimeout,
    TransportError,
)
from hotline.sip.transport import Source, TransportLayer
from hotline.sip.uri import SipURI

log = get_logger("hotline.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY, MESSAGE, REGISTER"
SUPPORTED = "replaces, timer"


class SipRequestFailed(Exception):
    """A request we sent got no final response (timeout, transport error) or was rejected."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def source_address(source: Source) -> Address:
    return Address(source.host, source.port, source.transport.value)


@dataclass
class IncomingRequest:
    """An out-of-dialog request and its server transaction; answer it exactly once with `respond`."""

    stack: SipStack
    request: Request
    source: Address
    transaction: ServerTransaction
    answered: bool = False

    def respond(self, status: int, reason: str | None = None, **fields: object) -> Response:
        return self.send(make_response(self.request, status, reason, **fields))  # type: ignore[arg-type]

    def send(self, response: Response) -> Response:
        self.stack.respond(self.transaction, response)
        self.answered = True
        return response


InDialogHandler = Callable[["InviteSession", Request, ServerTransaction], Awaitable[None]]


class InviteSession:
    """One INVITE dialog (a SIP call leg), either direction. `ended` is set when it is over."""

    def __init__(self, stack: SipStack, peer: Address) -> None:
        self.stack = stack
        self.peer = peer  # where in-dialog requests go when there is no route set (symmetric, NAT-safe)
        self.dialog: Dialog | None = None
        self.remote_sdp: bytes = b""
        self.local_sdp: bytes = b""
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.on_request: InDialogHandler | None = None
        self.on_end: Callable[[InviteSession], None] | None = None
        self._timer_task: asyncio.Task[None] | None = None

    @property
    def call_id(self) -> str:
        return self.dialog.call_id if self.dialog else ""

    def _destination(self, request: Request) -> Address:
        assert self.dialog is not None
        if self.dialog.route_set:
            from hotline.sip.transaction import next_hop

            return next_hop(request)
        return self.peer

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """Send an in-dialog request and return its final response."""
        if self.dialog is None:
            raise SipRequestFailed(481, "no dialog")
        try:
            request = self.dialog.create_request(
                method, body=body, content_type=content_type, headers=headers
            )
        except DialogError as error:
            raise SipRequestFailed(error.status, str(error)) from None
        response = await self.stack.request(request, self._destination(request))
        if method in ("INVITE", "UPDATE"):
            # every final answer, also a failure or a timeout, settles the dialog's pending offer
            self.dialog.receive_response(response, self.stack.now())
        if method == "INVITE" and response.status < 300:
            ack = self.dialog.create_ack(request.cseq.number)
            self.stack.transactions.send_ack(ack, self._destination(ack))
        return response

    async def reinvite(self, sdp: bytes) -> Response:
        response = await self.request("INVITE", body=sdp, content_type="application/sdp")
        if response.status < 300:
            self.local_sdp = sdp
            if response.body:
                self.remote_sdp = response.body
        return response

    async def bye(self, reason: str = "local hangup") -> None:
        """End the call; never raises (a peer that does not answer the BYE is gone anyway)."""
        if self.ended.is_set():
            return
        if self.dialog is None:
            self._finish(reason)
            return
        try:
            request = self.dialog.create_request("BYE")
        except DialogError:
            self._finish(reason)
            return
        destination = self._destination(request)
        self._finish(reason)
        with contextlib.suppress(OSError):
            await self.stack.request(request, destination)

    def _finish(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        if self.dialog is not None:
            self.dialog.terminate()
            self.stack.dialogs.remove(self.dialog)
            self.stack._sessions.pop(self.dialog.id, None)
        if self._timer_task is not None:
            self._timer_task.cancel()
        self.ended.set()
        if self.on_end is not None:
            self.on_end(self)

    def _confirmed(self) -> None:
        """Start the RFC 4028 session timer watch once the dialog is up, so dead calls end."""
        if self.dialog is not None and self.dialog.session_timer is not None and self._timer_task is None:
            self._timer_task = asyncio.get_running_loop().create_task(self._watch_session_timer())

    async def _watch_session_timer(self) -> None:
        while self.dialog is not None and self.dialog.session_timer is not None and not self.ended.is_set():
            timer = self.dialog.session_timer
            await asyncio.sleep(max(0.0, timer.next_deadline() - self.stack.now()))
            due = timer.due(self.stack.now())
            if due == "expired":
                log.info("sip.session_expired", call_id=self.call_id)
                await self.bye("session timer expired")
                return
            if due == "refresh":
                try:
                    response = await self.request("UPDATE")
                    if response.status >= 300:
                        response = await self.reinvite(self.local_sdp)
                except SipRequestFailed:
                    await self.bye("session refresh failed")
                    return
                if response.status >= 300:
                    await self.bye("session refresh rejected")
                    return

    async def _handle_in_dialog(self, request: Request, transaction: ServerTransaction) -> None:
        method = request.method
        if method == "BYE":
            self.stack.respond(transaction, self._response(request, 200))
            self._finish("remote hangup")
            return
        if self.on_request is not None:
            await self.on_request(self, request, transaction)
            return
        if method in ("OPTIONS", "INFO", "NOTIFY"):
            self.stack.respond(transaction, self._response(request, 200))
        elif method in ("INVITE", "UPDATE"):
            # keep our media as it is: answer a refresh with the SDP we last sent
            body = self.local_sdp if request.body or method == "INVITE" else b""
            self.stack.respond(
                transaction,
                self._response(request, 200, body=body, content_type="application/sdp" if body else None),
            )
        else:
            self.stack.respond(transaction, self._response(request, 501))

    def _response(
        self, request: Request, status: int, *, body: bytes = b"", content_type: str | None = None
    ) -> Response:
        assert self.dialog is not None
        return self.dialog.make_response(
            request, status, body=body, content_type=content_type, now=self.stack.now()
        )

    def respond(
        self, transaction: ServerTransaction, request: Request, status: int, **fields: object
    ) -> None:
        """Answer an in-dialog request handed to `on_request`."""
        assert self.dialog is not None
        response = self.dialog.make_response(request, status, now=self.stack.now(), **fields)  # type: ignore[arg-type]
        self.stack.respond(transaction, response)


class ServerInvite(InviteSession):
    """An INVITE we received: ring it, accept it with SDP, or reject it."""

    def __init__(
        self, stack: SipStack, request: Request, source: Address, transaction: ServerTransaction
    ) -> None:
        super().__init__(stack, source)
        self.invite = request
        self.transaction = transaction
        self.remote_sdp = request.body
        self.cancelled = asyncio.Event()
        self._acked = asyncio.Event()
        self._ack_failed = False
        self.local_tag = new_tag()

    def _ensure_dialog(self) -> Dialog:
        if self.dialog is None:
            contact = self.stack.contact_for(self.peer)
            self.dialog = Dialog.create_uas(
                self.invite, contact, local_tag=self.local_tag, session_settings=self.stack.session_timers
            )
            self.stack.dialogs.add(self.dialog)
            self.stack._sessions[self.dialog.id] = self
        return self.dialog

    def ring(self, sdp: bytes | None = None) -> None:
        """180 Ringing, or 183 Session Progress with SDP for early media."""
        if self.ended.is_set():
            return
        dialog = self._ensure_dialog()
        status = 183 if sdp else 180
        response = dialog.make_response(
            self.invite, status, body=sdp or b"", content_type="application/sdp" if sdp else None
        )
        if sdp:
            self.local_sdp = sdp
        self.stack.respond(self.transaction, response)

    async def accept(self, sdp: bytes, ack_timeout: float = 32.0) -> bool:
        """Send 200 OK with our SDP and wait for the ACK. False when the caller went away first."""
        if self.ended.is_set():
            return False
        dialog = self._ensure_dialog()
        self.local_sdp = sdp
        response = dialog.make_response(
            self.invite,
            200,
            body=sdp,
            content_type="application/sdp",
            headers=[("Allow", ALLOW), ("Supported", SUPPORTED)],
            now=self.stack.now(),
        )
        if not self.stack.respond(self.transaction, response):
            self._finish("cancelled")
            return False
        try:
            await asyncio.wait_for(self._acked.wait(), ack_timeout)
        except TimeoutError:
            self._ack_failed = True
        if self._ack_failed:
            await self.bye("no ACK")
            return False
        self._confirmed()
        return True

    def reject(self, status: int, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        if self.ended.is_set():
            return
        response = make_response(self.invite, status, reason, to_tag=self.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        self.stack.respond(self.transaction, response)
        self._finish(f"rejected {status}")


class ClientInvite(InviteSession):
    """An INVITE we sent. `responses` yields provisional responses; `final` resolves with the final one."""

    def __init__(self, stack: SipStack, request: Request, destination: Address) -> None:
        super().__init__(stack, destination)
        self.invite = request
        self.local_sdp = request.body
        self.transaction: ClientTransaction | None = None
        self.provisional: asyncio.Queue[Response] = asyncio.Queue()
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._cancel_requested = False

    def cancel(self) -> None:
        """CANCEL the INVITE (sent once a provisional response has arrived, per RFC 3261 §9.1)."""
        self._cancel_requested = True
        if self.transaction is not None and not self.final.done():
            self.stack.transactions.cancel(self.transaction, self.stack.now())
            self.stack._reschedule()

    def _on_response(self, response: Response) -> None:
        if response.status < 200:
            if response.to.tag and self.dialog is None and response.status > 100:
                self.dialog = Dialog.create_uac(self.invite, response, now=self.stack.now())
            if response.body:
                self.remote_sdp = response.body
            self.provisional.put_nowait(response)
            if self._cancel_requested:
                self.cancel()
            return
        if self.final.done():
            return
        if response.status < 300:
            self.dialog = Dialog.create_uac(
                self.invite, response, session_settings=self.stack.session_timers, now=self.stack.now()
            )
            self.stack.dialogs.add(self.dialog)
            self.stack._sessions[self.dialog.id] = self
            if response.body:
                self.remote_sdp = response.body
            ack = self.dialog.create_ack(self.invite.cseq.number)
            self.stack.transactions.send_ack(ack, self._destination(ack))
            self.final.set_result(response)
            if self._cancel_requested:
                asyncio.get_running_loop().create_task(self.bye("cancelled"))
            else:
                self._confirmed()
        else:
            self.final.set_result(response)
            self._finish(f"{response.status} {response.reason}")

    def _failed(self, status: int, reason: str) -> None:
        if not self.final.done():
            self.final.set_result(
                Response(status=status, reason=reason, headers=self.invite.headers.copy(), body=b"")
            )
        self._finish(f"{status} {reason}")


@dataclass
class SipStack:
    """Transports + transactions + dialogs, driven on the running event loop."""

    public_address: str | None = None
    tls_context: ssl.SSLContext | None = None
    timers: TimerConfig | None = None
    session_timers: SessionTimerSettings | None = field(default_factory=SessionTimerSettings)
    user_agent: str = "Hotline"

    def __post_init__(self) -> None:
        self.transports = TransportLayer(
            self._on_message,
            tls_context=self.tls_context,
            public_address=self.public_address,
            on_send_failure=self._on_send_failure,
        )
        self.transactions = TransactionLayer(
            self._send, timers=self.timers, sent_by=self.transports.local_address_for
        )
        self.dialogs = DialogTable()
        self._sessions: dict[object, InviteSession] = {}
        self._handlers: dict[str, Callable[[IncomingRequest], Awaitable[None]]] = {}
        self._invite_handler: Callable[[ServerInvite], Awaitable[None]] | None = None
        self._server_invites: dict[int, ServerInvite] = {}  # id(server transaction) -> session
        self._waiters: dict[int, Callable[[Response | None, int, str], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle

    async def start(self, points: Iterable[tuple[str, str, int]]) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transports.start(points)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for session in list(self._sessions.values()):
            session._finish("shutdown")
        await self.transports.close()

    def now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    # --- registration of handlers

    def on_request(self, method: str, handler: Callable[[IncomingRequest], Awaitable[None]]) -> None:
        self._handlers[method.upper()] = handler

    def on_invite(self, handler: Callable[[ServerInvite], Awaitable[None]]) -> None:
        self._invite_handler = handler

    # --- sending

    def contact_for(self, destination: Address, user: str = "hotline") -> NameAddr:
        host, port = self.transports.local_address_for(destination)
        params: dict[str, str | None] = {}
        if destination.transport != "UDP":
            params["transport"] = destination.transport.lower()
        return NameAddr(None, SipURI("sip", user, None, host, port, params, {}), {})

    def respond(self, transaction: ServerTransaction, response: Response) -> bool:
        if "Server" not in response.headers:
            response.headers.set("Server", self.user_agent)
        accepted = self.transactions.respond(transaction, response, self.now())
        self._reschedule()
        return accepted

    async def request(
        self, request: Request, destination: Address, *, credentials: DigestClient | None = None
    ) -> Response:
        """Send a non-INVITE (or in-dialog) request and wait for its final response; answers one digest
        challenge when credentials are given. Timeouts come back as a 408 response, transport errors 503."""
        if "User-Agent" not in request.headers:
            request.headers.set("User-Agent", self.user_agent)
        response = await self._transact(request, destination)
        if response.status in (401, 407) and credentials is not None:
            retry = self._with_credentials(request, response, credentials)
            if retry is not None:
                response = await self._transact(retry, destination)
        return response

    async def _transact(self, request: Request, destination: Address) -> Response:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def deliver(response: Response | None, status: int, reason: str) -> None:
            if future.done():
                return
            if response is None:
                future.set_result(make_response(request, status, reason))
            elif response.status >= 200:
                future.set_result(response)

        tx = self.transactions.send_request(request, destination, self.now())
        self._waiters[id(tx)] = deliver
        self._reschedule()
        try:
            return await future
        finally:
            self._waiters.pop(id(tx), None)

    def _with_credentials(
        self, request: Request, response: Response, credentials: DigestClient
    ) -> Request | None:
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            value = credentials.authorize(
                response.headers.get_all(header),
                request.method,
                str(request.uri),
                body=request.body,
                sent_credentials=answer in request.headers,
            )
        except AuthError as error:
            log.warning("sip.auth_failed", method=request.method, reason=str(error))
            return None
        retry = request.copy()
        retry.headers.remove("Via")
        retry.headers.set(answer, value)
        retry.headers.set("CSeq", f"{request.cseq.number + 1} {request.method}")
        return retry

    def invite(
        self, request: Request, destination: Address, *, credentials: DigestClient | None = None
    ) -> ClientInvite:
        """Start an outgoing INVITE. Await `session.final`; a 2xx leaves `session.dialog` confirmed."""
        if "User-Agent" not in request.headers:
            request.headers.set("User-Agent", self.user_agent)
        session = ClientInvite(self, request, destination)
        self._start_invite(session, request, destination, credentials)
        return session

    def _start_invite(
        self, session: ClientInvite, request: Request, destination: Address, credentials: DigestClient | None
    ) -> None:
        def deliver(response: Response | None, status: int, reason: str) -> None:
            if response is None:
                session._failed(status, reason)
                return
            if response.status in (401, 407) and credentials is not None and not session.final.done():
                retry = self._with_credentials(request, response, credentials)
                if retry is not None:
                    session.invite = retry
                    self._start_invite(session, retry, destination, None)
                    return
            session._on_response(response)

        tx = self.transactions.send_request(request, destination, self.now())
        session.transaction = tx
        self._waiters[id(tx)] = deliver
        self._reschedule()

    # --- the driver

    def _send(self, message: Request | Response, destination: Address) -> None:
        self.transports.send_nowait(message, destination)

    def _on_send_failure(self, destination: object, reason: str) -> None:
        if isinstance(destination, Address):
            self._dispatch(self.transactions.transport_failed(destination, self.now()))

    def _on_message(self, message: Request | Response, source: Source) -> None:
        try:
            events = self.transactions.receive(message, source_address(source), self.now())
        except ParseError as error:
            log.info("sip.bad_message", reason=error.reason, source=source.remote)
            return
        self._dispatch(events)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._dispatch(self.transactions.on_timer(self.now()))

    def _reschedule(self) -> None:
        deadline = self.transactions.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = self._loop or asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._on_timer)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            try:
                self._handle(event)
            except (ParseError, DialogError) as error:
                log.info("sip.event_rejected", error=str(error))
            except Exception:  # one bad message never takes the process down
                log.exception("sip.event_failed", kind=type(event).__name__)
        self._reschedule()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip.handler_failed", error=repr(task.exception()))

    def _handle(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            waiter = self._waiters.get(id(event.transaction))
            if waiter is not None:
                waiter(event.response, event.response.status, event.response.reason)
            if event.response.status >= 200:
                self._waiters.pop(id(event.transaction), None)
        elif isinstance(event, TransactionTimeout | TransportError):
            waiter = self._waiters.pop(id(event.transaction), None)
            if waiter is not None:
                status, reason = (
                    (408, "Request Timeout")
                    if isinstance(event, TransactionTimeout)
                    else (
                        503,
                        "Service Unavailable",
                    )
                )
                waiter(None, status, reason)
            server = self._server_invites.pop(id(event.transaction), None)
            if server is not None and isinstance(event, TransactionTimeout) and event.timer == "L":
                server._ack_failed = True
                server._acked.set()
        elif isinstance(event, CancelReceived):
            server = self._server_invites.pop(id(event.invite_transaction), None)
            if server is not None:
                server.cancelled.set()
                server._finish("cancelled")
        elif isinstance(event, RequestReceived):
            self._request(event)

    def _request(self, event: RequestReceived) -> None:
        request = event.request
        tx = event.transaction
        if request.to.tag:
            dialog = self.dialogs.match_request(request)
            session = self._sessions.get(dialog.id) if dialog is not None else None
            if request.method == "ACK":
                if isinstance(session, ServerInvite):
                    session._acked.set()
                    self._server_invites.pop(id(session.transaction), None)
                return
            if tx is None:
                return
            if dialog is None or session is None:
                self.respond(tx, make_response(request, 481, "Call/Transaction Does Not Exist"))
                return
            rejection = dialog.receive_request(request, self.now())
            if rejection is not None:
                self.respond(tx, rejection)
                return
            self._spawn(session._handle_in_dialog(request, tx))
            return
        if tx is None:  # a stray ACK
            return
        source = tx.source
        if request.method == "INVITE":
            if self._invite_handler is None:
                self.respond(tx, make_response(request, 480, "Temporarily Unavailable"))
                return
            server = ServerInvite(self, request, source, tx)
            self._server_invites[id(tx)] = server
            self._spawn(self._invite_handler(server))
            return
        handler = self._handlers.get(request.method)
        if handler is None:
            if request.method == "OPTIONS":
                response = make_response(request, 200)
                response.headers.set("Allow", ALLOW)
                response.headers.set("Accept", "application/sdp")
                response.headers.set("Supported", SUPPORTED)
                self.respond(tx, response)
            else:
                response = make_response(request, 405, "Method Not Allowed")
                response.headers.set("Allow", ALLOW)
                self.respond(tx, response)
            return
        incoming = IncomingRequest(self, request, source, tx)
        self._spawn(self._run_handler(handler, incoming))

    async def _run_handler(
        self, handler: Callable[[IncomingRequest], Awaitable[None]], incoming: IncomingRequest
    ) -> None:
        try:
            await handler(incoming)
        except Exception:
            log.exception("sip.handler_failed", method=incoming.request.method)
            if not incoming.answered:
                incoming.respond(500, "Server Internal Error")
