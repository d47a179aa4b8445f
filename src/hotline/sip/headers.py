"""SIP header fields: the `Headers` multi-map and the typed values Via, name-addr (From/To/...) and CSeq.

- `Headers`: ordered multi-map of header lines, names case-insensitive, compact forms ("v", "f", "i", ...)
  mapped to canonical long names. `get(name)` is the first value, `get_all(name)` every value, with the
  comma-separated list headers (Via, Contact, Route, Record-Route, Allow, Supported, ...) split into their
  elements; quoted strings and <...> are respected. `add(name, value, *, first=False)`, `set`, `remove`,
  `in`, `items()`, `copy()`. Header values are stored as text; nothing is parsed until asked.
- `Via`, `parse_via(text)`; `NameAddr`, `parse_name_addr(text)`; `CSeq`, `parse_cseq(text)`.
- `parse_params(";a=b;c")`: header parameters, names lower-cased, values as written (quoted values keep
  their quotes; `unquote()` them). `quote(s)`, `unquote(s)` for quoted-strings (RFC 3261 §25.1).

Every parser raises `ParseError` (status 400) for malformed text and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hotline.sip.errors import ParseError
from hotline.sip.uri import URI, _format_host, _split_hostport, parse_uri

__all__ = [
    "CSeq",
    "Headers",
    "NameAddr",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_name_addr",
    "parse_params",
    "parse_via",
    "quote",
    "unquote",
]

TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# gen-value = token / host / quoted-string (RFC 3261 §25.1); hosts add ':' and IPv6 brackets.
_GEN_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\[\]:]+")
# An unquoted display name: tokens and whitespace; non-ASCII tolerated because phones send it unquoted.
_PLAIN_DISPLAY = re.compile(r"[A-Za-z0-9\-.!%*_+`'~ \t\x80-\U0010ffff]*")
_QUOTED_SPECIAL = re.compile(r'["\\]')
_LIST_SPECIAL = re.compile(r'[",<]')
_WS = " \t"

_CANONICAL_NAMES = (
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Diversion",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Associated-URI",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)

# RFC 3261 §7.3.3 and later extensions (RFC 3265, 3515, 3892, 3841, 4028, 4474).
_COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# key (lower-cased canonical name) -> canonical spelling
_CANONICAL: dict[str, str] = {name.lower(): name for name in _CANONICAL_NAMES}
# any spelling we know (canonical, lower-case, compact in either case) -> key
_KEYS: dict[str, str] = {}
for _name in _CANONICAL_NAMES:
    _KEYS[_name] = _KEYS[_name.lower()] = _name.lower()
for _letter, _name in _COMPACT_FORMS.items():
    _KEYS[_letter] = _KEYS[_letter.upper()] = _name.lower()
# any spelling we know -> (key, canonical spelling): one lookup per header line in the parser
_KNOWN: dict[str, tuple[str, str]] = {spelling: (key, _CANONICAL[key]) for spelling, key in _KEYS.items()}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); get_all() splits them.
LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "accept-resource-priority",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "diversion",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-associated-uri",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "resource-priority",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)


def header_key(name: str) -> str:
    """The case-insensitive identity of a header name: its canonical long name, lower-cased."""
    key = _KEYS.get(name)
    if key is None:
        lower = name.lower()
        key = _KEYS.get(lower, lower)
    return key


def canonical_name(name: str) -> str:
    """ "v" -> "Via", "call-id" -> "Call-ID"; unknown names are returned unchanged."""
    key = _KEYS.get(name) or _KEYS.get(name.lower())
    return name if key is None else _CANONICAL[key]


# --- quoted strings and lists -------------------------------------------------------------------------


def _end_of_quoted(text: str, start: int) -> int:
    """Index just past the quoted-string opening at text[start] ('"'); ParseError if unterminated."""
    pos = start + 1
    while True:
        match = _QUOTED_SPECIAL.search(text, pos)
        if match is None:
            raise ParseError(f"unterminated quoted string in {text[:80]!r}")
        if match.group() == '"':
            return match.end()
        pos = match.end() + 1  # skip the escaped character
        if pos > len(text):
            raise ParseError(f"unterminated quoted string in {text[:80]!r}")


def quote(text: str) -> str:
    """A quoted-string holding `text`; CR and LF (which cannot be quoted) become spaces."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(text: str) -> str:
    """The content of a quoted-string, escapes resolved; text not starting with '"' is returned as is."""
    if not text.startswith('"'):
        return text
    end = _end_of_quoted(text, 0)
    if end != len(text):
        raise ParseError(f"junk after quoted string {text[:80]!r}")
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    pieces = []
    start = 0
    while (backslash := inner.find("\\", start)) >= 0:
        pieces.append(inner[start:backslash])
        pieces.append(inner[backslash + 1 : backslash + 2])
        start = backslash + 2
    pieces.append(inner[start:])
    return "".join(pieces)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    if '"' not in text:
        return text.split(separator)
    parts = []
    start = pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == '"':
            pos = _end_of_quoted(text, pos)
            continue
        if char == separator:
            parts.append(text[start:pos])
            start = pos + 1
        pos += 1
    parts.append(text[start:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value into its non-empty elements, respecting "..." and <...>.

    Never raises: an unterminated quote or '<' makes the rest one element (whose parse then fails)."""
    if '"' not in value and "<" not in value:
        elements = value.split(",")
    else:
        elements = []
        start = pos = 0
        length = len(value)
        while True:
            match = _LIST_SPECIAL.search(value, pos)
            if match is None:
                break
            char = match.group()
            pos = match.end()
            if char == ",":
                elements.append(value[start : pos - 1])
                start = pos
            elif char == "<":
                close = value.find(">", pos)
                pos = length if close < 0 else close + 1
            else:
                try:
                    pos = _end_of_quoted(value, pos - 1)
                except ParseError:
                    pos = length
        elements.append(value[start:])
    return [stripped for element in elements if (stripped := element.strip(_WS))]


# --- parameters ---------------------------------------------------------------------------------------


def parse_params(text: str) -> dict[str, str | None]:
    """Header parameters `;name=value;flag` (leading ';' optional, whitespace around ';' and '=' allowed).

    Names are lower-cased; a quoted value keeps its quotes; a repeated name keeps its first value."""
    text = text.strip(_WS)
    if text.startswith(";"):
        text = text[1:]
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in _split_outside_quotes(text, ";"):
        eq = item.find("=")
        value: str | None = None
        if eq >= 0:
            name = item[:eq].strip(_WS)
            raw = item[eq + 1 :].strip(_WS)
            if raw.startswith('"'):
                if _end_of_quoted(raw, 0) != len(raw):
                    raise ParseError(f"junk after quoted parameter value in {item[:80]!r}")
            elif not _GEN_VALUE.fullmatch(raw):
                raise ParseError(f"bad value for parameter {name[:40]!r}")
            value = raw
        else:
            name = item.strip(_WS)
        if not TOKEN.fullmatch(name):
            raise ParseError(f"bad parameter name {name[:40]!r}")
        params.setdefault(name.lower(), value)
    return params


def format_params(params: Mapping[str, str | None]) -> str:
    """`;name=value;flag` from a parameter dict (values written as stored)."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params.items())


# --- the multi-map ------------------------------------------------------------------------------------


def _check_line(name: str, value: str) -> None:
    if name not in _KEYS and not TOKEN.fullmatch(name):
        raise ValueError(f"bad header name {name!r}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header value for {name} contains CR, LF or NUL")


class Headers:
    """Ordered header lines; lookups ignore case and accept compact forms."""

    __slots__ = ("_entries",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        # (key, name as written on the wire, value); names we know are kept in canonical spelling.
        self._entries: list[tuple[str, str, str]] = []
        if items is not None:
            pairs = items.items() if isinstance(items, Mapping) else items
            for name, value in pairs:
                self.add(name, value)

    @classmethod
    def _from_entries(cls, entries: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._entries = entries
        return headers

    def _entry(self, name: str, value: str) -> tuple[str, str, str]:
        name = name.strip(_WS)
        value = value.strip(_WS)
        _check_line(name, value)
        key = header_key(name)
        return key, _CANONICAL.get(key, name), value

    def get(self, name: str) -> str | None:
        """The first value (the first element, for a list header), or None."""
        key = header_key(name)
        for entry_key, _, value in self._entries:
            if entry_key == key:
                if key in LIST_HEADERS:
                    elements = split_list(value)
                    if not elements:
                        continue
                    return elements[0]
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value in order; list headers are split into their comma-separated elements."""
        key = header_key(name)
        values = [value for entry_key, _, value in self._entries if entry_key == key]
        if key in LIST_HEADERS:
            return [element for value in values for element in split_list(value)]
        return values

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a line, or with first=True put it above the existing lines of that name (a new top Via)."""
        entry = self._entry(name, value)
        if first:
            for index, (key, _, _) in enumerate(self._entries):
                if key == entry[0]:
                    self._entries.insert(index, entry)
                    return
            self._entries.insert(0, entry)
        else:
            self._entries.append(entry)

    def set(self, name: str, value: str) -> None:
        """Replace every line of that name by one line, where the first one was (else at the end)."""
        entry = self._entry(name, value)
        key = entry[0]
        kept: list[tuple[str, str, str]] = []
        placed = False
        for existing in self._entries:
            if existing[0] == key:
                if not placed:
                    kept.append(entry)
                    placed = True
            else:
                kept.append(existing)
        if not placed:
            kept.append(entry)
        self._entries = kept

    def remove(self, name: str) -> None:
        """Remove every line of that name (no error when absent)."""
        key = header_key(name)
        self._entries = [entry for entry in self._entries if entry[0] != key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(entry[0] == key for entry in self._entries)

    def items(self) -> list[tuple[str, str]]:
        """(name, value) per line, in order, as they will be written."""
        return [(name, value) for _, name, value in self._entries]

    def copy(self) -> Headers:
        return Headers._from_entries(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._entries] == [(k, v) for k, _, v in other._entries]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


# --- typed values -------------------------------------------------------------------------------------


def _parse_uint(text: str, max_digits: int, what: str) -> int:
    if not (0 < len(text) <= max_digits and text.isascii() and text.isdigit()):
        raise ParseError(f"bad {what}: {text[:40]!r}")
    return int(text)


def _find_ws(text: str) -> int:
    """Index of the first space or tab, or -1."""
    space, tab = text.find(" "), text.find("\t")
    if space < 0:
        return tab
    if tab < 0:
        return space
    return min(space, tab)


@dataclass
class Via:
    """One Via element: `SIP/2.0/<transport> <host>[:<port>];params`."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.transport = self.transport.upper()

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """None when absent, -1 when present without a value (a request for RFC 3581), else the port."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        if value is None:
            return -1
        port = _parse_uint(value, 5, "rport")
        if port > 65535:
            raise ParseError(f"rport out of range: {port}")
        return port

    @property
    def sent_by(self) -> str:
        """host[:port] as it appears in the Via (IPv6 bracketed)."""
        host = _format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """One Via element (not a comma-separated list); LWS around '/', ':', ';' and '=' is allowed."""
    if text.startswith("SIP/2.0/"):
        rest = text[8:]
    else:
        first_slash = text.find("/")
        second_slash = text.find("/", first_slash + 1)
        if first_slash < 0 or second_slash < 0:
            raise ParseError(f"bad Via {text[:80]!r}")
        protocol = text[:first_slash].strip(_WS)
        version = text[first_slash + 1 : second_slash].strip(_WS)
        if protocol.upper() != "SIP" or version != "2.0":
            raise ParseError(f"Via with unsupported protocol {protocol[:20]}/{version[:20]}")
        rest = text[second_slash + 1 :].lstrip(_WS)
    space = _find_ws(rest)
    if space < 0:
        raise ParseError(f"Via without sent-by: {text[:80]!r}")
    transport = rest[:space]
    if not TOKEN.fullmatch(transport):
        raise ParseError(f"bad Via transport {transport[:20]!r}")
    rest = rest[space:]
    semi = rest.find(";")
    sent_by = (rest if semi < 0 else rest[:semi]).strip(_WS)
    if " " in sent_by or "\t" in sent_by:
        host_part, colon, port_part = sent_by.rpartition(":")
        if not colon or "]" in port_part:
            raise ParseError(f"bad Via sent-by {sent_by[:80]!r}")
        sent_by = f"{host_part.rstrip(_WS)}:{port_part.lstrip(_WS)}"
    host, port = _split_hostport(sent_by)
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    return Via(transport.upper(), host, port, params)


@dataclass
class NameAddr:
    """A From/To/Contact/Route-style value: optional display name, URI, header parameters."""

    display: str | None
    uri: URI
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        prefix = f"{quote(self.display)} " if self.display else ""
        return f"{prefix}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """`"Display" <uri>;params`, `Display <uri>;params`, `<uri>;params` or the addr-spec `uri;params`.

    In the addr-spec form everything after the first ';' is a header parameter (RFC 3261 §20), and a URI
    containing ',', '?' or ';' must be in angle brackets."""
    text = text.strip(_WS)
    display: str | None = None
    if text.startswith('"'):
        end = _end_of_quoted(text, 0)
        display = unquote(text[:end])
        rest = text[end:].lstrip(_WS)
        if not rest.startswith("<"):
            raise ParseError(f"quoted display name not followed by <uri> in {text[:80]!r}")
        open_angle = 0
        text = rest
    else:
        open_angle = text.find("<")
    if open_angle >= 0:
        if display is None:
            plain = text[:open_angle].strip(_WS)
            if not _PLAIN_DISPLAY.fullmatch(plain):
                raise ParseError(f"display name needs quotes: {plain[:80]!r}")
            display = plain or None
        close_angle = text.find(">", open_angle)
        if close_angle < 0:
            raise ParseError(f"unterminated <uri> in {text[:80]!r}")
        uri = parse_uri(text[open_angle + 1 : close_angle].strip(_WS))
        rest = text[close_angle + 1 :].lstrip(_WS)
        if rest and not rest.startswith(";"):
            raise ParseError(f"junk after <uri>: {rest[:80]!r}")
        params = parse_params(rest) if rest else {}
        return NameAddr(display, uri, params)
    semi = text.find(";")
    uri_text = (text if semi < 0 else text[:semi]).rstrip(_WS)
    if "?" in uri_text or "," in uri_text:
        raise ParseError(f"URI with ',' or '?' must be in <...>: {uri_text[:80]!r}")
    uri = parse_uri(uri_text)
    params = parse_params(text[semi:]) if semi >= 0 else {}
    return NameAddr(None, uri, params)


@dataclass
class CSeq:
    """`CSeq: <number> <method>`."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    """The number must fit 32 bits unsigned (RFC 3261 §8.1.1.5); the method is a token."""
    text = text.strip(_WS)
    space = _find_ws(text)
    if space < 0:
        raise ParseError(f"bad CSeq {text[:80]!r}")
    number = _parse_uint(text[:space], 10, "CSeq number")
    if number >= 2**32:
        raise ParseError(f"CSeq number too large: {number}")
    method = text[space:].lstrip(_WS)
    if not TOKEN.fullmatch(method):
        raise ParseError(f"bad CSeq method {method[:40]!r}")
    return CSeq(number, method)
