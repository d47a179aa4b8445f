"""Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760 SHA-256) and login lockout, sans-IO.

Works on header values (strings); it knows nothing of SIP messages. Time comes in as ``now`` (seconds).

Header values
- ``parse_challenge(value) -> Challenge`` for WWW-Authenticate / Proxy-Authenticate; ``str(challenge)``
  builds it.
- ``parse_credentials(value) -> Credentials`` for Authorization / Proxy-Authorization; ``str(credentials)``.
- Both raise ``AuthError`` (a ``ValueError`` with ``reason``) on malformed input.

Hashing
- ``compute_ha1(algorithm, username, realm, password)``, ``compute_response(...)``; algorithms MD5, SHA-256,
  SHA-512-256 and their ``-sess`` variants.

Server
- ``DigestSecret``: a user's password, or only its HA1 hashes
  (``DigestSecret.hashed(user, realm, password)``).
- ``DigestChallenger(secret, realm, *, nonce_ttl=300, algorithms=("MD5", "SHA-256"), ...)``:
  ``challenges(now, stale=False) -> list[str]`` (one header value per algorithm, in that order);
  ``verify(method, credentials, lookup, now, *, request_uri=None, body=b"") -> VerifyResult``. Nonces carry
  their issue time and an HMAC, so validity and expiry need no table; only nonce counts are tracked (bounded)
  to refuse replays.
- ``AuthStatus`` / ``VerifyResult``: ok, wrong password, unknown user, stale (re-challenge with stale=true),
  replay, malformed, wrong realm, wrong uri.
- ``LockoutTracker(max_failures, window_seconds, lock_seconds)``: brute-force lockout per source address and
  per user (OPS-14): ``locked_until(source, user, now)``, ``record_failure(...) -> list[Lockout]``,
  ``record_success(...)``.

Client
- ``DigestClient(username, password)``: ``authorize(challenges, method, uri, ...) -> str`` answers a 401/407;
  ``preemptive(method, uri)`` reuses the last nonce with the next nonce count. Raises ``CredentialsRejected``
  when a server refuses credentials just sent (unless it only said the nonce was stale).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ALGORITHMS",
    "AuthError",
    "AuthStatus",
    "Challenge",
    "Credentials",
    "CredentialsRejected",
    "DigestChallenger",
    "DigestClient",
    "DigestSecret",
    "Lockout",
    "LockoutTracker",
    "VerifyResult",
    "compute_ha1",
    "compute_response",
    "parse_challenge",
    "parse_credentials",
]


class AuthError(ValueError):
    """A malformed or unusable authentication header, or a client that cannot answer a challenge."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CredentialsRejected(AuthError):
    """The server challenged again (without stale=true) right after we sent credentials: wrong password."""


# ----------------------------------------------------------------------------------------------------------
# Header syntax (RFC 7235 auth-param lists)

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _parse_digest_params(value: str) -> dict[str, str]:
    """``Digest a=b, c="d"`` → ``{"a": "b", "c": "d"}`` (names lower-cased, quoted strings unescaped)."""
    text = value.strip()
    scheme_end = 0
    while scheme_end < len(text) and text[scheme_end] in _TOKEN_CHARS:
        scheme_end += 1
    scheme = text[:scheme_end]
    if not scheme:
        raise AuthError("missing authentication scheme")
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported authentication scheme {scheme!r}")
    if scheme_end < len(text) and not text[scheme_end].isspace():
        raise AuthError("malformed authentication scheme")
    params: dict[str, str] = {}
    pos, end = scheme_end, len(text)
    while True:
        while pos < end and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= end:
            break
        start = pos
        while pos < end and text[pos] in _TOKEN_CHARS:
            pos += 1
        name = text[start:pos].lower()
        if not name:
            raise AuthError(f"expected a parameter name at {text[start : start + 20]!r}")
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end or text[pos] != "=":
            raise AuthError(f"parameter {name!r} has no value")
        pos += 1
        while pos < end and text[pos].isspace():
            pos += 1
        if pos < end and text[pos] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= end:
                    raise AuthError(f"unterminated quoted string in parameter {name!r}")
                char = text[pos]
                if char == "\\" and pos + 1 < end:
                    chars.append(text[pos + 1])
                    pos += 2
                elif char == '"':
                    pos += 1
                    break
                else:
                    chars.append(char)
                    pos += 1
            param = "".join(chars)
        else:
            start = pos
            # Unquoted values are tokens; be lenient (some phones send nonce=abc== or uri=sip:x unquoted).
            while pos < end and text[pos] != "," and not text[pos].isspace():
                pos += 1
            param = text[start:pos]
            if not param:
                raise AuthError(f"parameter {name!r} has an empty value")
        while pos < end and text[pos].isspace():
            pos += 1
        if pos < end and text[pos] != ",":
            raise AuthError(f"expected ',' after parameter {name!r}")
        if name in params:
            raise AuthError(f"duplicate parameter {name!r}")
        params[name] = param
    return params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_header_text(name: str, value: str) -> None:
    if any(c in value for c in "\r\n\x00"):
        raise AuthError(f"parameter {name!r} contains a line break")


