"""What the transport does for peers behind NAT.

- `stamp_received(request, remote, transport)`: RFC 3261 §18.2.1 and RFC 3581 §4 on the top Via of a received
  request, with the transaction layer's `stamp_via`: `received=` when the sent-by host is not the packet's
  source address, and, when the Via carries an empty `rport`, `rport=<source port>` plus `received=`.
- `stun_binding_response(data, remote)`: the answer to a STUN Binding request arriving on the SIP UDP port,
  the keep-alive of RFC 5626 §4.4.2 (RFC 8489 message format, XOR-MAPPED-ADDRESS); None for anything else.
- `is_keepalive(data)`: a datagram or WebSocket message of only CR, LF, space or NUL (what phones send to
  keep a NAT binding open); it is ignored, not parsed.
"""

from __future__ import annotations

import ipaddress
import struct

from hotline.sip.headers import parse_via
from hotline.sip.message import Request
from hotline.sip.transaction import Address as TransactionAddress
from hotline.sip.transaction import stamp_via
from hotline.sip.transport.addresses import normalize_host, parse_ip

STUN_MAGIC_COOKIE = 0x2112A442
_STUN_HEADER = struct.Struct("!HHI12s")
_BINDING_REQUEST = 0x0001
_BINDING_SUCCESS = 0x0101
_XOR_MAPPED_ADDRESS = 0x0020
_KEEPALIVE_BYTES = frozenset(b"\r\n \x00")


def stamp_received(request: Request, remote: tuple[str, int], transport: str) -> None:
    """Add received=/rport= to the request's top Via, in place. Raises ParseError for an unreadable Via."""
    via_values = request.headers.get_all("Via")
    if not via_values:
        return
    top = parse_via(via_values[0])
    stamped = stamp_via(top, TransactionAddress(normalize_host(remote[0]), remote[1], transport))
    if stamped is top:
        return
    request.headers.set("Via", str(stamped))
    for value in via_values[1:]:
        request.headers.add("Via", value)


def is_keepalive(data: bytes) -> bool:
    return all(byte in _KEEPALIVE_BYTES for byte in data)


def is_stun(data: bytes) -> bool:
    """A STUN message: top two bits zero, the magic cookie, a length that matches (RFC 8489 §5)."""
    if len(data) < _STUN_HEADER.size or data[0] & 0xC0:
        return False
    _, length, cookie, _ = _STUN_HEADER.unpack_from(data)
    return bool(cookie == STUN_MAGIC_COOKIE and length % 4 == 0 and len(data) == _STUN_HEADER.size + length)


def stun_binding_response(data: bytes, remote: tuple[str, int]) -> bytes | None:
    """The Binding success response telling the sender its public (reflexive) address, or None."""
    if not is_stun(data):
        return None
    message_type, _, _, transaction_id = _STUN_HEADER.unpack_from(data)
    if message_type != _BINDING_REQUEST:
        return None
    address = parse_ip(remote[0])
    if address is None:
        return None
    port = remote[1] ^ (STUN_MAGIC_COOKIE >> 16)
    if isinstance(address, ipaddress.IPv4Address):
        family, mask = 0x01, STUN_MAGIC_COOKIE.to_bytes(4, "big")
    else:
        family, mask = 0x02, STUN_MAGIC_COOKIE.to_bytes(4, "big") + transaction_id
    xored = bytes(a ^ b for a, b in zip(address.packed, mask, strict=True))
    value = struct.pack("!BBH", 0, family, port) + xored
    attribute = struct.pack("!HH", _XOR_MAPPED_ADDRESS, len(value)) + value
    header = _STUN_HEADER.pack(_BINDING_SUCCESS, len(attribute), STUN_MAGIC_COOKIE, transaction_id)
    return header + attribute
