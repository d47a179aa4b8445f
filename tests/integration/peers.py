"""Drivers for the real peers the integration tests use: a `hotline serve` subprocess, SIPp and baresip.

Everything listens on 127.0.0.1 only, every wait is bounded, and every process is killed on teardown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOTLINE = REPO / ".venv" / "bin" / "hotline"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


def free_port_range(size: int) -> tuple[int, int]:
    """A run of `size` consecutive free UDP ports (RTP), chosen from a random start to avoid test clashes."""
    for _ in range(100):
        start = 30000 + 2 * secrets.randbelow(15000)
        sockets = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return start, start + size - 1
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free RTP port range found")


def sip_options(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bytes | None:
    """Send one OPTIONS over UDP and return the raw response, or None when nothing answers in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        local = s.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(msg, (host, port))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
        return data


@dataclass
class HotlineServer:
    """`hotline serve` (or `hotline demo`) as a subprocess on free loopback ports."""

    data_dir: Path
    command: str = "serve"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    sip_port: int = 0
    http_port: int = 0
    rtp_ports: tuple[int, int] = (0, 0)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, timeout: float = 30.0) -> HotlineServer:
        self.sip_port = self.sip_port or free_port()
        self.http_port = self.http_port or free_port(socket.SOCK_STREAM)
        if self.rtp_ports == (0, 0):
            self.rtp_ports = free_port_range(200)
        self.log_path = self.data_dir / f"hotline-{self.command}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(HOTLINE),
            self.command,
            "--data-dir",
            str(self.data_dir),
            "--bind",
            "127.0.0.1",
            "--sip-port",
            str(self.sip_port),
            "--http-port",
            str(self.http_port),
            "--rtp-ports",
            f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            *self.extra_args,
        ]
        env = {**os.environ, "HOTLINE_LOG_LEVEL": "info", **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hotline exited with {self.process.returncode}:\n{self.log_tail()}")
            if sip_options(self.sip_port, timeout=0.3) is not None:
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"hotline did not answer OPTIONS within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: the crash case."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def hotline_server(data_dir: Path, **kwargs: object) -> Iterator[HotlineServer]:
    server = HotlineServer(data_dir=data_dir, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    successful: int
    failed: int


def run_sipp(args: list[str], cwd: Path, timeout: float = 60.0) -> SippResult:
    """Run sipp in the foreground and read its final counters from the statistics CSV."""
    stat = cwd / f"stat-{secrets.token_hex(3)}.csv"
    cmd = ["sipp", *args, "-nostdin", "-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_err"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, text=True)
    successful = failed = 0
    if stat.exists():
        rows = [line.split(";") for line in stat.read_text().splitlines() if line.strip()]
        if len(rows) >= 2:
            header, last = rows[0], rows[-1]
            successful = int(last[header.index("SuccessfulCall(C)")])
            failed = int(last[header.index("FailedCall(C)")])
    return SippResult(proc.returncode, proc.stdout, proc.stderr, successful, failed)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run scripts/setup (it installs the Debian packages)")
    return path


def python_for_tests() -> str:
    return sys.executable


class Baresip:
    """A baresip softphone driven through its stdin menu.

    It sends `audio_file` (8 kHz mono WAV; the call ends when the file ends, so make it long enough) and
    dumps what it hears to `<workdir>/snd/*-dec.wav` (the sndfile module), so a test can check the audio.
    """

    def __init__(self, workdir: Path, account: str, audio_file: Path, sip_port: int | None = None) -> None:
        require_tool("baresip")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "snd").mkdir(exist_ok=True)
        self.sip_port = sip_port or free_port()
        (self.workdir / "accounts").write_text(account + "\n")
        (self.workdir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    f"audio_source aufile,{audio_file}",
                    f"audio_player aufile,{self.workdir / 'player.wav'}",
                    f"audio_alert aufile,{self.workdir / 'alert.wav'}",
                    "module_path /usr/lib/baresip/modules",
                    "module stdio.so",
                    "module g711.so",
                    "module aufile.so",
                    "module sndfile.so",
                    f"snd_path {self.workdir / 'snd'}",
                    "module_app account.so",
                    "module_app menu.so",
                    "",
                ]
            )
        )
        self.log_path = self.workdir / "baresip.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Baresip:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            ["baresip", "-4", "-s", "-f", str(self.workdir)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_for("baresip is ready", 15)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        return False

    def command(self, text: str) -> None:
        """Type into baresip's menu (e.g. '/dial sip:4001@127.0.0.1', or a digit in a call to send DTMF)."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text.encode() + (b"\n" if text.startswith("/") else b""))
        self.process.stdin.flush()

    def heard(self) -> list[Path]:
        return sorted((self.workdir / "snd").glob("*-dec.wav"))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.command("/quit")
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost, for TLS and WSS listeners in tests."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def options_request(port: int, transport: str) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:1;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
