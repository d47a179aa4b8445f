"""Outbound registration (RFC 3261 §10.2): Hotline registering its trunks to a carrier, sans-IO.

One :class:`OutboundRegistration` per account. It builds every REGISTER and reads every response; the
driver (``hotline.switch.trunks``) only sends, waits and keeps time::

    request = registration.start(now)
    while True:
        while request is not None:                      # challenge, 423 and stale nonces: same attempt
            response = <send request, await its final response (a timeout as 408)>
            request = registration.receive(response, now)
        <sleep until registration.next_deadline()>      # None: nothing more to do
        request = registration.on_timer(now)
    ...
    request = registration.stop(now)                    # Expires: 0, answered the same way

Behaviour:

- Every REGISTER of one registration shares its Call-ID and From tag; CSeq grows by one each time.
- 401/407: answered once with digest credentials (``auth.DigestClient``); a second challenge after our
  credentials (unless ``stale=true``) is a failure: the password is wrong.
- 423 Interval Too Brief: asks again at once with the registrar's ``Min-Expires`` (kept for later
  refreshes); a 423 without a usable ``Min-Expires`` is a failure.
- 2xx: the granted expiry is our Contact's ``expires`` parameter in the response, else its ``Expires``
  header, else what we asked for. The refresh is due at ``refresh_fraction`` of it (at least
  ``min_refresh`` seconds away). A 2xx that grants 0 seconds is a failure (the registrar kept no binding).
- Any other answer (4xx, 5xx, 6xx, a 408 for a timeout, a 503 for a transport error) is a failure: the
  next attempt is due after an exponential backoff, ``retry_base`` doubling up to ``retry_max`` seconds,
  shortened by up to ``jitter`` (a random fraction, so many trunks do not retry in step), and no sooner
  than a ``Retry-After`` the registrar sent (itself capped at ``retry_max``). A binding granted earlier
  still counts until it expires.
- ``stop(now)`` sends REGISTER with ``Expires: 0`` when a binding may exist (else returns None); after
  its answer, or at once without one, the state is ``stopped`` and nothing is due any more.
- Responses whose CSeq or Call-ID are not those of the request in flight are ignored (a late answer).

Public API: :class:`RegistrationSettings`, :class:`OutboundRegistration` (``start``, ``receive``,
``on_timer``, ``next_deadline``, ``stop``, ``status``, ``state``), :class:`RegistrationState`,
:class:`RegistrationStatus`, :func:`backoff_delay`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from hotline.sip.auth import AuthError, DigestClient
from hotline.sip.dialog import build_request
from hotline.sip.errors import ParseError
from hotline.sip.headers import NameAddr
from hotline.sip.message import Request, Response, new_call_id, new_tag
from hotline.sip.uri import SipURI

__all__ = [
    "OutboundRegistration",
    "RegistrationSettings",
    "RegistrationState",
    "RegistrationStatus",
    "backoff_delay",
]


class RegistrationState(StrEnum):
    IDLE = "idle"  # not started
    REGISTERING = "registering"  # a REGISTER is in flight (first one, refresh or retry)
    REGISTERED = "registered"  # the last attempt succeeded; a refresh is due at `refresh_at`
    FAILING = "failing"  # the last attempt failed; the next one is due at `retry_at`
    UNREGISTERING = "unregistering"  # REGISTER with Expires: 0 in flight
    STOPPED = "stopped"


@dataclass(frozen=True)
class RegistrationSettings:
    """One account at one registrar. ``aor`` is what goes in To and From (``sip:user@carrier``);
    ``registrar`` is the Request-URI (``sip:carrier:5060``); ``contact`` is where the carrier sends calls."""

    registrar: SipURI
    aor: SipURI
    contact: NameAddr
    username: str
    password: str = field(repr=False)
    expires: int = 3600
    refresh_fraction: float = 0.5
    min_refresh: float = 5.0
    retry_base: float = 5.0
    retry_max: float = 300.0
    jitter: float = 0.2
    # Requests in one attempt: the first, a challenge answered, a stale nonce, a 423 (no endless loops).
    max_requests_per_attempt: int = 4

    def __post_init__(self) -> None:
        if self.expires < 1:
            raise ValueError("expires must be at least 1 second (use stop() to unregister)")
        if not 0 < self.refresh_fraction <= 1:
            raise ValueError("refresh_fraction must be in (0, 1]")
        if not 0 < self.retry_base <= self.retry_max:
            raise ValueError("retry_base must be positive and at most retry_max")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")


@dataclass(frozen=True)
class RegistrationStatus:
    """What a trunk view shows (SUP-06). Times are on the driver's clock."""

    state: RegistrationState
    registered: bool  # a granted binding is still valid at the time asked
    expires_at: float | None  # when that binding runs out
    refresh_at: float | None  # next refresh (registered)
    retry_at: float | None  # next attempt (failing)
    failures: int  # consecutive failed attempts
    last_status: int | None  # status of the last final response (408 timeout, 503 transport error)
    last_reason: str  # its reason phrase, or why it counted as a failure
    granted_expires: int | None  # seconds granted by the last 2xx


