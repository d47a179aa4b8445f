"""Outbound registration to a carrier with a fake clock: digest, refresh timing, backoff growth and cap,
423 Min-Expires, unregistration (issue #2 item 7, TEL-01)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.sip.auth import DigestChallenger
from hotline.sip.headers import NameAddr
from hotline.sip.message import Request, Response, make_response, parse
from hotline.sip.registration import (
    OutboundRegistration,
    RegistrationSettings,
    RegistrationState,
    backoff_delay,
)
from hotline.sip.uri import SipURI, parse_uri

PASSWORD = "trunk-secret-42"
CONTACT = NameAddr(None, SipURI("sip", "acme", None, "127.0.0.1", 5070, {}, {}), {})


def account(**changes: object) -> RegistrationSettings:
    registrar = parse_uri("sip:carrier.example:5060")
    aor = parse_uri("sip:acme@carrier.example")
    assert isinstance(registrar, SipURI) and isinstance(aor, SipURI)
    fields: dict[str, object] = {
        "registrar": registrar,
        "aor": aor,
        "contact": CONTACT,
        "username": "acme",
        "password": PASSWORD,
        "expires": 600,
    }
    fields.update(changes)
    return RegistrationSettings(**fields)  # type: ignore[arg-type]


def client(**changes: object) -> OutboundRegistration:
    return OutboundRegistration(account(**changes), rng=random.Random(7))


class Registrar:
    """A carrier's registrar: challenges every request without valid credentials, then grants."""

    def __init__(self, password: str = PASSWORD, grant: int | None = None) -> None:
        self.challenger = DigestChallenger(b"k" * 32, "carrier.example", algorithms=("MD5",))
        self.password = password
        self.grant = grant
        self.accepted: list[Request] = []

    def answer(self, request: Request, now: float) -> Response:
        # what went over the wire is what the registrar reads
        wire = parse(_with_via(request).encode())
        assert isinstance(wire, Request)
        authorization = wire.headers.get("Authorization")
        if authorization is None:
            return make_response(
                wire, 401, headers=[("WWW-Authenticate", v) for v in self.challenger.challenges(now)]
            )
        result = self.challenger.verify(
            "REGISTER", authorization, {"acme": self.password}.get, now, request_uri=str(wire.uri)
        )
        if not result.ok:
            return make_response(
                wire, 401, headers=[("WWW-Authenticate", v) for v in self.challenger.challenges(now)]
            )
        self.accepted.append(wire)
        expires = wire.expires if self.grant is None else self.grant
        contact = wire.headers.get("Contact") or ""
        return make_response(wire, 200, to_tag="reg1", headers=[("Contact", f"{contact};expires={expires}")])


def _with_via(request: Request) -> Request:
    copy = request.copy()
    copy.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest;rport", first=True)
    return copy


def exchange(
    registration: OutboundRegistration, registrar: Registrar, request: Request | None, now: float
) -> int:
    """Feed requests to the registrar until the attempt is over; the number of requests sent."""
    sent = 0
    while request is not None:
        sent += 1
        assert sent <= 10, "the attempt does not end"
        request = registration.receive(registrar.answer(request, now), now)
    return sent


def fail(request: Request, status: int, headers: list[tuple[str, str]] | None = None) -> Response:
    return make_response(_with_via(request), status, headers=headers)


# --- registering and refreshing -------------------------------------------------------------------------


def test_first_register_is_challenged_then_accepted_and_refreshed_at_half_the_granted_expiry() -> None:
    registration = client()
    registrar = Registrar(grant=120)
    first = registration.start(1000.0)
    assert first.method == "REGISTER" and str(first.uri) == "sip:carrier.example:5060"
    assert first.headers.get("Expires") == "600"
    assert "acme@127.0.0.1:5070" in (first.headers.get("Contact") or "")
    assert exchange(registration, registrar, first, 1000.0) == 2  # 401, then with credentials

    status = registration.status(1000.0)
    assert status.state is RegistrationState.REGISTERED and status.registered
    assert status.granted_expires == 120 and status.expires_at == 1120.0
    assert registration.next_deadline() == 1060.0
    assert registration.on_timer(1059.9) is None

    refresh = registration.on_timer(1060.0)
    assert refresh is not None
    assert refresh.call_id == first.call_id and refresh.from_.tag == first.from_.tag
    assert refresh.cseq.number > registrar.accepted[-1].cseq.number
    assert registration.status(1060.0).registered  # the old binding counts while the refresh is out
    assert exchange(registration, registrar, refresh, 1060.0) == 2
    assert registration.next_deadline() == 1120.0
    assert [r.cseq.number for r in registrar.accepted] == [2, 4]


