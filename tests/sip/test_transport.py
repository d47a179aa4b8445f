"""The SIP transport driver over real sockets on 127.0.0.1 and ::1: UDP, TCP, TLS, WS/WSS, and SIPp."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import random
import secrets
import shutil
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from hotline.sip.message import Request, Response, StreamFramer, make_response, new_tag, parse
from hotline.sip.transaction import Address as TransactionAddress
from hotline.sip.transaction import Event, RequestReceived, ResponseReceived, TransactionLayer
from hotline.sip.transport import (
    Destination,
    Source,
    Transport,
    TransportError,
    TransportLayer,
    client_tls_context,
    format_host,
    format_hostport,
    normalize_host,
    server_tls_context,
    strip_brackets,
)
from hotline.sip.transport.malformed import error_response
from hotline.sip.transport.nat import STUN_MAGIC_COOKIE, stun_binding_response

WAIT = 3.0  # seconds any single expected event may take on a loaded machine
SIP = [Subprotocol("sip")]


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = _ipv6_loopback_available()
HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1", id="ipv6", marks=pytest.mark.skipif(not IPV6, reason="no IPv6 loopback (::1) on this machine")
    ),
]


# --- helpers --------------------------------------------------------------------------------------------


def request_bytes(
    method: str = "OPTIONS",
    *,
    via: str = "SIP/2.0/UDP 192.0.2.7:5099;rport",
    call_id: str | None = None,
    cseq: int = 1,
    body: bytes = b"",
    extra: str = "",
) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(6)
    head = (
        f"{method} sip:service@example.com SIP/2.0\r\n"
        f"Via: {via};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag={secrets.token_hex(4)}\r\n"
        "To: <sip:service@example.com>\r\n"
        f"Call-ID: {call_id or secrets.token_hex(8)}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Responder:
    """A test UAS: records what arrives; answers every request but ACK with 200 over the way it came."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.received: asyncio.Queue[tuple[Request | Response, Source]] = asyncio.Queue()
        self.layer: TransportLayer | None = None

    def __call__(self, message: Request | Response, source: Source) -> None:
        self.received.put_nowait((message, source))
        if self.answer and isinstance(message, Request) and message.method != "ACK":
            assert self.layer is not None
            headers = {"Contact": f"<sip:responder@{format_hostport(*source.local)}>"}
            self.layer.send_nowait(make_response(message, 200, to_tag=new_tag(), headers=headers), source)

    async def next(self) -> tuple[Request | Response, Source]:
        return await asyncio.wait_for(self.received.get(), WAIT)


async def responder_layer(**options: Any) -> tuple[TransportLayer, Responder]:
    responder = Responder()
    layer = TransportLayer(responder, **options)
    responder.layer = layer
    return layer, responder


class DatagramClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.put_nowait((data, (addr[0], addr[1])))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, host: str, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (host, port))

    async def receive(self, timeout: float = WAIT) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.datagrams.get(), timeout)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.datagrams.get(), seconds)
        except TimeoutError:
            return True
        return False


async def udp_client(host: str) -> DatagramClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(DatagramClient, local_addr=(host, 0))
    return client


class StreamClient:
    """A raw TCP/TLS peer reading whole SIP messages with the parser's framer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.framer = StreamFramer()
        self.pending: list[bytes] = []

    @classmethod
    async def open(cls, host: str, port: int, context: ssl.SSLContext | None = None) -> StreamClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None), WAIT
        )
        return cls(reader, writer)

    @property
    def local(self) -> tuple[str, int]:
        name = self.writer.get_extra_info("sockname")
        return (name[0], int(name[1]))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, timeout: float = WAIT) -> Request | Response:
        async with asyncio.timeout(timeout):
            while not self.pending:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError("closed by the server")
                self.pending.extend(self.framer.feed(chunk))
        return parse(self.pending.pop(0))

    async def closed_by_server(self, timeout: float = WAIT) -> bool:
        """True when the server closes the connection within `timeout` (whatever it sends first)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:  # a reset is a close too
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), WAIT)


