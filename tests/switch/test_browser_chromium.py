"""Headless Chromium as the agent's browser (issue #6, issue #3 item 7; TEL-11, FM-04).

The page does what the agent desktop does (one peer connection with the microphone, offered once ICE
gathering is complete), the offer goes to `switch.browsers.attach`, and a call is answered into the
channel. Chromium offers host candidates on every interface, so the test runs itself again inside a network
namespace of its own that has only loopback: all ICE traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from hotline.media.codecs import make_decoder
from hotline.switch.service import Switch
from tests.media.test_webrtc import caller_tone_payloads, wait_until
from tests.switch.test_browser import AGENT, TENANT, caller, ring_and_answer
from tests.switch.test_browser import switch as switch  # the fixture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
# What the agent desktop does: one peer connection with the microphone, offered once gathering is complete.
AGENT_PAGE = b"""<!doctype html><meta charset="utf-8"><title>agent</title><script>
async function start() {
  const microphone = await navigator.mediaDevices.getUserMedia({audio: true});
  const pc = new RTCPeerConnection({iceServers: []});
  window.pc = pc;
  microphone.getTracks().forEach(track => pc.addTrack(track, microphone));
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") done(); };
  });
  return pc.localDescription.sdp;
}
async function inboundPackets() {
  let count = 0;
  (await window.pc.getStats()).forEach(report => {
    if (report.type === "inbound-rtp" && report.kind === "audio") count = report.packetsReceived;
  });
  return count;
}
</script>"""
INSIDE_NAMESPACE = "HOTLINE_TEST_PRIVATE_NETNS"


def only_loopback() -> bool:
    return [name for _index, name in socket.if_nameindex()] == ["lo"]


async def serve_page(body: bytes) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_real_chromium_agent_hears_the_caller_and_the_caller_hears_the_agent(
    switch: Switch, tmp_path: Path
) -> None:
    """Headless Chromium signs in (webrtc.offer -> attach), a call is answered into its channel: the
    browser's getStats shows inbound RTP growing, and its microphone reaches the caller."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed")
    playwright = pytest.importorskip("playwright.async_api")
    if not only_loopback():
        # The browser offers candidates on every interface; in a network namespace of our own that has only
        # loopback, all ICE traffic stays on 127.0.0.1. Run this test again in one.
        if os.environ.get(INSIDE_NAMESPACE) or not shutil.which("unshare") or not shutil.which("ip"):
            pytest.skip("needs a private network namespace (unshare -n, ip)")
        test_id = f"{__file__}::test_real_chromium_agent_hears_the_caller_and_the_caller_hears_the_agent"
        log_path = tmp_path / "inside-namespace.log"
        with log_path.open("wb") as log_file:  # a file, not a pipe: browser helpers may outlive the run
            inner = await asyncio.create_subprocess_exec(
                "unshare",
                "-n",
                "sh",
                "-c",
                'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$1"',
                sys.executable,
                test_id,
                env={**os.environ, INSIDE_NAMESPACE: "1"},
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                await asyncio.wait_for(inner.wait(), 120)
            finally:
                if inner.returncode is None:
                    inner.kill()
        text = log_path.read_text(errors="replace")
        if inner.returncode != 0 and "unshare failed" in text:
            pytest.skip("network namespaces are not permitted here")
        assert inner.returncode == 0, text[-4000:]
        assert "1 passed" in text, text[-4000:]
        return
    server = await serve_page(AGENT_PAGE)
    port = server.sockets[0].getsockname()[1]
    try:
        async with playwright.async_playwright() as driver:
            chromium = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await chromium.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")
                offer = await page.evaluate("start()")
                answer = await switch.browsers.attach(TENANT, AGENT, offer)
                await page.evaluate("sdp => window.pc.setRemoteDescription({type: 'answer', sdp})", answer)
                assert await wait_until(lambda: switch.browsers.connected(TENANT, AGENT), 10)
                channel = switch.browsers.channel(TENANT, AGENT)
                assert channel is not None and channel.codec == "opus"
                async with caller(switch) as (call, phone, _dialog):
                    await switch.connect(call, await ring_and_answer(switch, call))
                    port_of_caller = call.caller.media.local_port  # type: ignore[union-attr]
                    await phone.stream(port_of_caller, caller_tone_payloads(0.6))
                    first = await page.evaluate("inboundPackets()")
                    await phone.stream(port_of_caller, caller_tone_payloads(0.6))
                    second = await page.evaluate("inboundPackets()")
                    assert first > 10 and second >= first + 20, (first, second)
                    # the fake microphone's beeps reach the caller, decoded from Opus and re-encoded as PCMU
                    decoder = make_decoder("PCMU")
                    heard = [decoder.decode(p.payload) for p in phone.packets(pt=0)]
                    assert len(heard) > 40
                    assert max(int(abs(frame.astype(int)).max()) for frame in heard) > 1000
                    assert await switch.browsers.hangup(TENANT, AGENT, call.id)
                    assert switch.browsers.connected(TENANT, AGENT)
            finally:
                await chromium.close()
    finally:
        server.close()
