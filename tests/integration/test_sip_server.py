"""`hotline serve` against real SIP peers on loopback (issue #2 items 5, 6, 7, 9; TEL-04/08, OPS-14).

One server with the test tenant (tests/integration/tenant.py) serves the whole module. The carrier trunk
sends from 127.0.0.2; phones register from 127.0.0.1; the brute-force test uses 127.0.0.3 so its lockout
cannot touch the other tests.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from hotline.media.player import decode_audio_file
from tests.integration.peers import (
    Baresip,
    HotlineServer,
    free_port,
    options_request,
    run_sipp,
    self_signed_certificate,
    sip_options,
)
from tests.integration.tenant import CARRIER_ADDRESS, PASSWORDS, create_tenant

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent / "scenarios"


@dataclass
class SecureServer(HotlineServer):
    """The server with TLS and WebSocket listeners too."""

    tls_port: int = 0
    ws_port: int = 0
    cert: Path = Path()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    data_dir = tmp_path_factory.mktemp("hotline")
    create_tenant(data_dir)
    cert, key = self_signed_certificate(data_dir)
    tls_port, ws_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    server = HotlineServer(
        data_dir=data_dir,
        extra_args=[
            "--sip-tls-port",
            str(tls_port),
            "--sip-ws-port",
            str(ws_port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
    ).start()
    server.tls_port, server.ws_port, server.cert = tls_port, ws_port, cert  # type: ignore[attr-defined]
    yield server
    server.stop()
    print(server.log_tail(200))


def sipp(server: HotlineServer, tmp_path: Path, *args: str, timeout: float = 60) -> tuple[int, int, str]:
    result = run_sipp(
        [f"127.0.0.1:{server.sip_port}", *args, "-timeout", f"{int(timeout) - 10}s"], tmp_path, timeout
    )
    return result.successful, result.failed, result.stderr + result.stdout[-2000:]


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_options_over_udp_and_tcp(server: HotlineServer, tmp_path: Path, transport: str) -> None:
    ok, failed, output = sipp(
        server,
        tmp_path,
        "-sf",
        str(SCENARIOS / "options.xml"),
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-m",
        "5",
    )
    assert (ok, failed) == (5, 0), output


def test_options_over_tls_and_secure_websocket(server: SecureServer) -> None:
    """TLS (with the configured certificate) and WSS (RFC 7118) listeners answer (issue #2 item 8)."""
    context = ssl.create_default_context(cafile=str(server.cert))
    raw = socket.create_connection(("127.0.0.1", server.tls_port))
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(options_request(server.tls_port, "TLS"))
        assert tls.recv(65535).startswith(b"SIP/2.0 200 OK")
    url = f"wss://localhost:{server.ws_port}/"
    with connect(url, subprotocols=[Subprotocol("sip")], ssl=context, open_timeout=10) as ws:
        ws.send(options_request(server.ws_port, "WSS").decode())
        reply = ws.recv(timeout=10)
        assert str(reply).startswith("SIP/2.0 200 OK")


def test_phone_registers_with_digest_password(server: HotlineServer, tmp_path: Path) -> None:
    ok, failed, output = sipp(
        server,
        tmp_path,
        "-sf",
        str(SCENARIOS / "register_auth.xml"),
        "-s",
        "1001",
        "-au",
        "1001",
        "-ap",
        PASSWORDS["1001"],
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-m",
        "1",
    )
    assert (ok, failed) == (1, 0), output


def test_wrong_passwords_are_rejected_then_locked_out(server: HotlineServer, tmp_path: Path) -> None:
    args = ["-s", "1003", "-i", "127.0.0.3", "-m", "1"]
    for _ in range(5):
        ok, _failed, output = sipp(
            server,
            tmp_path,
            "-sf",
            str(SCENARIOS / "register_auth_rejected.xml"),
            *args,
            "-au",
            "1003",
            "-ap",
            "not-the-password1",
            "-p",
            str(free_port()),
        )
        assert ok == 1, output
    # locked: refused at once, before the right password could even be tried
    ok, _failed, output = sipp(
        server, tmp_path, "-sf", str(SCENARIOS / "register_locked.xml"), *args, "-p", str(free_port())
    )
    assert ok == 1, output


def carrier_calls(
    server: HotlineServer, tmp_path: Path, number: str, *extra: str, timeout: float = 60
) -> tuple[int, int, str]:
    """SIPp's built-in caller from the carrier trunk's address to `number`."""
    return sipp(
        server,
        tmp_path,
        "-sn",
        "uac",
        "-s",
        number,
        "-i",
        CARRIER_ADDRESS,
        "-p",
        str(free_port()),
        *extra,
        timeout=timeout,
    )


def test_carrier_calls_are_answered_and_hung_up(server: HotlineServer, tmp_path: Path) -> None:
    ok, failed, output = carrier_calls(server, tmp_path, "02161234568", "-m", "20", "-r", "10", "-d", "1000")
    assert (ok, failed) == (20, 0), output


def test_calls_complete_when_packets_are_lost(server: HotlineServer, tmp_path: Path) -> None:
    """SIPp drops 10% of what it receives; retransmissions on both sides still complete every call."""
    ok, failed, output = carrier_calls(
        server, tmp_path, "02161234568", "-m", "20", "-r", "10", "-d", "500", "-lost", "10", timeout=120
    )
    assert ok + failed == 20, output
    assert ok >= 19, output


def _register(server: HotlineServer, tmp_path: Path, user: str, port: int) -> None:
    ok, failed, output = sipp(
        server,
        tmp_path,
        "-sf",
        str(SCENARIOS / "register_auth.xml"),
        "-s",
        user,
        "-au",
        user,
        "-ap",
        PASSWORDS[user],
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
    )
    assert (ok, failed) == (1, 0), output


@contextlib.contextmanager
def registered_sipp_phone(
    server: HotlineServer, tmp_path: Path, scenario: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Extension 1002 registered by SIPp, then that port answering one call with `scenario`."""
    phone_port = free_port()
    _register(server, tmp_path, "1002", phone_port)
    phone = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(SCENARIOS / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(phone_port),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-trace_err",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield phone
        assert phone.wait(30) == 0, phone.stdout.read().decode() if phone.stdout else ""
    finally:
        phone.kill()


def test_call_to_an_extension_is_originated_and_bridged(server: HotlineServer, tmp_path: Path) -> None:
    """Hotline as UAC: the carrier's call to a DID rings the registered phone, which answers; the caller's
    BYE makes Hotline send BYE to the phone."""
    with registered_sipp_phone(server, tmp_path, "uas_answer.xml"):
        ok, failed, output = carrier_calls(server, tmp_path, "02161234569", "-m", "1", "-d", "2000")
        assert (ok, failed) == (1, 0), output


def test_cancel_of_a_ringing_extension_reaches_the_phone(server: HotlineServer, tmp_path: Path) -> None:
    with registered_sipp_phone(server, tmp_path, "uas_ring_until_cancel.xml"):
        ok, failed, output = sipp(
            server,
            tmp_path,
            "-sf",
            str(SCENARIOS / "uac_cancel.xml"),
            "-s",
            "02161234569",
            "-i",
            CARRIER_ADDRESS,
            "-p",
            str(free_port()),
            "-m",
            "1",
        )
        assert (ok, failed) == (1, 0), output


def test_malformed_datagrams_get_errors_and_the_server_keeps_serving(server: HotlineServer) -> None:
    """5,000 mutated messages at the live server: no crash, 4xx or silence, OPTIONS still answered."""
    rng = random.Random(4242)
    base = (
        b"INVITE sip:9196@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfuzz\r\n"
        b"From: <sip:f@127.0.0.1>;tag=1\r\nTo: <sip:9196@127.0.0.1>\r\nCall-ID: fuzz\r\nCSeq: 1 INVITE\r\n"
        b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        for i in range(5000):
            data = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if i % 7 == 0:
                data = data[: rng.randrange(len(data))]
            s.sendto(bytes(data), ("127.0.0.1", server.sip_port))
            if i % 200 == 0:
                time.sleep(0.02)
                try:
                    while s.recv(65535):
                        pass
                except BlockingIOError:
                    pass
                for line in (server.log_tail(5) or "").splitlines():
                    assert "Traceback" not in line
    assert server.process is not None and server.process.poll() is None
    # the backlog drains; then the server answers as before
    deadline = time.monotonic() + 30
    while sip_options(server.sip_port, timeout=1) is None:
        assert time.monotonic() < deadline, "no answer to OPTIONS after the flood"
    assert "Traceback" not in server.log_tail(100000)


def _tone(path: Path, seconds: int = 30) -> Path:
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(path),
            "synth",
            str(seconds),
            "sine",
            "600",
            "vol",
            "0.3",
        ],
        check=True,
    )
    return path


def baresip_call(
    server: HotlineServer, tmp_path: Path, number: str, during: Callable[[Baresip], None]
) -> np.ndarray:
    """Extension 1001 on baresip (sending a 600 Hz tone) calls `number`, does `during`, hangs up; what it
    heard, as 8 kHz samples."""
    phone = Baresip(
        tmp_path / "baresip",
        f"<sip:1001@127.0.0.1:{server.sip_port}>;auth_pass={PASSWORDS['1001']};regint=60",
        _tone(tmp_path / "tone.wav"),
    ).start()
    try:
        assert phone.wait_for("200 OK", 10), phone.log()[-3000:]
        phone.command(f"/dial sip:{number}@127.0.0.1:{server.sip_port}")
        assert phone.wait_for("Call established", 15), phone.log()[-3000:]
        during(phone)
        phone.command("/hangup")
        time.sleep(1)
    finally:
        phone.stop()
    heard = phone.heard()
    assert heard, phone.log()[-3000:]
    return decode_audio_file(heard[0], 8000).astype(np.float64)


def test_baresip_registers_and_hears_the_digits_it_pressed_read_back(
    server: HotlineServer, tmp_path: Path
) -> None:
    def press_7(phone: Baresip) -> None:
        time.sleep(8)  # the welcome prompt, zh then en
        phone.command("7")
        time.sleep(9)  # 2 s for more digits, then "您按了 七 / You pressed 7"

    audio = baresip_call(server, tmp_path, "9197", press_7)
    active = np.abs(audio) > 1000
    assert active[: 4 * 8000].mean() > 0.2, "the welcome prompt was not heard"
    assert len(audio) / 8000 > 10, "nothing was heard after the key press"
    assert active[-8 * 8000 :].mean() > 0.1, "the digit was not read back"


def test_echo_test_number_returns_the_callers_own_audio(server: SecureServer, tmp_path: Path) -> None:
    """9196: the phone sends a 600 Hz tone and hears 600 Hz back (two-way audio, issue #3 item 9)."""
    audio = baresip_call(server, tmp_path, "9196", lambda _phone: time.sleep(4))
    assert len(audio) > 2 * 8000, "the echo lasted less than 2 s"
    middle = audio[len(audio) // 4 : 3 * len(audio) // 4]
    spectrum = np.abs(np.fft.rfft(middle))
    assert abs(np.argmax(spectrum) * 8000 / len(middle) - 600) < 10, "what came back is not the caller's tone"


def test_keepalive_drops_phones_that_vanished_and_keeps_live_ones(tmp_path: Path) -> None:
    """OPTIONS to every registered phone (issue #2 item 6): a phone that answers keeps its binding, one that
    has gone away loses it. Short timers so the test does not wait 32 s for a timeout."""
    data_dir = tmp_path / "data"
    create_tenant(data_dir)
    server = HotlineServer(
        data_dir=data_dir, env={"HOTLINE_SIP_T1": "0.05", "HOTLINE_SIP_KEEPALIVE_SECONDS": "1"}
    ).start()
    live = Baresip(
        tmp_path / "baresip",
        f"<sip:1001@127.0.0.1:{server.sip_port}>;auth_pass={PASSWORDS['1001']};regint=600",
        _tone(tmp_path / "tone.wav"),
    ).start()
    try:
        assert live.wait_for("200 OK", 10), live.log()[-2000:]
        _register(server, tmp_path, "1003", free_port())  # SIPp registers, then exits: the phone is gone
        deadline = time.monotonic() + 20
        while '"user": "1003", "reason": "no answer"' not in server.log_tail(400):
            assert time.monotonic() < deadline, server.log_tail(40)
            time.sleep(0.5)
        time.sleep(3)  # a few more rounds
        log = server.log_tail(1000)
        assert '"user": "1001", "reason": "no answer"' not in log
        assert "OPTIONS" in live.log()  # the live phone was asked, and answered
    finally:
        live.stop()
        server.stop()
