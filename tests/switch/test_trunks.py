"""Carrier trunks: priority, prefix, caller-ID rules, failover with alarms, channel limits, and registrations
that follow configuration changes (issue #2 item 7, issue #4 item 1, TEL-01, TEL-03, TEL-15, SUP-06).

Dialling runs against a scripted `originate` (what each trunk answers); registrations run a real SIP stack
against an in-process registrar on loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.sip.auth import DigestChallenger, DigestClient
from hotline.sip.dialog import build_request
from hotline.sip.headers import parse_name_addr
from hotline.sip.message import Response, make_response
from hotline.sip.registration import RegistrationState
from hotline.sip.stack import IncomingRequest, SipStack
from hotline.sip.transaction import Address
from hotline.sip.uri import SipURI, parse_uri
from hotline.switch.call import Call, Leg
from hotline.switch.directory import (
    CallerIdRules,
    Extension,
    NumberTarget,
    Route,
    TenantInfo,
    Trunk,
    TrunkMatch,
)
from hotline.switch.trunks import (
    ANONYMOUS_FROM,
    TrunkManager,
    caller_identity,
    failover_status,
    present_caller_id,
)

TENANT = "acme"


# --- doubles ----------------------------------------------------------------------------------------------


class FakeDirectory:
    """The parts of `Directory` the trunk manager reads; `change()` notifies like a reload does."""

    def __init__(self, trunks: list[Trunk], extensions: list[Extension] | None = None) -> None:
        self.trunk_list = trunks
        self.extensions = {e.number: e for e in extensions or []}
        self.listeners: list[Callable[[str], None]] = []
        self.active = True
        self.numbers: dict[str, str] = {"02161234570": "forward:13900139000"}

    def tenants(self) -> list[TenantInfo]:
        return [TenantInfo(TENANT, "Acme", "active", "Asia/Shanghai", None, 100, 10)] if self.active else []

    def trunks(self, tenant: str) -> tuple[Trunk, ...]:
        if tenant != TENANT or not self.active:
            return ()
        return tuple(sorted((t for t in self.trunk_list if t.enabled), key=lambda t: (t.priority, t.name)))

    def extension(self, tenant: str, number: str) -> Extension | None:
        return self.extensions.get(number) if tenant == TENANT else None

    def trunk_from(self, address: str, tenant: str | None = None) -> TrunkMatch | None:
        for trunk in self.trunks(TENANT):
            for network in trunk.source_networks():
                if ipaddress.ip_address(address) in network:
                    return TrunkMatch(TENANT, trunk, network)
        return None

    def route(self, tenant: str, dialled: str) -> Route | None:
        target = self.numbers.get(dialled)
        return Route(TENANT, dialled, NumberTarget.model_validate(target), True) if target else None

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def change(self, trunks: list[Trunk]) -> None:
        self.trunk_list = trunks
        for listener in list(self.listeners):
            listener(TENANT)


class FakeInvite:
    """A ClientInvite as far as the trunk manager reads it."""

    def __init__(self) -> None:
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.provisional: asyncio.Queue[Response] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.peer = Address("127.0.0.9", 5060)

    def respond(self, status: int) -> None:
        response = Response(status)
        if status < 200:
            self.provisional.put_nowait(response)
        elif not self.final.done():
            self.final.set_result(response)

    async def bye(self, reason: str = "") -> None:
        self.ended.set()


@dataclass
class Invited:
    trunk_port: int
    request_uri: SipURI
    from_: str | None
    headers: dict[str, str]
    credentials: DigestClient | None
    leg: Leg


@dataclass
class FakeSwitch:
    """Scripted trunks by port: "answer", "silent", "ring" (180, never answers), or a final status."""

    directory: FakeDirectory
    script: dict[int, str | int] = field(default_factory=dict)
    stack: Any = None
    calls: dict[str, Call] = field(default_factory=dict)
    invited: list[Invited] = field(default_factory=list)
    emitted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def originate(
        self,
        call: Call,
        request_uri: SipURI,
        destination: Address,
        endpoint: str,
        ring_seconds: float = 30.0,
        kind: str = "external",
        *,
        credentials: DigestClient | None = None,
        from_: str | None = None,
        headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = (),
        on_leg: Callable[[Leg], None] | None = None,
    ) -> Leg | None:
        client = FakeInvite()
        leg = Leg(call, kind, client, None)  # type: ignore[arg-type]
        if on_leg is not None:
            on_leg(leg)
        self.invited.append(Invited(destination.port, request_uri, from_, dict(headers), credentials, leg))
        behaviour = self.script.get(destination.port, "answer")
        if behaviour == "silent":
            await asyncio.sleep(ring_seconds)
            return None
        client.respond(100)
        if behaviour == "ring":
            client.respond(180)
            await asyncio.wait({asyncio.ensure_future(call.wait_hung_up())}, timeout=ring_seconds)
            return None
        if behaviour == "answer":
            client.respond(200)
            return leg
        assert isinstance(behaviour, int)
        client.respond(behaviour)
        client.ended.set()
        return None

    async def emit(self, call: Call, event_type: str, **fields: Any) -> None:
        self.emitted.append((event_type, fields))


def trunk(name: str, port: int, **fields: Any) -> Trunk:
    return Trunk.model_validate({"name": name, "kind": "ip", "host": "127.0.0.9", "port": port, **fields})


def phone_call(switch: FakeSwitch, ani: str = "1001") -> Call:
    call = Call(switch, tenant=TENANT, ani=ani, dnis="13800138000", region=None, data={"origin": "extension"})  # type: ignore[arg-type]
    switch.calls[call.id] = call
    return call


def carrier_call(switch: FakeSwitch, ani: str | None, dnis: str = "02161234570") -> Call:
    call = Call(switch, tenant=TENANT, ani=ani, dnis=dnis, region=None, data={"origin": "trunk"})  # type: ignore[arg-type]
    switch.calls[call.id] = call
    return call


def manager(switch: FakeSwitch) -> TrunkManager:
    trunks = TrunkManager(switch)  # type: ignore[arg-type]
    trunks.setup_seconds = 0.2
    return trunks


def user_of(value: str | None) -> str | None:
    assert value is not None
    uri = parse_name_addr(value).uri
    assert isinstance(uri, SipURI)
    user: str | None = uri.user
    return user


EXTENSIONS = [
    Extension(number="1001", password="phone1001pw", caller_id_number="02161234567"),
    Extension(number="1002", password="phone1002pw"),
    Extension(number="1003", password="phone1003pw", outbound_trunk="backup"),
]
RULES = {"allowed": ["0216123456*"], "default": "02161234560"}


def two_trunks(**primary: Any) -> list[Trunk]:
    return [
        trunk("backup", 5002, priority=5, caller_id=RULES),
        trunk("primary", 5001, priority=1, prefix="9", caller_id=RULES, **primary),
    ]


# --- caller ID, prefix, priority ---------------------------------------------------------------------------


async def test_first_trunk_by_priority_gets_the_prefix_and_the_extensions_number() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks(), EXTENSIONS))
    outcome = await manager(switch).dial(phone_call(switch), "13800138000")
    assert outcome.cause == "answered" and outcome.trunk == "primary" and outcome.leg is not None
    [invite] = switch.invited
    assert invite.trunk_port == 5001
    assert invite.request_uri.user == "913800138000" and invite.request_uri.host == "127.0.0.9"
    assert user_of(invite.from_) == "02161234567"
    assert user_of(invite.headers["P-Asserted-Identity"]) == "02161234567"
    assert "Privacy" not in invite.headers


async def test_a_number_the_trunk_does_not_allow_is_replaced_by_its_default() -> None:
    extensions = [Extension(number="1001", password="phone1001pw", caller_id_number="02199999999")]
    switch = FakeSwitch(FakeDirectory(two_trunks(), extensions))
    await manager(switch).dial(phone_call(switch), "13800138000")
    assert user_of(switch.invited[0].from_) == "02161234560"


async def test_an_extension_without_its_own_number_presents_the_trunk_default() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks(), EXTENSIONS))
    await manager(switch).dial(phone_call(switch, "1002"), "13800138000")
    assert user_of(switch.invited[0].from_) == "02161234560"


async def test_withheld_sends_an_anonymous_from_and_the_number_only_in_the_asserted_identity() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks(), EXTENSIONS))
    await manager(switch).dial(phone_call(switch), "13800138000", withheld=True)
    invite = switch.invited[0]
    assert invite.from_ == ANONYMOUS_FROM
    assert invite.headers["Privacy"] == "id"
    assert user_of(invite.headers["P-Asserted-Identity"]) == "02161234567"


async def test_a_forwarded_carrier_call_presents_the_caller_when_allowed_else_the_called_number() -> None:
    open_trunk = [trunk("primary", 5001)]  # no rules: anything may be presented
    switch = FakeSwitch(FakeDirectory(open_trunk))
    await manager(switch).dial(carrier_call(switch, "13912345678"), "13800138000")
    assert user_of(switch.invited[-1].from_) == "13912345678"

    switch = FakeSwitch(FakeDirectory(two_trunks()))
    await manager(switch).dial(carrier_call(switch, "13912345678", dnis="02161234569"), "13800138000")
    assert user_of(switch.invited[-1].from_) == "02161234569"

    await manager(switch).dial(carrier_call(switch, None), "13800138000")
    assert switch.invited[-1].from_ == ANONYMOUS_FROM, "a withheld caller stays withheld"
    assert switch.invited[-1].headers["Privacy"] == "id"


async def test_an_extensions_outbound_trunk_is_tried_first() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks(), EXTENSIONS))
    outcome = await manager(switch).dial(phone_call(switch, "1003"), "13800138000")
    assert outcome.trunk == "backup" and switch.invited[0].request_uri.user == "13800138000"


async def test_trunk_credentials_go_with_the_invite() -> None:
    account = {"username": "acme-sip", "password": "s3cret-pass"}
    switch = FakeSwitch(FakeDirectory([trunk("primary", 5001, **account)]))
    await manager(switch).dial(phone_call(switch), "13800138000")
    credentials = switch.invited[0].credentials
    assert credentials is not None and credentials.username == "acme-sip"
    assert user_of(switch.invited[0].from_) == "acme-sip", "a trunk with nothing to present uses its account"


async def test_invalid_numbers_and_tenants_without_trunks_are_refused_without_an_invite() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()))
    trunks = manager(switch)
    assert (await trunks.dial(phone_call(switch), "12;34")).cause == "invalid_number"
    switch.directory.trunk_list = []
    outcome = await trunks.dial(phone_call(switch), "13800138000")
    assert outcome.cause == "no_trunk" and outcome.caller_response()[0] == 503
    assert switch.invited == []


# --- failover (TEL-15) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [503, 500, 408, 403, 401, "silent"])
async def test_a_failing_trunk_hands_the_call_to_the_next_and_raises_an_alarm(failure: str | int) -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()), script={5001: failure})
    trunks = manager(switch)
    call = phone_call(switch)
    outcome = await trunks.dial(call, "13800138000")
    assert outcome.cause == "answered" and outcome.trunk == "backup"
    assert [i.trunk_port for i in switch.invited] == [5001, 5002]
    assert switch.invited[1].request_uri.user == "13800138000"  # the backup trunk has no prefix
    [alarm] = trunks.alarms
    assert (alarm.trunk, alarm.moved_to, alarm.call_id) == ("primary", "backup", call.id)
    assert alarm.message.startswith("trunk primary failed") and alarm.message.endswith("moved to backup")
    status = {s.name: s for s in trunks.status(TENANT)}
    assert status["primary"].last_failure is not None and status["backup"].last_failure is None
    if failure == "silent":
        assert "no response" in alarm.reason
        # the abandoned leg is closed in the log, so the CDR has no open leg
        assert ("leg.ended", {"leg_id": switch.invited[0].leg.id, "cause": "no_response"}) in switch.emitted


@pytest.mark.parametrize(
    ("answer", "cause"), [(486, "busy"), (404, "rejected"), (603, "rejected"), ("ring", "no_answer")]
)
async def test_the_callees_own_answer_ends_the_search(answer: str | int, cause: str) -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()), script={5001: answer})
    trunks = manager(switch)
    outcome = await trunks.dial(phone_call(switch), "13800138000", ring_seconds=0.3)
    assert outcome.leg is None and outcome.cause == cause and outcome.trunk == "primary"
    assert [i.trunk_port for i in switch.invited] == [5001]
    assert not trunks.alarms


async def test_when_every_trunk_fails_the_caller_is_told_and_an_alarm_says_nothing_is_left() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()), script={5001: 503, 5002: 502})
    trunks = manager(switch)
    outcome = await trunks.dial(phone_call(switch), "13800138000")
    assert outcome.cause == "all_failed" and outcome.caller_response() == (503, "No Trunk Available")
    assert [(a.trunk, a.status) for a in outcome.attempts] == [("primary", 503), ("backup", 502)]
    assert [a.message for a in trunks.alarms] == [
        "trunk primary failed (503), moved to backup",
        "trunk backup failed (502), no trunk left",
    ]


async def test_a_caller_who_hangs_up_while_it_rings_is_not_dialled_again_elsewhere() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()), script={5001: "ring"})
    call = phone_call(switch)
    dialling = asyncio.ensure_future(manager(switch).dial(call, "13800138000", ring_seconds=5))
    await asyncio.sleep(0.05)
    call.mark_gone("remote hangup")
    outcome = await asyncio.wait_for(dialling, 2)
    assert outcome.cause == "hung_up" and len(switch.invited) == 1


# --- channel limits ----------------------------------------------------------------------------------------


async def test_a_trunk_at_its_channel_limit_is_skipped_until_a_channel_frees() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks(channel_limit=1)))
    trunks = manager(switch)
    first = await trunks.dial(phone_call(switch), "13800138001")
    assert first.trunk == "primary" and trunks.channels_in_use(TENANT, "primary") == 1
    second = await trunks.dial(phone_call(switch), "13800138002")
    assert second.trunk == "backup"
    assert trunks.alarms[-1].message == "trunk primary full (1/1 channels), moved to backup"
    view = {s.name: s for s in trunks.status(TENANT)}
    assert (view["primary"].channels_in_use, view["primary"].channel_limit) == (1, 1)
    assert view["backup"].channels_in_use == 1
    assert view["primary"].as_dict()["registered"] is None  # an ip trunk does not register

    assert first.leg is not None and first.leg.sip is not None
    await first.leg.sip.bye()  # the first call ends: its channel is free again
    third = await trunks.dial(phone_call(switch), "13800138003")
    assert third.trunk == "primary"


async def test_ringing_attempts_and_inbound_calls_count_as_channels_in_use() -> None:
    carrier = trunk("primary", 5001, channel_limit=2, allowed_sources=["127.0.0.9/32"])
    switch = FakeSwitch(FakeDirectory([carrier]), script={5001: "ring"})
    trunks = manager(switch)
    inbound = carrier_call(switch, "13912345678")
    inbound.caller = Leg(inbound, "caller", FakeInvite(), None)  # type: ignore[arg-type]
    assert trunks.channels_in_use(TENANT, "primary") == 1
    ringing = asyncio.ensure_future(trunks.dial(phone_call(switch), "13800138000", ring_seconds=5))
    await asyncio.sleep(0.05)
    assert trunks.channels_in_use(TENANT, "primary") == 2
    outcome = await trunks.dial(phone_call(switch), "13800138001")
    assert outcome.cause == "all_failed" and "full (2/2 channels)" in outcome.attempts[0].reason
    ringing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ringing
    del switch.calls[inbound.id]
    assert trunks.channels_in_use(TENANT, "primary") == 0


# --- the rules as functions --------------------------------------------------------------------------------


def test_which_answers_move_the_call_to_another_trunk() -> None:
    for status in (408, 500, 502, 503, 504, 401, 403, 407, 488):
        assert failover_status(status, heard=True)
    for status in (404, 480, 484, 486, 487, 600, 603, 604):
        assert not failover_status(status, heard=True)
    assert failover_status(None, heard=False)
    assert not failover_status(None, heard=True)  # it rang and nobody answered


def test_outside_numbers() -> None:
    switch = FakeSwitch(FakeDirectory(two_trunks()))
    trunks = manager(switch)
    for number in ("13800138000", "+8613800138000", "02161234567", "110", "95555"):
        assert trunks.outside_number(TENANT, number) == number
    for number in ("1099", "12", "abc", "9196*", ""):
        assert trunks.outside_number(TENANT, number) is None
    switch.directory.trunk_list = []
    assert trunks.outside_number(TENANT, "13800138000") is None


def test_caller_identity_headers() -> None:
    from_, headers = caller_identity("02161234567", "carrier.example", withheld=False)
    assert from_ == "<sip:02161234567@carrier.example>"
    assert headers == [("P-Asserted-Identity", "<sip:02161234567@carrier.example>")]
    from_, headers = caller_identity(None, "carrier.example", withheld=False)
    assert from_ == ANONYMOUS_FROM and headers == []


numbers = st.from_regex(r"\A[0-9]{3,12}\Z")


@given(st.lists(numbers, max_size=4), st.lists(numbers, max_size=3), st.one_of(st.none(), numbers))
def test_presented_number_is_allowed_or_the_default(
    wanted: list[str], allowed: list[str], default: str | None
) -> None:
    rules = CallerIdRules(allowed=[a + "*" for a in allowed], default=default)
    presented = present_caller_id(rules, wanted)
    if presented != default:
        assert presented in wanted and rules.allows(presented)
        assert all(not rules.allows(w) for w in wanted[: wanted.index(presented)])
    else:
        assert presented is None or presented == default


# --- registrations against a registrar on loopback ---------------------------------------------------------


@dataclass
class Registrar:
    """A carrier's registrar: digest challenge, then 200 with the binding (or a scripted failure)."""

    stack: SipStack
    port: int
    password: str = "trunk-pass-1"
    failure: int | None = None
    requests: list[tuple[str, str, int | None]] = field(
        default_factory=list
    )  # (contact user, auth?, expires)
    seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        contact = request.contacts[0].uri if request.contacts else None
        authorization = request.headers.get("Authorization")
        self.requests.append(
            (getattr(contact, "user", None) or "", "auth" if authorization else "", request.expires)
        )
        self.seen.set()
        if self.failure is not None:
            incoming.respond(self.failure)
            return
        now = self.stack.now()
        if (
            authorization is None
            or not self.challenger.verify("REGISTER", authorization, self.password, now).ok
        ):
            incoming.send(
                make_response(
                    request, 401, headers=[("WWW-Authenticate", self.challenger.challenges(now)[0])]
                )
            )
            return
        incoming.send(
            make_response(
                request,
                200,
                to_tag="r1",
                headers=[("Contact", f"{request.headers.get('Contact')};expires={request.expires}")],
            )
        )

    @property
    def challenger(self) -> DigestChallenger:
        if not hasattr(self, "_challenger"):
            self._challenger = DigestChallenger(b"r" * 32, "carrier", algorithms=("MD5",))
        return self._challenger

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def enough() -> None:
            while len(self.requests) < count:
                self.seen.clear()
                await self.seen.wait()

        await asyncio.wait_for(enough(), timeout)


