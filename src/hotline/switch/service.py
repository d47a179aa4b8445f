"""The switch: SIP dialogs and media sessions joined into calls for many tenants.

It owns the SIP stack and the media engine, answers REGISTER for every tenant, and turns each INVITE into
a `Call`: it finds the tenant (trunk by source address, or a phone by SIP domain and digest), maps the
dialled number to a target (a flow, an extension, a test number), negotiates media, records what happens
as events and hands the call to whoever serves the target. Rooms above (IVR, ACD) get the call through
`switch.control.CallControl`; they never see SIP or RTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from hotline.config import Settings
from hotline.events.ids import new_id
from hotline.events.models import parse_event
from hotline.log import get_logger
from hotline.media.bridge import Bridge
from hotline.media.echo import Echo
from hotline.media.recorder import Channel, Recorder
from hotline.media.session import MediaEngine, MediaParams
from hotline.media.tap import ReceiveTap
from hotline.media.tts import SpeechSynthesizer
from hotline.media.webrtc import ChannelBridge
from hotline.sip import sdp
from hotline.sip.auth import DigestChallenger, DigestClient, LockoutTracker
from hotline.sip.dialog import build_request
from hotline.sip.errors import ParseError
from hotline.sip.message import Request
from hotline.sip.registrar import Authenticator, Binding, LocationService, Registrar
from hotline.sip.stack import IncomingRequest, ServerInvite, SipStack
from hotline.sip.transaction import Address, TimerConfig, uri_destination
from hotline.sip.transport import server_tls_context
from hotline.sip.uri import SipURI, TelURI, parse_uri
from hotline.storage.engines import Storage
from hotline.storage.eventlog import EventLog
from hotline.switch.browser import AGENT_HANGUP, CONNECTION_LOST, SIGNED_OUT, BrowserPhones
from hotline.switch.call import Call, Leg
from hotline.switch.control import CallGone, QueueOutcome, QueueRequest, RecordingRef, Tone, TransferTarget
from hotline.switch.prompts import PromptRenderer
from hotline.switch.region import region_of
from hotline.switch.trunks import TrunkManager
from hotline.tenancy.service import TenancyService

log = get_logger("hotline.switch")

# Codecs we accept, in our order of preference; telephone-event for RFC 4733 DTMF.
AUDIO_CODECS = ("PCMU", "PCMA", "G722", "telephone-event")
# Voicemail: a frame louder than this is speech (about -40 dBm0); a message needs this much of it.
VOICE_RMS = 100.0
MIN_MESSAGE_SECONDS = 0.3
WITHHELD = {"", "anonymous", "unknown", "unavailable", "private", "restricted", "withheld"}

# A target runs the call once it is set up: it answers (or not), and returns when the call is done with.
TargetRunner = Callable[[Call, str], Awaitable[None]]


@dataclass
class Origin:
    """Who sent an INVITE: a carrier trunk or a tenant's phone."""

    tenant: str
    kind: str  # "trunk" or "extension"
    name: str  # the trunk's name or the extension number