def test_granted_expiry_from_our_contact_among_several_or_the_expires_header() -> None:
    registration = client(refresh_fraction=0.8)
    request = registration.start(0.0)
    others = "<sip:other@10.0.0.9:5060>;expires=3000"
    ours = "<sip:acme@127.0.0.1:5070>;expires=200"
    registration.receive(fail(request, 200, [("Contact", others), ("Contact", ours)]), 0.0)
    assert registration.status(0.0).granted_expires == 200
    assert registration.next_deadline() == pytest.approx(160.0)

    request = registration.on_timer(160.0)
    assert request is not None
    registration.receive(fail(request, 200, [("Expires", "90")]), 160.0)
    assert registration.status(160.0).granted_expires == 90
    assert registration.next_deadline() == pytest.approx(160.0 + 72.0)


def test_a_short_grant_is_still_refreshed_before_it_runs_out() -> None:
    registration = client(min_refresh=5.0)
    request = registration.start(0.0)
    registration.receive(fail(request, 200, [("Expires", "8")]), 0.0)
    deadline = registration.next_deadline()
    assert deadline is not None and 4.0 <= deadline < 8.0


def test_a_2xx_that_keeps_no_binding_for_us_is_a_failure() -> None:
    registration = client()
    request = registration.start(0.0)
    registration.receive(fail(request, 200, [("Contact", "<sip:acme@127.0.0.1:5070>;expires=0")]), 0.0)
    status = registration.status(0.0)
    assert status.state is RegistrationState.FAILING and not status.registered
    assert status.retry_at is not None


# --- failures and backoff -------------------------------------------------------------------------------


