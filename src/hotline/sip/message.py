"""SIP requests and responses: parse, build, serialize (RFC 3261 §7, §8.2.6, §18.3, §20).

- `parse(data, *, max_size=65536) -> Request | Response`: one whole message (a UDP datagram, or one frame
  from `StreamFramer`). Tolerates what real phones send: lower-case or compact header names, spaces
  around ':', folded lines, LF-only line endings, leading CRLFs, trailing whitespace, repeated spaces in
  the start line, a missing Max-Forwards. Rejects, with `ParseError`: a header block that is not UTF-8 or
  holds control characters, a missing or repeated mandatory header, a CSeq whose method differs from the
  request's, a bad Content-Length or one larger than the bytes present (bytes beyond it are dropped), an
  unsupported version (505), a Request-URI scheme other than sip/sips/tel (416), more than `max_size`
  bytes (513). Typed header values are parsed only when their accessor is read.
- `Request(method, uri, headers, body, version)`, `Response(status, reason, headers, body, version)`:
  accessors `.call_id .cseq .vias .via .from_ .to .contacts .contact_wildcard .max_forwards .content_type
  .expires` (raise `ParseError` if that header is missing or malformed), `.validate()` (reads all of them),
  `.encode()` (Content-Length always written from the body), `.copy()`.
- `StreamFramer().feed(data) -> list[bytes]`: whole messages out of a TCP/TLS byte stream.
- `make_response(request, status, reason=None, *, to_tag=None, headers=None, body=b"")`, `REASONS`,
  `new_branch()`, `new_tag()`, `new_call_id()`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from hotline.sip.errors import ParseError
from hotline.sip.headers import (
    _CANONICAL,
    _KNOWN,
    TOKEN,
    CSeq,
    Headers,
    NameAddr,
    Via,
    _parse_uint,
    header_key,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from hotline.sip.uri import URI, AbsoluteURI, SipURI, TelURI, parse_uri

__all__ = [
    "KNOWN_METHODS",
    "MAX_MESSAGE_SIZE",
    "REASONS",
    "Request",
    "Response",
    "StreamFramer",
    "make_response",
    "new_branch",
    "new_call_id",
    "new_tag",
    "parse",
]

MAX_MESSAGE_SIZE = 65536
"""Largest message accepted by default: a UDP datagram cannot be larger, and no sane SIP message is."""

SIP_VERSION = "SIP/2.0"
BRANCH_MAGIC_COOKIE = "z9hG4bK"
KNOWN_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}
_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirected", 4: "Client Error", 5: "Server Error", 6: "Failure"}

_WS = " \t"
# Control characters are illegal in a header block (TAB and the LF separating lines excepted); checked
# after CRLF has become LF, so a bare CR is caught too.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Bytes that need no scrutiny in a header block: all but CR, LF and the control characters (TAB is fine).
_PLAIN_BYTES = bytes(byte for byte in range(256) if byte == 9 or 32 <= byte != 127)
_MANDATORY = ("via", "from", "to", "call-id", "cseq")
_SINGLE = frozenset({"from", "to", "call-id", "cseq", "content-length", "max-forwards", "content-type"})
_TRACKED = _SINGLE | {"via"}
_CONTENT_LENGTH_INITIALS = (b"c", b"C", b"l", b"L")
_RESPONSE_COPIED = frozenset({"via", "from", "to", "call-id", "cseq"})


def new_branch() -> str:
    """A Via branch, unique over space and time, with the RFC 3261 magic cookie."""
    return BRANCH_MAGIC_COOKIE + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(8)


def new_call_id() -> str:
    return secrets.token_hex(16)


class _Message:
    """Typed accessors shared by requests and responses; each parses its header on every read."""

    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        value = self._required("Call-ID")
        if not value or " " in value or "\t" in value:
            raise ParseError(f"bad Call-ID {value[:80]!r}")
        return value

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @property
    def vias(self) -> list[Via]:
        values = self.headers.get_all("Via")
        if not values:
            raise ParseError("missing Via header")
        return [parse_via(value) for value in values]

    @property
    def via(self) -> Via:
        """The top Via."""
        return parse_via(self._required("Via"))

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self._required("From"))

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self._required("To"))

    @property
    def contact_wildcard(self) -> bool:
        """True for `Contact: *` (a REGISTER removing every binding)."""
        return self.headers.get_all("Contact") == ["*"]

    @property
    def contacts(self) -> list[NameAddr]:
        """Every Contact; empty when absent or for `Contact: *` (see `contact_wildcard`)."""
        values = self.headers.get_all("Contact")
        if values == ["*"]:
            return []
        if "*" in values:
            raise ParseError("Contact: * mixed with other contacts")
        return [parse_name_addr(value) for value in values]

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        hops = _parse_uint(value, 10, "Max-Forwards")
        if hops > 255:
            raise ParseError(f"Max-Forwards out of range: {hops}")
        return hops

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased and without parameters ("application/sdp"); None when absent."""
        value = self.headers.get("Content-Type")
        if value is None:
            return None
        media_type, _, subtype = value.partition(";")[0].partition("/")
        media_type, subtype = media_type.strip(_WS), subtype.strip(_WS)
        if not TOKEN.fullmatch(media_type) or not TOKEN.fullmatch(subtype):
            raise ParseError(f"bad Content-Type {value[:80]!r}")
        return f"{media_type}/{subtype}".lower()

    @property
    def expires(self) -> int | None:
        """Expires in seconds; values beyond 2**32-1 are clamped to it (RFC 3261 §20.19)."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        if len(value) > 10 and value.isascii() and value.isdigit():
            return 2**32 - 1
        return min(_parse_uint(value, 10, "Expires"), 2**32 - 1)

    def validate(self) -> None:
        """Read every typed accessor once, so later reads cannot fail; ParseError carries this message."""
        try:
            _ = (self.call_id, self.cseq, self.vias, self.from_, self.to, self.contacts)
            _ = (self.max_forwards, self.content_type, self.expires)
        except ParseError as error:
            assert isinstance(self, Request | Response)
            error.message = self
            raise

    def _encode(self, start_line: str) -> bytes:
        body = self.body
        lines = [start_line]
        length_written = False
        for key, name, value in self.headers._entries:
            if key == "content-length":
                if not length_written:
                    lines.append(f"Content-Length: {len(body)}")
                    length_written = True
            else:
                lines.append(f"{name}: {value}")
        if not length_written:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "replace") + body


@dataclass
class Request(_Message):
    method: str
    uri: URI
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def encode(self) -> bytes:
        return self._encode(f"{self.method} {self.uri} {self.version}")

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)


@dataclass
class Response(_Message):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = _default_reason(self.status)

    def encode(self) -> bytes:
        return self._encode(f"{self.version} {self.status} {self.reason}")

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)


def _default_reason(status: int) -> str:
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


# --- parsing ------------------------------------------------------------------------------------------


def _find_header_end(data: bytes | bytearray, start: int) -> tuple[int, int]:
    """(end of the header block, start of the body), or (-1, -1) when the empty line is not there yet.

    Lines may end in CRLF or a bare LF; the earliest empty line wins."""
    crlf = data.find(b"\n\r\n", start)
    limit = len(data) if crlf < 0 else crlf + 1
    lf = data.find(b"\n\n", start, limit)
    if lf >= 0:
        end, body_start = lf, lf + 2
    elif crlf >= 0:
        end, body_start = crlf, crlf + 3
    else:
        return -1, -1
    if end > 0 and data[end - 1] == 13:
        end -= 1
    return end, body_start


def _parse_headers(lines: list[str]) -> list[tuple[str, str, str]]:
    entries: list[tuple[str, str, str]] = []
    append = entries.append
    known_name = _KNOWN.get
    folded: dict[int, list[str]] = {}  # entry index -> its continuation lines, joined once at the end
    for line in islice(lines, 1, None):
        name, colon, value = line.partition(":")
        known = known_name(name)
        if known is not None and colon:  # the common case: a header name we know, no space before ':'
            append((known[0], known[1], value.strip(_WS)))
            continue
        if line[0] == " " or line[0] == "\t":
            # a folded continuation (RFC 3261 §7.3.1): joined to the previous line with one space
            if not entries:
                raise ParseError("continuation line before any header")
            extra = line.strip(_WS)
            if extra:
                folded.setdefault(len(entries) - 1, []).append(extra)
            continue
        if not colon:
            raise ParseError(f"header line without a colon: {line[:80]!r}")
        name = name.rstrip(_WS)
        known = known_name(name)
        if known is None:
            if not TOKEN.fullmatch(name):
                raise ParseError(f"bad header name {name[:80]!r}")
            lower = name.lower()
            known = _KNOWN.get(lower) or (lower, name)
        append((known[0], known[1], value.strip(_WS)))
    for index, extras in folded.items():
        key, name, value = entries[index]
        entries[index] = (key, name, " ".join([value, *extras] if value else extras))
    return entries


def _parse_request_line(line: str) -> tuple[str, URI, ParseError | None]:
    """(method, uri, the error to raise once the headers are known, if any)."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        parts = [part for part in parts if part]
    placeholder = AbsoluteURI("", parts[1] if len(parts) > 1 else "")
    if len(parts) != 3:
        return parts[0] if parts else "", placeholder, ParseError(f"malformed request line {line[:80]!r}")
    method, uri_text, version = parts
    if not TOKEN.fullmatch(method):
        return method, placeholder, ParseError(f"bad method {method[:40]!r}")
    if version.upper() != SIP_VERSION:
        if version[:4].upper() == "SIP/":
            return method, placeholder, ParseError(f"SIP version {version[:20]} not supported", 505)
        return method, placeholder, ParseError(f"malformed request line {line[:80]!r}")
    try:
        uri = parse_uri(uri_text)
    except ParseError as error:
        return method, placeholder, error
    if not isinstance(uri, SipURI | TelURI):
        return method, uri, ParseError(f"URI scheme {uri.scheme[:20]!r} not supported", 416)
    if isinstance(uri, SipURI) and uri.headers:
        return method, uri, ParseError("headers are not allowed in a Request-URI")
    return method, uri, None


