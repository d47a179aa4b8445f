"""Carrier trunks: registrations, outbound calls by priority with failover, channel counts (TEL-01, TEL-03,
TEL-15, SUP-06).

A trunk is configuration (``directory.Trunk``, FM-14); this module makes it work:

- :class:`TrunkManager` ``(switch)``, built by the switch, started after its SIP stack:

  - ``await start()`` / ``await stop()``: registers every enabled ``register`` trunk of every active tenant
    and follows configuration changes (``Directory.subscribe``, plus a periodic sweep for tenants that were
    suspended or removed): a new trunk registers, a removed or disabled one unregisters, one whose
    registrar, account or expiry changed registers again. ``stop`` unregisters (bounded in time).
  - ``status(tenant) -> list[TrunkStatus]``: per trunk, channels in use and the limit, registration
    state (registered, failing with the last status, next retry), the last failure (the wallboard's trunk
    view, SUP-06). ``channels_in_use(tenant, trunk)`` counts ringing and answered outbound legs and
    inbound calls that came in on the trunk. ``alarms``: recent :class:`TrunkAlarm` (newest last).
  - ``await dial(call, number, *, caller_id=None, withheld=False, ring_seconds=60, trunk=None) ->
    DialOutcome``: tries the tenant's trunks in priority order (a preferred ``trunk``, or the calling
    extension's ``outbound_trunk``, first: TEL-09): skips a trunk at its channel limit or whose
    registration is failing, puts the trunk's ``prefix`` before the number, presents the caller ID the
    trunk's rules allow (see :func:`present_caller_id`; ``withheld`` sends an anonymous From with
    ``Privacy: id``), answers the trunk's digest challenges, and INVITEs through ``switch.originate``. A
    trunk that fails (no response at all within ``setup_seconds``, 408, 5xx, 401/403/407, 488/606) hands the
    call to the next one and raises an alarm ("trunk X failed, moved to Y", TEL-15); the callee's own
    answer (486 busy, 404, 480, 603 ...) or the caller hanging up ends the search.
  - ``await dial_external(call, number, caller_id=None, ring_seconds=60) -> Leg | None``: the answered leg.
  - ``await connect_external(call, number)``: the target runner for ``forward:<number>`` (a number of the
    plan forwarded out, TEL-14) and ``external:<number>`` (a phone dialling an outside number): ring the
    caller, dial out, bridge when answered; otherwise reject the caller with the callee's answer.
  - ``outside_number(tenant, dialled) -> str | None``: whether a phone's dialled digits go out on a trunk.
  - Calls on a registered trunk: the carrier sends them to the contact we registered (``sip:<account>@us``),
    with the called number in To. ``called_number(request)`` gives that number; ``inbound(source, request)``
    finds the trunk (and route) when the directory cannot tell it by source address (a registrar known by
    name: its resolved addresses count).

- :class:`TrunkRegistration`: the asyncio driver of one ``sip.registration.OutboundRegistration``.
- :func:`present_caller_id`, :func:`failover_status`: the rules, as plain functions.

Caller ID wanted on a trunk: the ``caller_id`` argument; else, for a call from one of the tenant's phones,
that extension's ``caller_id_number``; for a carrier call being forwarded, the original caller's number,
then the tenant's number that was called. The first one the trunk's rules allow is presented, else the
trunk's ``default``, else (register trunks) the account name; with none at all the call goes out anonymous.
A forwarded call whose caller withheld their number stays withheld.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from hotline.log import get_logger
from hotline.sip.auth import DigestClient
from hotline.sip.errors import ParseError
from hotline.sip.headers import NameAddr
from hotline.sip.message import REASONS, Request, Response, make_response
from hotline.sip.registration import (
    OutboundRegistration,
    RegistrationSettings,
    RegistrationState,
    RegistrationStatus,
)
from hotline.sip.stack import ServerInvite, SipStack
from hotline.sip.transaction import Address
from hotline.sip.uri import SipURI, TelURI
from hotline.switch.call import Call, Leg
from hotline.switch.control import CallGone
from hotline.switch.directory import CallerIdRules, Route, Trunk, TrunkMatch, ip_literal

if TYPE_CHECKING:
    from hotline.switch.service import Switch

log = get_logger("hotline.switch.trunks")

# Statuses after which another trunk may do better; anything else is the callee's own answer.
_FAILOVER_STATUSES: Final = frozenset({401, 403, 407, 408, 488, 606})
_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
_OUTSIDE_NUMBER = re.compile(r"^(\+?[0-9]{5,32}|1[0-9]{2})$")
ANONYMOUS_FROM: Final = '"Anonymous" <sip:anonymous@anonymous.invalid>'


def failover_status(status: int | None, heard: bool) -> bool:
    """Whether a failed attempt should move to the next trunk. `status` is the final SIP status (None when
    there was none), `heard` whether the trunk answered at all (a provisional or final response)."""
    if status is None:
        return not heard  # a silent trunk is down; a ringing callee who does not answer is an answer
    return status in _FAILOVER_STATUSES or 500 <= status < 600


def present_caller_id(rules: CallerIdRules, wanted: Iterable[str]) -> str | None:
    """The first wanted number the trunk lets us present, else the trunk's default."""
    for number in wanted:
        if number and rules.allows(number):
            return number
    return rules.default


