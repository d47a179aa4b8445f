"""SIP over WebSocket (RFC 7118) with the `websockets` library: server side at path "/", subprotocol "sip".

One SIP message per WebSocket message, text or binary. A client that does not offer the "sip" subprotocol
gets HTTP 400 and a path other than "/" gets 404, both before any SIP is exchanged. Liveness is the
WebSocket ping/pong of the library (a browser answers them without any script), not the idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response as HttpResponse
from websockets.protocol import State
from websockets.typing import Subprotocol

from hotline.sip.transport.addresses import normalize_host
from hotline.sip.transport.base import Address, Connection, Transport, TransportError

SIP_SUBPROTOCOL = Subprotocol("sip")
# Messages queued for one browser before we give up on it (it stopped reading).
MAX_QUEUED_MESSAGES = 1000


class WebSocketConnection(Connection):
    """One accepted WebSocket. `write` queues; a writer task sends in order."""

    def __init__(self, kind: Transport, websocket: ServerConnection) -> None:
        super().__init__(
            kind, _address(websocket.remote_address), _address(websocket.local_address), outbound=False
        )
        self._websocket = websocket
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_QUEUED_MESSAGES)
        self._closing = False

    @property
    def closed(self) -> bool:
        return self._closing or self._websocket.state is not State.OPEN

    def write(self, data: bytes) -> None:
        if self.closed:
            raise TransportError(f"{self!r} is closed")
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            self.close()
            raise TransportError(f"{self!r} does not read what we send; closed") from None
        self.touch()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            if self._queue.full():
                # No room for the sentinel: drop the connection without a closing handshake.
                self._websocket.transport.abort()

    async def run_writer(self) -> None:
        """Send queued messages until close() or the socket goes away; then close the WebSocket."""
        try:
            while (data := await self._queue.get()) is not None:
                try:
                    await self._websocket.send(data.decode("utf-8"))
                except UnicodeDecodeError:
                    await self._websocket.send(data)
        except ConnectionClosed:
            pass
        finally:
            self._closing = True
            await self._websocket.close()


MessageReceiver = Callable[[WebSocketConnection, bytes], None]


async def serve_websocket(
    kind: Transport,
    host: str,
    port: int,
    *,
    opened: Callable[[WebSocketConnection], bool],
    received: MessageReceiver,
    lost: Callable[[WebSocketConnection], None],
    ssl_context: ssl.SSLContext | None,
    max_message_size: int,
) -> Server:
    """Start a WS (or, with `ssl_context`, WSS) server; returns the library's `Server`."""

    async def handle(websocket: ServerConnection) -> None:
        connection = WebSocketConnection(kind, websocket)
        if not opened(connection):
            await websocket.close(1013, "too many connections")
            return
        writer = asyncio.create_task(connection.run_writer())
        try:
            async for frame in websocket:
                data = frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)
                connection.touch()
                received(connection, data)
        except ConnectionClosed:
            pass
        finally:
            connection.close()
            lost(connection)
            await _settle(writer)

    return await serve(
        handle,
        host,
        port,
        subprotocols=[SIP_SUBPROTOCOL],
        process_request=_only_root_path,
        compression=None,
        max_size=max_message_size,
        ssl=ssl_context,
    )


def _only_root_path(connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
    if request.path.split("?", 1)[0] == "/":
        return None
    return connection.respond(HTTPStatus.NOT_FOUND, "SIP over WebSocket is served at /\n")


async def _settle(task: Awaitable[None]) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)


def _address(address: object) -> Address:
    if isinstance(address, tuple) and len(address) >= 2:
        return (normalize_host(str(address[0])), int(address[1]))
    return ("", 0)
