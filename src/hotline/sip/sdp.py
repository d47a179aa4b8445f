"""Session descriptions (RFC 4566) and the offer/answer model (RFC 3264), sans-IO.

Works on text and bytes only; it knows nothing of SIP messages.

Parsing and building
- ``parse_sdp(data: str | bytes) -> SessionDescription``; raises ``SdpError`` (a ``ValueError`` whose
  ``reason`` a 488 response can carry). CRLF or bare LF line endings; unknown line types are kept.
- ``SessionDescription``: ``version``, ``origin: Origin``, ``session_name``, ``connection: Connection|None``,
  ``timing``, ``attributes: list[Attribute]``, ``media: list[MediaDescription]``, ``extra_lines`` (i, u, e, p,
  b, r, z, k and unknown lines, verbatim). ``str(sd)`` / ``sd.encode()`` build the text (CRLF).
  ``effective_direction(media)`` and ``connection_for(media)`` resolve session-level defaults and the
  legacy ``c=0.0.0.0`` hold.
- ``MediaDescription``: ``media``, ``port``, ``protocol``, ``formats``, ``connection``, ``attributes`` (every
  ``a=`` line in order, verbatim, so WebRTC attributes survive a round trip) with typed views: ``rtpmap(pt)``,
  ``fmtp(pt)``, ``payload_formats()``, ``ptime``, ``maxptime``, ``direction``, ``rtcp``, ``rtcp_mux``,
  ``mid``.

Codecs
- ``Codec`` and the registry ``CODECS`` (PCMU, PCMA, G722, opus, telephone-event); ``codec_by_name(name)``.
- ``PayloadFormat``: one payload type as a description declares it (``payload_type``, ``encoding``,
  ``clock_rate``, ``channels``, ``fmtp``).

Offer/answer
- ``build_offer(codecs, address, port, *, direction, ptime, ...) -> SessionDescription``.
- ``answer(offer, codecs, address, port, *, direction, prefer_local_order, previous, ...)
  -> SessionDescription``; raises ``NegotiationError`` (an ``SdpError``, status 488) when no audio stream
  can be accepted.
- ``reoffer(previous, *, direction, address, port)``, ``hold_offer(previous)``, ``resume_offer(previous)``:
  new offers in the same session with the version incremented.
- ``negotiated_audio(remote, local=None) -> NegotiatedAudio``: what the media layer needs (remote address and
  port, payload type → codec, telephone-event payload type, ptime, direction from our side).
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "CODECS",
    "G722",
    "OPUS",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NegotiatedAudio",
    "NegotiationError",
    "Origin",
    "PayloadFormat",
    "RtcpAddress",
    "SdpError",
    "SdpLine",
    "SessionDescription",
    "answer",
    "build_offer",
    "codec_by_name",
    "hold_offer",
    "negotiated_audio",
    "parse_sdp",
    "reoffer",
    "resume_offer",
]


class SdpError(ValueError):
    """A session description that cannot be parsed or accepted; ``reason`` suits a 488 reason/Warning."""

    status = 488

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NegotiationError(SdpError):
    """The offer has no audio stream we can accept (no common codec, unsupported protocol, ...)."""


class Direction(StrEnum):
    """Media direction attribute, seen from the side that wrote the description."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def from_flags(cls, sends: bool, receives: bool) -> Direction:
        if sends and receives:
            return cls.SENDRECV
        if sends:
            return cls.SENDONLY
        if receives:
            return cls.RECVONLY
        return cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end: sendonly becomes recvonly and vice versa."""
        return Direction.from_flags(self.receives, self.sends)

    def intersect(self, other: Direction) -> Direction:
        return Direction.from_flags(self.sends and other.sends, self.receives and other.receives)


_DIRECTIONS = {d.value: d for d in Direction}


# ----------------------------------------------------------------------------------------------------
# Lines and fields


@dataclass
class SdpLine:
    """A line kept verbatim: ``type`` is the letter before ``=``, ``value`` everything after it."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"


@dataclass
class Attribute:
    """``a=name:value`` (``value`` None for a flag such as ``a=rtcp-mux``), kept exactly as written."""

    name: str
    value: str | None = None

    @property
    def key(self) -> str:
        return self.name.strip().lower()

    def __str__(self) -> str:
        return f"a={self.name}" if self.value is None else f"a={self.name}:{self.value}"


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


@dataclass
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    address: str = "0.0.0.0"
    address_type: str = "IP4"
    network_type: str = "IN"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


