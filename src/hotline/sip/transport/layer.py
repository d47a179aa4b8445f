"""`TransportLayer`: listens, receives, parses, answers bad input, sends. See the package docstring."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server as WebSocketServer

from hotline.log import get_logger
from hotline.sip.errors import ParseError
from hotline.sip.message import Request, Response, make_response, new_tag, parse
from hotline.sip.transport.addresses import (
    family_of,
    is_local_network,
    is_wildcard,
    normalize_host,
    parse_ip,
    route_source_ip,
    same_host,
    strip_brackets,
)
from hotline.sip.transport.base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Address,
    AddressLike,
    Connection,
    Destination,
    ListenPoint,
    Source,
    Transport,
    TransportError,
)
from hotline.sip.transport.malformed import error_response, reason_phrase
from hotline.sip.transport.nat import is_keepalive, is_stun, stamp_received, stun_binding_response
from hotline.sip.transport.stream import StreamConnection, StreamProtocol
from hotline.sip.transport.tls import client_tls_context
from hotline.sip.transport.websocket import WebSocketConnection, serve_websocket

log = get_logger("hotline.sip.transport")

Message = Request | Response
MessageHandler = Callable[[Message, Source], None]
DestinationLike = Destination | tuple[str, str, int] | AddressLike | Connection | Source
# Called with the destination exactly as given to send_nowait (e.g. the transaction layer's Address).
SendFailureHandler = Callable[[DestinationLike, str], None]

_PING_PONG = b"\r\n"
_MAX_UDP_PAYLOAD = {socket.AF_INET: 65_507, socket.AF_INET6: 65_527}
_REQUIRED_FOR_RESPONSE = ("Via", "From", "To", "Call-ID", "CSeq")


@dataclass
class _Listener:
    point: ListenPoint
    family: socket.AddressFamily


@dataclass
class _DatagramListener(_Listener):
    transport: asyncio.DatagramTransport


@dataclass
class _StreamListener(_Listener):
    server: asyncio.Server | WebSocketServer


class _DatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self._layer = layer
        self.listener: _DatagramListener | None = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.listener is not None:
            self._layer._datagram_received(self.listener, data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable...) for an earlier sendto; the transaction timers handle the loss.
        log.debug("sip.udp_error", error=str(exc))


class TransportLayer:
    """The asyncio driver of the SIP stack: sockets in, parsed messages out through `on_message`."""

    def __init__(
        self,
        on_message: MessageHandler,
        *,
        tls_context: ssl.SSLContext | None = None,
        tls_client_context: ssl.SSLContext | None = None,
        public_address: str | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        idle_timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_connections: int = 10_000,
        on_send_failure: SendFailureHandler | None = None,
    ) -> None:
        if max_message_size < 1024 or idle_timeout <= 0 or connect_timeout <= 0 or max_connections < 1:
            raise ValueError("need max_message_size >= 1024, positive timeouts and max_connections >= 1")
        self.on_message = on_message
        self.on_send_failure = on_send_failure
        self.tls_context = tls_context
        self.tls_client_context = tls_client_context
        self.public_address = strip_brackets(public_address) if public_address else None
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._datagram_listeners: list[_DatagramListener] = []
        self._stream_listeners: list[_StreamListener] = []
        self._connections: dict[tuple[Transport, str, int], Connection] = {}
        self._connection_keys: dict[Connection, set[tuple[Transport, str, int]]] = {}
        self._connecting: dict[tuple[Transport, str, int], asyncio.Task[StreamConnection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    # --- listening

    @property
    def listen_points(self) -> list[ListenPoint]:
        """Every bound (transport, host, port), with the real port where 0 was asked for."""
        listeners: list[_Listener] = [*self._datagram_listeners, *self._stream_listeners]
        return [listener.point for listener in listeners]

    async def start(self, points: Iterable[tuple[str, str, int]]) -> list[ListenPoint]:
        """Listen on each (transport, host, port); on a failure close what was opened and raise OSError."""
        bound: list[ListenPoint] = []
        try:
            for transport, host, port in points:
                bound.append(await self.listen(transport, host, port))
        except BaseException:
            await self.close()
            raise
        return bound

    async def listen(self, transport: str, host: str, port: int) -> ListenPoint:
        """Start listening; returns the bound point. Raises OSError when the address is taken or invalid."""
        if self._closed:
            raise TransportError("the transport layer is closed")
        kind = Transport.of(transport)
        bind_host = strip_brackets(host)
        family = family_of(bind_host)
        try:
            if kind is Transport.UDP:
                return await self._listen_datagram(bind_host, port, family)
            return await self._listen_stream(kind, bind_host, port, family)
        except OSError as error:
            reason = error.strerror or str(error)
            raise TransportError(f"cannot listen on {kind} {host} port {port}: {reason}") from None
        finally:
            self._ensure_sweeper()

    async def _listen_datagram(self, host: str, port: int, family: socket.AddressFamily) -> ListenPoint:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # IPv6 sockets see IPv6 only, so [::]:5060 and 0.0.0.0:5060 can both be bound.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        protocol = _DatagramProtocol(self)
        loop = asyncio.get_running_loop()
        datagram_transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        bound = sock.getsockname()
        listener = _DatagramListener(
            ListenPoint(Transport.UDP, host, int(bound[1])), family, datagram_transport
        )
        protocol.listener = listener
        self._datagram_listeners.append(listener)
        log.info("sip.listening", transport="UDP", host=host, port=listener.point.port)
        return listener.point

    async def _listen_stream(
        self, kind: Transport, host: str, port: int, family: socket.AddressFamily
    ) -> ListenPoint:
        context = self.tls_context if kind.is_secure else None
        if kind.is_secure and context is None:
            raise TransportError(f"a {kind} listener needs a certificate: give TransportLayer a tls_context")
        server: asyncio.Server | WebSocketServer
        if kind.is_websocket:
            server = await serve_websocket(
                kind,
                host,
                port,
                opened=self._connection_opened,
                received=self._websocket_message,
                lost=self._connection_lost,
                ssl_context=context,
                max_message_size=self.max_message_size,
            )
        else:
            loop = asyncio.get_running_loop()
            server = await loop.create_server(
                lambda: StreamProtocol(kind, self, outbound=False, max_message_size=self.max_message_size),
                host,
                port,
                ssl=context,
                reuse_address=True,
                ssl_handshake_timeout=self.connect_timeout if context else None,
            )
        bound_port = int(next(iter(server.sockets)).getsockname()[1])
        listener = _StreamListener(ListenPoint(kind, host, bound_port), family, server)
        self._stream_listeners.append(listener)
        log.info("sip.listening", transport=str(kind), host=host, port=bound_port)
        return listener.point

    # --- connections

    @property
    def connections(self) -> list[Connection]:
        return list(self._connection_keys)

    def find_connection(self, destination: DestinationLike) -> Connection | None:
        """The open connection to a stream destination (by transport and remote address), if any."""
        connection: Connection | None
        if isinstance(destination, Connection):
            connection = destination
        elif isinstance(destination, Source):
            connection = destination.connection
        else:
            connection = self._connections.get(_key(_destination(destination)))
        return connection if connection is not None and not connection.closed else None

    # StreamHooks: what each TCP/TLS StreamProtocol reports.

    def stream_opened(self, connection: StreamConnection) -> bool:
        return self._connection_opened(connection)

    def stream_data(self, connection: StreamConnection, data: bytes) -> None:
        connection.touch()
        framer = connection.framer
        pings_before = framer.keepalive_pings
        try:
            messages = framer.feed(data)
        except ParseError:
            messages = []
        for _ in range(framer.keepalive_pings - pings_before):
            with contextlib.suppress(TransportError):
                connection.write(_PING_PONG)
        for message in messages:
            if connection.closed:
                return
            self._receive(message, connection.source)
        if framer.error is not None and not connection.closed:
            # Framing is lost: nothing later on this stream can be trusted to start a message.
            log.warning(
                "sip.stream_framing_broken",
                transport=str(connection.transport),
                remote=connection.remote,
                status=framer.error.status,
                reason=framer.error.reason,
            )
            self._reject(b"", framer.error, connection.source)
            connection.close()

    def stream_lost(self, connection: StreamConnection) -> None:
        self._connection_lost(connection)

    def _connection_opened(self, connection: Connection) -> bool:
        if self._closed or (not connection.outbound and len(self._connection_keys) >= self.max_connections):
            log.warning(
                "sip.connection_refused", transport=str(connection.transport), remote=connection.remote
            )
            return False
        self._remember(connection, connection.key)
        log.debug("sip.connection_opened", transport=str(connection.transport), remote=connection.remote)
        return True

    def _remember(self, connection: Connection, key: tuple[Transport, str, int]) -> None:
        previous = self._connections.get(key)
        if previous is not None and previous is not connection:
            self._connection_keys.get(previous, set()).discard(key)
        self._connections[key] = connection
        self._connection_keys.setdefault(connection, set()).add(key)

    def _connection_lost(self, connection: Connection) -> None:
        for key in self._connection_keys.pop(connection, set()):
            if self._connections.get(key) is connection:
                del self._connections[key]
        log.debug("sip.connection_closed", transport=str(connection.transport), remote=connection.remote)

    def _websocket_message(self, connection: WebSocketConnection, data: bytes) -> None:
        if not is_keepalive(data):
            self._receive(data, connection.source)

    async def _connect(self, destination: Destination) -> StreamConnection:
        key = _key(destination)
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open_connection(destination))
            self._connecting[key] = task
            task.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(task)

    async def _open_connection(self, destination: Destination) -> StreamConnection:
        kind, host = destination.transport, strip_brackets(destination.host)
        context: ssl.SSLContext | None = None
        if kind is Transport.TLS:
            context = self.tls_client_context or client_tls_context()
        loop = asyncio.get_running_loop()
        protocol = StreamProtocol(kind, self, outbound=True, max_message_size=self.max_message_size)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: protocol,
                    host,
                    destination.port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else str(error)
            raise TransportError(
                f"cannot connect to {kind} {host} port {destination.port}: {reason}"
            ) from None
        connection = protocol.connection
        if connection is None or connection.closed:
            raise TransportError(f"connection to {kind} {host} port {destination.port} closed at once")
        self._remember(connection, _key(destination))  # also under the name it was asked for
        self._ensure_sweeper()
        return connection

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle_connections())

    async def _sweep_idle_connections(self) -> None:
        """Close TCP/TLS connections silent for `idle_timeout` (WebSockets rely on WS ping/pong instead)."""
        interval = max(0.05, min(self.idle_timeout / 4, 30.0))
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(interval)
            deadline = loop.time() - self.idle_timeout
            for connection in list(self._connection_keys):
                if isinstance(connection, StreamConnection) and connection.last_activity < deadline:
                    log.debug(
                        "sip.connection_idle", transport=str(connection.transport), remote=connection.remote
                    )
                    connection.close()

    # --- receiving

    def _datagram_received(self, listener: _DatagramListener, data: bytes, addr: tuple[Any, ...]) -> None:
        remote = (normalize_host(str(addr[0])), int(addr[1]))
        source = Source(Transport.UDP, remote, (listener.point.host, listener.point.port))
        if is_keepalive(data):
            return
        if is_stun(data):
            answer = stun_binding_response(data, remote)
            if answer is not None:
                listener.transport.sendto(answer, addr)
            return
        self._receive(data, source)

    def _receive(self, data: bytes, source: Source) -> None:
        """Parse one whole message; answer or drop what is malformed; hand the rest to `on_message`."""
        try:
            message = parse(data, max_size=self.max_message_size)
            if isinstance(message, Request):
                stamp_received(message, source.remote, source.transport)
        except ParseError as error:
            self._reject(data, error, source)
            return
        except Exception:  # a parser bug must cost one message, never the process
            log.exception("sip.parser_failed", transport=str(source.transport), remote=source.remote)
            self._reject(data, ParseError("Server Internal Error", 500), source)
            return
        try:
            self.on_message(message, source)
        except Exception:
            log.exception("sip.message_handler_failed", transport=str(source.transport), remote=source.remote)

    def _reject(self, data: bytes, error: ParseError, source: Source) -> None:
        """Answer a malformed request with error.status when it can be matched by its sender; else drop it."""
        reason = reason_phrase(error.reason)
        answer: bytes | None = None
        partial = error.message
        if (
            isinstance(partial, Request)
            and partial.method != "ACK"
            and not (partial.headers.get("CSeq") or "").upper().endswith("ACK")
            and all(name in partial.headers for name in _REQUIRED_FOR_RESPONSE)
        ):
            with contextlib.suppress(ParseError, ValueError):
                answer = make_response(partial, error.status, reason, to_tag=new_tag()).encode()
        if answer is None and data:
            answer = error_response(data, error.status, reason)
        # debug, not info: a flood of garbage must not turn into a flood of log writes
        log.debug(
            "sip.malformed_message",
            transport=str(source.transport),
            remote=source.remote,
            status=error.status,
            reason=error.reason,
            answered=answer is not None,
        )
        if answer is not None:
            with contextlib.suppress(TransportError):
                self._send_now(answer, source)

    # --- sending

    async def send(self, message: Message | bytes, destination: DestinationLike) -> Connection | None:
        """Send one message. UDP leaves from a listening socket (symmetric signalling); TCP/TLS reuse the
        connection to that remote address or open one (bounded by connect_timeout); WS/WSS only over an
        existing connection. Returns the connection used (None for UDP). Raises TransportError."""
        data = message if isinstance(message, bytes) else message.encode()
        if self._send_now(data, destination):
            return self.find_connection(destination)
        target = _destination(destination)
        if target.transport is Transport.UDP:
            address = await self._resolve(target)
            self._send_datagram(data, address, None)
            return None
        connection = await self._connect(target)
        connection.write(data)
        return connection

    def send_nowait(self, message: Message | bytes, destination: DestinationLike) -> None:
        """`send` for synchronous callers (the transaction layer's `send` callback): sends at once when a
        socket or connection is ready, otherwise resolves/connects in the background and reports a failure
        through `on_send_failure(destination, reason)`. Raises TransportError for what can never work."""
        data = message if isinstance(message, bytes) else message.encode()
        if self._send_now(data, destination):
            return
        self._spawn(self._send_later(data, destination))

    async def _send_later(self, data: bytes, destination: DestinationLike) -> None:
        try:
            await self.send(data, destination)
        except TransportError as error:
            target = _destination(destination)
            log.info(
                "sip.send_failed",
                transport=str(target.transport),
                host=target.host,
                port=target.port,
                reason=str(error),
            )
            if self.on_send_failure is not None:
                try:
                    self.on_send_failure(destination, str(error))
                except Exception:
                    log.exception("sip.send_failure_handler_failed")

    def _send_now(self, data: bytes, destination: DestinationLike) -> bool:
        """Send without waiting when possible; False when a name must be resolved or a connection opened."""
        if isinstance(destination, Connection):
            destination.write(data)
            return True
        if isinstance(destination, Source):
            if destination.connection is not None:
                destination.connection.write(data)
            else:
                self._send_datagram(data, destination.remote, destination.local)
            return True
        target = _destination(destination)
        if target.transport is Transport.UDP:
            if parse_ip(target.host) is None:
                return False
            self._send_datagram(data, (strip_brackets(target.host), target.port), None)
            return True
        connection = self.find_connection(target)
        if connection is not None:
            connection.write(data)
            return True
        if target.transport.is_websocket:
            raise TransportError(f"no {target.transport} connection to {target.host} port {target.port}")
        return False

    def _send_datagram(self, data: bytes, remote: Address, local: Address | None) -> None:
        listener = self._datagram_listener_for(remote[0], local)
        if len(data) > _MAX_UDP_PAYLOAD[listener.family]:
            raise TransportError(f"{len(data)} bytes do not fit in a UDP datagram; send it over TCP")
        if listener.transport.is_closing():
            raise TransportError("the UDP socket is closed")
        listener.transport.sendto(data, (strip_brackets(remote[0]), remote[1]))

    async def _resolve(self, target: Destination) -> Address:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError) as error:
            raise TransportError(f"cannot resolve {target.host}: {error}") from None
        families = {listener.family for listener in self._datagram_listeners}
        for family, _, _, _, sockaddr in infos:
            if family in families:
                return (str(sockaddr[0]), int(sockaddr[1]))
        raise TransportError(f"{target.host} has no address of a family we listen on over UDP")

    # --- addresses

    def local_address_for(self, destination: DestinationLike) -> Address:
        """The (host, port) to put in Via sent-by and Contact for a message to `destination`.

        The port is the listening port of that transport (replies and new requests reach us there). The
        host is the configured public address unless the peer is on a loopback, private or link-local
        address; otherwise the listener's own address, or for a wildcard listener the local address the
        kernel routes to the peer from."""
        if isinstance(destination, Connection | Source):
            transport, peer = destination.transport, destination.remote[0]
        else:
            target = _destination(destination)
            transport, peer = target.transport, target.host
        family = family_of(peer)
        listeners: list[_Listener] = [
            listener
            for listener in (*self._datagram_listeners, *self._stream_listeners)
            if listener.point.transport is transport
        ]
        if not listeners:
            raise TransportError(f"no {transport} listener")
        same_family = [listener for listener in listeners if listener.family == family]
        listener = (same_family or listeners)[0]
        if self.public_address and not is_local_network(peer):
            return (self.public_address, listener.point.port)
        if not is_wildcard(listener.point.host):
            return (listener.point.host, listener.point.port)
        routed = route_source_ip(peer if parse_ip(peer) else None, listener.family)
        fallback = "::1" if listener.family == socket.AF_INET6 else "127.0.0.1"
        return (routed or fallback, listener.point.port)

    def _datagram_listener_for(self, remote_host: str, local: Address | None) -> _DatagramListener:
        if local is not None:
            for listener in self._datagram_listeners:
                if listener.point.port == local[1] and same_host(listener.point.host, local[0]):
                    return listener
        family = family_of(remote_host)
        candidates = [listener for listener in self._datagram_listeners if listener.family == family]
        if not candidates:
            raise TransportError(f"no UDP listener for {'IPv6' if family == socket.AF_INET6 else 'IPv4'}")
        if len(candidates) > 1:
            address = parse_ip(remote_host)
            loopback = address is not None and address.is_loopback
            for listener in candidates:  # a wildcard socket reaches everyone; else match loopback-ness
                bound = parse_ip(listener.point.host)
                if bound is None or bound.is_unspecified or bound.is_loopback == loopback:
                    return listener
        return candidates[0]

    # --- lifecycle

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel background work. Idempotent."""
        self._closed = True
        for task in [*self._tasks, *self._connecting.values(), *([self._sweeper] if self._sweeper else [])]:
            task.cancel()
        for listener in self._datagram_listeners:
            listener.transport.close()
        for stream_listener in self._stream_listeners:
            stream_listener.server.close()
        for connection in list(self._connection_keys):
            connection.close()
        for stream_listener in self._stream_listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream_listener.server.wait_closed(), timeout=5)
        self._datagram_listeners.clear()
        self._stream_listeners.clear()
        pending = [*self._tasks, *self._connecting.values(), *([self._sweeper] if self._sweeper else [])]
        if pending:
            await asyncio.wait(pending, timeout=5)
        self._sweeper = None

    async def __aenter__(self) -> TransportLayer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _destination(destination: DestinationLike) -> Destination:
    if isinstance(destination, Destination):
        return destination
    if isinstance(destination, Connection | Source):
        return Destination(destination.transport, destination.remote[0], destination.remote[1])
    if isinstance(destination, tuple):
        transport, host, port = destination
        return Destination(Transport.of(transport), host, int(port))
    return Destination(Transport.of(destination.transport), destination.host, int(destination.port))


def _key(destination: Destination) -> tuple[Transport, str, int]:
    return (destination.transport, normalize_host(destination.host), destination.port)