@pytest.fixture
async def registrar() -> AsyncIterator[Registrar]:
    stack = SipStack()
    await stack.start([("UDP", "127.0.0.1", 0)])
    carrier = Registrar(stack, stack.transports.listen_points[0].port)
    stack.on_request("REGISTER", carrier.handle)
    yield carrier
    await stack.close()


@pytest.fixture
async def our_stack() -> AsyncIterator[SipStack]:
    stack = SipStack()
    await stack.start([("UDP", "127.0.0.1", 0)])
    yield stack
    await stack.close()


def register_trunk(port: int, **fields: Any) -> Trunk:
    return Trunk.model_validate(
        {
            "name": "reg",
            "kind": "register",
            "host": "127.0.0.1",
            "port": port,
            "username": "acme",
            "password": "trunk-pass-1",
            "register_expires": 120,
            "allowed_sources": ["127.0.0.8/32"],
            **fields,
        }
    )


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_register_trunks_register_follow_changes_and_unregister_on_stop(
    registrar: Registrar, our_stack: SipStack
) -> None:
    directory = FakeDirectory([register_trunk(registrar.port), trunk("ip", 5001)])
    trunks = manager(FakeSwitch(directory, stack=our_stack))
    await trunks.start()
    try:
        registration = trunks.registration(TENANT, "reg")
        assert registration is not None and trunks.registration(TENANT, "ip") is None
        await eventually(lambda: registration.status().registered)
        assert registrar.requests[:2] == [("acme", "", 120), ("acme", "auth", 120)]
        view = {s.name: s for s in trunks.status(TENANT)}
        assert view["reg"].registered is True and view["reg"].as_dict()["registration_state"] == "registered"
        refresh_in = (registration.status().refresh_at or 0) - our_stack.now()
        assert 50 < refresh_in <= 60

        # a changed priority keeps the registration; a changed password registers again
        directory.change([register_trunk(registrar.port, priority=3), trunk("ip", 5001)])
        await asyncio.sleep(0.1)
        assert trunks.registration(TENANT, "reg") is registration
        registrar.password = "trunk-pass-2"
        directory.change([register_trunk(registrar.port, password="trunk-pass-2")])
        await registrar.wait_for(6)
        assert [r[2] for r in registrar.requests[2:6]] == [
            0,
            0,
            120,
            120,
        ]  # old binding removed, new one made
        renewed = trunks.registration(TENANT, "reg")
        assert renewed is not None and renewed is not registration
        await eventually(lambda: renewed.status().registered)

        # disabling the trunk removes the binding
        directory.change([register_trunk(registrar.port, password="trunk-pass-2", enabled=False)])
        await registrar.wait_for(8)
        assert registrar.requests[-1] == ("acme", "auth", 0)
        assert trunks.registration(TENANT, "reg") is None

        directory.change([register_trunk(registrar.port, password="trunk-pass-2")])
        await registrar.wait_for(10)
    finally:
        await trunks.stop()
    assert registrar.requests[-1][2] == 0, "stopping unregisters"