# ----------------------------------------------------------------------------------------------------------
# Algorithms and hashing

_HASH_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
ALGORITHMS: tuple[str, ...] = tuple(
    name + suffix
    for name, hash_name in _HASH_NAMES.items()
    if hash_name in hashlib.algorithms_available
    for suffix in ("", "-sess")
)
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
# Client preference: strongest first (RFC 7616 §3.7, RFC 8760 §2.4).
_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5", "SHA-512-256-sess", "SHA-256-sess", "MD5-sess")


def _canonical_algorithm(value: str | None) -> str:
    if value is None:
        return "MD5"  # RFC 2617 §3.2.1: absent means MD5
    return _CANONICAL.get(value.upper(), value)


def _hash(algorithm: str, text: str) -> str:
    base = algorithm.removesuffix("-sess")
    hash_name = _HASH_NAMES.get(base)
    if hash_name is None or algorithm not in ALGORITHMS:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(hash_name, text.encode("utf-8"), usedforsecurity=False).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the value a server may store instead of the password (also for -sess)."""
    return _hash(_canonical_algorithm(algorithm), f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` of RFC 7616 §3.4.1 (RFC 2069 form when ``qop`` is None)."""
    algorithm = _canonical_algorithm(algorithm)
    if algorithm.endswith("-sess"):
        if cnonce is None:
            raise AuthError(f"{algorithm} needs a cnonce")
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        body_hash = hashlib.new(
            _HASH_NAMES[algorithm.removesuffix("-sess")], body, usedforsecurity=False
        ).hexdigest()
        ha2 = _hash(algorithm, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise AuthError("qop needs nc and cnonce")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ----------------------------------------------------------------------------------------------------------
# Challenges and credentials


@dataclass(frozen=True)
class Challenge:
    """A digest challenge (WWW-Authenticate or Proxy-Authenticate value)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    userhash: bool = False

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=TRUE")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.userhash:
            parts.append("userhash=true")
        for name, value in (("realm", self.realm), ("nonce", self.nonce), ("opaque", self.opaque or "")):
            _check_header_text(name, value)
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value with the Digest scheme."""
    params = _parse_digest_params(value)
    for required in ("realm", "nonce"):
        if required not in params:
            raise AuthError(f"challenge without {required}")
    qop = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip()) if "qop" in params else ()
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_canonical_algorithm(params.get("algorithm")),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=params.get("domain"),
        userhash=params.get("userhash", "").lower() == "true",
    )


