"""The vocabulary of the transport layer: transports, addresses, sources, destinations, connections."""

from __future__ import annotations

import abc
import asyncio
import enum
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from hotline.sip.transport.addresses import normalize_host

# Larger than any UDP payload (65 507 bytes over IPv4), so by default only streams hit it.
DEFAULT_MAX_MESSAGE_SIZE = 65_535

Address = tuple[str, int]


class TransportError(OSError):
    """A message could not be sent: no listener or connection for it, connect failure, connection closed.

    A subclass of OSError, because that is what the transaction layer's `send` callback may raise."""


class Transport(enum.StrEnum):
    """The transport tokens of the Via header (RFC 3261 §20.42, RFC 7118 for WS and WSS)."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"
    WS = "WS"
    WSS = "WSS"

    @classmethod
    def of(cls, value: str) -> Transport:
        try:
            return cls(value.upper())
        except ValueError:
            raise ValueError(f"unknown SIP transport {value!r}: use UDP, TCP, TLS, WS or WSS") from None

    @property
    def is_stream(self) -> bool:
        return self is not Transport.UDP

    @property
    def is_websocket(self) -> bool:
        return self in (Transport.WS, Transport.WSS)

    @property
    def is_secure(self) -> bool:
        return self in (Transport.TLS, Transport.WSS)


class ListenPoint(NamedTuple):
    """A (transport, host, port) the layer listens on. Port 0 asks the system for a free port."""

    transport: Transport
    host: str
    port: int


class Destination(NamedTuple):
    """Where to send: a (transport, host, port). `host` may be a name; it is resolved without blocking."""

    transport: Transport
    host: str
    port: int


class AddressLike(Protocol):
    """Anything with transport, host and port attributes (e.g. the transaction layer's `Address`)."""

    @property
    def transport(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class Connection(abc.ABC):
    """One stream connection (TCP, TLS, WS or WSS), inbound or outbound. A handle: compare by identity."""

    def __init__(self, transport: Transport, remote: Address, local: Address, *, outbound: bool) -> None:
        self.transport = transport
        self.remote = remote
        self.local = local
        self.outbound = outbound
        self.last_activity = asyncio.get_running_loop().time()

    @property
    def key(self) -> tuple[Transport, str, int]:
        """The connection table key: transport and remote address."""
        return (self.transport, normalize_host(self.remote[0]), self.remote[1])

    @property
    def source(self) -> Source:
        return Source(self.transport, self.remote, self.local, self)

    def touch(self) -> None:
        self.last_activity = asyncio.get_running_loop().time()

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Queue `data` for sending now; raises TransportError when the connection is closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent); the layer forgets it once it is gone."""

    def __repr__(self) -> str:
        direction = "to" if self.outbound else "from"
        return f"<{type(self).__name__} {self.transport} {direction} {self.remote[0]}:{self.remote[1]}>"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from: `connection` is the stream it arrived on (None for UDP).

    For UDP `local` is the address the receiving socket is bound to (a wildcard stays a wildcard)."""

    transport: Transport
    remote: Address
    local: Address
    connection: Connection | None = None

    @property
    def host(self) -> str:
        return self.remote[0]

    @property
    def port(self) -> int:
        return self.remote[1]