def backoff_delay(failures: int, base: float, cap: float, jitter: float, rng: random.Random) -> float:
    """Seconds before attempt number `failures` + 1: `base` doubling per failure up to `cap`, minus up to
    `jitter` of it at random."""
    exponent = min(max(failures, 1) - 1, 62)
    delay = min(cap, base * 2.0**exponent)
    return delay * (1.0 - jitter * rng.random())


class OutboundRegistration:
    """The REGISTER client of one account. Not thread-safe; one driver owns it."""

    def __init__(
        self,
        settings: RegistrationSettings,
        *,
        rng: random.Random | None = None,
        credentials: DigestClient | None = None,
        call_id: str | None = None,
        from_tag: str | None = None,
    ) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._credentials = credentials or DigestClient(settings.username, settings.password)
        self.call_id = call_id or new_call_id()
        self.from_tag = from_tag or new_tag()
        self._cseq = 0
        self._expires = settings.expires  # raised by a 423
        self.state = RegistrationState.IDLE
        self._pending: Request | None = None
        self._requests_in_attempt = 0
        self._expires_at: float | None = None
        self._refresh_at: float | None = None
        self._retry_at: float | None = None
        self._failures = 0
        self._last_status: int | None = None
        self._last_reason = ""
        self._granted: int | None = None
        self._ever_sent = False

    # --- driver inputs

    def start(self, now: float) -> Request:
        """The first REGISTER."""
        if self.state is not RegistrationState.IDLE:
            raise RuntimeError(f"registration already {self.state}")
        return self._begin_attempt(RegistrationState.REGISTERING)

    def receive(self, response: Response, now: float) -> Request | None:
        """A final response to the request in flight; returns the next request of the same attempt."""
        pending = self._pending
        if pending is None or response.status < 200 or not self._answers(pending, response):
            return None
        self._pending = None
        self._last_status = response.status
        self._last_reason = response.reason
        status = response.status
        if status in (401, 407):
            return self._answer_challenge(pending, response, now)
        if status == 423:
            return self._interval_too_brief(response, now)
        if self.state is RegistrationState.UNREGISTERING:
            # whatever the answer, we are done: a binding left behind expires by itself
            self._stopped()
            return None
        if 200 <= status < 300:
            self._registered(response, now)
            return None
        self._failed(now, retry_after=_retry_after(response))
        return None

    def on_timer(self, now: float) -> Request | None:
        """The REGISTER that is due at `now` (refresh or retry), if any."""
        if self._pending is not None:
            return None
        if self.state is RegistrationState.REGISTERED and self._refresh_at is not None:
            if now >= self._refresh_at:
                return self._begin_attempt(RegistrationState.REGISTERING)
        elif self.state is RegistrationState.FAILING and self._retry_at is not None and now >= self._retry_at:
            return self._begin_attempt(RegistrationState.REGISTERING)
        return None

    def next_deadline(self) -> float | None:
        """When `on_timer` next has something to send; None while a request is in flight or when stopped."""
        if self._pending is not None:
            return None
        if self.state is RegistrationState.REGISTERED:
            return self._refresh_at
        if self.state is RegistrationState.FAILING:
            return self._retry_at
        return None

    def stop(self, now: float) -> Request | None:
        """Remove our binding: a REGISTER with Expires: 0, or None when none can exist (never sent, or
        already stopped). A request in flight is abandoned; its late answer is ignored."""
        if self.state in (RegistrationState.STOPPED, RegistrationState.UNREGISTERING):
            return None
        may_have_binding = self._ever_sent and (
            self._pending is not None or (self._expires_at is not None and self._expires_at > now)
        )
        self._pending = None
        if not may_have_binding:
            self._stopped()
            return None
        return self._begin_attempt(RegistrationState.UNREGISTERING)

    def status(self, now: float) -> RegistrationStatus:
        registered = self._expires_at is not None and self._expires_at > now
        return RegistrationStatus(
            state=self.state,
            registered=registered and self.state is not RegistrationState.STOPPED,
            expires_at=self._expires_at if registered else None,
            refresh_at=self._refresh_at if self.state is RegistrationState.REGISTERED else None,
            retry_at=self._retry_at if self.state is RegistrationState.FAILING else None,
            failures=self._failures,
            last_status=self._last_status,
            last_reason=self._last_reason,
            granted_expires=self._granted,
        )

    @property
    def expires(self) -> int:
        """The expiry we ask for (the configured one, or a registrar's Min-Expires)."""
        return self._expires

    # --- internals

    def _begin_attempt(self, state: RegistrationState) -> Request:
        self.state = state
        self._requests_in_attempt = 0
        return self._send(self._build(None))

    def _send(self, request: Request) -> Request:
        self._requests_in_attempt += 1
        self._pending = request
        self._ever_sent = True
        return request

    def _build(self, authorization: tuple[str, str] | None) -> Request:
        self._cseq += 1
        unregister = self.state is RegistrationState.UNREGISTERING
        expires = 0 if unregister else self._expires
        contact = self.settings.contact
        headers: list[tuple[str, str]] = [("Expires", str(expires))]
        if authorization is not None:
            headers.append(authorization)
        return build_request(
            "REGISTER",
            self.settings.registrar,
            NameAddr(None, self.settings.aor, {}),
            NameAddr(None, self.settings.aor, {}),
            contact=contact,
            call_id=self.call_id,
            cseq=self._cseq,
            from_tag=self.from_tag,
            headers=headers,
        )

    def _answers(self, request: Request, response: Response) -> bool:
        try:
            return response.call_id == self.call_id and response.cseq.number == request.cseq.number
        except ParseError:
            return False

    def _answer_challenge(self, request: Request, response: Response, now: float) -> Request | None:
        header, answer = (
            ("WWW-Authenticate", "Authorization")
            if response.status == 401
            else ("Proxy-Authenticate", "Proxy-Authorization")
        )
        if self._requests_in_attempt >= self.settings.max_requests_per_attempt:
            self._give_up(now, "too many challenges")
            return None
        try:
            value = self._credentials.authorize(
                response.headers.get_all(header),
                "REGISTER",
                str(self.settings.registrar),
                sent_credentials=answer in request.headers,
            )
        except AuthError as error:
            self._give_up(now, error.reason)
            return None
        return self._send(self._build((answer, value)))

    def _interval_too_brief(self, response: Response, now: float) -> Request | None:
        if self.state is RegistrationState.UNREGISTERING:  # Expires: 0 cannot be too brief; give up
            self._stopped()
            return None
        minimum = _int_header(response, "Min-Expires")
        if minimum is None or minimum <= self._expires:
            self._give_up(now, "423 without a larger Min-Expires")
            return None
        if self._requests_in_attempt >= self.settings.max_requests_per_attempt:
            self._give_up(now, "too many requests in one attempt")
            return None
        self._expires = minimum
        return self._send(self._build(None))

    def _give_up(self, now: float, reason: str) -> None:
        self._last_reason = reason
        if self.state is RegistrationState.UNREGISTERING:
            self._stopped()
        else:
            self._failed(now, retry_after=None)

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted_expiry(response)
        if granted is None or granted <= 0:
            self._last_reason = "the registrar kept no binding for our contact"
            self._failed(now, retry_after=None)
            return
        self.state = RegistrationState.REGISTERED
        self._granted = granted
        self._expires_at = now + granted
        self._refresh_at = now + max(
            min(self.settings.min_refresh, granted), granted * self.settings.refresh_fraction
        )
        self._retry_at = None
        self._failures = 0

    def _granted_expiry(self, response: Response) -> int | None:
        try:
            contacts = response.contacts
        except ParseError:
            contacts = []
        ours = self.settings.contact.uri
        mine = [c for c in contacts if _same_contact(c, ours)]
        if not mine and len(contacts) == 1:
            mine = contacts  # a registrar that rewrote our contact (NAT fix-up) still answers for it
        for contact in mine:
            value = contact.params.get("expires")
            if value is not None and value.strip().isdigit():
                return int(value)
        if contacts and not mine:
            return None
        try:
            header = response.expires
        except ParseError:
            header = None
        return header if header is not None else self._expires

    def _failed(self, now: float, *, retry_after: int | None) -> None:
        self.state = RegistrationState.FAILING
        self._failures += 1
        settings = self.settings
        delay = backoff_delay(
            self._failures, settings.retry_base, settings.retry_max, settings.jitter, self._rng
        )
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), settings.retry_max))
        self._retry_at = now + delay
        self._refresh_at = None

    def _stopped(self) -> None:
        self.state = RegistrationState.STOPPED
        self._pending = None
        self._expires_at = None
        self._refresh_at = None
        self._retry_at = None


def _same_contact(contact: NameAddr, ours: object) -> bool:
    uri = contact.uri
    if not isinstance(uri, SipURI) or not isinstance(ours, SipURI):
        return False
    return (uri.user, uri.host.lower(), uri.port) == (ours.user, ours.host.lower(), ours.port)


def _int_header(response: Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    digits = value.strip().split(" ", 1)[0].split(";", 1)[0]
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 10 else None


def _retry_after(response: Response) -> int | None:
    return _int_header(response, "Retry-After")