@dataclass(frozen=True)
class Credentials:
    """Digest credentials (Authorization or Proxy-Authorization value). ``nc`` is kept as written: the
    response hash covers that exact text."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False

    @property
    def nonce_count(self) -> int | None:
        return int(self.nc, 16) if self.nc is not None else None

    def __str__(self) -> str:
        for name in ("username", "realm", "nonce", "uri", "cnonce", "opaque"):
            _check_header_text(name, getattr(self, name) or "")
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def _decode_ext_value(value: str) -> str:
    """RFC 8187 ``username*=UTF-8''J%C3%A4s%C3%B8n`` (RFC 7616 §3.4.4)."""
    charset, sep1, rest = value.partition("'")
    _language, sep2, encoded = rest.partition("'")
    if not (sep1 and sep2) or charset.lower() not in ("utf-8", "iso-8859-1"):
        raise AuthError("malformed username* parameter")
    try:
        return urllib.parse.unquote(encoded, encoding=charset, errors="strict")
    except UnicodeDecodeError:
        raise AuthError("malformed username* parameter") from None


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value with the Digest scheme."""
    params = _parse_digest_params(value)
    if "username" not in params and "username*" in params:
        params["username"] = _decode_ext_value(params["username*"])
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise AuthError(f"credentials without {required}")
    qop = params["qop"].lower() if "qop" in params else None
    nc = params.get("nc")
    if qop is not None:
        if "cnonce" not in params or nc is None:
            raise AuthError("credentials with qop need cnonce and nc")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            raise AuthError("nc must be 8 hex digits")
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=_canonical_algorithm(params.get("algorithm")),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        qop=qop,
        nc=nc,
        userhash=params.get("userhash", "").lower() == "true",
    )


# ----------------------------------------------------------------------------------------------------------
# Server side


@dataclass(frozen=True)
class DigestSecret:
    """What we know of a user's password: the password itself, or only its HA1 per algorithm.

    HA1 = H(username:realm:password) is tied to the realm: ``hashed`` computes it for every algorithm we
    offer, so the password itself need not be stored.
    """

    password: str | None = None
    ha1: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def hashed(cls, username: str, realm: str, password: str) -> DigestSecret:
        bases = [a for a in ALGORITHMS if not a.endswith("-sess")]
        return cls(ha1={a: compute_ha1(a, username, realm, password) for a in bases})

    def ha1_for(self, algorithm: str, username: str, realm: str) -> str | None:
        base = _canonical_algorithm(algorithm).removesuffix("-sess")
        if self.password is not None:
            return compute_ha1(base, username, realm, self.password)
        stored = self.ha1.get(base)
        return stored.lower() if stored is not None else None


class AuthStatus(StrEnum):
    OK = "ok"
    WRONG_PASSWORD = "wrong_password"
    UNKNOWN_USER = "unknown_user"
    # The digest was right but the nonce expired (or is not ours any more): challenge again with stale=true.
    STALE = "stale"
    REPLAY = "replay"
    MALFORMED = "malformed"
    WRONG_REALM = "wrong_realm"
    WRONG_URI = "wrong_uri"


# Outcomes that suggest password guessing or scanning, and so count towards a lockout.
_FAILURES = frozenset(
    {
        AuthStatus.WRONG_PASSWORD,
        AuthStatus.UNKNOWN_USER,
        AuthStatus.MALFORMED,
        AuthStatus.WRONG_REALM,
        AuthStatus.WRONG_URI,
    }
)


@dataclass(frozen=True)
class VerifyResult:
    status: AuthStatus
    reason: str
    username: str | None = None
    credentials: Credentials | None = None

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK

    @property
    def stale(self) -> bool:
        return self.status is AuthStatus.STALE

    @property
    def counts_as_failure(self) -> bool:
        return self.status in _FAILURES


SecretLookup = Callable[[str], DigestSecret | str | None]

_NONCE_CONTEXT = b"hotline digest nonce v1\x00"
_NONCE_RAW = 16  # 8 bytes issue time in ms + 8 random bytes
_NONCE_MAC = 16
_NC_WINDOW = 64


@dataclass
class _NonceUse:
    issued: float
    highest: int = 0
    seen: int = 0  # bit i set: nonce count highest - i was used