async def test_a_failing_registration_backs_off_and_its_trunk_is_skipped(
    registrar: Registrar, our_stack: SipStack
) -> None:
    registrar.failure = 403
    directory = FakeDirectory([register_trunk(registrar.port, priority=0), trunk("backup", 5002, priority=1)])
    switch = FakeSwitch(directory, stack=our_stack)
    trunks = manager(switch)
    await trunks.start()
    try:
        registration = trunks.registration(TENANT, "reg")
        assert registration is not None
        await eventually(lambda: registration.status().state is RegistrationState.FAILING)
        status = registration.status()
        assert status.last_status == 403 and not status.registered
        assert status.retry_at is not None and 4.0 <= status.retry_at - our_stack.now() <= 5.0
        outcome = await trunks.dial(phone_call(switch), "13800138000")
        assert outcome.trunk == "backup" and [i.trunk_port for i in switch.invited] == [5002]
        assert [a.message for a in trunks.alarms] == [
            "trunk reg registration failed (403 Forbidden)",
            "trunk reg not registered (403 Forbidden), moved to backup",
        ]
        assert {s.name: s.registered for s in trunks.status(TENANT)} == {"reg": False, "backup": None}
    finally:
        await trunks.stop()
    assert len(registrar.requests) == 1, "nothing to unregister: no binding was ever granted"