class Rejection(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers or []


@dataclass
class Switch:
    settings: Settings
    storage: Storage
    tenancy: TenancyService
    events: EventLog
    directory: Any  # hotline.switch.directory.Directory
    stack: SipStack = field(init=False)
    media: MediaEngine = field(init=False)
    browsers: BrowserPhones = field(init=False)
    trunks: TrunkManager = field(init=False)
    calls: dict[str, Call] = field(default_factory=dict)
    targets: dict[str, TargetRunner] = field(default_factory=dict)
    queue_handler: Callable[[Call, QueueRequest], Awaitable[QueueOutcome]] | None = None
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)
    _keepalive: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        tls = None
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            tls = server_tls_context(self.settings.tls_cert, self.settings.tls_key)
        self.stack = SipStack(
            public_address=self.settings.public_address,
            tls_context=tls,
            timers=TimerConfig(t1=self.settings.sip_t1),
        )
        self.media = MediaEngine(
            self.settings.public_address or _media_host(self.settings.bind),
            (self.settings.rtp_port_min, self.settings.rtp_port_max),
        )
        self.location = LocationService()
        self.authenticator = Authenticator(
            # MD5 only: common phones (baresip 1.0, older desk phones) fail outright when a SHA-256
            # challenge is offered beside it, rather than picking the one they know.
            DigestChallenger(secrets.token_bytes(32), "hotline", algorithms=("MD5",)),
            LockoutTracker(max_failures=5, window_seconds=300, lock_seconds=900),
            self._secret,
        )
        self.registrar = Registrar(self.location, self.authenticator, self._tenant_for_request)
        self.prompts = PromptRenderer(
            SpeechSynthesizer(self.settings.data_dir / "cache" / "tts"), self.settings.data_dir / "tenants"
        )
        self.browsers = BrowserPhones(self)
        # carrier trunks: registrations, and numbers forwarded or dialled out (TEL-01, TEL-14, TEL-15)
        self.trunks = TrunkManager(self)
        self.targets.setdefault("forward", self.trunks.connect_external)
        self.targets.setdefault("external", self.trunks.connect_external)
        self.targets.setdefault("extension", self.dial_extension)
        self.targets.setdefault("echo", echo_test)
        self.targets.setdefault("readback", dtmf_readback)
        self.targets.setdefault("silence", silence_test)

    # --- lifecycle

    async def start(self) -> None:
        self.stack.on_invite(self._on_invite)
        self.stack.on_request("REGISTER", self._on_register)
        host, port = self.settings.bind, self.settings.sip_port
        points = [("UDP", host, port), ("TCP", host, port)]
        if self.settings.sip_tls_port is not None:
            points.append(("TLS", host, self.settings.sip_tls_port))
        if self.settings.sip_ws_port is not None:
            # WebSocket for browser SIP clients (RFC 7118); WSS when a certificate is configured
            points.append(("WSS" if self.stack.tls_context else "WS", host, self.settings.sip_ws_port))
        await self.stack.start(points)
        self._keepalive = asyncio.create_task(self._keep_registrations_alive())
        await self.trunks.start()

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        for call in list(self.calls.values()):
            with contextlib.suppress(Exception):
                await call.hangup("shutdown")
        await self.browsers.close()
        with contextlib.suppress(Exception):
            await self.trunks.stop()  # unregisters, bounded in time
        await self.stack.close()
        await self.media.close()

    # --- registration

    def _secret(self, tenant: str, user: str) -> Any:
        return self.directory.digest_secret(tenant, user)

    def _tenant_for_request(self, request: Request) -> str | None:
        uri = request.to.uri
        tenant: str | None = self.directory.tenant_for_domain(uri.host if isinstance(uri, SipURI) else "")
        return tenant

    async def _keep_registrations_alive(self) -> None:
        """OPTIONS to each registered phone every `sip_keepalive_seconds`: the traffic keeps NAT bindings
        open, and a phone that answers nothing at all (timeout, transport error) loses its binding, so calls
        are not sent into the void."""
        while True:
            await asyncio.sleep(self.settings.sip_keepalive_seconds)
            self.location.expire(self.stack.now())
            bindings = self.location.all_bindings()
            answers = await asyncio.gather(*(self._ping(binding) for binding in bindings))
            for binding, alive in zip(bindings, answers, strict=True):
                if not alive and self.location.remove_source(binding.source):
                    log.info(
                        "sip.binding_removed", tenant=binding.tenant, user=binding.user, reason="no answer"
                    )

    async def _ping(self, binding: Binding) -> bool:
        if not isinstance(binding.contact.uri, SipURI):
            return True
        request = build_request(
            "OPTIONS",
            binding.contact.uri,
            f"<sip:hotline@{_host_of(binding.contact.uri)}>",
            f"<{binding.contact.uri}>",
        )
        response = await self.stack.request(request, binding.source)
        return response.status not in (408, 503)  # any answer, even an error, proves the phone is there

    async def _on_register(self, incoming: IncomingRequest) -> None:
        incoming.send(self.registrar.process(incoming.request, incoming.source, self.stack.now()))

    # --- inbound calls

    async def _on_invite(self, invite: ServerInvite) -> None:
        request = invite.invite
        try:
            origin, target = self._identify(invite)
            dialled = self.trunks.called_number(request)
            self._check_licence(origin.tenant)
        except Rejection as rejection:
            invite.reject(rejection.status, rejection.reason, rejection.headers)
            return
        except ParseError as error:
            invite.reject(400, error.reason)
            return
        ani, withheld = _caller_number(request)
        region = region_of(ani)
        call = Call(
            self,
            tenant=origin.tenant,
            ani=None if withheld else ani,
            dnis=dialled,
            region=region.name_zh if region else None,
            data={
                "ani": ani or "",
                "dnis": dialled,
                "withheld": withheld,
                "region": region.as_data() if region else None,
                "origin": origin.kind,
            },
        )
        try:
            leg = await self._inbound_leg(call, invite)
        except Rejection as rejection:
            invite.reject(rejection.status, rejection.reason)
            return
        self.calls[call.id] = call
        await self._append(
            {
                "type": "call.started",
                "tenant": call.tenant,
                "call_id": call.id,
                "direction": "inbound",
                "ani": ani or "",
                "withheld": withheld,
                "dnis": dialled,
                "region": call.region,
                "trunk": origin.name if origin.kind == "trunk" else None,
                "entry_target": target,
            }
        )
        await self._append(
            {
                "type": "leg.created",
                "tenant": call.tenant,
                "call_id": call.id,
                "leg_id": leg.id,
                "kind": "customer",
                "direction": "inbound",
                "endpoint": f"{origin.kind}:{origin.name}",
            }
        )
        log.info(
            "switch.call_started", tenant=call.tenant, call_id=call.id, ani=ani, dnis=dialled, target=target
        )
        try:
            await self._run_target(call, target)
        except CallGone:
            pass
        except Exception:
            log.exception("switch.target_failed", tenant=call.tenant, call_id=call.id, target=target)
            call.end_cause = call.end_cause or "failed"
        finally:
            await call.hangup(call.end_cause or "normal_clearing")

    def _identify(self, invite: ServerInvite) -> tuple[Origin, str]:
        """Who is calling, and the target of the dialled number."""
        request = invite.invite
        dialled = self.trunks.called_number(request)  # To, for calls sent to a registration's contact
        inbound = self.directory.inbound(invite.peer.host, dialled) or self.trunks.inbound(
            invite.peer.host, request
        )
        if inbound is not None:
            match, route = inbound
            if route is None:
                raise Rejection(404, "Number Not Found")
            return Origin(match.tenant, "trunk", match.trunk.name), str(route.target)
        tenant = self.directory.tenant_for_domain(_host_of(request.uri))
        if tenant is None:
            raise Rejection(404, "Unknown Domain")
        outcome = self.authenticator.check(request, tenant, invite.peer, self.stack.now())
        if outcome.response is not None:
            response = outcome.response
            headers = [(name, value) for name, value in response.headers.items() if "Authenticate" in name]
            raise Rejection(response.status, response.reason, headers)
        assert outcome.user is not None
        route = self.directory.route(tenant, dialled)
        if route is None:
            outside = self.trunks.outside_number(tenant, dialled)
            if outside is None:
                raise Rejection(404, "Number Not Found")
            return Origin(tenant, "extension", outcome.user), f"external:{outside}"
        return Origin(tenant, "extension", outcome.user), str(route.target)

    def _check_licence(self, tenant: str) -> None:
        limit = getattr(self.directory.tenant_info(tenant), "concurrent_call_limit", None)
        active = sum(1 for call in self.calls.values() if call.tenant == tenant)
        if limit is not None and active >= limit:
            raise Rejection(503, "Tenant Call Limit Reached")

    async def _inbound_leg(self, call: Call, invite: ServerInvite) -> Leg:
        try:
            offer = sdp.parse_sdp(invite.invite.body)
        except sdp.SdpError as error:
            raise Rejection(488, error.reason[:100]) from None
        session = await self.media.create_session(
            on_timeout=lambda _session: self._spawn(call.hangup("media_timeout")),
        )
        try:
            local = sdp.answer(offer, AUDIO_CODECS, session.local_host, session.local_port)
            session.configure(MediaParams.from_negotiation(sdp.negotiated_audio(offer, local)))
        except sdp.SdpError as error:
            session.close()
            raise Rejection(488, error.reason[:100]) from None
        leg = Leg(call, "caller", invite, session)
        leg.local_sdp = local.encode()
        call.legs.append(leg)
        call.caller = leg
        invite.on_end = lambda _sip: self._leg_gone(leg)
        return leg

    def _leg_gone(self, leg: Leg) -> None:
        call = leg.call
        if leg.browser is not None:
            # the agent's browser left (hang-up, vanished, signed out): its channel is not ours to close
            if not call.hung_up:
                self._spawn(call.hangup(leg.browser.end_reason or AGENT_HANGUP))
            return
        leg.media.close()
        if leg is call.caller:
            call.mark_gone((leg.sip.end_reason if leg.sip is not None else "") or "remote hangup")
        elif call.bridge is not None and not call.hung_up:
            # the other party hung up a two-party call: release the caller too
            self._spawn(call.hangup("remote hangup"))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def answer_sdp(self, leg: Leg) -> bytes:
        return leg.local_sdp

    async def _run_target(self, call: Call, target: str) -> None:
        kind, _, value = target.partition(":")
        runner = self.targets.get(kind)
        if runner is None:
            raise Rejection(404, f"no service for {kind}")
        await runner(call, value)

    # --- services for the call-control API

    async def queue(self, call: Call, request: QueueRequest) -> QueueOutcome:
        if self.queue_handler is None:
            return QueueOutcome("unavailable")
        return await self.queue_handler(call, request)

    async def transfer(self, call: Call, target: TransferTarget) -> bool:
        if target.kind == "external":
            leg = await self.trunks.dial_external(call, target.address)
        elif target.kind == "extension":
            leg = await self.originate_extension(call, target.address)
        else:
            return False
        if leg is None:
            return False
        await self.connect(call, leg)
        return True

    async def dial_extension(self, call: Call, number: str) -> None:
        """A call to an extension: ring its phones; connect when one answers (TEL-08)."""
        caller = call._check()
        if isinstance(caller.sip, ServerInvite) and not call.answered:
            caller.sip.ring()
        leg = await self.originate_extension(call, number)
        if leg is None:
            call.end_cause = "no_answer"
            if isinstance(caller.sip, ServerInvite) and not call.answered:
                caller.sip.reject(480, "Temporarily Unavailable")
            return
        await self.connect(call, leg)
        await call.wait_hung_up()

    async def originate_extension(self, call: Call, number: str, ring_seconds: float = 30.0) -> Leg | None:
        """INVITE the phone registered as `number` of the call's tenant; the answered leg, or None."""
        extension = self.directory.extension(call.tenant, number)
        bindings = self.location.lookup(call.tenant, number, self.stack.now())
        if extension is None or not bindings:
            return None
        binding = bindings[0]
        if not isinstance(binding.contact.uri, SipURI):
            return None
        return await self.originate(
            call, binding.contact.uri, binding.source, f"extension:{number}", ring_seconds=ring_seconds
        )

    async def originate_uri(
        self, call: Call, uri: str, ring_seconds: float = 30.0, kind: str = "agent"
    ) -> Leg | None:
        """INVITE a static SIP URI (an agent's desk phone or softphone that does not register)."""
        target = parse_uri(uri)
        if not isinstance(target, SipURI):
            return None
        return await self.originate(call, target, uri_destination(target), f"sip:{uri}", ring_seconds, kind)

    async def originate(
        self,
        call: Call,
        request_uri: SipURI | TelURI,
        destination: Address,
        endpoint: str,
        ring_seconds: float = 30.0,
        kind: str = "external",
        *,
        credentials: DigestClient | None = None,
        from_: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        on_leg: Callable[[Leg], None] | None = None,
    ) -> Leg | None:
        """Ring `request_uri` at `destination` for `call`; the answered leg (media configured), or None
        after a rejection, `ring_seconds` of ringing, or the caller hanging up (the INVITE is cancelled).
        A trunk passes its `credentials` (digest challenges), the `from_` identity and extra `headers`;
        `on_leg` sees the leg as soon as the INVITE is out (its `sip` holds the final status)."""
        session = await self.media.create_session()
        offer = sdp.build_offer(AUDIO_CODECS, session.local_host, session.local_port)
        domain = _host_of(request_uri) or "hotline"
        caller_id = call.ani or "anonymous"
        request = build_request(
            "INVITE",
            request_uri,
            from_ or f"<sip:{caller_id}@{domain}>",
            f"<{request_uri}>",
            contact=self.stack.contact_for(destination),
            body=offer.encode(),
            content_type="application/sdp",
            headers=headers,
        )
        client = self.stack.invite(request, destination, credentials=credentials)
        leg = Leg(call, kind, client, session)
        if on_leg is not None:
            on_leg(leg)
        await self._append(
            {
                "type": "leg.created",
                "tenant": call.tenant,
                "call_id": call.id,
                "leg_id": leg.id,
                "kind": kind,
                "direction": "outbound",
                "endpoint": endpoint,
            }
        )
        hangup: asyncio.Future[None] = asyncio.ensure_future(call.wait_hung_up())
        answered: asyncio.Future[Any] = client.final
        try:
            await asyncio.wait({answered, hangup}, timeout=ring_seconds, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The offer was withdrawn (ring-all: another agent answered): stop the ringing, or hang up a leg
            # that answered in the same instant, so no phone is left ringing or connected to nobody.
            if client.final.done() and client.final.result().status < 300:
                self._spawn(client.bye("cancelled"))
            else:
                client.cancel()
            session.close()
            raise
        finally:
            hangup.cancel()
        if not client.final.done() or client.final.result().status >= 300:
            client.cancel()
            session.close()
            status = client.final.result().status if client.final.done() else None
            await self._append(
                {
                    "type": "leg.ended",
                    "tenant": call.tenant,
                    "call_id": call.id,
                    "leg_id": leg.id,
                    "cause": "no_answer" if status is None else "rejected",
                    "sip_status": status,
                }
            )
            return None
        try:
            remote = sdp.parse_sdp(client.remote_sdp)
            session.configure(MediaParams.from_negotiation(sdp.negotiated_audio(remote, offer)))
        except sdp.SdpError as error:
            log.warning("switch.bad_answer_sdp", call_id=call.id, reason=error.reason)
            session.close()
            await client.bye("bad sdp")
            return None
        leg.answered_at = time.monotonic()
        call.legs.append(leg)
        client.on_end = lambda _sip: self._leg_gone(leg)
        await self._append(
            {"type": "leg.answered", "tenant": call.tenant, "call_id": call.id, "leg_id": leg.id}
        )
        return leg

    async def connect(self, call: Call, leg: Leg) -> None:
        """Bridge the caller with `leg`, recording both sides on the media path (REC-01, FM-08)."""
        caller = call._check()
        await call.answer()
        caller.media.stop_playing()
        recorder = Recorder(self.settings.data_dir / "recordings", call.tenant, call.id)
        call.recording = recorder
        if leg.browser is not None:  # the agent's browser channel (WebRTC)
            call.bridge = ChannelBridge(caller.media, leg.media, recorder)
        else:
            call.bridge = Bridge(caller.media, leg.media, recorder)
        await self._append(
            {
                "type": "recording.started",
                "tenant": call.tenant,
                "call_id": call.id,
                "recording_id": call.id,
                "path": str(recorder.path),
                "format": recorder.format.value,
            }
        )

    async def voicemail(
        self, call: Call, leg: Leg, *, max_seconds: float, beep: bool, silence_timeout: float
    ) -> RecordingRef | None:
        """Record what the caller says (IVR-09), stored like a call recording: until the caller hangs up,
        `max_seconds`, or `silence_timeout` of silence after they spoke. None when nothing was said."""
        if beep:
            await call.play([Tone((1000.0,), 400)])
        recording_id = new_id()
        recorder = Recorder(self.settings.data_dir / "recordings", call.tenant, recording_id)
        loop = asyncio.get_running_loop()
        spoken = 0.0
        last_sound = loop.time()

        def on_frame(pcm: Any, at: float) -> None:
            nonlocal spoken, last_sound
            recorder.write(Channel.CALLER, pcm, at)
            if float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) > VOICE_RMS:
                spoken += len(pcm) / 8000
                last_sound = loop.time()

        tap = ReceiveTap(leg.media, on_frame)
        await self._append(
            {
                "type": "recording.started",
                "tenant": call.tenant,
                "call_id": call.id,
                "recording_id": recording_id,
                "path": str(recorder.path),
                "format": recorder.format.value,
                "leg_id": leg.id,
            }
        )
        deadline = loop.time() + max_seconds
        try:
            while not call.hung_up and loop.time() < deadline:
                if spoken > 0 and loop.time() - last_sound > silence_timeout:
                    break
                await asyncio.sleep(0.1)
        finally:
            tap.stop()
            info = await recorder.close()
            await self._append(
                {
                    "type": "recording.stopped",
                    "tenant": call.tenant,
                    "call_id": call.id,
                    "recording_id": recording_id,
                    "path": str(info.path),
                    "format": info.format.value,
                    "duration_seconds": round(info.duration_seconds, 3),
                }
            )
        if spoken < MIN_MESSAGE_SECONDS:
            return None
        return RecordingRef(recording_id, round(info.duration_seconds, 3))

    async def call_ended(self, call: Call, cause: str) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        call.mark_gone(cause)
        hangup_side = "customer" if cause in ("remote hangup", "cancelled") else "system"
        if cause in (AGENT_HANGUP, CONNECTION_LOST, SIGNED_OUT):
            hangup_side = "agent"
        if call.bridge is not None:
            call.bridge.unbridge()
        for leg in call.legs:
            if leg.browser is None:  # an agent's browser channel stays up for the next call
                leg.media.close()
        if call.recording is not None:
            info = await call.recording.close()
            await self._append(
                {
                    "type": "recording.stopped",
                    "tenant": call.tenant,
                    "call_id": call.id,
                    "recording_id": call.id,
                    "path": str(info.path),
                    "format": info.format.value,
                    "duration_seconds": round(info.duration_seconds, 3),
                }
            )
        await self._append(
            {
                "type": "call.ended",
                "tenant": call.tenant,
                "call_id": call.id,
                "cause": _cause_name(cause),
                "hangup_side": hangup_side,
            }
        )
        log.info("switch.call_ended", tenant=call.tenant, call_id=call.id, cause=cause)

    # --- events

    async def emit(self, call: Call, event_type: str, **fields: Any) -> None:
        await self._append({"type": event_type, "tenant": call.tenant, "call_id": call.id, **fields})

    async def _append(self, data: dict[str, Any]) -> None:
        try:
            event = parse_event(data)
        except ValidationError as error:
            # Not every step has a typed event yet (e.g. ivr.flow_started): keep it in the log file.
            log.info("switch.untyped_event", event_type=data.get("type"), error=error.errors()[0]["msg"])
            return
        await self.events.append(event)