def registration_key(trunk: Trunk) -> tuple[object, ...]:
    """What a registration depends on: a change of anything else (priority, prefix) keeps it."""
    return (trunk.host, trunk.port, trunk.transport, trunk.username, trunk.password, trunk.register_expires)


# --- registration driver ----------------------------------------------------------------------------------


class TrunkRegistration:
    """Keeps one trunk registered: sends what the sans-IO core asks for, sleeps until its next deadline."""

    def __init__(
        self,
        stack: SipStack,
        tenant: str,
        trunk: Trunk,
        *,
        rng: random.Random | None = None,
        on_change: Callable[[TrunkRegistration], None] | None = None,
    ) -> None:
        if trunk.username is None or trunk.password is None:
            raise ValueError(f"trunk {trunk.name} has no account to register")
        self.stack = stack
        self.tenant = tenant
        self.trunk = trunk
        self.key = registration_key(trunk)
        self.destination = Address(trunk.host, trunk.port, trunk.transport.upper())
        params: dict[str, str | None] = {} if trunk.transport == "udp" else {"transport": trunk.transport}
        registrar = SipURI("sip", None, None, trunk.host, trunk.port, params, {})
        aor = SipURI("sip", trunk.username, None, trunk.host, None, {}, {})
        contact = stack.contact_for(self.destination, user=trunk.username)
        self.core = OutboundRegistration(
            RegistrationSettings(
                registrar=registrar,
                aor=aor,
                contact=contact,
                username=trunk.username,
                password=trunk.password,
                expires=trunk.register_expires,
            ),
            rng=rng,
        )
        self.on_change = on_change
        # the registrar's addresses: calls it sends to our contact come from there (hosts may be names)
        literal = ip_literal(trunk.host)
        self.addresses: set[str] = {str(literal)} if literal is not None else set()
        self._task: asyncio.Task[None] | None = None
        self._reported: tuple[RegistrationState, int | None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"register {self.tenant}/{self.trunk.name}"
            )
            self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "trunk.registration_crashed",
                tenant=self.tenant,
                trunk=self.trunk.name,
                error=repr(task.exception()),
            )

    def status(self) -> RegistrationStatus:
        return self.core.status(self.stack.now())

    @property
    def contact_user(self) -> str | None:
        uri = self.core.settings.contact.uri
        return uri.user if isinstance(uri, SipURI) else None

    async def _resolve(self) -> None:
        if self.addresses:
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(self.trunk.host, self.trunk.port), 10.0)
        except (OSError, TimeoutError) as error:
            log.warning("trunk.resolve_failed", tenant=self.tenant, trunk=self.trunk.name, error=repr(error))
            return
        self.addresses = {str(info[4][0]) for info in infos}

    async def _run(self) -> None:
        await self._resolve()
        request: Request | None = self.core.start(self.stack.now())
        while True:
            while request is not None:
                response = await self._send(request)
                request = self.core.receive(response, self.stack.now())
            self._report()
            deadline = self.core.next_deadline()
            if deadline is None:
                return
            await asyncio.sleep(max(0.0, deadline - self.stack.now()))
            request = self.core.on_timer(self.stack.now())

    async def _send(self, request: Request) -> Response:
        try:
            return await self.stack.request(request, self.destination)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bad address or a closed stack: a failed attempt, never a dead loop
            log.warning(
                "trunk.register_send_failed", tenant=self.tenant, trunk=self.trunk.name, error=repr(error)
            )
            return make_response(request, 503, "Transport Failure")

    def _report(self) -> None:
        status = self.core.status(self.stack.now())
        seen = (status.state, status.last_status)
        if seen == self._reported:
            return
        self._reported = seen
        fields: dict[str, Any] = {"tenant": self.tenant, "trunk": self.trunk.name}
        if status.state is RegistrationState.REGISTERED:
            log.info("trunk.registered", expires=status.granted_expires, **fields)
        elif status.state is RegistrationState.FAILING:
            retry_in = round((status.retry_at or 0.0) - self.stack.now(), 1)
            log.warning(
                "trunk.registration_failed",
                status=status.last_status,
                reason=status.last_reason,
                failures=status.failures,
                retry_in=retry_in,
                **fields,
            )
        if self.on_change is not None:
            self.on_change(self)

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop refreshing and remove the binding (Expires: 0), waiting at most `timeout` seconds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        request = self.core.stop(self.stack.now())
        while request is not None and loop.time() < deadline:
            try:
                response = await asyncio.wait_for(self._send(request), deadline - loop.time())
            except TimeoutError:
                break
            request = self.core.receive(response, self.stack.now())
        log.info("trunk.unregistered", tenant=self.tenant, trunk=self.trunk.name)