async def test_a_suspended_tenant_loses_its_registrations_at_the_next_sweep(
    registrar: Registrar, our_stack: SipStack
) -> None:
    directory = FakeDirectory([register_trunk(registrar.port)])
    trunks = manager(FakeSwitch(directory, stack=our_stack))
    trunks.sweep_seconds = 0.1
    await trunks.start()
    try:
        registration = trunks.registration(TENANT, "reg")
        assert registration is not None
        await eventually(lambda: registration.status().registered)
        directory.active = False  # no listener call, as when the platform marks a tenant suspended
        await eventually(lambda: trunks.registration(TENANT, "reg") is None)
        await registrar.wait_for(4)
        assert registrar.requests[-1][2] == 0
    finally:
        await trunks.stop()


async def test_a_call_sent_to_a_registrations_contact_is_for_the_number_in_to_and_finds_its_trunk(
    registrar: Registrar, our_stack: SipStack
) -> None:
    # a registrar known by name: only its resolved address tells its calls apart
    directory = FakeDirectory([register_trunk(registrar.port, host="localhost", allowed_sources=[])])
    trunks = manager(FakeSwitch(directory, stack=our_stack))
    await trunks.start()
    try:
        registration = trunks.registration(TENANT, "reg")
        assert registration is not None
        await eventually(lambda: registration.status().registered)
        assert "127.0.0.1" in registration.addresses
        contact = our_stack.contact_for(Address("127.0.0.1", registrar.port))
        to_contact = build_request(
            "INVITE",
            contact.uri.with_(user="acme"),
            "<sip:13912345678@127.0.0.1>",
            "<sip:02161234570@carrier.example>",
        )
        assert trunks.called_number(to_contact) == "02161234570"
        found = trunks.inbound("127.0.0.1", to_contact)
        assert found is not None
        match, route = found
        assert (match.tenant, match.trunk.name) == (TENANT, "reg")
        assert route is not None and str(route.target) == "forward:13900139000"
        assert trunks.inbound("127.0.0.5", to_contact) is None, "only from the registrar"

        to_number = build_request(
            "INVITE", parse_uri("sip:02161234570@127.0.0.1"), "<sip:x@h>", "<sip:other@h>"
        )
        assert trunks.called_number(to_number) == "02161234570"
        assert trunks.inbound("127.0.0.1", to_number) is None
    finally:
        await trunks.stop()