class DigestChallenger:
    """Issues digest challenges and verifies credentials for one realm.

    ``secret`` keys the nonce HMAC; keep it across restarts (and share it between nodes) if nonces should
    stay valid, and use a wall clock for ``now`` then. Nonce counts are tracked for at most
    ``max_tracked_nonces`` nonces: when older ones are dropped, every nonce issued before them is treated as
    stale, so a replay is never accepted because of the bound.

    ``algorithms`` is the order of the challenges. MD5 comes first by default because many deployed clients
    (SIPp 3.6 among them, checked in the tests) answer only the first challenge and give up on SHA-256;
    RFC 8760 clients that prefer SHA-256 (``DigestClient`` does) still find it second. Put SHA-256 first
    where every phone supports it.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        *,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
        allow_no_qop: bool = True,
        max_tracked_nonces: int = 10_000,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(_canonical_algorithm(a) for a in algorithms)
        for algorithm in self.algorithms:
            if algorithm not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if not self.algorithms:
            raise ValueError("at least one algorithm is needed")
        self.allow_no_qop = allow_no_qop
        self.max_tracked_nonces = max(1, max_tracked_nonces)
        self._secret = secret
        self._uses: OrderedDict[str, _NonceUse] = OrderedDict()
        self._forgotten_before = float("-inf")

    # -- nonces

    def _mac(self, raw: bytes) -> bytes:
        message = _NONCE_CONTEXT + self.realm.encode("utf-8") + b"\x00" + raw
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_NONCE_MAC]

    def new_nonce(self, now: float) -> str:
        raw = struct.pack(">Q", max(0, int(now * 1000))) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(raw + self._mac(raw)).decode("ascii").rstrip("=")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """The issue time carried by one of our nonces, or None when it is not ours (or was tampered with)."""
        if len(nonce) != 43:
            return None
        try:
            blob = base64.urlsafe_b64decode(nonce + "=")
        except ValueError:
            return None
        raw, mac = blob[:_NONCE_RAW], blob[_NONCE_RAW:]
        if len(blob) != _NONCE_RAW + _NONCE_MAC or not hmac.compare_digest(mac, self._mac(raw)):
            return None
        return float(struct.unpack(">Q", raw[:8])[0]) / 1000.0

    def _nonce_fresh(self, nonce: str, now: float) -> float | None:
        issued = self.nonce_issued_at(nonce)
        # One second of slack for a nonce stamped by another node whose clock runs slightly ahead.
        if issued is None or now - issued > self.nonce_ttl or issued > now + 1.0:
            return None
        return issued

    # -- challenges

    def challenge(
        self, now: float, *, algorithm: str | None = None, stale: bool = False, nonce: str | None = None
    ) -> Challenge:
        return Challenge(
            realm=self.realm,
            nonce=nonce or self.new_nonce(now),
            algorithm=_canonical_algorithm(algorithm or self.algorithms[0]),
            qop=("auth",),
            stale=stale,
        )

    def challenges(self, now: float, *, stale: bool = False) -> list[str]:
        """One WWW-Authenticate (or Proxy-Authenticate) value per algorithm, in ``algorithms`` order, sharing
        one nonce (RFC 8760 §2.4)."""
        nonce = self.new_nonce(now)
        return [str(self.challenge(now, algorithm=a, stale=stale, nonce=nonce)) for a in self.algorithms]

    # -- verification

    def verify(
        self,
        method: str,
        credentials: str | Credentials,
        lookup: SecretLookup | DigestSecret | str,
        now: float,
        *,
        request_uri: str | None = None,
        body: bytes = b"",
    ) -> VerifyResult:
        """Check credentials for a request. ``lookup`` maps a username to its password or ``DigestSecret``
        (None: unknown user); a plain password or ``DigestSecret`` may be given directly. ``request_uri``,
        when given, must match the credentials' uri (RFC 3261 §22.4)."""
        if isinstance(credentials, str):
            try:
                credentials = parse_credentials(credentials)
            except AuthError as error:
                return VerifyResult(AuthStatus.MALFORMED, error.reason)
        creds = credentials
        user = creds.username

        def result(status: AuthStatus, reason: str) -> VerifyResult:
            return VerifyResult(status, reason, user, creds)

        if creds.realm != self.realm:
            return result(AuthStatus.WRONG_REALM, f"realm {creds.realm!r} is not {self.realm!r}")
        if creds.algorithm not in self.algorithms:
            return result(AuthStatus.MALFORMED, f"algorithm {creds.algorithm} was not offered")
        if creds.userhash:
            return result(AuthStatus.MALFORMED, "userhash was not offered")
        if creds.qop is None and not self.allow_no_qop:
            return result(AuthStatus.MALFORMED, "qop is required")
        if creds.qop not in (None, "auth", "auth-int"):
            return result(AuthStatus.MALFORMED, f"unsupported qop {creds.qop!r}")
        if request_uri is not None and not _same_uri(creds.uri, request_uri):
            return result(AuthStatus.WRONG_URI, f"credentials are for {creds.uri!r}, not {request_uri!r}")
        secret = lookup(user) if callable(lookup) else lookup
        if isinstance(secret, str):
            secret = DigestSecret(password=secret)
        ha1 = secret.ha1_for(creds.algorithm, user, self.realm) if secret is not None else None
        if ha1 is None:
            return result(AuthStatus.UNKNOWN_USER, f"no {creds.algorithm} secret for user {user!r}")
        expected = compute_response(
            algorithm=creds.algorithm,
            ha1=ha1,
            nonce=creds.nonce,
            method=method,
            uri=creds.uri,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8")):
            return result(AuthStatus.WRONG_PASSWORD, "digest response does not match")
        issued = self._nonce_fresh(creds.nonce, now)
        if issued is None:
            return result(AuthStatus.STALE, "nonce expired or not issued by us")
        if creds.nc is not None:
            return self._check_nonce_count(creds.nonce, int(creds.nc, 16), issued, now, result)
        # RFC 2069 clients (no qop) reuse a nonce without a count; only its lifetime limits replay.
        return result(AuthStatus.OK, "ok")

    def _check_nonce_count(
        self,
        nonce: str,
        count: int,
        issued: float,
        now: float,
        result: Callable[[AuthStatus, str], VerifyResult],
    ) -> VerifyResult:
        if count == 0:
            return result(AuthStatus.MALFORMED, "nonce count 0")
        self._forget_expired(now)
        use = self._uses.get(nonce)
        if use is None:
            if issued <= self._forgotten_before:
                return result(AuthStatus.STALE, "nonce no longer tracked")
            use = self._uses[nonce] = _NonceUse(issued)
            self._enforce_capacity()
        # A sliding window (as in IPsec anti-replay) accepts counts that arrive out of order over UDP.
        if count > use.highest:
            shift = count - use.highest
            use.seen = ((use.seen << shift) | 1) & ((1 << _NC_WINDOW) - 1) if shift < _NC_WINDOW else 1
            use.highest = count
            return result(AuthStatus.OK, "ok")
        offset = use.highest - count
        if offset >= _NC_WINDOW or use.seen & (1 << offset):
            return result(AuthStatus.REPLAY, f"nonce count {count} already used")
        use.seen |= 1 << offset
        return result(AuthStatus.OK, "ok")

    def _forget_expired(self, now: float) -> None:
        while self._uses:
            nonce, use = next(iter(self._uses.items()))
            if now - use.issued <= self.nonce_ttl:
                break
            del self._uses[nonce]

    def _enforce_capacity(self) -> None:
        while len(self._uses) > self.max_tracked_nonces:
            _, use = self._uses.popitem(last=False)
            self._forgotten_before = max(self._forgotten_before, use.issued)

    @property
    def tracked_nonces(self) -> int:
        return len(self._uses)


def _same_uri(credential_uri: str, request_uri: str) -> bool:
    a, b = credential_uri.strip(), request_uri.strip()
    # Scheme and host are case-insensitive; a case-only difference cannot redirect a request elsewhere.
    return a == b or a.lower() == b.lower()


# ----------------------------------------------------------------------------------------------------------
# Brute-force lockout (OPS-14)


@dataclass(frozen=True)
class Lockout:
    """A key that has just been locked: ``kind`` is "source" or "user"."""

    kind: str
    key: str
    until: float


@dataclass
class _Attempts:
    failures: deque[float]
    locked_until: float = float("-inf")


class _AttemptTable:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Attempts] = OrderedDict()

    def purge(self, now: float, window: float) -> None:
        # Least recently touched first; stop at the first entry still worth keeping (amortised O(1)).
        while self.entries:
            key, entry = next(iter(self.entries.items()))
            recent = bool(entry.failures) and now - entry.failures[-1] < window
            if recent or entry.locked_until > now:
                break
            del self.entries[key]

    def touch(self, key: str, max_failures: int) -> _Attempts:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Attempts(deque(maxlen=max_failures))
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return entry