# --- status and outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrunkAlarm:
    """A trunk failed or was full and calls moved on (TEL-15). `at` is wall-clock seconds."""

    at: float
    tenant: str
    trunk: str
    reason: str
    moved_to: str | None
    call_id: str | None = None

    @property
    def message(self) -> str:
        if self.call_id is None:  # not about a call: the trunk's registration
            return f"trunk {self.trunk} {self.reason}"
        where = f"moved to {self.moved_to}" if self.moved_to else "no trunk left"
        return f"trunk {self.trunk} {self.reason}, {where}"


@dataclass(frozen=True)
class TrunkStatus:
    """One trunk as the wallboard's trunk view shows it (SUP-06)."""

    tenant: str
    name: str
    kind: str
    host: str
    port: int
    transport: str
    priority: int
    channels_in_use: int
    channel_limit: int | None
    registration: RegistrationStatus | None  # register trunks only
    last_failure: str | None
    last_failure_at: float | None  # wall clock

    @property
    def registered(self) -> bool | None:
        return None if self.registration is None else self.registration.registered

    def as_dict(self) -> dict[str, Any]:
        registration = self.registration
        return {
            "tenant": self.tenant,
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "transport": self.transport,
            "priority": self.priority,
            "channels_in_use": self.channels_in_use,
            "channel_limit": self.channel_limit,
            "registered": self.registered,
            "registration_state": registration.state.value if registration else None,
            "registration_failures": registration.failures if registration else None,
            "registration_last_status": registration.last_status if registration else None,
            "registration_last_reason": registration.last_reason if registration else None,
            "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at,
        }


@dataclass(frozen=True)
class DialAttempt:
    trunk: str
    status: int | None  # final SIP status; None: none came (or the trunk was skipped)
    reason: str


@dataclass
class DialOutcome:
    """What `dial` did. `leg` is the answered leg, or None with `cause` saying why."""

    leg: Leg | None
    cause: str  # answered, busy, no_answer, rejected, hung_up, no_trunk, all_failed, invalid_number
    status: int | None = None  # the callee's final status when it answered with one
    trunk: str | None = None  # the trunk that carried the call (or gave the callee's answer)
    attempts: list[DialAttempt] = field(default_factory=list)

    def caller_response(self) -> tuple[int, str]:
        """What to answer the caller whose call could not be put through."""
        if self.cause == "busy":
            return 486, "Busy Here"
        if self.cause == "no_answer":
            return 480, "Temporarily Unavailable"
        if self.cause in ("no_trunk", "all_failed"):
            return 503, "No Trunk Available"
        if self.cause == "invalid_number":
            return 484, "Address Incomplete"
        if self.status is not None and 400 <= self.status < 700:
            return self.status, REASONS.get(self.status, "Call Rejected")
        return 480, "Temporarily Unavailable"