# --- built-in test numbers (issue #3 item 9) -------------------------------------------------------------


async def silence_test(call: Call, _value: str) -> None:
    """Answers and stays silent until the caller hangs up (signalling benchmarks)."""
    await call.answer()
    await call.wait_hung_up()


async def echo_test(call: Call, _value: str) -> None:
    """The caller hears themself: proves two-way audio from any phone."""
    await call.answer()
    leg = call._check()
    echo = Echo(leg.media)
    try:
        await call.wait_hung_up()
    finally:
        echo.stop()


async def dtmf_readback(call: Call, _value: str) -> None:
    """Speaks back every digit pressed, in Mandarin then English. A key pressed during a prompt counts."""
    from hotline.switch.control import Speech

    prompt = [
        Speech("请按键，系统将读出您按的数字。", "zh"),
        Speech("Press keys to hear them read back.", "en"),
    ]
    while not call.hung_up:
        digits = await call.collect(prompt, max_digits=16, timeout=30, inter_digit_timeout=2, terminator="#")
        if not digits:
            await call.play([Speech("再见", "zh"), Speech("Goodbye", "en")])
            return
        spoken = " ".join(_DIGIT_NAMES.get(d, d) for d in digits)
        prompt = [Speech(f"您按了 {spoken_zh(digits)}", "zh"), Speech(f"You pressed {spoken}", "en")]