class LockoutTracker:
    """Locks a source address or a user after ``max_failures`` failures within ``window_seconds``, for
    ``lock_seconds``. Check ``locked_until`` before verifying anything; a success clears the user's count (not
    the source's: many phones can share one NAT address). Each table keeps at most ``max_entries`` keys,
    dropping idle ones first and then the least recently seen."""

    def __init__(
        self,
        max_failures: int = 5,
        window_seconds: float = 300.0,
        lock_seconds: float = 900.0,
        *,
        max_entries: int = 10_000,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lock_seconds = lock_seconds
        self._tables = {"source": _AttemptTable(max_entries), "user": _AttemptTable(max_entries)}

    def _keys(self, source: str | None, user: str | None) -> Iterable[tuple[str, str]]:
        if source is not None:
            yield "source", source
        if user is not None:
            yield "user", user

    def locked_until(self, source: str | None, user: str | None, now: float) -> float | None:
        """When the later of the source's and the user's locks ends, or None when neither is locked."""
        locks = [
            entry.locked_until
            for kind, key in self._keys(source, user)
            if (entry := self._tables[kind].entries.get(key)) is not None and entry.locked_until > now
        ]
        return max(locks, default=None)

    def is_locked(self, source: str | None, user: str | None, now: float) -> bool:
        return self.locked_until(source, user, now) is not None

    def record_failure(self, source: str | None, user: str | None, now: float) -> list[Lockout]:
        """Count a failed attempt; returns the keys this failure locked (for an OPS-08 alarm)."""
        locked: list[Lockout] = []
        for kind, key in self._keys(source, user):
            table = self._tables[kind]
            table.purge(now, self.window_seconds)
            entry = table.touch(key, self.max_failures)
            if entry.locked_until > now:
                continue
            while entry.failures and now - entry.failures[0] >= self.window_seconds:
                entry.failures.popleft()
            entry.failures.append(now)
            if len(entry.failures) >= self.max_failures:
                entry.locked_until = now + self.lock_seconds
                entry.failures.clear()
                locked.append(Lockout(kind, key, entry.locked_until))
        return locked

    def record_success(self, source: str | None, user: str | None, now: float) -> None:
        if user is not None:
            self._tables["user"].entries.pop(user, None)
        self._tables["source"].purge(now, self.window_seconds)

    def tracked(self, kind: str) -> int:
        """How many keys of ``kind`` ("source" or "user") are remembered."""
        return len(self._tables[kind].entries)


# ----------------------------------------------------------------------------------------------------------
# Client side


@dataclass
class _ClientNonce:
    challenge: Challenge
    count: int = 0


class DigestClient:
    """Answers digest challenges for one account (a carrier registration, an outbound INVITE).

    Keeps the last challenge per realm so later requests can reuse its nonce with an incremented nonce count.
    """

    def __init__(
        self, username: str, password: str, *, cnonce_factory: Callable[[], str] | None = None
    ) -> None:
        self.username = username
        self.password = password
        self._cnonce_factory = cnonce_factory or (lambda: secrets.token_hex(8))
        self._nonces: dict[str, _ClientNonce] = {}

    @staticmethod
    def _choose(challenges: Sequence[Challenge]) -> Challenge:
        usable = [
            c
            for c in challenges
            if c.algorithm in ALGORITHMS and (not c.qop or "auth" in c.qop or "auth-int" in c.qop)
        ]
        if not usable:
            offered = ", ".join(sorted({c.algorithm for c in challenges})) or "none"
            raise AuthError(f"no supported digest challenge (offered {offered})")
        return min(usable, key=lambda c: _PREFERENCE.index(c.algorithm))

    def authorize(
        self,
        challenges: str | Challenge | Sequence[str | Challenge],
        method: str,
        uri: str,
        *,
        body: bytes = b"",
        sent_credentials: bool = False,
    ) -> str:
        """The Authorization (or Proxy-Authorization) value answering a 401 (or 407).

        ``challenges`` are the WWW-Authenticate / Proxy-Authenticate values of the response. Set
        ``sent_credentials`` when the challenged request already carried credentials: then only a stale=true
        challenge is answered, and anything else raises ``CredentialsRejected`` so we do not loop.
        """
        items = [challenges] if isinstance(challenges, str | Challenge) else list(challenges)
        parsed: list[Challenge] = []
        errors: list[str] = []
        for item in items:
            try:
                parsed.append(parse_challenge(item) if isinstance(item, str) else item)
            except AuthError as error:
                errors.append(error.reason)
        if not parsed:
            raise AuthError("; ".join(errors) or "no challenge")
        chosen = self._choose(parsed)
        if sent_credentials and not chosen.stale:
            raise CredentialsRejected(f"credentials for realm {chosen.realm!r} were rejected")
        state = self._nonces.get(chosen.realm)
        if state is None or state.challenge.nonce != chosen.nonce:
            state = self._nonces[chosen.realm] = _ClientNonce(chosen)
        return self._credentials(state, method, uri, body)

    def preemptive(self, method: str, uri: str, *, realm: str | None = None, body: bytes = b"") -> str | None:
        """Credentials for a new request reusing the last nonce (next nonce count); None without one."""
        if realm is None:
            if len(self._nonces) != 1:
                return None
            state = next(iter(self._nonces.values()))
        else:
            found = self._nonces.get(realm)
            if found is None:
                return None
            state = found
        return self._credentials(state, method, uri, body)

    def forget(self, realm: str | None = None) -> None:
        if realm is None:
            self._nonces.clear()
        else:
            self._nonces.pop(realm, None)

    def _credentials(self, state: _ClientNonce, method: str, uri: str, body: bytes) -> str:
        challenge = state.challenge
        qop = "auth" if "auth" in challenge.qop else "auth-int" if challenge.qop else None
        algorithm = challenge.algorithm
        username = self.username
        if challenge.userhash:
            username = _hash(algorithm.removesuffix("-sess"), f"{self.username}:{challenge.realm}")
        cnonce: str | None = None
        nc: str | None = None
        if qop is not None or algorithm.endswith("-sess"):
            cnonce = self._cnonce_factory()
        if qop is not None:
            state.count += 1
            nc = f"{state.count:08x}"
        response = compute_response(
            algorithm=algorithm,
            ha1=compute_ha1(algorithm, self.username, challenge.realm, self.password),
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        return str(
            Credentials(
                username=username,
                realm=challenge.realm,
                nonce=challenge.nonce,
                uri=uri,
                response=response,
                algorithm=algorithm,
                cnonce=cnonce,
                opaque=challenge.opaque,
                qop=qop,
                nc=nc,
                userhash=challenge.userhash,
            )
        )