def _cause_of(status: int | None) -> str:
    if status is None:
        return "no_answer"
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    return "rejected"


# --- the manager ------------------------------------------------------------------------------------------


class TrunkManager:
    """Every tenant's trunks on this node: registrations, outbound dialling and channel counts."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.setup_seconds = 5.0  # a trunk that sends nothing at all in this time is down
        self.sweep_seconds = 10.0
        self.unregister_seconds = 2.0
        self.alarms: deque[TrunkAlarm] = deque(maxlen=200)
        self._registrations: dict[tuple[str, str], TrunkRegistration] = {}
        self._dialing: dict[tuple[str, str], int] = {}
        self._outbound: dict[tuple[str, str], list[Leg]] = {}
        self._inbound: dict[str, tuple[str, str] | None] = {}  # call id -> (tenant, trunk) it came in on
        self._failures: dict[tuple[str, str], tuple[str, float]] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._reconcile_lock = asyncio.Lock()
        self._started = False

    # --- lifecycle

    async def start(self) -> None:
        """Register the trunks that register, and follow configuration changes. Call after the SIP stack
        has started (the Contact needs its address)."""
        if self._started:
            return
        self._started = True
        directory = self.switch.directory
        self._unsubscribe = directory.subscribe(self._on_config_change)
        await self.reconcile()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="trunk sweep")

    async def stop(self) -> None:
        """Unregister every trunk (each bounded by `unregister_seconds`) and stop following changes."""
        if not self._started:
            return
        self._started = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        registrations = list(self._registrations.values())
        self._registrations.clear()
        await asyncio.gather(
            *(r.stop(self.unregister_seconds) for r in registrations), return_exceptions=True
        )

    def _on_config_change(self, tenant: str) -> None:
        if not self._started:
            return
        task = asyncio.get_running_loop().create_task(self.reconcile(), name=f"trunks {tenant}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        # Suspending or removing a tenant does not call the directory's listeners: look now and then.
        while self._started:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.reconcile()
            except Exception:
                log.exception("trunk.sweep_failed")

    async def reconcile(self) -> None:
        """Make the running registrations match the configuration of every tenant."""
        async with self._reconcile_lock:
            wanted: dict[tuple[str, str], Trunk] = {}
            for info in self.switch.directory.tenants():
                for trunk in self.switch.directory.trunks(info.id):
                    if trunk.kind == "register" and trunk.username and trunk.password:
                        wanted[(info.id, trunk.name)] = trunk
            stopping = []
            for key, registration in list(self._registrations.items()):
                trunk = wanted.get(key)
                if trunk is None or registration_key(trunk) != registration.key:
                    stopping.append(self._registrations.pop(key))
                else:
                    registration.trunk = trunk
            await asyncio.gather(*(r.stop(self.unregister_seconds) for r in stopping), return_exceptions=True)
            for (tenant, name), trunk in wanted.items():
                if (tenant, name) in self._registrations or not self._started:
                    continue
                try:
                    registration = TrunkRegistration(
                        self.switch.stack, tenant, trunk, on_change=self._registration_changed
                    )
                except Exception as error:  # one unusable trunk must not keep the others down
                    log.error("trunk.register_setup_failed", tenant=tenant, trunk=name, error=repr(error))
                    continue
                self._registrations[(tenant, name)] = registration
                registration.start()
                log.info("trunk.registering", tenant=tenant, trunk=name, host=trunk.host, port=trunk.port)

    # --- status

    def registration(self, tenant: str, trunk: str) -> TrunkRegistration | None:
        return self._registrations.get((tenant, trunk))

    def status(self, tenant: str) -> list[TrunkStatus]:
        """The tenant's configured trunks (enabled ones, in priority order)."""
        found = []
        for trunk in self.switch.directory.trunks(tenant):
            registration = self._registrations.get((tenant, trunk.name))
            failure = self._failures.get((tenant, trunk.name))
            found.append(
                TrunkStatus(
                    tenant=tenant,
                    name=trunk.name,
                    kind=trunk.kind,
                    host=trunk.host,
                    port=trunk.port,
                    transport=trunk.transport,
                    priority=trunk.priority,
                    channels_in_use=self.channels_in_use(tenant, trunk.name),
                    channel_limit=trunk.channel_limit,
                    registration=registration.status() if registration is not None else None,
                    last_failure=failure[0] if failure else None,
                    last_failure_at=failure[1] if failure else None,
                )
            )
        return found

    def channels_in_use(self, tenant: str, trunk: str) -> int:
        """Outbound legs ringing or up on the trunk, plus inbound calls that came in on it."""
        key = (tenant, trunk)
        legs = [leg for leg in self._outbound.get(key, ()) if not leg.ended]
        if legs:
            self._outbound[key] = legs
        else:
            self._outbound.pop(key, None)
        return self._dialing.get(key, 0) + len(legs) + self._inbound_count(key)

    def _inbound_count(self, key: tuple[str, str]) -> int:
        calls = self.switch.calls
        for call_id in [c for c in self._inbound if c not in calls]:
            del self._inbound[call_id]
        count = 0
        for call in calls.values():
            if call.tenant != key[0] or call.hung_up:
                continue
            if call.id not in self._inbound:
                self._inbound[call.id] = self._inbound_trunk(call)
            if self._inbound[call.id] == key:
                count += 1
        return count

    def _inbound_trunk(self, call: Call) -> tuple[str, str] | None:
        if call.data.get("origin") != "trunk" or call.caller is None:
            return None
        peer = getattr(call.caller.sip, "peer", None)
        if peer is None:
            return None
        match = self.switch.directory.trunk_from(peer.host, tenant=call.tenant)
        return (call.tenant, match.trunk.name) if match is not None else None

    def _unusable(self, tenant: str, trunk: Trunk) -> str | None:
        if trunk.channel_limit is not None:
            in_use = self.channels_in_use(tenant, trunk.name)
            if in_use >= trunk.channel_limit:
                return f"full ({in_use}/{trunk.channel_limit} channels)"
        registration = self._registrations.get((tenant, trunk.name))
        if registration is not None:
            status = registration.status()
            if status.state is RegistrationState.FAILING and not status.registered:
                last = f"{status.last_status} {status.last_reason}".strip()
                return f"not registered ({last})"
        return None

    def _registration_changed(self, registration: TrunkRegistration) -> None:
        status = registration.status()
        if status.state is RegistrationState.FAILING and status.failures == 1:
            # once per outage, not on every retry
            reason = f"registration failed ({status.last_status} {status.last_reason})"
            alarm = TrunkAlarm(time.time(), registration.tenant, registration.trunk.name, reason, None)
            self.alarms.append(alarm)
            self._failures[(registration.tenant, registration.trunk.name)] = (reason, alarm.at)

    def _alarm(self, call: Call, trunk: str, reason: str, moved_to: str | None) -> None:
        alarm = TrunkAlarm(time.time(), call.tenant, trunk, reason, moved_to, call.id)
        self.alarms.append(alarm)
        self._failures[(call.tenant, trunk)] = (reason, alarm.at)
        log.warning(
            "trunk.failover" if moved_to else "trunk.all_failed",
            tenant=call.tenant,
            call_id=call.id,
            trunk=trunk,
            moved_to=moved_to,
            reason=reason,
            alarm=alarm.message,
        )

    # --- inbound calls on registered trunks

    def called_number(self, request: Request) -> str:
        """The number an INVITE is for: its Request-URI user, unless that is the contact one of our
        registrations gave the carrier (calls are sent to the registered contact): then the To user."""
        user = _user_of(request.uri)
        if user and any(r.contact_user == user for r in self._registrations.values()):
            with contextlib.suppress(ParseError):
                return _user_of(request.to.uri) or user
        return user

    def inbound(self, source_host: str, request: Request) -> tuple[TrunkMatch, Route | None] | None:
        """The registered trunk an INVITE came in on, when it is addressed to that registration's contact
        and comes from its registrar (for trunks the directory cannot tell by source address)."""
        user = _user_of(request.uri)
        address = ip_literal(source_host)
        if not user or address is None:
            return None
        host = str(address)
        for (tenant, _name), registration in self._registrations.items():
            if registration.contact_user == user and host in registration.addresses:
                trunk = registration.trunk
                network = ipaddress.ip_network(host)
                route = self.switch.directory.route(tenant, self.called_number(request))
                return TrunkMatch(tenant, trunk, network), route
        return None

    # --- outbound calls

    def outside_number(self, tenant: str, dialled: str) -> str | None:
        """`dialled` when a phone of `tenant` may dial it out on a trunk: 5 or more digits (a leading + too),
        or a 3-digit service number starting with 1 (110, 119, 120), and the tenant has a trunk."""
        if not _OUTSIDE_NUMBER.fullmatch(dialled) or not self.switch.directory.trunks(tenant):
            return None
        return dialled

    def _candidates(self, tenant: str, preferred: str | None) -> list[Trunk]:
        trunks = list(self.switch.directory.trunks(tenant))
        if preferred is not None:
            first = [t for t in trunks if t.name == preferred]
            trunks = first + [t for t in trunks if t.name != preferred]
        return trunks

    def _calling_extension(self, call: Call) -> Any:
        if call.data.get("origin") != "extension" or call.ani is None:
            return None
        return self.switch.directory.extension(call.tenant, call.ani)

    def _wanted_caller_ids(self, call: Call, caller_id: str | None) -> list[str]:
        if caller_id is not None:
            return [caller_id]
        extension = self._calling_extension(call)
        if extension is not None:
            return [extension.caller_id_number] if extension.caller_id_number else []
        if call.data.get("origin") == "trunk":
            return [number for number in (call.ani, call.dnis) if number]
        return []  # a phone's own call: its dnis is the number it dialled, never ours to present

    async def dial_external(
        self, call: Call, number: str, caller_id: str | None = None, ring_seconds: float = 60.0
    ) -> Leg | None:
        """Dial `number` out through the tenant's trunks; the answered leg, or None."""
        outcome = await self.dial(call, number, caller_id=caller_id, ring_seconds=ring_seconds)
        return outcome.leg

    async def dial(
        self,
        call: Call,
        number: str,
        *,
        caller_id: str | None = None,
        withheld: bool = False,
        ring_seconds: float = 60.0,
        trunk: str | None = None,
    ) -> DialOutcome:
        number = number.strip()
        if not _NUMBER.fullmatch(number):
            return DialOutcome(None, "invalid_number")
        extension = self._calling_extension(call)
        preferred = trunk or (extension.outbound_trunk if extension is not None else None)
        candidates = self._candidates(call.tenant, preferred)
        if not candidates:
            log.warning("trunk.none_configured", tenant=call.tenant, call_id=call.id)
            return DialOutcome(None, "no_trunk")
        wanted = self._wanted_caller_ids(call, caller_id)
        # a forwarded caller who withheld their number stays withheld
        hide = withheld or (caller_id is None and call.data.get("origin") == "trunk" and call.ani is None)
        attempts: list[DialAttempt] = []
        moving_from: tuple[str, str] | None = None  # (trunk, why) to report when the next one is tried
        for candidate in candidates:
            if call.hung_up:
                return DialOutcome(None, "hung_up", attempts=attempts)
            unusable = self._unusable(call.tenant, candidate)
            if moving_from is not None:
                self._alarm(call, moving_from[0], moving_from[1], candidate.name)
                moving_from = None
            if unusable is not None:
                attempts.append(DialAttempt(candidate.name, None, unusable))
                moving_from = (candidate.name, unusable)
                continue
            leg, status, heard, reason = await self._attempt(
                call, candidate, number, wanted, hide, ring_seconds
            )
            attempts.append(DialAttempt(candidate.name, status, reason))
            if leg is not None:
                return DialOutcome(leg, "answered", 200, candidate.name, attempts)
            if call.hung_up:
                return DialOutcome(None, "hung_up", status, candidate.name, attempts)
            if not failover_status(status, heard):
                return DialOutcome(None, _cause_of(status), status, candidate.name, attempts)
            moving_from = (candidate.name, f"failed ({reason})")
        if moving_from is not None:
            self._alarm(call, moving_from[0], moving_from[1], None)
        return DialOutcome(None, "all_failed", attempts=attempts)

    async def _attempt(
        self, call: Call, trunk: Trunk, number: str, wanted: Sequence[str], hide: bool, ring_seconds: float
    ) -> tuple[Leg | None, int | None, bool, str]:
        """One INVITE on one trunk: (answered leg, final status, whether the trunk answered at all, why)."""
        params: dict[str, str | None] = {} if trunk.transport == "udp" else {"transport": trunk.transport}
        request_uri = SipURI("sip", f"{trunk.prefix}{number}", None, trunk.host, trunk.port, params, {})
        destination = Address(trunk.host, trunk.port, trunk.transport.upper())
        presented = present_caller_id(trunk.caller_id, wanted) or trunk.username
        from_, headers = caller_identity(presented, trunk.host, hide)
        credentials = (
            DigestClient(trunk.username, trunk.password) if trunk.username and trunk.password else None
        )
        legs: list[Leg] = []
        key = (call.tenant, trunk.name)
        self._dialing[key] = self._dialing.get(key, 0) + 1
        log.info(
            "trunk.dialling",
            tenant=call.tenant,
            call_id=call.id,
            trunk=trunk.name,
            number=number,
            caller_id="withheld" if hide else presented,
        )
        try:
            task = asyncio.ensure_future(
                self.switch.originate(
                    call,
                    request_uri,
                    destination,
                    f"trunk:{trunk.name}",
                    ring_seconds,
                    "external",
                    credentials=credentials,
                    from_=from_,
                    headers=headers,
                    on_leg=legs.append,
                )
            )
            try:
                done, _pending = await asyncio.wait({task}, timeout=self.setup_seconds)
                if not done and not _heard(legs):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    if legs:
                        await self.switch.emit(call, "leg.ended", leg_id=legs[0].id, cause="no_response")
                    return None, None, False, f"no response in {self.setup_seconds:g} s"
                leg = await task
            except asyncio.CancelledError:
                task.cancel()
                raise
        finally:
            self._dialing[key] -= 1
        if leg is not None:
            self._outbound.setdefault(key, []).append(leg)
            return leg, 200, True, "answered"
        status = _final_status(legs)
        reason = f"{status}" if status is not None else "no answer"
        return None, status, _heard(legs), reason

    async def connect_external(self, call: Call, number: str) -> None:
        """Target runner for ``forward:<number>`` and ``external:<number>``: ring the caller, dial out,
        bridge when answered, else reject the caller with the callee's answer."""
        caller = call._check()
        if isinstance(caller.sip, ServerInvite) and not call.answered:
            caller.sip.ring()
        outcome = await self.dial(call, number)
        if outcome.leg is None:
            call.end_cause = call.end_cause or ("no_answer" if outcome.cause == "hung_up" else outcome.cause)
            if isinstance(caller.sip, ServerInvite) and not call.answered:
                status, reason = outcome.caller_response()
                caller.sip.reject(status, reason)
            return
        try:
            await self.switch.connect(call, outcome.leg)
        except CallGone:
            await outcome.leg.release("caller gone")
            raise
        await call.wait_hung_up()