@dataclass
class Connection:
    """``c=<nettype> <addrtype> <address>[/<ttl>][/<count>]``; the multicast suffix is kept as written."""

    address: str
    address_type: str = "IP4"
    network_type: str = "IN"
    multicast_suffix: str | None = None

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, _address_type(address))

    @property
    def is_legacy_hold(self) -> bool:
        """RFC 2543 hold: a zero address means "send me nothing" (RFC 3264 §8.4 says we must honour it)."""
        return self.address == "0.0.0.0"

    def __str__(self) -> str:
        suffix = f"/{self.multicast_suffix}" if self.multicast_suffix is not None else ""
        return f"{self.network_type} {self.address_type} {self.address}{suffix}"


@dataclass(frozen=True)
class RtcpAddress:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605)."""

    port: int
    address: str | None = None


# ----------------------------------------------------------------------------------------------------
# Codecs


@dataclass(frozen=True)
class Codec:
    """A codec we know: its SDP name, RTP clock rate and channels, and how we advertise it."""

    name: str
    clock_rate: int
    channels: int = 1
    static_payload_type: int | None = None
    # Dynamic payload type we pick in offers when free; peers commonly use these numbers.
    preferred_payload_type: int | None = None
    # Audio sampling rate; differs from the RTP clock rate for G.722 (RFC 3551 §4.5.2).
    sample_rate: int = 8000
    fmtp: str | None = None

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == "telephone-event"

    def matches(self, fmt: PayloadFormat) -> bool:
        return (
            fmt.encoding.lower() == self.name.lower()
            and fmt.clock_rate == self.clock_rate
            and fmt.channels == self.channels
        )

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.name}/{self.clock_rate}{tail}"


PCMU = Codec("PCMU", 8000, static_payload_type=0)
PCMA = Codec("PCMA", 8000, static_payload_type=8)
G722 = Codec("G722", 8000, static_payload_type=9, sample_rate=16000)
OPUS = Codec(
    "opus",
    48000,
    channels=2,
    preferred_payload_type=111,
    sample_rate=48000,
    fmtp="minptime=10;useinbandfec=1",
)
TELEPHONE_EVENT = Codec("telephone-event", 8000, preferred_payload_type=101, fmtp="0-16")

CODECS: dict[str, Codec] = {c.name.lower(): c for c in (PCMU, PCMA, G722, OPUS, TELEPHONE_EVENT)}

# RFC 3551 table 4: static payload types usable without an rtpmap line.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}


def codec_by_name(name: str) -> Codec:
    """``"PCMU"``, ``"pcma/8000"``, ``"opus/48000/2"``, ``"telephone-event"`` → the registry entry.

    ``telephone-event/<rate>`` gives a telephone-event codec at that clock rate (RFC 4733 wants the audio
    codec's rate). Raises ``ValueError`` for a codec we do not implement.
    """
    base, _, rest = name.strip().partition("/")
    codec = CODECS.get(base.lower())
    if codec is None:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(str(c) for c in CODECS.values())}")
    if not rest:
        return codec
    rate_text, _, channels_text = rest.partition("/")
    try:
        rate = int(rate_text)
        channels = int(channels_text) if channels_text else 1
    except ValueError:
        raise ValueError(f"bad codec name {name!r}") from None
    if codec.is_telephone_event and rate > 0 and channels == 1:
        return dataclasses.replace(codec, clock_rate=rate, sample_rate=rate)
    if rate != codec.clock_rate or channels != codec.channels:
        raise ValueError(f"unsupported codec variant {name!r}; we implement {codec}")
    return codec


def _as_codec(codec: str | Codec) -> Codec:
    return codec if isinstance(codec, Codec) else codec_by_name(codec)


@dataclass(frozen=True)
class PayloadFormat:
    """One RTP payload type as a description declares it (rtpmap, or the static table)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def codec(self) -> Codec | None:
        """Our registry entry for this format, or None when we do not implement it."""
        known = CODECS.get(self.encoding.lower())
        if known is None:
            return None
        if known.is_telephone_event:
            if self.channels != 1:
                return None
            return (
                known
                if known.clock_rate == self.clock_rate
                else dataclasses.replace(known, clock_rate=self.clock_rate, sample_rate=self.clock_rate)
            )
        return known if known.matches(self) else None

    @property
    def is_telephone_event(self) -> bool:
        return self.encoding.lower() == "telephone-event"

    def same_codec(self, other: PayloadFormat) -> bool:
        return (
            self.encoding.lower() == other.encoding.lower()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.encoding}/{self.clock_rate}{tail}"


def _parse_rtpmap(value: str) -> PayloadFormat:
    pt_text, _, spec = value.strip().partition(" ")
    parts = spec.strip().split("/")
    try:
        payload_type = int(pt_text)
        if not 0 <= payload_type <= 127 or len(parts) not in (2, 3) or not parts[0]:
            raise ValueError
        clock_rate = int(parts[1])
        channels = int(parts[2]) if len(parts) == 3 else 1
        if clock_rate <= 0 or channels <= 0:
            raise ValueError
    except ValueError:
        raise SdpError(f"malformed rtpmap attribute {value!r}") from None
    return PayloadFormat(payload_type, parts[0], clock_rate, channels)


def _parse_rtcp(value: str) -> RtcpAddress:
    parts = value.split()
    try:
        port = int(parts[0])
        if not 0 <= port <= 65535 or len(parts) not in (1, 4):
            raise ValueError
    except (ValueError, IndexError):
        raise SdpError(f"malformed rtcp attribute {value!r}") from None
    return RtcpAddress(port, parts[3] if len(parts) == 4 else None)


def _parse_milliseconds(name: str, value: str) -> int:
    try:
        number = float(value.strip())
    except ValueError:
        raise SdpError(f"malformed {name} attribute {value!r}") from None
    if not 0 < number < 100_000:
        raise SdpError(f"malformed {name} attribute {value!r}")
    return max(1, round(number))


# ----------------------------------------------------------------------------------------------------
# Attribute lists


class _AttributeList:
    """Typed views over a list of ``Attribute`` that keep every other line where it was."""

    attributes: list[Attribute]

    def attribute(self, name: str) -> Attribute | None:
        key = name.lower()
        return next((a for a in self.attributes if a.key == key), None)

    def attribute_values(self, name: str) -> list[str]:
        key = name.lower()
        return [a.value or "" for a in self.attributes if a.key == key]

    def has_attribute(self, name: str) -> bool:
        return self.attribute(name) is not None

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace the first ``name`` attribute in place (dropping later ones), or append it."""
        key = name.lower()
        for index, attr in enumerate(self.attributes):
            if attr.key == key:
                self.attributes[index] = Attribute(name, value)
                self.attributes[index + 1 :] = [a for a in self.attributes[index + 1 :] if a.key != key]
                return
        self.attributes.append(Attribute(name, value))

    def remove_attribute(self, name: str) -> None:
        key = name.lower()
        self.attributes[:] = [a for a in self.attributes if a.key != key]

    @property
    def direction(self) -> Direction | None:
        """The explicit direction attribute at this level, None when absent."""
        return next((_DIRECTIONS[a.key] for a in self.attributes if a.key in _DIRECTIONS), None)

    @direction.setter
    def direction(self, value: Direction | None) -> None:
        for index, attr in enumerate(self.attributes):
            if attr.key in _DIRECTIONS:
                rest = [a for a in self.attributes[index + 1 :] if a.key not in _DIRECTIONS]
                head = self.attributes[:index]
                self.attributes[:] = [*head, Attribute(value.value), *rest] if value else [*head, *rest]
                return
        if value is not None:
            self.attributes.append(Attribute(value.value))


# ----------------------------------------------------------------------------------------------------
# Media and session


@dataclass
class MediaDescription(_AttributeList):
    """One ``m=`` section. ``formats`` are the format tokens as written (payload type numbers for RTP)."""

    media: str
    port: int
    protocol: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    extra_lines: list[SdpLine] = field(default_factory=list)

    @property
    def is_rejected(self) -> bool:
        return self.port == 0

    def rtpmap(self, payload_type: int) -> PayloadFormat | None:
        """The format a payload type stands for: its rtpmap line, else the RFC 3551 static table."""
        for value in self.attribute_values("rtpmap"):
            fmt = _parse_rtpmap(value)
            if fmt.payload_type == payload_type:
                return dataclasses.replace(fmt, fmtp=self.fmtp(payload_type))
        static = _STATIC_PAYLOAD_TYPES.get(payload_type)
        if static is None:
            return None
        return PayloadFormat(payload_type, *static, fmtp=self.fmtp(payload_type))

    def fmtp(self, payload_type: int | str) -> str | None:
        wanted = str(payload_type)
        for value in self.attribute_values("fmtp"):
            fmt, _, params = value.strip().partition(" ")
            if fmt == wanted:
                return params.strip()
        return None

    def payload_formats(self) -> list[PayloadFormat]:
        """Every RTP format in ``m=`` order whose meaning is known (dynamic types need an rtpmap)."""
        result: list[PayloadFormat] = []
        for token in self.formats:
            if token.isdigit() and (fmt := self.rtpmap(int(token))) is not None:
                result.append(fmt)
        return result

    @property
    def ptime(self) -> int | None:
        attr = self.attribute("ptime")
        return _parse_milliseconds("ptime", attr.value or "") if attr else None

    @ptime.setter
    def ptime(self, value: int | None) -> None:
        if value is None:
            self.remove_attribute("ptime")
        else:
            self.set_attribute("ptime", str(value))

    @property
    def maxptime(self) -> int | None:
        attr = self.attribute("maxptime")
        return _parse_milliseconds("maxptime", attr.value or "") if attr else None

    @maxptime.setter
    def maxptime(self, value: int | None) -> None:
        if value is None:
            self.remove_attribute("maxptime")
        else:
            self.set_attribute("maxptime", str(value))

    @property
    def rtcp(self) -> RtcpAddress | None:
        attr = self.attribute("rtcp")
        return _parse_rtcp(attr.value or "") if attr else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attribute("rtcp-mux")

    @rtcp_mux.setter
    def rtcp_mux(self, value: bool) -> None:
        if not value:
            self.remove_attribute("rtcp-mux")
        elif not self.rtcp_mux:
            self.attributes.append(Attribute("rtcp-mux"))

    @property
    def mid(self) -> str | None:
        attr = self.attribute("mid")
        return attr.value if attr else None

    def lines(self) -> list[str]:
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        head = " ".join([self.media, str(port), self.protocol, *self.formats])
        ranked: list[tuple[int, int, str]] = [(0, -1, f"m={head}")]
        if self.connection is not None:
            ranked.append((_MEDIA_RANK["c"], -1, f"c={self.connection}"))
        for seq, line in enumerate(self.extra_lines):
            ranked.append((_MEDIA_RANK.get(line.type, _MEDIA_UNKNOWN_RANK), seq, str(line)))
        ranked.sort(key=lambda item: (item[0], item[1]))
        return [text for _, _, text in ranked] + [str(a) for a in self.attributes]


# Grammar order of RFC 4566 §5; lines of one rank keep their original order. Repeated t= and its r= lines
# share a rank so "t r t r" survives. Unknown line types go just before the attributes.
_SESSION_RANK = {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8, "t": 9, "r": 9}
_SESSION_RANK.update({"z": 10, "k": 11})
_SESSION_UNKNOWN_RANK = 12
_MEDIA_RANK = {"m": 0, "i": 1, "c": 2, "b": 3, "k": 4}
_MEDIA_UNKNOWN_RANK = 5


@dataclass
class SessionDescription(_AttributeList):
    """A whole session description. ``str()`` builds it with CRLF line endings."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: Connection | None = None
    timing: tuple[int, int] = (0, 0)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    extra_lines: list[SdpLine] = field(default_factory=list)
    version: int = 0

    def connection_for(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def effective_direction(self, media: MediaDescription) -> Direction:
        """Media-level attribute, else session-level, else sendrecv (RFC 3264 §5.1), with c=0.0.0.0 hold
        meaning the writer does not want to receive."""
        direction = media.direction or self.direction or Direction.SENDRECV
        connection = self.connection_for(media)
        # With ICE (WebRTC) 0.0.0.0 is only the placeholder before candidates (RFC 8839), not a hold.
        uses_ice = media.has_attribute("ice-ufrag") or self.has_attribute("ice-ufrag")
        if connection is not None and connection.is_legacy_hold and not uses_ice:
            direction = Direction.from_flags(direction.sends, False)
        return direction

    def audio(self) -> list[MediaDescription]:
        return [m for m in self.media if m.media.lower() == "audio"]

    def copy(self) -> SessionDescription:
        return copy.deepcopy(self)

    def lines(self) -> list[str]:
        ranked: list[tuple[int, int, str]] = [
            (0, -1, f"v={self.version}"),
            (1, -1, f"o={self.origin}"),
            (2, -1, f"s={self.session_name}"),
            (9, -1, f"t={self.timing[0]} {self.timing[1]}"),
        ]
        if self.connection is not None:
            ranked.append((_SESSION_RANK["c"], -1, f"c={self.connection}"))
        for seq, line in enumerate(self.extra_lines):
            ranked.append((_SESSION_RANK.get(line.type, _SESSION_UNKNOWN_RANK), seq, str(line)))
        ranked.sort(key=lambda item: (item[0], item[1]))
        result = [text for _, _, text in ranked] + [str(a) for a in self.attributes]
        for media in self.media:
            result.extend(media.lines())
        return result

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def encode(self) -> bytes:
        return str(self).encode("utf-8")


# ----------------------------------------------------------------------------------------------------
# Parsing


def _decode(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Some old phones put Latin-1 in s= or i=; the fields we act on are ASCII either way.
        return data.decode("latin-1")


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3 or not parts[2] or parts[2].startswith("/"):
        raise SdpError(f"malformed c= line {value!r}")
    address, slash, suffix = parts[2].partition("/")
    return Connection(address, parts[1], parts[0], suffix if slash else None)


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6 or not parts[2].isdigit():
        raise SdpError(f"malformed o= line {value!r}")
    return Origin(parts[0], parts[1], int(parts[2]), parts[5], parts[4], parts[3])


def _parse_media_line(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"malformed m= line {value!r}")
    port_text, slash, count_text = parts[1].partition("/")
    if not port_text.isdigit() or int(port_text) > 65535 or (slash and not count_text.isdigit()):
        raise SdpError(f"malformed port in m= line {value!r}")
    port = int(port_text)
    formats = parts[3:]
    if not formats and port != 0:
        raise SdpError(f"m= line without formats {value!r}")
    return MediaDescription(parts[0], port, parts[2], formats, int(count_text) if slash else None)


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name.strip():
        raise SdpError(f"malformed attribute line 'a={value}'")
    attr = Attribute(name, rest if colon else None)
    # Validate the attributes we interpret, so later typed access cannot fail.
    if attr.key == "rtpmap":
        _parse_rtpmap(attr.value or "")
    elif attr.key in ("ptime", "maxptime"):
        _parse_milliseconds(attr.key, attr.value or "")
    elif attr.key == "rtcp":
        _parse_rtcp(attr.value or "")
    elif attr.key == "fmtp" and not (attr.value or "").strip():
        raise SdpError("malformed fmtp attribute without a format")
    return attr


def parse_sdp(data: str | bytes) -> SessionDescription:
    """Parse a session description. Raises ``SdpError`` with a reason a 488 can carry."""
    text = _decode(data)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise SdpError("empty session description")
    if lines[0].strip() != "v=0":
        raise SdpError("session description must start with v=0")
    session = SessionDescription()
    seen_origin = seen_name = seen_timing = False
    media: MediaDescription | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isascii() or not line[0].isalpha():
            raise SdpError(f"malformed SDP line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            media = _parse_media_line(value)
            session.media.append(media)
        elif kind == "a":
            (media or session).attributes.append(_parse_attribute(value))
        elif kind == "v":
            raise SdpError("duplicate v= line")
        elif media is not None:
            if kind == "c" and media.connection is None:
                media.connection = _parse_connection(value)
            else:
                if kind == "c":
                    _parse_connection(value)
                media.extra_lines.append(SdpLine(kind, value))
        elif kind == "o":
            if seen_origin:
                raise SdpError("duplicate o= line")
            session.origin, seen_origin = _parse_origin(value), True
        elif kind == "s":
            if seen_name:
                raise SdpError("duplicate s= line")
            session.session_name, seen_name = value, True
        elif kind == "c" and session.connection is None:
            session.connection = _parse_connection(value)
        elif kind == "t" and not seen_timing:
            times = value.split()
            if len(times) != 2 or not all(t.isdigit() for t in times):
                raise SdpError(f"malformed t= line {value!r}")
            session.timing, seen_timing = (int(times[0]), int(times[1])), True
        else:
            session.extra_lines.append(SdpLine(kind, value))
    if not seen_origin:
        raise SdpError("missing o= line")
    return session


# ----------------------------------------------------------------------------------------------------
# Offer / answer


def _allocate_payload_types(codecs: Sequence[Codec]) -> list[int]:
    used = {c.static_payload_type for c in codecs if c.static_payload_type is not None}
    result: list[int] = []
    for codec in codecs:
        if codec.static_payload_type is not None:
            result.append(codec.static_payload_type)
            continue
        pt = codec.preferred_payload_type
        if pt is None or pt in used:
            pt = next((n for n in range(96, 128) if n not in used), None)
            if pt is None:
                raise ValueError("more than 32 dynamic codecs in one offer")
        used.add(pt)
        result.append(pt)
    return result


def _audio_media(
    port: int,
    protocol: str,
    formats: Sequence[PayloadFormat],
    *,
    direction: Direction,
    ptime: int | None,
    rtcp_mux: bool,
    mid: str | None = None,
) -> MediaDescription:
    media = MediaDescription("audio", port, protocol, [str(f.payload_type) for f in formats])
    if mid is not None:
        media.attributes.append(Attribute("mid", mid))
    for fmt in formats:
        media.attributes.append(Attribute("rtpmap", f"{fmt.payload_type} {fmt}"))
        if fmt.fmtp:
            media.attributes.append(Attribute("fmtp", f"{fmt.payload_type} {fmt.fmtp}"))
    if ptime is not None:
        media.attributes.append(Attribute("ptime", str(ptime)))
    if rtcp_mux:
        media.attributes.append(Attribute("rtcp-mux"))
    media.attributes.append(Attribute(direction.value))
    return media


def _new_session(
    address: str, *, username: str, session_id: str | None, session_name: str
) -> SessionDescription:
    # sess-id only needs to be unique per user; 62 random bits keep it a positive 64-bit number.
    sid = session_id if session_id is not None else str(secrets.randbits(62))
    return SessionDescription(
        origin=Origin(username, sid, 1, address, _address_type(address)),
        session_name=session_name,
        connection=Connection.for_address(address),
    )


def build_offer(
    codecs: Sequence[str | Codec],
    address: str,
    port: int,
    *,
    direction: Direction = Direction.SENDRECV,
    ptime: int | None = None,
    rtcp_mux: bool = False,
    protocol: str = "RTP/AVP",
    username: str = "hotline",
    session_id: str | None = None,
    session_name: str = "Hotline",
) -> SessionDescription:
    """An offer with one audio stream listing ``codecs`` in preference order (include ``"telephone-event"``
    to offer RFC 4733 DTMF)."""
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    known = [_as_codec(c) for c in codecs]
    formats = [
        PayloadFormat(pt, c.name, c.clock_rate, c.channels, c.fmtp)
        for pt, c in zip(_allocate_payload_types(known), known, strict=True)
    ]
    session = _new_session(address, username=username, session_id=session_id, session_name=session_name)
    session.media.append(
        _audio_media(port, protocol, formats, direction=direction, ptime=ptime, rtcp_mux=rtcp_mux)
    )
    return session


def _event_set(fmtp: str | None) -> set[int]:
    """RFC 4733 §2.4.1 event list ("0-15,66"); absent or unreadable means the default 0-15."""
    if not fmtp:
        return set(range(16))
    events: set[int] = set()
    try:
        for item in fmtp.replace(" ", "").split(","):
            low, dash, high = item.partition("-")
            first, last = int(low), int(high) if dash else int(low)
            if not 0 <= first <= last <= 255:
                raise ValueError
            events.update(range(first, last + 1))
    except ValueError:
        return set(range(16))
    return events


def _event_text(events: Iterable[int]) -> str:
    ordered = sorted(set(events))
    ranges: list[str] = []
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        ranges.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(ranges)


def _rejected(offered: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: port zero, and at least one format; the offer's formats are the safe choice.
    media = MediaDescription(offered.media, 0, offered.protocol, list(offered.formats) or ["0"])
    if offered.mid is not None:
        media.attributes.append(Attribute("mid", offered.mid))
    return media


def _format_list(formats: Iterable[object]) -> str:
    names = [str(f) for f in formats]
    return ", ".join(dict.fromkeys(names)) or "none"


def _choose_audio(
    offered: Sequence[PayloadFormat], ours: Sequence[Codec], prefer_local_order: bool
) -> list[PayloadFormat]:
    picks: list[tuple[int, PayloadFormat]] = []
    for fmt in offered:
        rank = next((i for i, codec in enumerate(ours) if codec.matches(fmt)), None)
        if rank is not None and not any(fmt.same_codec(p) for _, p in picks):
            picks.append((rank, fmt))
    if prefer_local_order:
        picks.sort(key=lambda item: item[0])
    # Our fmtp describes what we can receive; the offerer's opus/etc. parameters describe its side.
    return [dataclasses.replace(fmt, fmtp=ours[rank].fmtp) for rank, fmt in picks]


def _choose_telephone_event(
    offered: Sequence[PayloadFormat], ours: Codec | None, audio_clock_rate: int
) -> PayloadFormat | None:
    if ours is None:
        return None
    candidates = [f for f in offered if f.is_telephone_event and f.channels == 1]
    # RFC 4733 §2.1: events use the audio codec's clock; fall back to 8 kHz, which every DTMF peer knows.
    fmt = next((f for f in candidates if f.clock_rate == audio_clock_rate), None)
    fmt = fmt or next((f for f in candidates if f.clock_rate == 8000), None)
    if fmt is None:
        return None
    events = _event_set(fmt.fmtp) & _event_set(ours.fmtp)
    if not events:
        return None
    return dataclasses.replace(fmt, fmtp=_event_text(events))


def _with_next_version(
    session: SessionDescription, previous: SessionDescription | None
) -> SessionDescription:
    """RFC 3264 §8: same o= session id; the version goes up only when the description changed."""
    if previous is None:
        return session
    session.origin = dataclasses.replace(
        session.origin,
        username=previous.origin.username,
        session_id=previous.origin.session_id,
        session_version=previous.origin.session_version,
    )
    if session != previous:
        session.origin.session_version += 1
    return session


def answer(
    offer: SessionDescription,
    codecs: Sequence[str | Codec],
    address: str,
    port: int,
    *,
    direction: Direction = Direction.SENDRECV,
    ptime: int | None = None,
    prefer_local_order: bool = False,
    max_codecs: int | None = None,
    rtcp_mux: bool = False,
    protocols: Collection[str] = ("RTP/AVP", "RTP/AVPF"),
    previous: SessionDescription | None = None,
    username: str = "hotline",
    session_id: str | None = None,
    session_name: str = "Hotline",
) -> SessionDescription:
    """Answer ``offer`` (RFC 3264 §6) with one audio stream, rejecting every other stream with port 0.

    ``codecs`` are ours in preference order; include ``"telephone-event"`` to accept RFC 4733 DTMF. The answer
    keeps the offer's payload type numbers and, unless ``prefer_local_order``, the offer's order.
    ``direction`` is what we want; the answer is that intersected with the offer's direction reversed
    (offer sendonly → recvonly). ``previous`` is our last description in this dialog: its session id is
    kept and its version incremented when something changed. Raises ``NegotiationError`` when no audio
    stream is acceptable.
    """
    ours = [_as_codec(c) for c in codecs]
    audio_codecs = [c for c in ours if not c.is_telephone_event]
    dtmf = next((c for c in ours if c.is_telephone_event), None)
    session = _new_session(address, username=username, session_id=session_id, session_name=session_name)
    problems: list[str] = []
    accepted = False
    for offered in offer.media:
        if accepted or offered.media.lower() != "audio" or offered.port == 0:
            session.media.append(_rejected(offered))
            continue
        if offered.protocol not in protocols:
            problems.append(f"audio stream uses unsupported protocol {offered.protocol}")
            session.media.append(_rejected(offered))
            continue
        offered_formats = offered.payload_formats()
        chosen = _choose_audio(offered_formats, audio_codecs, prefer_local_order)
        if max_codecs is not None:
            chosen = chosen[: max(1, max_codecs)]
        if not chosen:
            audio_offered = [f for f in offered_formats if not f.is_telephone_event] or offered.formats
            problems.append(
                f"no common codec (offered {_format_list(audio_offered)}; "
                f"supported {_format_list(audio_codecs)})"
            )
            session.media.append(_rejected(offered))
            continue
        event = _choose_telephone_event(offered_formats, dtmf, chosen[0].clock_rate)
        formats = [*chosen, event] if event else chosen
        answer_direction = direction.intersect(offer.effective_direction(offered).reversed())
        session.media.append(
            _audio_media(
                port,
                offered.protocol,
                formats,
                direction=answer_direction,
                ptime=ptime,
                rtcp_mux=rtcp_mux and offered.rtcp_mux,
                mid=offered.mid,
            )
        )
        accepted = True
    if not accepted:
        raise NegotiationError("; ".join(problems) or "offer has no audio stream")
    return _with_next_version(session, previous)


def reoffer(
    previous: SessionDescription,
    *,
    direction: Direction | None = None,
    address: str | None = None,
    port: int | None = None,
) -> SessionDescription:
    """A new offer in the same session (re-INVITE): ``previous`` with its version incremented and the
    direction, address or port of its active streams changed."""
    session = previous.copy()
    if address is not None:
        session.connection = Connection.for_address(address)
        session.origin.address, session.origin.address_type = address, _address_type(address)
    for media in session.media:
        if media.port == 0:
            continue
        if address is not None:
            media.connection = None
        if port is not None:
            media.port = port
        if direction is not None:
            media.direction = direction
    session.origin.session_version += 1
    return session


def hold_offer(previous: SessionDescription) -> SessionDescription:
    """RFC 3264 §8.4 hold: sendrecv becomes sendonly, recvonly becomes inactive."""
    session = previous.copy()
    for media in session.media:
        if media.port != 0:
            media.direction = Direction.from_flags(previous.effective_direction(media).sends, False)
    session.origin.session_version += 1
    return session


def resume_offer(previous: SessionDescription) -> SessionDescription:
    """Take the streams off hold: sendrecv again."""
    return reoffer(previous, direction=Direction.SENDRECV)


# ----------------------------------------------------------------------------------------------------
# Negotiated result


@dataclass(frozen=True)
class NegotiatedAudio:
    """What the media layer needs once offer and answer are known, seen from our side.

    Each side lists the payload type numbers it wants to receive (RFC 3264 §5.1): ``payload_types`` are the
    remote's, used when sending; ``receive_payload_types`` are ours. They differ only when a peer remapped a
    dynamic type. ``codec`` is the one to send with. ``ptime`` is the remote's: how it wants to receive.
    """

    remote_address: str
    remote_port: int
    codec: PayloadFormat
    payload_types: dict[int, PayloadFormat]
    telephone_event: PayloadFormat | None
    direction: Direction
    receive_payload_types: dict[int, PayloadFormat] = field(default_factory=dict)
    ptime: int | None = None
    rtcp_mux: bool = False
    remote_rtcp: tuple[str, int] | None = None

    @property
    def telephone_event_payload_type(self) -> int | None:
        return self.telephone_event.payload_type if self.telephone_event else None

    @property
    def can_send(self) -> bool:
        return self.direction.sends

    @property
    def can_receive(self) -> bool:
        return self.direction.receives


def negotiated_audio(remote: SessionDescription, local: SessionDescription | None = None) -> NegotiatedAudio:
    """Read the agreed audio stream. ``remote`` is the peer's description (the answer to our offer, or the
    offer we answered); ``local`` is ours, used to keep only the codecs both listed and to combine directions.
    Without ``local`` every remote codec we implement counts. Raises ``NegotiationError`` when there is no
    active audio stream or no common codec."""
    for index, media in enumerate(remote.media):
        if media.media.lower() != "audio" or media.port == 0:
            continue
        local_media = local.media[index] if local is not None and index < len(local.media) else None
        if local is not None and (local_media is None or local_media.port == 0):
            continue
        formats = media.payload_formats()
        if local_media is not None:
            ours = local_media.payload_formats()
            usable = [f for f in formats if any(f.same_codec(o) for o in ours)]
            received = [o for o in ours if any(o.same_codec(f) for f in usable)]
        else:
            usable = [f for f in formats if f.codec is not None]
            received = usable
        audio = [f for f in usable if not f.is_telephone_event and f.encoding.upper() != "CN"]
        if not audio:
            raise NegotiationError(
                f"no common codec in the audio stream (remote lists {_format_list(formats)})"
            )
        connection = remote.connection_for(media)
        if connection is None:
            raise NegotiationError("audio stream has no connection address")
        primary = audio[0]
        events = [f for f in usable if f.is_telephone_event]
        event = next((f for f in events if f.clock_rate == primary.clock_rate), events[0] if events else None)
        direction = remote.effective_direction(media).reversed()
        if local is not None and local_media is not None:
            direction = direction.intersect(local.effective_direction(local_media))
        rtcp_mux = media.rtcp_mux and (local_media is None or local_media.rtcp_mux)
        rtcp = media.rtcp
        if rtcp_mux:
            remote_rtcp: tuple[str, int] | None = (connection.address, media.port)
        elif rtcp is not None:
            remote_rtcp = (rtcp.address or connection.address, rtcp.port)
        else:
            remote_rtcp = (connection.address, media.port + 1)
        return NegotiatedAudio(
            remote_address=connection.address,
            remote_port=media.port,
            codec=primary,
            payload_types={f.payload_type: f for f in [*audio, *events]},
            receive_payload_types={f.payload_type: f for f in received if f.encoding.upper() != "CN"},
            telephone_event=event,
            direction=direction,
            ptime=media.ptime,
            rtcp_mux=rtcp_mux,
            remote_rtcp=remote_rtcp,
        )
    raise NegotiationError("no active audio stream")
