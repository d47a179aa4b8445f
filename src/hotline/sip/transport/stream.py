"""TCP and TLS connections: an asyncio protocol per connection, each with its own `StreamFramer`.

The framer bounds what a peer can make us buffer (header block and whole message, both at the layer's
`max_message_size`) and counts the CRLFCRLF keep-alive pings the layer answers (RFC 5626 §4.4.1).
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from hotline.sip.message import MAX_MESSAGE_SIZE, StreamFramer
from hotline.sip.transport.addresses import normalize_host
from hotline.sip.transport.base import Address, Connection, Transport, TransportError

# A peer that stops reading must not make us buffer without end (bytes queued in the socket transport).
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class StreamHooks(Protocol):
    """What a stream protocol tells its owner (the transport layer)."""

    def stream_opened(self, connection: StreamConnection) -> bool:
        """Return False to refuse the connection (it is closed at once)."""

    def stream_data(self, connection: StreamConnection, data: bytes) -> None: ...

    def stream_lost(self, connection: StreamConnection) -> None: ...


class StreamConnection(Connection):
    """A TCP or TLS connection; `framer` cuts what arrives on it into messages."""

    def __init__(
        self, kind: Transport, transport: asyncio.Transport, *, outbound: bool, max_message_size: int
    ) -> None:
        super().__init__(
            kind,
            _address(transport.get_extra_info("peername")),
            _address(transport.get_extra_info("sockname")),
            outbound=outbound,
        )
        self._transport = transport
        limit = min(max_message_size, MAX_MESSAGE_SIZE)
        self.framer = StreamFramer(max_header_size=limit, max_message_size=max_message_size)

    @property
    def closed(self) -> bool:
        return self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if self._transport.is_closing():
            raise TransportError(f"{self!r} is closed")
        if self._transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self._transport.abort()
            raise TransportError(f"{self!r} does not read what we send; closed")
        self._transport.write(data)
        self.touch()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


class StreamProtocol(asyncio.Protocol):
    """The asyncio side of one stream connection; everything it learns goes to `hooks`."""

    def __init__(self, kind: Transport, hooks: StreamHooks, *, outbound: bool, max_message_size: int) -> None:
        self._kind = kind
        self._hooks = hooks
        self._outbound = outbound
        self._max_message_size = max_message_size
        self.connection: StreamConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        stream = cast(asyncio.Transport, transport)
        self.connection = StreamConnection(
            self._kind, stream, outbound=self._outbound, max_message_size=self._max_message_size
        )
        if not self._hooks.stream_opened(self.connection):
            stream.abort()

    def data_received(self, data: bytes) -> None:
        if self.connection is not None and not self.connection.closed:
            self._hooks.stream_data(self.connection, data)

    def eof_received(self) -> bool:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self._hooks.stream_lost(self.connection)


def _address(sockname: object) -> Address:
    """(host, port) from a socket address (IPv6 ones carry flowinfo and scope id too)."""
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return (normalize_host(str(sockname[0])), int(sockname[1]))
    return ("", 0)
