"""The asyncio I/O driver of the sans-IO SIP stack: UDP, TCP, TLS, WS and WSS over IPv4 and IPv6.

`TransportLayer(on_message, *, tls_context=None, tls_client_context=None, public_address=None,
max_message_size=65535, idle_timeout=600.0, connect_timeout=10.0, max_connections=10000,
on_send_failure=None)`:

- `await listen(transport, host, port) -> ListenPoint`, `await start([(transport, host, port), ...])`:
  UDP and TCP may share a port, TLS/WS/WSS take their own; IPv6 sockets are IPv6-only. Port 0 picks one.
- Every message received goes through `parse()` (one datagram or WebSocket message) or the connection's
  `StreamFramer` (TCP/TLS), gets `received=`/`rport=` on its top Via when it is a request (RFC 3261 §18.2.1,
  RFC 3581), and is handed to `on_message(message, source)`. A malformed request is answered with
  `ParseError.status` when Via, From, To, Call-ID and CSeq can be read, otherwise dropped and logged; a stream
  whose framing breaks is closed; nothing a peer sends can stop the layer.
- `await send(message_or_bytes, destination) -> Connection | None` and `send_nowait(...)` (for the transaction
  layer's synchronous `send` callback). `destination`: a `(transport, host, port)` tuple or `Destination`, any
  object with `.transport/.host/.port`, a `Connection`, or a `Source` (reply the way a message came).
- `local_address_for(destination) -> (host, port)` for Via sent-by and Contact.
- `find_connection(destination)`, `connections`, `listen_points`, `await close()`.

Also: `Transport`, `Source`, `Destination`, `ListenPoint`, `Connection`, `TransportError`; TLS contexts
`server_tls_context(cert, key)`, `client_tls_context(ca_path=...)`; host helpers `format_host`,
`format_hostport`, `normalize_host`, `strip_brackets`.
"""

from hotline.sip.transport.addresses import format_host, format_hostport, normalize_host, strip_brackets
from hotline.sip.transport.base import (
    Address,
    AddressLike,
    Connection,
    Destination,
    ListenPoint,
    Source,
    Transport,
    TransportError,
)
from hotline.sip.transport.layer import DestinationLike, MessageHandler, TransportLayer
from hotline.sip.transport.tls import client_tls_context, server_tls_context

__all__ = [
    "Address",
    "AddressLike",
    "Connection",
    "Destination",
    "DestinationLike",
    "ListenPoint",
    "MessageHandler",
    "Source",
    "Transport",
    "TransportError",
    "TransportLayer",
    "client_tls_context",
    "format_host",
    "format_hostport",
    "normalize_host",
    "server_tls_context",
    "strip_brackets",
]
