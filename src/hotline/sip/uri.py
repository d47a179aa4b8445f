"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), and any other absolute URI kept opaque.

- `parse_uri(text) -> SipURI | TelURI | AbsoluteURI`; raises `ParseError` (status 400) on malformed text.
- `SipURI(scheme, user, password, host, port, params, headers)`: user, password, parameter and header
  names/values are stored with %-escapes decoded (parameter names lower-cased); `str()` escapes them again.
  A parsed URI's `str()` gives back the text it was parsed from, so forwarding never rewrites it.
- `TelURI(number, params)`, `AbsoluteURI(scheme, value)`: both offer `.user` and `.host` so code handling
  the `URI` union can read them without narrowing.

Escapes that do not decode to UTF-8 are kept as lone surrogates ('surrogateescape'), so they round-trip.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hotline.sip.errors import ParseError

__all__ = ["URI", "AbsoluteURI", "SipURI", "TelURI", "parse_uri"]

# Every character any URI we accept may contain (RFC 3986/3261 reserved, unreserved, '%' escapes, IPv6
# brackets). '#' is not legal in a SIP user part, but phones send it unescaped, so it is tolerated.
_URI_TEXT = re.compile(r"[A-Za-z0-9\-_.!~*'();/?:@&=+$,%\[\]#]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_HEX = frozenset("0123456789abcdefABCDEF")
_U = TypeVar("_U")

_UNRESERVED = "A-Za-z0-9\\-_.!~*'()"
# Characters left unescaped when serializing each component (RFC 3261 §25.1).
_USER_SAFE = re.compile(f"[{_UNRESERVED}&=+$,;?/]*")
_PASSWORD_SAFE = re.compile(f"[{_UNRESERVED}&=+$,]*")
_PARAM_SAFE = re.compile(f"[{_UNRESERVED}\\[\\]/:&+$]*")
_HEADER_SAFE = re.compile(f"[{_UNRESERVED}\\[\\]/?:+$]*")


def _unescape(text: str) -> str:
    """Decode %HH escapes; a '%' not followed by two hex digits is malformed."""
    if "%" not in text:
        return text
    pieces = text.split("%")
    out = bytearray(pieces[0].encode())
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise ParseError(f"bad %-escape in URI component {text[:80]!r}")
        out.append(int(piece[:2], 16))
        out += piece[2:].encode()
    return out.decode("utf-8", "surrogateescape")


def _escape(text: str, safe: re.Pattern[str]) -> str:
    if safe.fullmatch(text):
        return text
    out = []
    for char in text:
        if safe.fullmatch(char):
            out.append(char)
        else:
            try:
                encoded = char.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate that no decoding produced: not representable
                encoded = b"?"
            out.extend(f"%{byte:02X}" for byte in encoded)
    return "".join(out)


def _parse_port(text: str) -> int:
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        raise ParseError(f"bad port {text[:80]!r}")
    port = int(text)
    if port > 65535:
        raise ParseError(f"port out of range: {port}")
    return port


def _check_host(host: str) -> None:
    """Raise ParseError unless `host` is a hostname, an IPv4 address or (unbracketed) an IPv6 address."""
    if ":" in host:
        if "%" in host:  # zone ids have no place in SIP
            raise ParseError(f"bad IPv6 address {host[:80]!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ParseError(f"bad IPv6 address {host[:80]!r}") from None
        return
    if not _HOSTNAME.fullmatch(host):
        raise ParseError(f"bad host {host[:80]!r}")
    if host[-1].isdigit() and not host.strip("0123456789."):
        octets = host.split(".")
        if len(octets) != 4:
            raise ParseError(f"bad IPv4 address {host[:80]!r}")
        for octet in octets:
            if not 0 < len(octet) <= 3 or int(octet) > 255:
                raise ParseError(f"bad IPv4 address {host[:80]!r}")


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_hostport(text: str) -> tuple[str, int | None]:
    """`host[:port]` or `[v6]:port` → (host without brackets, port); validated."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference {text[:80]!r}")
        host = text[1:end]
        if ":" not in host:
            raise ParseError(f"bad IPv6 reference {text[:80]!r}")
        after = text[end + 1 :]
        if not after:
            port = None
        elif after[0] == ":":
            port = _parse_port(after[1:])
        else:
            raise ParseError(f"junk after IPv6 reference {text[:80]!r}")
    else:
        colon = text.find(":")
        if colon >= 0:
            host, port = text[:colon], _parse_port(text[colon + 1 :])
        else:
            host, port = text, None
        if not host:
            raise ParseError("empty host")
    _check_host(host)
    return host, port


def _parse_uri_params(text: str) -> dict[str, str | None]:
    escaped = "%" in text
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, equals, raw = item.partition("=")
        value: str | None = None
        if equals:
            if not raw:
                raise ParseError(f"URI parameter {name[:40]!r} has an empty value")
            value = _unescape(raw) if escaped else raw
        if not name:
            raise ParseError("empty URI parameter name")
        params.setdefault((_unescape(name) if escaped else name).lower(), value)
    return params


def _format_params(params: dict[str, str | None]) -> str:
    out = []
    for name, value in params.items():
        out.append(f";{_escape(name, _PARAM_SAFE)}")
        if value is not None:
            out.append(f"={_escape(value, _PARAM_SAFE)}")
    return "".join(out)


def _cached_text(uri: object) -> str | None:
    text: str | None = uri.__dict__.get("_text")
    return text


@dataclass(frozen=True)
class SipURI:
    """sip: or sips: URI. `host` holds an IPv6 address without brackets."""

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(
            (
                self.scheme,
                self.user,
                self.password,
                self.host,
                self.port,
                frozenset(self.params.items()),
                frozenset(self.headers.items()),
            )
        )

    def __str__(self) -> str:
        cached = _cached_text(self)
        if cached is not None:
            return cached
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts += [":", _escape(self.password, _PASSWORD_SAFE)]
            parts.append("@")
        parts.append(_format_host(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.append(_format_params(self.params))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    f"{_escape(name, _HEADER_SAFE)}={_escape(value, _HEADER_SAFE)}"
                    for name, value in self.headers.items()
                )
            )
        return "".join(parts)

    @property
    def transport(self) -> str:
        """The `transport` parameter, lower-cased; "udp" when absent ("tls" for a sips: URI)."""
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def with_(self, **changes: Any) -> SipURI:
        """A copy with some fields replaced, e.g. `uri.with_(params={}, port=None)`."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class TelURI:
    """tel: URI (RFC 3966): the number as written (visual separators kept) and its parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.number, frozenset(self.params.items())))

    def __str__(self) -> str:
        cached = _cached_text(self)
        if cached is not None:
            return cached
        return f"tel:{self.number}{_format_params(self.params)}"

    @property
    def user(self) -> str:
        return self.number

    @property
    def host(self) -> str:
        return ""


@dataclass(frozen=True)
class AbsoluteURI:
    """Any other absolute URI (http:, urn:, mailto:, ...), kept opaque: `value` is all after the colon."""

    scheme: str
    value: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"

    @property
    def user(self) -> str | None:
        return None

    @property
    def host(self) -> str:
        return ""


URI = SipURI | TelURI | AbsoluteURI


_COMMON_SCHEMES = {"sip": "sip", "sips": "sips", "tel": "tel", "SIP": "sip", "SIPS": "sips", "TEL": "tel"}


def _new(cls: type[_U], fields: dict[str, Any]) -> _U:
    """An instance of a frozen URI class from its field values (a parse is hot enough to skip __init__)."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance


def parse_uri(text: str) -> SipURI | TelURI | AbsoluteURI:
    """Parse a URI (no angle brackets, no surrounding whitespace allowed inside)."""
    colon = text.find(":")
    scheme = _COMMON_SCHEMES.get(text[:colon]) if colon > 0 else None
    if scheme is None:
        if colon <= 0 or not _SCHEME.fullmatch(text, 0, colon):
            raise ParseError(f"URI without a valid scheme: {text[:80]!r}")
        scheme = text[:colon].lower()
    if not _URI_TEXT.fullmatch(text):
        raise ParseError(f"illegal character in URI {text[:80]!r}")
    if scheme == "sip" or scheme == "sips":
        return _parse_sip_uri(text, scheme, text[colon + 1 :])
    if scheme == "tel":
        return _parse_tel_uri(text, text[colon + 1 :])
    if colon + 1 == len(text):
        raise ParseError(f"empty {scheme[:20]}: URI")
    return AbsoluteURI(scheme, text[colon + 1 :])


def _parse_sip_uri(text: str, scheme: str, rest: str) -> SipURI:
    escaped = "%" in rest
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        colon = userinfo.find(":")
        if colon >= 0:
            user, password = userinfo[:colon], userinfo[colon + 1 :]
            if escaped:
                user, password = _unescape(user), _unescape(password)
        else:
            user = _unescape(userinfo) if escaped else userinfo
        if not user:
            raise ParseError(f"empty user part in {text[:80]!r}")
    headers: dict[str, str] = {}
    question = rest.find("?")
    if question >= 0:
        for item in rest[question + 1 :].split("&"):
            name, _, value = item.partition("=")
            if not name:
                raise ParseError(f"empty URI header name in {text[:80]!r}")
            headers.setdefault(_unescape(name), _unescape(value))
        rest = rest[:question]
    if "@" in rest:
        raise ParseError(f"stray '@' in URI {text[:80]!r}")
    semi = rest.find(";")
    if semi < 0:
        params: dict[str, str | None] = {}
        host, port = _split_hostport(rest)
    else:
        params = _parse_uri_params(rest[semi + 1 :])
        host, port = _split_hostport(rest[:semi])
    return _new(
        SipURI,
        {
            "scheme": scheme,
            "user": user,
            "password": password,
            "host": host,
            "port": port,
            "params": params,
            "headers": headers,
            "_text": text,
        },
    )


def _parse_tel_uri(text: str, rest: str) -> TelURI:
    semi = rest.find(";")
    number = rest if semi < 0 else rest[:semi]
    if not _TEL_NUMBER.fullmatch(number) or not number.strip("+-.()"):
        raise ParseError(f"bad telephone number in {text[:80]!r}")
    params = _parse_uri_params(rest[semi + 1 :]) if semi >= 0 else {}
    return _new(TelURI, {"number": number, "params": params, "_text": text})