def test_backoff_doubles_from_5_seconds_up_to_300_with_jitter() -> None:
    registration = client(retry_base=5.0, retry_max=300.0, jitter=0.2)
    now = 0.0
    request: Request | None = registration.start(now)
    delays = []
    for _ in range(10):
        assert request is not None
        registration.receive(fail(request, 503), now)
        status = registration.status(now)
        assert status.state is RegistrationState.FAILING and status.last_status == 503
        assert status.retry_at is not None
        delays.append(status.retry_at - now)
        assert registration.on_timer(status.retry_at - 0.01) is None
        now = status.retry_at
        request = registration.on_timer(now)
    nominal = [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.8 <= delay <= expected
    assert len({round(d, 6) for d in delays[-4:]}) > 1, "jitter spreads the capped retries"
    assert registration.status(now).failures == 10


def test_success_resets_the_backoff() -> None:
    registration = client()
    request = registration.start(0.0)
    for _ in range(3):
        registration.receive(fail(request, 408), 0.0)
        retry_at = registration.next_deadline()
        assert retry_at is not None
        request = registration.on_timer(retry_at)
        assert request is not None
    registration.receive(fail(request, 200, [("Expires", "600")]), 50.0)
    assert registration.status(50.0).failures == 0
    refresh = registration.on_timer(350.0)
    assert refresh is not None
    registration.receive(fail(refresh, 500), 350.0)
    retry_at = registration.next_deadline()
    assert retry_at is not None and retry_at - 350.0 <= 5.0  # back to the first step
    assert registration.status(351.0).registered, "the granted binding still counts until it expires"
    assert not registration.status(651.0).registered


def test_retry_after_is_respected_but_capped() -> None:
    registration = client(retry_max=300.0)
    request = registration.start(0.0)
    registration.receive(fail(request, 503, [("Retry-After", "120 (maintenance)")]), 0.0)
    assert registration.next_deadline() == 120.0
    request2 = registration.on_timer(120.0)
    assert request2 is not None
    registration.receive(fail(request2, 503, [("Retry-After", "86400")]), 120.0)
    assert registration.next_deadline() == 420.0


def test_wrong_password_fails_without_looping() -> None:
    registration = client()
    registrar = Registrar(password="not-the-one-1")
    request = registration.start(0.0)
    assert exchange(registration, registrar, request, 0.0) == 2
    status = registration.status(0.0)
    assert status.state is RegistrationState.FAILING
    assert status.last_status == 401 and "rejected" in status.last_reason
    assert not registrar.accepted


def test_proxy_authentication_is_answered_too() -> None:
    registration = client()
    challenger = DigestChallenger(b"p" * 32, "proxy.example", algorithms=("MD5",))
    request = registration.start(0.0)
    retry = registration.receive(
        fail(request, 407, [("Proxy-Authenticate", challenger.challenges(0.0)[0])]), 0.0
    )
    assert retry is not None
    credentials = retry.headers.get("Proxy-Authorization")
    assert credentials is not None
    assert challenger.verify("REGISTER", credentials, PASSWORD, 0.0).ok


# --- 423 Interval Too Brief -----------------------------------------------------------------------------


def test_423_asks_again_with_min_expires_and_keeps_it() -> None:
    registration = client(expires=60)
    request = registration.start(0.0)
    again = registration.receive(fail(request, 423, [("Min-Expires", "1800")]), 0.0)
    assert again is not None and again.headers.get("Expires") == "1800"
    assert again.cseq.number == request.cseq.number + 1
    registration.receive(fail(again, 200), 0.0)
    status = registration.status(0.0)
    assert status.state is RegistrationState.REGISTERED and status.granted_expires == 1800
    refresh = registration.on_timer(900.0)
    assert refresh is not None and refresh.headers.get("Expires") == "1800"
    assert registration.expires == 1800


def test_423_without_a_larger_min_expires_is_a_failure() -> None:
    registration = client(expires=600)
    request = registration.start(0.0)
    assert registration.receive(fail(request, 423, [("Min-Expires", "300")]), 0.0) is None
    assert registration.state is RegistrationState.FAILING
    request = registration.on_timer(registration.next_deadline() or 0.0)
    assert request is not None
    assert registration.receive(fail(request, 423), 10.0) is None
    assert registration.state is RegistrationState.FAILING


# --- stopping -------------------------------------------------------------------------------------------


def test_stop_unregisters_with_expires_zero_and_then_nothing_is_due() -> None:
    registration = client()
    registrar = Registrar()
    exchange(registration, registrar, registration.start(0.0), 0.0)
    goodbye = registration.stop(10.0)
    assert goodbye is not None
    assert goodbye.headers.get("Expires") == "0"
    assert "acme@127.0.0.1:5070" in (goodbye.headers.get("Contact") or "")
    assert registration.state is RegistrationState.UNREGISTERING
    assert registration.next_deadline() is None
    assert exchange(registration, registrar, goodbye, 10.0) == 2  # challenged like any REGISTER
    assert registrar.accepted[-1].expires == 0
    assert registration.state is RegistrationState.STOPPED
    assert not registration.status(10.0).registered
    assert registration.next_deadline() is None and registration.on_timer(10_000.0) is None
    assert registration.stop(11.0) is None


def test_stop_before_anything_was_sent_or_after_failures_sends_nothing() -> None:
    assert client().stop(0.0) is None
    registration = client()
    request = registration.start(0.0)
    registration.receive(fail(request, 403), 0.0)
    assert registration.stop(1.0) is None
    assert registration.state is RegistrationState.STOPPED


def test_stop_while_a_register_is_in_flight_unregisters_and_ignores_the_late_answer() -> None:
    registration = client()
    request = registration.start(0.0)
    goodbye = registration.stop(0.5)
    assert goodbye is not None and goodbye.headers.get("Expires") == "0"
    assert registration.receive(fail(request, 200, [("Expires", "600")]), 0.6) is None  # late, ignored
    assert registration.state is RegistrationState.UNREGISTERING
    registration.receive(fail(goodbye, 200), 0.7)
    assert registration.state is RegistrationState.STOPPED


def test_a_response_to_another_request_is_ignored() -> None:
    registration = client()
    request = registration.start(0.0)
    stray = fail(request, 200)
    stray.headers.set("CSeq", "99 REGISTER")
    assert registration.receive(stray, 0.0) is None
    assert registration.state is RegistrationState.REGISTERING
    provisional = fail(request, 100)
    assert registration.receive(provisional, 0.0) is None
    assert registration.state is RegistrationState.REGISTERING


# --- properties -----------------------------------------------------------------------------------------


@given(st.integers(1, 80), st.floats(0.1, 60), st.floats(1, 3600), st.floats(0, 0.99), st.integers(0, 2**32))
def test_backoff_delay_is_bounded(failures: int, base: float, cap: float, jitter: float, seed: int) -> None:
    cap = max(cap, base)
    delay = backoff_delay(failures, base, cap, jitter, random.Random(seed))
    nominal = min(cap, base * 2 ** (failures - 1))
    assert nominal * (1 - jitter) - 1e-9 <= delay <= nominal


STATUSES = [200, 401, 403, 404, 407, 408, 423, 480, 500, 503, 603]


@settings(deadline=None, max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(STATUSES), st.booleans(), st.floats(0, 500)), max_size=40))
def test_never_stuck_whatever_the_registrar_answers(script: list[tuple[int, bool, float]]) -> None:
    """After any sequence of answers there is always a request in flight, a deadline, or a stop."""
    registration = client()
    now = 0.0
    request: Request | None = registration.start(now)
    for status, with_min_expires, wait in script:
        if request is None:
            deadline = registration.next_deadline()
            assert deadline is not None, registration.status(now)
            now = max(now, deadline) + wait
            request = registration.on_timer(now)
            assert request is not None
            continue
        headers = [("Min-Expires", "3600")] if with_min_expires else []
        if status in (401, 407):
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            headers.append((name, 'Digest realm="r", nonce="n1", algorithm=MD5'))
        request = registration.receive(fail(request, status, headers), now)
    assert request is not None or registration.next_deadline() is not None
    goodbye = registration.stop(now)
    if goodbye is not None:
        registration.receive(fail(goodbye, 500), now)
    assert registration.state is RegistrationState.STOPPED