_DIGIT_NAMES = {"*": "star", "#": "hash"}
_ZH_DIGITS = dict(zip("0123456789*#", "零一二三四五六七八九星井", strict=True))


def spoken_zh(digits: str) -> str:
    return "，".join(_ZH_DIGITS.get(d, d) for d in digits)


# --- helpers -----------------------------------------------------------------------------------------------


def _media_host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def _user_of(uri: object) -> str:
    if isinstance(uri, SipURI):
        return uri.user or ""
    if isinstance(uri, TelURI):
        return uri.number
    return ""


def _host_of(uri: object) -> str:
    return uri.host if isinstance(uri, SipURI) else ""


def _caller_number(request: Request) -> tuple[str | None, bool]:
    """The caller's number from P-Asserted-Identity or From; withheld callers are flagged (TEL-04, FM-10)."""
    privacy = (request.headers.get("Privacy") or "").lower()
    for name in ("P-Asserted-Identity", "From"):
        value = request.headers.get(name)
        if value is None:
            continue
        try:
            from hotline.sip.headers import parse_name_addr

            number = _user_of(parse_name_addr(value).uri)
        except ParseError:
            continue
        if number.lower() in WITHHELD or "id" in privacy or "user" in privacy:
            return None, True
        return number, False
    return None, True


def _cause_name(cause: str) -> str:
    normal = ("remote hangup", "local hangup", AGENT_HANGUP)
    return ("normal_clearing" if cause in normal else cause)[:64]


async def build_switch(
    settings: Settings, storage: Storage, tenancy: TenancyService, events: EventLog
) -> Switch:
    from hotline.switch.directory import Directory

    directory = await Directory.open(storage)
    return Switch(settings, storage, tenancy, events, directory)
