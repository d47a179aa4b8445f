"""Registrar and location service (RFC 3261 §10.3), sans-IO: REGISTER in, response and bindings out.

Bindings are per tenant and user (the address of record). Each remembers the address the REGISTER came
from, and requests to the phone are sent there (symmetric signalling, RFC 3581): a phone behind NAT
that puts a private address in its Contact is still reached. Authentication is the caller's business
(see `auth.py`); `process` is only called for an authenticated REGISTER.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hotline.log import get_logger
from hotline.sip.auth import (
    AuthError,
    AuthStatus,
    DigestChallenger,
    DigestSecret,
    LockoutTracker,
    parse_credentials,
)
from hotline.sip.errors import ParseError
from hotline.sip.headers import NameAddr
from hotline.sip.message import Request, Response, make_response
from hotline.sip.transaction import Address

log = get_logger("hotline.sip.registrar")

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 7200


@dataclass
class Binding:
    tenant: str
    user: str
    contact: NameAddr
    source: Address
    expires_at: float
    call_id: str
    cseq: int
    user_agent: str | None = None
    q: float = 1.0

    @property
    def contact_uri(self) -> str:
        return str(self.contact.uri)


@dataclass
class LocationService:
    """Bindings by (tenant, user); one per distinct Contact URI."""

    max_contacts: int = 5
    _bindings: dict[tuple[str, str], dict[str, Binding]] = field(default_factory=dict)

    def process(self, request: Request, tenant: str, user: str, source: Address, now: float) -> Response:
        """Apply an (already authenticated) REGISTER and answer it with the current bindings."""
        try:
            contacts = request.contacts
            default_expires = request.expires
            call_id = request.call_id
            cseq = request.cseq.number
        except ParseError as error:
            return make_response(request, 400, error.reason)
        key = (tenant, user)
        current = self._bindings.setdefault(key, {})
        wildcard = request.headers.get("Contact")
        if wildcard is not None and wildcard.strip() == "*":
            if default_expires != 0 or len(request.headers.get_all("Contact")) != 1:
                return make_response(request, 400, "Wildcard Contact needs Expires: 0")
            current.clear()
            return self._ok(request, key, now)
        for contact in contacts:
            expires = _contact_expires(contact, default_expires)
            uri = str(contact.uri)
            existing = current.get(uri)
            if existing is not None and existing.call_id == call_id and existing.cseq >= cseq:
                return make_response(request, 500, "Out of order REGISTER")
            if expires == 0:
                current.pop(uri, None)
                continue
            if expires < MIN_EXPIRES:
                response = make_response(request, 423, "Interval Too Brief")
                response.headers.set("Min-Expires", str(MIN_EXPIRES))
                return response
            if existing is None and len(current) >= self.max_contacts:
                oldest = min(current.values(), key=lambda b: b.expires_at)
                current.pop(oldest.contact_uri)
            q = _float_param(contact, "q", 1.0)
            current[uri] = Binding(
                tenant=tenant,
                user=user,
                contact=contact,
                source=source,
                expires_at=now + min(expires, MAX_EXPIRES),
                call_id=call_id,
                cseq=cseq,
                user_agent=request.headers.get("User-Agent"),
                q=q,
            )
        return self._ok(request, key, now)

    def _ok(self, request: Request, key: tuple[str, str], now: float) -> Response:
        response = make_response(request, 200)
        for binding in self.lookup(*key, now=now):
            remaining = max(0, int(binding.expires_at - now))
            response.headers.add("Contact", f"<{binding.contact_uri}>;expires={remaining}")
        if not self._bindings.get(key):
            self._bindings.pop(key, None)
        return response

    def lookup(self, tenant: str, user: str, now: float) -> list[Binding]:
        """Live bindings of a user, best q first, newest first among equals."""
        live = [b for b in self._bindings.get((tenant, user), {}).values() if b.expires_at > now]
        return sorted(live, key=lambda b: (-b.q, -b.expires_at))

    def remove_source(self, source: Address) -> int:
        """Drop every binding reached through `source` (its connection closed or it stopped answering)."""
        removed = 0
        for contacts in self._bindings.values():
            for uri in [uri for uri, b in contacts.items() if b.source == source]:
                del contacts[uri]
                removed += 1
        return removed

    def expire(self, now: float) -> list[Binding]:
        """Remove and return expired bindings."""
        expired: list[Binding] = []
        for key in list(self._bindings):
            contacts = self._bindings[key]
            for uri in [uri for uri, b in contacts.items() if b.expires_at <= now]:
                expired.append(contacts.pop(uri))
            if not contacts:
                del self._bindings[key]
        return expired

    def all_bindings(self) -> list[Binding]:
        return [b for contacts in self._bindings.values() for b in contacts.values()]


def _contact_expires(contact: NameAddr, default: int | None) -> int:
    value = contact.params.get("expires")
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            pass
    return DEFAULT_EXPIRES if default is None else max(0, default)


def _float_param(contact: NameAddr, name: str, default: float) -> float:
    value = contact.params.get(name)
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


# (tenant, user) -> the user's password or stored HA1, None when there is no such user
SecretLookup = Callable[[str, str], DigestSecret | str | None]


@dataclass
class AuthOutcome:
    """The verdict on a request from a phone: `user` when it proved who it is, else the `response` to send."""

    user: str | None
    response: Response | None


@dataclass
class Authenticator:
    """Digest authentication of phones (REGISTER and INVITE) with brute-force lockout (OPS-14).

    A wrong password and an unknown user get the same answer, so user names cannot be probed."""

    challenger: DigestChallenger
    lockout: LockoutTracker
    secrets: SecretLookup

    def check(self, request: Request, tenant: str, source: Address, now: float) -> AuthOutcome:
        """REGISTER is challenged with 401, other requests (INVITE) with 407, as a registrar-proxy does."""
        proxy = request.method != "REGISTER"
        header = request.headers.get("Proxy-Authorization" if proxy else "Authorization")
        claimed_user = _digest_username(header)
        if self.lockout.is_locked(source.host, _user_key(tenant, claimed_user), now):
            return AuthOutcome(None, make_response(request, 403, "Locked Out: Too Many Failures"))
        if header is None:
            return AuthOutcome(None, self._challenge(request, now, stale=False, proxy=proxy))
        result = self.challenger.verify(
            request.method,
            header,
            lambda user: self.secrets(tenant, user),
            now,
            request_uri=str(request.uri),
            body=request.body,
        )
        if result.ok and result.username is not None:
            self.lockout.record_success(source.host, _user_key(tenant, result.username), now)
            return AuthOutcome(result.username, None)
        if result.stale:
            return AuthOutcome(None, self._challenge(request, now, stale=True, proxy=proxy))
        if result.counts_as_failure:
            locked = self.lockout.record_failure(source.host, _user_key(tenant, claimed_user), now)
            for lock in locked:
                log.warning("sip.auth_lockout", tenant=tenant, key=str(lock), source=source.host)
        log.info(
            "sip.auth_rejected", tenant=tenant, user=claimed_user, reason=result.reason, source=source.host
        )
        if result.status is AuthStatus.MALFORMED:
            return AuthOutcome(None, make_response(request, 400, result.reason[:100] or "Bad Authorization"))
        return AuthOutcome(None, make_response(request, 403, "Forbidden"))

    def _challenge(self, request: Request, now: float, *, stale: bool, proxy: bool) -> Response:
        if proxy:
            response = make_response(request, 407, "Proxy Authentication Required")
        else:
            response = make_response(request, 401, "Unauthorized")
        for value in self.challenger.challenges(now, stale=stale):
            response.headers.add("Proxy-Authenticate" if proxy else "WWW-Authenticate", value)
        return response


def _user_key(tenant: str, user: str | None) -> str | None:
    return f"{tenant}/{user}" if user else None


def _digest_username(header: str | None) -> str | None:
    if header is None:
        return None
    try:
        return parse_credentials(header).username
    except AuthError:
        return None


@dataclass
class Registrar:
    """REGISTER handling for every tenant: which tenant, who is it, then the location service."""

    location: LocationService
    authenticator: Authenticator
    tenant_for: Callable[[Request], str | None]

    def process(self, request: Request, source: Address, now: float) -> Response:
        tenant = self.tenant_for(request)
        if tenant is None:
            return make_response(request, 404, "Unknown Domain")
        outcome = self.authenticator.check(request, tenant, source, now)
        if outcome.response is not None:
            return outcome.response
        assert outcome.user is not None
        try:
            aor_user = request.to.uri.user
        except ParseError as error:
            return make_response(request, 400, error.reason)
        if aor_user != outcome.user:
            return make_response(request, 403, "Not Allowed To Register This Address")
        response = self.location.process(request, tenant, outcome.user, source, now)
        if response.status == 200:
            log.info(
                "sip.registered", tenant=tenant, user=outcome.user, source=f"{source.host}:{source.port}"
            )
        return response