@pytest.fixture
async def layers() -> AsyncIterator[list[TransportLayer]]:
    """Layers a test creates are closed at its end, whatever happens."""
    created: list[TransportLayer] = []
    yield created
    for layer in created:
        await layer.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, 127.0.0.1 and ::1, and its key, as PEM files."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotline test")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names = x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(alt_names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def top_via(message: Request | Response) -> dict[str, str | None]:
    params: dict[str, str | None] = message.via.params
    return params


def as_response(message: bytes | Request | Response) -> Response:
    parsed = parse(message) if isinstance(message, bytes) else message
    assert isinstance(parsed, Response), f"expected a response, got {parsed!r}"
    return parsed


async def ws_receive(websocket: ClientConnection) -> bytes:
    """One WebSocket message as bytes; SIP goes as text frames when it is UTF-8."""
    frame = await asyncio.wait_for(websocket.recv(), WAIT)
    return frame.encode() if isinstance(frame, str) else frame


# --- UDP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_udp_round_trip_fills_received_and_rport_and_replies_from_the_listening_port(
    host: str, layers: list[TransportLayer]
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("UDP", host, 0)
    client = await udp_client(host)

    client.send(request_bytes(via="SIP/2.0/UDP 192.0.2.7:5099;rport"), host, point.port)
    request, source = await responder.next()
    assert isinstance(request, Request)
    assert source.transport is Transport.UDP and source.connection is None
    assert source.remote == (normalize_host(host), client.port)
    assert top_via(request)["received"] == normalize_host(host)
    assert top_via(request)["rport"] == str(client.port)

    data, sender = await client.receive()
    response = parse(data)
    assert isinstance(response, Response) and response.status == 200
    assert sender[1] == point.port  # symmetric: the reply leaves from the port the request arrived on
    assert response.via.received == normalize_host(host) and response.via.rport == client.port


async def test_received_is_added_only_when_the_via_host_is_not_the_source(
    layers: list[TransportLayer],
) -> None:
    layer, responder = await responder_layer()
    responder.answer = False
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")

    client.send(request_bytes(via=f"SIP/2.0/UDP 127.0.0.1:{client.port}"), "127.0.0.1", point.port)
    same_host, _ = await responder.next()
    assert "received" not in top_via(same_host) and "rport" not in top_via(same_host)

    client.send(request_bytes(via="SIP/2.0/UDP phone.example.invalid:5060"), "127.0.0.1", point.port)
    named, _ = await responder.next()
    assert top_via(named)["received"] == "127.0.0.1" and "rport" not in top_via(named)

    # RFC 3581 §4: an empty rport brings received= even when the host matches.
    client.send(request_bytes(via=f"SIP/2.0/UDP 127.0.0.1:{client.port};rport"), "127.0.0.1", point.port)
    asked, _ = await responder.next()
    assert top_via(asked)["received"] == "127.0.0.1" and top_via(asked)["rport"] == str(client.port)

    # Only the top Via is touched; the others keep their text.
    two = request_bytes(via="SIP/2.0/UDP proxy.invalid;rport").replace(
        b"Max-Forwards", b"Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKlower\r\nMax-Forwards"
    )
    client.send(two, "127.0.0.1", point.port)
    stacked, _ = await responder.next()
    assert [str(via) for via in stacked.vias[1:]] == ["SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKlower"]
    assert stacked.vias[0].received == "127.0.0.1"


async def test_malformed_datagrams_are_answered_or_dropped_and_the_next_message_is_served(
    layers: list[TransportLayer],
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")

    # CSeq method disagrees: readable enough to answer, with the parser's status and reason.
    bad = request_bytes("OPTIONS").replace(b"1 OPTIONS", b"1 INVITE")
    client.send(bad, "127.0.0.1", point.port)
    answer = parse((await client.receive())[0])
    assert isinstance(answer, Response) and answer.status == 400
    assert "CSeq" in answer.reason and answer.to.tag is not None

    # A bad request line: the parser gives up early, the salvage still answers with Via/From/To/Call-ID/CSeq.
    broken = request_bytes("OPTIONS").replace(
        b"OPTIONS sip:service@example.com SIP/2.0", b"OPTIONS <<>> SIP/2.0"
    )
    client.send(broken, "127.0.0.1", point.port)
    answer = parse((await client.receive())[0])
    assert isinstance(answer, Response) and 400 <= answer.status < 500
    assert answer.call_id == parse_call_id(broken)

    # Missing Call-ID: nothing a response could be matched with, so nothing is sent.
    client.send(request_bytes().replace(b"Call-ID", b"X-Nothing"), "127.0.0.1", point.port)
    # A malformed ACK is never answered; plain garbage neither.
    client.send(request_bytes("ACK").replace(b"1 ACK", b"1 INVITE"), "127.0.0.1", point.port)
    client.send(b"\x16\x03\x01 not SIP at all \xff\xfe", "127.0.0.1", point.port)
    assert await client.nothing_within(0.3)
    assert responder.received.empty()

    client.send(request_bytes(), "127.0.0.1", point.port)
    served, _ = await responder.next()
    assert isinstance(served, Request) and served.method == "OPTIONS"
    assert as_response((await client.receive())[0]).status == 200


def parse_call_id(data: bytes) -> str:
    for line in data.decode().split("\r\n"):
        if line.startswith("Call-ID:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Call-ID")


async def test_random_datagrams_never_stop_the_layer(layers: list[TransportLayer]) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")
    rng = random.Random(2)
    valid = request_bytes()
    for _ in range(300):
        choice = rng.random()
        if choice < 0.4:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        else:  # a valid message with a few bytes flipped, cut or duplicated
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated[: rng.randrange(len(mutated) // 2, len(mutated) + 1)])
        client.send(data, "127.0.0.1", point.port)
    await asyncio.sleep(0.2)
    while not responder.received.empty():
        responder.received.get_nowait()
    client.send(request_bytes(call_id="after-the-storm"), "127.0.0.1", point.port)
    served, _ = await responder.next()
    assert isinstance(served, Request) and served.call_id == "after-the-storm"


async def test_oversized_datagram_gets_513(layers: list[TransportLayer]) -> None:
    layer, responder = await responder_layer(max_message_size=4096)
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")
    client.send(
        request_bytes("MESSAGE", body=b"x" * 5000, extra="Content-Type: text/plain\r\n"),
        "127.0.0.1",
        point.port,
    )
    answer = parse((await client.receive())[0])
    assert isinstance(answer, Response) and answer.status == 513
    assert responder.received.empty()


async def test_handler_errors_do_not_stop_delivery(layers: list[TransportLayer]) -> None:
    seen: list[str] = []

    def fragile(message: Request | Response, source: Source) -> None:
        seen.append(message.call_id)
        if len(seen) == 1:
            raise RuntimeError("a bug in the layer above")

    layer = TransportLayer(fragile)
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")
    client.send(request_bytes(call_id="first"), "127.0.0.1", point.port)
    client.send(request_bytes(call_id="second"), "127.0.0.1", point.port)
    async with asyncio.timeout(WAIT):
        while len(seen) < 2:
            await asyncio.sleep(0.01)
    assert seen == ["first", "second"]


async def test_stun_binding_request_on_the_sip_port_learns_the_public_address(
    layers: list[TransportLayer],
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("UDP", "127.0.0.1", 0)
    client = await udp_client("127.0.0.1")
    transaction_id = secrets.token_bytes(12)
    client.send(struct.pack("!HHI12s", 0x0001, 0, STUN_MAGIC_COOKIE, transaction_id), "127.0.0.1", point.port)
    data, _ = await client.receive()
    message_type, length, cookie, echoed = struct.unpack_from("!HHI12s", data)
    assert (message_type, cookie, echoed) == (0x0101, STUN_MAGIC_COOKIE, transaction_id)
    attribute, size, _, family, xport = struct.unpack_from("!HHBBH", data, 20)
    assert attribute == 0x0020 and family == 0x01 and length == 4 + size
    address = bytes(a ^ b for a, b in zip(data[28:32], STUN_MAGIC_COOKIE.to_bytes(4, "big"), strict=True))
    assert (socket.inet_ntoa(address), xport ^ 0x2112) == ("127.0.0.1", client.port)
    # A NAT keep-alive of bare CRLFs is not SIP and is not answered.
    client.send(b"\r\n\r\n", "127.0.0.1", point.port)
    assert await client.nothing_within(0.2)
    assert responder.received.empty()


def test_stun_response_for_ipv6_xors_with_the_transaction_id() -> None:
    transaction_id = bytes(range(12))
    request = struct.pack("!HHI12s", 0x0001, 0, STUN_MAGIC_COOKIE, transaction_id)
    answer = stun_binding_response(request, ("2001:db8::5", 40000))
    assert answer is not None
    mask = STUN_MAGIC_COOKIE.to_bytes(4, "big") + transaction_id
    address = bytes(a ^ b for a, b in zip(answer[28:44], mask, strict=True))
    assert ipaddress.ip_address(address) == ipaddress.ip_address("2001:db8::5")
    assert stun_binding_response(request[:-1], ("192.0.2.1", 1)) is None  # length mismatch: not STUN
    assert stun_binding_response(request_bytes(), ("192.0.2.1", 1)) is None


# --- TCP ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_tcp_and_udp_share_a_port_and_tcp_replies_on_the_same_connection(
    host: str, layers: list[TransportLayer]
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    udp = await layer.listen("UDP", host, 0)
    tcp = await layer.listen("TCP", host, udp.port)
    assert tcp.port == udp.port

    client = await StreamClient.open(host, tcp.port)
    try:
        await client.send(request_bytes(via="SIP/2.0/TCP client.invalid;rport"))
        request, source = await responder.next()
        assert source.transport is Transport.TCP and source.connection is not None
        assert source.remote == (normalize_host(host), client.local[1])
        assert request.via.rport == client.local[1]
        response = await client.receive()
        assert isinstance(response, Response) and response.status == 200

        # A request to the client's address reuses its connection instead of dialling it.
        assert layer.find_connection(("TCP", host, client.local[1])) is source.connection
        notify = parse(request_bytes("NOTIFY", via=f"SIP/2.0/TCP {format_host(host)}:{tcp.port}"))
        used = await layer.send(notify, Destination(Transport.TCP, host, client.local[1]))
        assert used is source.connection
        received = await client.receive()
        assert isinstance(received, Request) and received.method == "NOTIFY"
        assert len(layer.connections) == 1
    finally:
        await client.close()


async def test_tcp_keepalive_ping_gets_a_pong_and_messages_split_anywhere_are_framed(
    layers: list[TransportLayer],
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("TCP", "127.0.0.1", 0)
    client = await StreamClient.open("127.0.0.1", point.port)
    try:
        await client.send(b"\r\n\r\n")
        assert await asyncio.wait_for(client.reader.readexactly(2), WAIT) == b"\r\n"
        # Two messages in three arbitrary segments, with a ping between them.
        stream = request_bytes(call_id="one", body=b"v=0\r\n") + b"\r\n\r\n" + request_bytes(call_id="two")
        for piece in (stream[:7], stream[7:300], stream[300:]):
            await client.send(piece)
            await asyncio.sleep(0.01)
        assert [(await responder.next())[0].call_id for _ in range(2)] == ["one", "two"]
        assert await asyncio.wait_for(client.reader.readexactly(2), WAIT) == b"\r\n"
    finally:
        await client.close()


async def test_garbage_on_one_tcp_connection_closes_only_that_one(layers: list[TransportLayer]) -> None:
    layer, _ = await responder_layer()
    layers.append(layer)
    point = await layer.listen("TCP", "127.0.0.1", 0)
    good = await StreamClient.open("127.0.0.1", point.port)
    bad = await StreamClient.open("127.0.0.1", point.port)
    try:
        await good.send(request_bytes(call_id="before"))
        assert as_response(await good.receive()).status == 200
        await bad.send(b"GARBAGE\r\nContent-Length: lots\r\n\r\n")
        assert await bad.closed_by_server()
        # A message that frames fine but does not parse is answered, and the connection stays.
        await good.send(request_bytes().replace(b"1 OPTIONS", b"1 BYE"))
        assert as_response(await good.receive()).status == 400
        await good.send(request_bytes(call_id="after"))
        answer = await good.receive()
        assert isinstance(answer, Response) and answer.status == 200 and answer.call_id == "after"
        assert len(layer.connections) == 1
    finally:
        await good.close()
        await bad.close()


async def test_streams_are_bounded_endless_headers_and_huge_bodies_close_the_connection(
    layers: list[TransportLayer],
) -> None:
    layer, responder = await responder_layer(max_message_size=8192)
    layers.append(layer)
    point = await layer.listen("TCP", "127.0.0.1", 0)
    endless = await StreamClient.open("127.0.0.1", point.port)
    huge = await StreamClient.open("127.0.0.1", point.port)
    try:
        await endless.send(b"OPTIONS sip:a@b SIP/2.0\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # ~200 KiB of header lines, never ending
                await endless.send(b"X-Filler: " + b"y" * 1000 + b"\r\n")
        assert await endless.closed_by_server()
        await huge.send(request_bytes("MESSAGE").replace(b"Content-Length: 0", b"Content-Length: 900000000"))
        assert await huge.closed_by_server()
        assert responder.received.empty()
    finally:
        await endless.close()
        await huge.close()


async def test_idle_connections_are_closed(layers: list[TransportLayer]) -> None:
    layer, _ = await responder_layer(idle_timeout=0.3)
    layers.append(layer)
    point = await layer.listen("TCP", "127.0.0.1", 0)
    client = await StreamClient.open("127.0.0.1", point.port)
    try:
        assert await client.closed_by_server(timeout=WAIT)
        assert layer.connections == []
    finally:
        await client.close()


@pytest.mark.parametrize("host", HOSTS)
async def test_layer_dials_tcp_reuses_the_connection_and_gets_replies_on_it(
    host: str, layers: list[TransportLayer]
) -> None:
    server, _ = await responder_layer()
    client_received: asyncio.Queue[tuple[Request | Response, Source]] = asyncio.Queue()
    client = TransportLayer(lambda message, source: client_received.put_nowait((message, source)))
    layers.extend([server, client])
    point = await server.listen("TCP", host, 0)
    await client.listen("TCP", host, 0)

    for number in (1, 2):
        request = parse(request_bytes(via="SIP/2.0/TCP client.invalid;rport", cseq=number))
        await client.send(request, ("tcp", host, point.port))
        response, source = await asyncio.wait_for(client_received.get(), WAIT)
        assert isinstance(response, Response) and response.cseq.number == number
        assert source.connection is not None and source.connection.outbound
    assert len(client.connections) == 1 and len(server.connections) == 1

    with pytest.raises(TransportError):
        await client.send(request_bytes(), ("TCP", host, _closed_port(host)))


def _closed_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


async def test_send_nowait_reports_connect_failures(layers: list[TransportLayer]) -> None:
    failures: asyncio.Queue[tuple[object, str]] = asyncio.Queue()
    layer = TransportLayer(lambda m, s: None, on_send_failure=lambda d, r: failures.put_nowait((d, r)))
    layers.append(layer)
    await layer.listen("TCP", "127.0.0.1", 0)
    port = _closed_port("127.0.0.1")
    unreachable = TransactionAddress("127.0.0.1", port, "TCP")
    layer.send_nowait(request_bytes(), unreachable)
    destination, reason = await asyncio.wait_for(failures.get(), WAIT)
    assert destination is unreachable and "connect" in reason  # as given: ready for transport_failed()
    with pytest.raises(TransportError):  # WebSocket peers cannot be dialled
        layer.send_nowait(request_bytes(), ("WS", "127.0.0.1", port))
    with pytest.raises(TransportError):  # no UDP listener to send from
        layer.send_nowait(request_bytes(), ("UDP", "127.0.0.1", port))


async def test_connection_limit_refuses_new_connections_only(layers: list[TransportLayer]) -> None:
    layer, _ = await responder_layer(max_connections=1)
    layers.append(layer)
    point = await layer.listen("TCP", "127.0.0.1", 0)
    first = await StreamClient.open("127.0.0.1", point.port)
    second = None
    try:
        await first.send(request_bytes())
        assert as_response(await first.receive()).status == 200
        second = await StreamClient.open("127.0.0.1", point.port)
        assert await second.closed_by_server()
        await first.send(request_bytes())
        assert as_response(await first.receive()).status == 200
    finally:
        await first.close()
        if second is not None:
            await second.close()


# --- TLS ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_tls_handshake_and_exchange(
    host: str, certificate: tuple[Path, Path], layers: list[TransportLayer]
) -> None:
    cert_path, key_path = certificate
    layer, responder = await responder_layer(tls_context=server_tls_context(cert_path, key_path))
    layers.append(layer)
    point = await layer.listen("TLS", host, 0)

    client = await StreamClient.open(host, point.port, client_tls_context(ca_path=cert_path))
    try:
        await client.send(request_bytes(via="SIP/2.0/TLS client.invalid;rport"))
        request, source = await responder.next()
        assert source.transport is Transport.TLS and request.via.received == normalize_host(host)
        response = await client.receive()
        assert isinstance(response, Response) and response.status == 200
    finally:
        await client.close()

    # Layer to layer: the dialling side verifies the certificate against the CA it was given.
    dialler_got: asyncio.Queue[Request | Response] = asyncio.Queue()
    dialler = TransportLayer(
        lambda message, source: dialler_got.put_nowait(message),
        tls_client_context=client_tls_context(ca_path=cert_path),
    )
    layers.append(dialler)
    await dialler.send(request_bytes(via="SIP/2.0/TLS dialler.invalid;rport"), ("TLS", host, point.port))
    assert as_response(await asyncio.wait_for(dialler_got.get(), WAIT)).status == 200

    untrusting = TransportLayer(
        lambda m, s: None, tls_client_context=client_tls_context(), connect_timeout=WAIT
    )
    layers.append(untrusting)
    with pytest.raises(TransportError, match="certificate"):
        await untrusting.send(request_bytes(), ("TLS", host, point.port))


async def test_tls_connect_is_bounded_by_the_connect_timeout(
    certificate: tuple[Path, Path], layers: list[TransportLayer]
) -> None:
    # A peer that accepts TCP but never answers the TLS handshake (writers kept so nothing closes them).
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    layer = TransportLayer(
        lambda m, s: None, tls_client_context=client_tls_context(ca_path=certificate[0]), connect_timeout=0.3
    )
    layers.append(layer)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TransportError, match="timed out"):
            await layer.send(request_bytes(), ("TLS", "127.0.0.1", port))
        assert asyncio.get_running_loop().time() - started < WAIT
        assert layer.connections == []
    finally:
        for writer in accepted:
            writer.close()
        silent.close()


def test_tls_configuration_errors_are_sentences(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        server_tls_context(tmp_path / "missing.pem", tmp_path / "missing.key")


async def test_tls_listener_without_a_certificate_is_refused(layers: list[TransportLayer]) -> None:
    layer = TransportLayer(lambda m, s: None)
    layers.append(layer)
    with pytest.raises(TransportError, match="certificate"):
        await layer.listen("TLS", "127.0.0.1", 0)


# --- WebSocket ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_websocket_exchange_with_subprotocol_sip(host: str, layers: list[TransportLayer]) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    point = await layer.listen("WS", host, 0)
    uri = f"ws://{format_hostport(host, point.port)}/"
    async with ws_connect(uri, subprotocols=SIP, open_timeout=WAIT) as websocket:
        assert websocket.subprotocol == "sip"
        await websocket.send(request_bytes(via="SIP/2.0/WS df7jal23ls0d.invalid;rport").decode())
        request, source = await responder.next()
        assert source.transport is Transport.WS and source.connection is not None
        assert request.via.received == normalize_host(host)
        text = await asyncio.wait_for(websocket.recv(), WAIT)
        assert isinstance(text, str)
        answer = parse(text.encode())
        assert isinstance(answer, Response) and answer.status == 200

        await websocket.send(request_bytes(call_id="binary-frame"))  # binary frames are SIP too
        assert (await responder.next())[0].call_id == "binary-frame"
        await asyncio.wait_for(websocket.recv(), WAIT)

        # The layer can send to the browser only over its connection, found by its address.
        local = websocket.local_address
        await layer.send(request_bytes("MESSAGE"), ("WS", local[0], local[1]))
        pushed = parse(await ws_receive(websocket))
        assert isinstance(pushed, Request) and pushed.method == "MESSAGE"

        await websocket.send("not a SIP message but has no headers either")
        await websocket.send(request_bytes().decode().replace("1 OPTIONS", "1 INFO"))
        rejected = parse(await ws_receive(websocket))
        assert isinstance(rejected, Response) and rejected.status == 400
    async with asyncio.timeout(WAIT):
        while layer.connections:
            await asyncio.sleep(0.01)
    with pytest.raises(TransportError):
        await layer.send(request_bytes(), ("WS", local[0], local[1]))


async def test_websocket_needs_the_sip_subprotocol_and_the_root_path(layers: list[TransportLayer]) -> None:
    layer, _ = await responder_layer()
    layers.append(layer)
    point = await layer.listen("WS", "127.0.0.1", 0)
    with pytest.raises(InvalidStatus) as no_sip:
        async with ws_connect(f"ws://127.0.0.1:{point.port}/", open_timeout=WAIT):
            pass
    assert no_sip.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as elsewhere:
        async with ws_connect(f"ws://127.0.0.1:{point.port}/other", subprotocols=SIP, open_timeout=WAIT):
            pass
    assert elsewhere.value.response.status_code == 404


async def test_websocket_messages_are_bounded(layers: list[TransportLayer]) -> None:
    layer, responder = await responder_layer(max_message_size=4096)
    layers.append(layer)
    point = await layer.listen("WS", "127.0.0.1", 0)
    async with ws_connect(f"ws://127.0.0.1:{point.port}/", subprotocols=SIP, open_timeout=WAIT) as websocket:
        await websocket.send(request_bytes("MESSAGE", body=b"x" * 10_000))
        await asyncio.wait_for(websocket.wait_closed(), WAIT)
        assert websocket.close_code == 1009  # message too big
    assert responder.received.empty()


async def test_secure_websocket(certificate: tuple[Path, Path], layers: list[TransportLayer]) -> None:
    cert_path, key_path = certificate
    layer, responder = await responder_layer(tls_context=server_tls_context(cert_path, key_path))
    layers.append(layer)
    point = await layer.listen("WSS", "127.0.0.1", 0)
    context = client_tls_context(ca_path=cert_path)
    async with ws_connect(
        f"wss://127.0.0.1:{point.port}/",
        subprotocols=SIP,
        ssl=context,
        open_timeout=WAIT,
    ) as websocket:
        await websocket.send(request_bytes(via="SIP/2.0/WSS browser.invalid;rport").decode())
        _, source = await responder.next()
        assert source.transport is Transport.WSS
        assert as_response(await ws_receive(websocket)).status == 200


# --- every transport at once, under uvloop ----------------------------------------------------------------


def test_all_transports_side_by_side_under_uvloop(certificate: tuple[Path, Path]) -> None:
    cert_path, key_path = certificate

    async def scenario() -> None:
        layer, responder = await responder_layer(tls_context=server_tls_context(cert_path, key_path))
        try:
            udp = await layer.listen("UDP", "127.0.0.1", 0)
            points = await layer.start(
                [("TCP", "127.0.0.1", udp.port), ("TLS", "127.0.0.1", 0), ("WS", "127.0.0.1", 0)]
            )
            tcp, tls, ws = points
            datagram = await udp_client("127.0.0.1")
            datagram.send(request_bytes(), "127.0.0.1", udp.port)
            assert as_response((await datagram.receive())[0]).status == 200
            for point, context in ((tcp, None), (tls, client_tls_context(ca_path=cert_path))):
                stream = await StreamClient.open("127.0.0.1", point.port, context)
                await stream.send(request_bytes())
                assert as_response(await stream.receive()).status == 200
                await stream.close()
            async with ws_connect(f"ws://127.0.0.1:{ws.port}/", subprotocols=SIP) as websocket:
                await websocket.send(request_bytes())
                assert as_response(await ws_receive(websocket)).status == 200
            transports = [(await responder.next())[1].transport for _ in range(4)]
            assert transports == [Transport.UDP, Transport.TCP, Transport.TLS, Transport.WS]
        finally:
            await layer.close()

    uvloop.run(asyncio.wait_for(scenario(), 20))


# --- with the real transaction layer ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_transaction_layers_talk_through_the_driver(
    transport: str, layers: list[TransportLayer]
) -> None:
    """The glue the SIP stack will use: send_nowait as send, local_address_for as sent_by."""
    loop = asyncio.get_running_loop()
    events: dict[str, asyncio.Queue[Event]] = {"uac": asyncio.Queue(), "uas": asyncio.Queue()}

    def stack(name: str) -> tuple[TransportLayer, TransactionLayer]:
        def deliver(message: Request | Response, source: Source) -> None:
            address = TransactionAddress(source.host, source.port, str(source.transport))
            for event in transactions.receive(message, address, loop.time()):
                events[name].put_nowait(event)

        driver = TransportLayer(deliver)
        transactions = TransactionLayer(driver.send_nowait, sent_by=driver.local_address_for)
        layers.append(driver)
        return driver, transactions

    uac_driver, uac = stack("uac")
    uas_driver, uas = stack("uas")
    await uac_driver.listen(transport, "127.0.0.1", 0)
    uas_point = await uas_driver.listen(transport, "127.0.0.1", 0)

    request = parse(request_bytes()).copy()
    assert isinstance(request, Request)
    request.headers.remove("Via")  # the transaction layer adds its own, from sent_by
    uac.send_request(request, TransactionAddress("127.0.0.1", uas_point.port, transport), loop.time())

    arrived = await asyncio.wait_for(events["uas"].get(), WAIT)
    assert isinstance(arrived, RequestReceived) and arrived.transaction is not None
    assert arrived.request.via.port == uac_driver.listen_points[0].port
    uas.respond(arrived.transaction, make_response(arrived.request, 200, to_tag=new_tag()), loop.time())
    answered = await asyncio.wait_for(events["uac"].get(), WAIT)
    assert isinstance(answered, ResponseReceived) and answered.response.status == 200


# --- addresses ------------------------------------------------------------------------------------------


async def test_local_address_for_via_and_contact(layers: list[TransportLayer]) -> None:
    layer = TransportLayer(lambda m, s: None, public_address="203.0.113.9")
    layers.append(layer)
    udp = await layer.listen("UDP", "127.0.0.1", 0)
    wildcard = await layer.listen("TCP", "0.0.0.0", 0)
    # Public peers are told the public address; peers on our own networks the local one.
    assert layer.local_address_for(("UDP", "198.51.100.20", 5060)) == ("203.0.113.9", udp.port)
    assert layer.local_address_for(("UDP", "127.0.0.1", 5060)) == ("127.0.0.1", udp.port)
    # A wildcard listener answers with the address the kernel routes from.
    assert layer.local_address_for(("TCP", "127.0.0.1", 5060)) == ("127.0.0.1", wildcard.port)
    with pytest.raises(TransportError):
        layer.local_address_for(("TLS", "127.0.0.1", 5061))


def test_host_formatting() -> None:
    assert format_host("::1") == "[::1]" and format_host("[::1]") == "[::1]"
    assert format_hostport("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert format_hostport("example.com", None) == "example.com"
    assert normalize_host("[2001:DB8:0:0::1]") == "2001:db8::1"
    assert normalize_host("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_host("Example.COM.") == "example.com"


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_formatted_addresses_parse_back(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    text = format_hostport(str(address), port)
    host, _, port_text = text.rpartition(":")
    assert int(port_text) == port
    assert ipaddress.ip_address(strip_brackets(host)) == address
    assert normalize_host(host) == normalize_host(str(address))


# --- salvaging an answer from bytes the parser rejected ---------------------------------------------------


def test_error_response_salvage_reads_compact_and_folded_headers() -> None:
    data = (
        b"INVITE sip:x@y SIP/2.0\n"
        b"v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\n"
        b"v: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKb\n"
        b"f: <sip:a@b>\n ;tag=12\n"
        b"t: <sip:c@d>\n"
        b"i: abc\n"
        b"CSeq: 5 INVITE\n\n"
    )
    answer = error_response(data, 400, "Bad\r\nThing")
    assert answer is not None
    response = parse(answer)
    assert isinstance(response, Response) and response.status == 400 and response.reason == "Bad Thing"
    assert [via.host for via in response.vias] == ["192.0.2.1", "192.0.2.2"]
    assert response.from_.tag == "12" and response.to.tag is not None and response.call_id == "abc"
    assert error_response(data.replace(b"i: abc\n", b""), 400, "x") is None
    assert error_response(b"SIP/2.0 200 OK\r\n\r\n", 400, "x") is None
    assert error_response(data.replace(b"5 INVITE", b"5 ACK"), 400, "x") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_error_response_salvage_never_raises(data: bytes) -> None:
    answer = error_response(data, 400, "Bad Request")
    if answer is not None:
        assert answer.startswith(b"SIP/2.0 400 ")


@given(st.text(max_size=300))
def test_error_response_of_any_reason_is_one_parseable_status_line(reason: str) -> None:
    answer = error_response(request_bytes(), 400, reason)
    assert answer is not None
    response = parse(answer)
    assert isinstance(response, Response) and "\n" not in response.reason and len(response.reason) <= 120


# --- SIPp ----------------------------------------------------------------------------------------------


SIPP = shutil.which("sipp")


@pytest.mark.integration
@pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")
@pytest.mark.parametrize("sipp_transport", ["u1", "t1"])
async def test_sipp_uac_calls_complete_against_the_layer(
    sipp_transport: str, tmp_path: Path, layers: list[TransportLayer]
) -> None:
    layer, responder = await responder_layer()
    layers.append(layer)
    udp = await layer.listen("UDP", "127.0.0.1", 0)
    await layer.listen("TCP", "127.0.0.1", udp.port)
    assert SIPP is not None
    process = await asyncio.create_subprocess_exec(
        SIPP,
        "-sn",
        "uac",
        "-t",
        sipp_transport,
        "-i",
        "127.0.0.1",
        "-m",
        "5",
        "-r",
        "20",
        "-timeout",
        "20s",
        "-nostdin",
        f"127.0.0.1:{udp.port}",
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode(errors="replace")[-2000:]
    methods = []
    while not responder.received.empty():
        message, source = responder.received.get_nowait()
        assert source.transport is (Transport.UDP if sipp_transport == "u1" else Transport.TCP)
        methods.append(message.method if isinstance(message, Request) else "response")
    assert methods.count("INVITE") == 5 and methods.count("ACK") == 5 and methods.count("BYE") == 5