def caller_identity(presented: str | None, host: str, withheld: bool) -> tuple[str, list[tuple[str, str]]]:
    """The From value and identity headers for an outbound INVITE (RFC 3323, RFC 3325): the presented
    number in From and P-Asserted-Identity; withheld: an anonymous From, the number only in
    P-Asserted-Identity with Privacy: id (the carrier keeps it for billing and emergencies)."""
    headers: list[tuple[str, str]] = []
    identity = (
        str(NameAddr(None, SipURI("sip", presented, None, host, None, {}, {}), {})) if presented else None
    )
    if identity is not None:
        headers.append(("P-Asserted-Identity", identity))
    if withheld or identity is None:
        if withheld:
            headers.append(("Privacy", "id"))
        return ANONYMOUS_FROM, headers
    return identity, headers


def _user_of(uri: object) -> str:
    if isinstance(uri, SipURI):
        return uri.user or ""
    if isinstance(uri, TelURI):
        return uri.number
    return ""


def _heard(legs: Sequence[Leg]) -> bool:
    if not legs:
        return False
    sip: Any = legs[0].sip
    return bool(sip.final.done() or not sip.provisional.empty())


def _final_status(legs: Sequence[Leg]) -> int | None:
    if not legs:
        return None
    sip: Any = legs[0].sip
    if not sip.final.done() or sip.final.cancelled():
        return None
    status: int = sip.final.result().status
    return status
