"""The user-agent core on real sockets: SIPp calls in, stack-to-stack calls, CANCEL, REGISTER with digest
auth and lockout (issue #2 items 2, 3, 5, 6, 9)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from hotline.sip.auth import DigestChallenger, DigestClient, LockoutTracker
from hotline.sip.dialog import build_request
from hotline.sip.registrar import Authenticator, LocationService, Registrar
from hotline.sip.stack import IncomingRequest, ServerInvite, SipStack
from hotline.sip.transaction import Address
from hotline.sip.uri import parse_uri

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


async def started(stack: SipStack) -> Address:
    await stack.start([("UDP", "127.0.0.1", 0)])
    port = stack.transports.listen_points[0].port
    await stack.start([("TCP", "127.0.0.1", port)])  # TCP shares the UDP port, as on 5060
    return Address("127.0.0.1", port, "UDP")


async def answering_stack(answered: list[ServerInvite]) -> tuple[SipStack, Address]:
    stack = SipStack()

    async def on_invite(call: ServerInvite) -> None:
        call.ring()
        answered.append(call)
        await call.accept(SDP)

    stack.on_invite(on_invite)
    return stack, await started(stack)


@pytest.mark.integration
async def test_sipp_calls_are_answered_and_hung_up(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run scripts/setup")
    answered: list[ServerInvite] = []
    stack, address = await answering_stack(answered)
    try:
        proc = await asyncio.create_subprocess_exec(
            "sipp",
            f"127.0.0.1:{address.port}",
            "-sn",
            "uac",
            "-s",
            "9198",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-m",
            "10",
            "-r",
            "20",
            "-d",
            "200",
            "-timeout",
            "30s",
            "-nostdin",
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, stderr.decode()
        assert len(answered) == 10
        await asyncio.sleep(0.1)
        assert all(call.ended.is_set() and call.end_reason == "remote hangup" for call in answered)
    finally:
        await stack.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_stack_to_stack_call_with_bye(transport: str) -> None:
    answered: list[ServerInvite] = []
    server, server_address = await answering_stack(answered)
    client = SipStack()
    await started(client)
    try:
        target = Address("127.0.0.1", server_address.port, transport)
        invite = build_request(
            "INVITE",
            parse_uri(f"sip:4001@127.0.0.1:{target.port}"),
            "<sip:caller@127.0.0.1>",
            "<sip:4001@127.0.0.1>",
            contact=client.contact_for(target),
            body=SDP,
            content_type="application/sdp",
        )
        call = client.invite(invite, target)
        final = await asyncio.wait_for(call.final, 5)
        assert final.status == 200
        assert call.remote_sdp == SDP
        await asyncio.sleep(0.1)
        assert answered and answered[0].dialog is not None
        await call.bye()
        await asyncio.wait_for(answered[0].ended.wait(), 5)
        assert answered[0].end_reason == "remote hangup"
    finally:
        await client.close()
        await server.close()


async def test_cancel_of_a_ringing_call_ends_it_on_both_sides() -> None:
    ringing: list[ServerInvite] = []
    server = SipStack()

    async def on_invite(call: ServerInvite) -> None:
        call.ring()
        ringing.append(call)
        await call.cancelled.wait()

    server.on_invite(on_invite)
    address = await started(server)
    client = SipStack()
    await started(client)
    try:
        invite = build_request(
            "INVITE",
            parse_uri(f"sip:1001@127.0.0.1:{address.port}"),
            "<sip:caller@127.0.0.1>",
            "<sip:1001@127.0.0.1>",
            contact=client.contact_for(address),
            body=SDP,
            content_type="application/sdp",
        )
        call = client.invite(invite, address)
        await asyncio.wait_for(call.provisional.get(), 5)
        await asyncio.wait_for(call.provisional.get(), 5)  # 100 then 180
        call.cancel()
        final = await asyncio.wait_for(call.final, 5)
        assert final.status == 487
        assert ringing[0].cancelled.is_set()
    finally:
        await client.close()
        await server.close()


async def test_register_with_digest_auth_and_lockout() -> None:
    passwords = {("acme", "1001"): "s3cret"}
    location = LocationService()
    registrar = Registrar(
        location,
        Authenticator(
            DigestChallenger(b"k" * 32, "acme"),
            LockoutTracker(max_failures=3, window_seconds=60, lock_seconds=300),
            lambda tenant, user: passwords.get((tenant, user)),
        ),
        tenant_for=lambda request: "acme",
    )
    server = SipStack()

    async def on_register(incoming: IncomingRequest) -> None:
        incoming.send(registrar.process(incoming.request, incoming.source, server.now()))

    server.on_request("REGISTER", on_register)
    address = await started(server)
    client = SipStack()
    await started(client)

    async def register(password: str) -> int:
        request = build_request(
            "REGISTER",
            parse_uri(f"sip:127.0.0.1:{address.port}"),
            "<sip:1001@acme>",
            "<sip:1001@acme>",
            contact=client.contact_for(address, user="1001"),
            headers=[("Expires", "300")],
        )
        response = await client.request(request, address, credentials=DigestClient("1001", password))
        return response.status

    try:
        assert await register("s3cret") == 200
        bindings = location.lookup("acme", "1001", server.now())
        assert len(bindings) == 1 and bindings[0].source.port == client.transports.listen_points[0].port
        assert [await register("wrong") for _ in range(3)] == [403, 403, 403]
        # locked now: even the right password is refused until the lock ends
        assert await register("s3cret") == 403
    finally:
        await client.close()
        await server.close()