def _parse_status_line(line: str) -> tuple[int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.lstrip(" ").partition(" ")
    if version.upper() != SIP_VERSION:
        raise ParseError(f"SIP version {version[:20]} not supported", 505)
    if not (len(code) == 3 and code.isascii() and code.isdigit() and "1" <= code[0] <= "6"):
        raise ParseError(f"bad status code {code[:20]!r}")
    return int(code), reason.strip(_WS)


def parse(data: bytes, *, max_size: int = MAX_MESSAGE_SIZE) -> Request | Response:
    """One whole SIP message → Request or Response; ParseError for anything malformed."""
    if len(data) > max_size:
        raise ParseError(f"message of {len(data)} bytes exceeds {max_size}", 513)
    start = 0
    if data[:1] == b"\r" or data[:1] == b"\n":
        start = len(data) - len(data.lstrip(b"\r\n"))  # CRLFs before the start line are ignored (§7.5)
    if start == len(data):
        raise ParseError("empty message")
    head_end, body_start = _find_header_end(data, start)
    if head_end < 0:
        raise ParseError("no empty line after the header block")
    head_bytes = data[start:head_end]
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("header block is not valid UTF-8") from None
    if head_bytes.translate(None, _PLAIN_BYTES).replace(b"\r\n", b""):
        # LF-only line ends, a bare CR or a control character: the slow path sorts out which
        if "\r" in head:
            head = head.replace("\r\n", "\n")
        if _CONTROL.search(head):
            raise ParseError("control character in header block")
        lines = head.split("\n")
    else:
        lines = head.split("\r\n")
    start_line = lines[0]
    if not start_line or start_line[0] == " " or start_line[0] == "\t":
        raise ParseError("start line missing or indented")

    message: Request | Response
    deferred: ParseError | None = None
    if start_line[:4].upper() == "SIP/":
        status, reason = _parse_status_line(start_line)
        message = Response(status, reason, Headers._from_entries(_parse_headers(lines)))
    else:
        method, uri, deferred = _parse_request_line(start_line)
        message = Request(method, uri, Headers._from_entries(_parse_headers(lines)))

    try:
        if deferred is not None:
            raise deferred
        message.body = _body(data, body_start, _check_headers(message))
    except ParseError as error:
        error.message = message
        raise
    return message


def _check_headers(message: Request | Response) -> str | None:
    """Mandatory headers present, single ones not repeated, CSeq sane; returns the Content-Length text."""
    first: dict[str, str] = {}
    for key, name, value in message.headers._entries:
        if key in _TRACKED:
            if key not in first:
                first[key] = value
            elif key in _SINGLE:
                raise ParseError(f"more than one {name} header")
    for key in _MANDATORY:
        if key not in first:
            raise ParseError(f"missing {_CANONICAL[key]} header")
    cseq = parse_cseq(first["cseq"])
    if isinstance(message, Request) and cseq.method != message.method:
        # RFC 4475 §3.4.2: an unknown method is reported as such even when the CSeq disagrees
        status = 400 if message.method in KNOWN_METHODS else 501
        raise ParseError(f"CSeq method {cseq.method[:40]} does not match {message.method[:40]}", status)
    return first.get("content-length")


def _body(data: bytes, body_start: int, length_text: str | None) -> bytes:
    if length_text is None:
        return data[body_start:]
    length = _parse_uint(length_text, 10, "Content-Length")
    available = len(data) - body_start
    if length > available:
        raise ParseError(f"Content-Length {length} exceeds the {available} body bytes present")
    if length == available:
        return data[body_start:]
    return data[body_start : body_start + length]


# --- TCP/TLS framing ----------------------------------------------------------------------------------


def _stream_content_length(head: bytes) -> int:
    """Content-Length from a raw header block; required on streams (RFC 3261 §18.3)."""
    values: list[list[str]] = []  # each Content-Length line with its continuation lines
    in_content_length = False
    for raw_line in head.split(b"\n"):
        first = raw_line[:1]
        if first == b" " or first == b"\t":
            if in_content_length:
                values[-1].append(raw_line.decode("latin-1").strip(_WS + "\r"))
            continue
        in_content_length = False
        if first not in _CONTENT_LENGTH_INITIALS:
            continue
        line = raw_line.decode("latin-1").rstrip("\r")
        colon = line.find(":")
        if colon > 0 and header_key(line[:colon].strip(_WS)) == "content-length":
            in_content_length = True
            values.append([line[colon + 1 :].strip(_WS)])
    if not values:
        raise ParseError("Content-Length is required on a stream transport")
    texts = {" ".join(part for part in parts if part) for parts in values}
    if len(texts) > 1:
        raise ParseError("conflicting Content-Length headers")
    return _parse_uint(texts.pop(), 10, "Content-Length")


class StreamFramer:
    """Cuts a TCP/TLS byte stream into whole messages by Content-Length (RFC 3261 §18.3).

    CRLFs between messages are skipped; each CRLFCRLF among them counts in `keepalive_pings` (RFC 5626
    §3.5.1: answer each with one CRLF). Framing errors are fatal to the stream: `feed` raises ParseError
    (status 513 for a header block over `max_header_size` or a message over `max_message_size`, else 400)
    and every later call raises it again; messages completed before the error in the same call are still
    returned, and the error (also in `.error`) is raised by the next call.
    """

    def __init__(
        self, *, max_header_size: int = MAX_MESSAGE_SIZE, max_message_size: int = MAX_MESSAGE_SIZE
    ) -> None:
        self.max_header_size = max_header_size
        self.max_message_size = max_message_size
        self.keepalive_pings = 0
        self.error: ParseError | None = None
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already searched for the end of the header block
        self._frame_length = -1  # length of the message at the front, once its header block is known
        self._gap = b""  # CR/LF bytes seen since the last message, for counting pings

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            raise self.error
        self._buffer += data
        messages: list[bytes] = []
        try:
            while (message := self._next_message()) is not None:
                messages.append(message)
        except ParseError as error:
            self.error = error
            if not messages:
                raise
        return messages

    def _skip_keepalives(self) -> None:
        buffer = self._buffer
        if not buffer or buffer[0] not in (13, 10):
            return
        skipped = len(buffer) - len(buffer.lstrip(b"\r\n"))
        run = self._gap + bytes(buffer[:skipped])
        self.keepalive_pings += run.count(b"\r\n\r\n")
        last = run.rfind(b"\r\n\r\n")
        self._gap = bytes((run if last < 0 else run[last + 4 :])[-3:])
        del buffer[:skipped]
        self._searched = 0

    def _next_message(self) -> bytes | None:
        buffer = self._buffer
        if self._frame_length < 0:
            self._skip_keepalives()
            if not buffer:
                return None
            head_end, body_start = _find_header_end(buffer, max(0, self._searched - 3))
            if head_end < 0:
                if len(buffer) > self.max_header_size:
                    raise ParseError(f"header block exceeds {self.max_header_size} bytes", 513)
                self._searched = len(buffer)
                return None
            if head_end > self.max_header_size:
                raise ParseError(f"header block exceeds {self.max_header_size} bytes", 513)
            length = body_start + _stream_content_length(bytes(buffer[:head_end]))
            if length > self.max_message_size:
                raise ParseError(f"message of {length} bytes exceeds {self.max_message_size}", 513)
            self._frame_length = length
            self._gap = b""
        if len(buffer) < self._frame_length:
            return None
        message = bytes(buffer[: self._frame_length])
        del buffer[: self._frame_length]
        self._frame_length = -1
        self._searched = 0
        return message


# --- responses ----------------------------------------------------------------------------------------


def _has_tag(to_value: str) -> bool:
    try:
        return parse_name_addr(to_value).tag is not None
    except ParseError:
        return ";tag=" in to_value.lower().replace(" ", "")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Headers | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to `request` per RFC 3261 §8.2.6: Via (all, in order), From, To (with `to_tag` added
    when it has none), Call-ID and CSeq copied; Timestamp copied into a 100. `headers` are added after."""
    if not 100 <= status <= 699:
        raise ValueError(f"status out of range: {status}")
    if to_tag is not None and not TOKEN.fullmatch(to_tag):
        raise ValueError(f"bad tag {to_tag!r}")
    entries: list[tuple[str, str, str]] = []
    for entry in request.headers._entries:
        key = entry[0]
        if key in _RESPONSE_COPIED:
            if key == "to" and to_tag is not None and not _has_tag(entry[2]):
                entry = (key, entry[1], f"{entry[2]};tag={to_tag}")
            entries.append(entry)
        elif key == "timestamp" and status == 100:
            entries.append(entry)
    response = Response(status, reason or _default_reason(status), Headers._from_entries(entries), body)
    if headers is not None:
        pairs = headers.items() if isinstance(headers, Headers | Mapping) else headers
        for name, value in pairs:
            response.headers.add(name, value)
    return response
