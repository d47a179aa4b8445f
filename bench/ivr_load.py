"""Does IVR and queue load slow a bridged call? (issue #4, done-when 3.)

One `hotline serve` on loopback with a tenant of two numbers:

- 4001 → four menus in a row (a 10 s prompt, 10 s input timeout, 5 retries each) whose key 1 leads to queue
  `sales`, where no agent ever logs in (callers wait with music on hold);
- 4002 → queue `vip` with one static agent on `sip:bridged@127.0.0.1:5072` (a SIPp UAS).

The measured call: SIPp calls 4002 with an SDP that names this script's caller socket; the agent's SIPp UAS
answers with an SDP that names this script's agent socket. Once bridged, the caller socket sends 20 ms PCMU
RTP (50 packets/s) to the server's port (read from the 200 OK that SIPp logs) and the agent socket stamps
what the relay forwards in the kernel (SO_TIMESTAMPNS): |Δt − 20 ms| p50/p99/max, RFC 3550 interarrival
jitter, loss and reordering by sequence number.

It runs that call twice: on the idle server, then while `--load` callers (default 100) sit in the IVR: half
in the menu never pressing a key, half having pressed 1 (RFC 4733, the ib1 pcap) waiting in the queue. It
prints both and the server's CPU. Run as root (SIPp plays the pcap with raw sockets):

    .venv/bin/python bench/ivr_load.py [--load 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds
from tests.integration.peers import HotlineServer

IB1 = Path(__file__).resolve().parents[2] / "shared" / "bench" / "ib1"
AGENT_SIP_PORT = 5072
PERIOD = 0.02
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
RTP = struct.Struct("!BBHII")

SDP = """v=0
o=bench 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=ptime:20
a=sendrecv
"""

# The measured caller: INVITE with our media port, log the server's port from the 200 OK, hold, BYE.
CALLER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="measured caller">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:measured@[local_ip]:[local_port]>;tag=[pid]m[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:measured@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp="m=audio [0-9]+" search_in="body" check_it="true" assign_to="server_port"/>
      <log message="SERVER_PORT [$server_port]"/>
    </action>
  </recv>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: <sip:measured@[local_ip]:[local_port]>;tag=[pid]m[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: <sip:measured@[local_ip]:[local_port]>;tag=[pid]m[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
""".replace("{sdp}", SDP)

# The agent: answers every INVITE with our agent socket's port, waits for BYE.
AGENT_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="measured agent">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:bridged@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]a[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:bridged@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
""".replace("{sdp}", SDP.replace("{port}", "[rtp]"))

# Load callers who never press a key: INVITE, ACK, sit in the menu, BYE.
SITTER_XML = re.sub(
    r'<recv response="200" rrs="true">.*?</recv>',
    '<recv response="200" rrs="true"/>',
    CALLER_XML.replace("{port}", "[media_port]"),
    flags=re.S,
).replace("measured", "sitter")


def tenant_document() -> dict[str, object]:
    menu = {
        "id": "menu",
        "name": "menu",
        "entry": "menu1",
        # four menus in a row (each one's no-input exit is the next), so silent callers stay for minutes
        "nodes": [
            {
                "id": f"menu{n}",
                "type": "menu",
                "prompts": [{"kind": "file", "file": "menu-prompt.wav"}],
                "options": {"1": "queue"},
                "input_timeout": 10,
                "retries": 5,
                "exits": {"default": f"menu{n + 1}" if n < 4 else "@hangup"},
            }
            for n in range(1, 5)
        ]
        + [
            {"id": "queue", "type": "queue", "queue": "sales", "exits": {"default": "@hangup"}},
        ],
    }
    return {
        "schema_version": 1,
        "trunks": [
            {
                "name": "sipp",
                "kind": "ip",
                "host": "127.0.0.1",
                "port": 5061,
                "allowed_sources": ["127.0.0.1/32"],
            }
        ],
        "numbers": [
            {"number": "4001", "target": "flow:menu", "public": False},
            {"number": "4002", "target": "queue:vip", "public": False},
        ],
        "flows": [menu],
        "queues": [
            {"name": "sales", "max_wait": 3600, "join_when_no_agents": True},
            {"name": "vip", "wrap_up_seconds": 0},
        ],
        "agents": [
            {"id": "9001", "name": "sales agent who never logs in", "queues": ["sales"]},
            {
                "id": "9002",
                "name": "bridged",
                "queues": ["vip"],
                "device": f"sip:bridged@127.0.0.1:{AGENT_SIP_PORT}",
                "login_on_start": True,
            },
        ],
    }


def make_tenant(data_dir: Path) -> None:
    async def create() -> None:
        from hotline.storage.engines import Storage
        from hotline.tenancy.config_document import import_tenant
        from hotline.tenancy.service import TenancyService

        storage = Storage(data_dir)
        try:
            await storage.migrate()
            tenancy = TenancyService(storage)
            await tenancy.create_tenant("load", "load", concurrent_call_limit=5000, seat_limit=10)
            result = await import_tenant(storage, tenancy, "load", tenant_document())
            if not result.ok:
                raise SystemExit("tenant rejected:\n" + "\n".join(map(str, result.problems)))
        finally:
            await storage.close()

    asyncio.run(create())
    t = np.arange(80000) / 8000  # 10 s
    samples = (3000 * np.sin(2 * np.pi * 425 * t)).astype(np.int16)
    path = data_dir / "tenants" / "load" / "prompts" / "menu-prompt.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


@dataclass
class MediaFigures:
    sent: int
    received: int
    reordered: int
    dev_p50_ms: float
    dev_p99_ms: float
    dev_max_ms: float
    jitter_ms: float  # RFC 3550 interarrival jitter at the end

    @property
    def loss_pct(self) -> float:
        return 100 * max(0, self.sent - self.received) / self.sent if self.sent else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Receiver(threading.Thread):
    """The agent's socket: kernel receive timestamps of the relayed stream."""

    def __init__(self, sock: socket.socket, stop_at: float) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stop_at = stop_at
        self.arrivals: list[tuple[int, int, float]] = []  # (seq, rtp timestamp, arrival s)

    def run(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(0.2)
        while time.monotonic() < self.stop_at and len(self.arrivals) < 100_000:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            if len(data) < RTP.size:
                continue
            _b0, _pt, seq, stamp, _ssrc = RTP.unpack_from(data)
            arrival = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    arrival = sec + nsec / 1e9
            self.arrivals.append((seq, stamp, arrival))

    def figures(self, sent: int) -> MediaFigures:
        deviations: list[float] = []
        jitter = 0.0
        reordered = 0
        seqs: set[int] = set()
        previous: tuple[int, int, float] | None = None
        for seq, stamp, arrival in self.arrivals:
            seqs.add(seq)
            if previous is not None:
                if seq != (previous[0] + 1) & 0xFFFF:
                    reordered += (seq - previous[0]) & 0xFFFF > 0x8000
                    previous = (seq, stamp, arrival)
                    continue  # a gap: compare only consecutive packets
                gap = arrival - previous[2]
                deviations.append(abs(gap - PERIOD) * 1000)
                transit_change = abs(gap - (stamp - previous[1]) / 8000)
                jitter += (transit_change - jitter) / 16
            previous = (seq, stamp, arrival)
        return MediaFigures(
            sent,
            len(seqs),
            reordered,
            percentile(deviations, 0.5),
            percentile(deviations, 0.99),
            max(deviations, default=float("nan")),
            1000 * jitter,
        )


def send_stream(sock: socket.socket, target: tuple[str, int], seconds: float) -> int:
    """PCMU at 50 packets/s on an absolute schedule (no drift)."""
    payload = bytes([0xFF]) * 160
    count = int(seconds / PERIOD)
    start = time.monotonic()
    for n in range(count):
        delay = start + n * PERIOD - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(RTP.pack(0x80, 0, n & 0xFFFF, (160 * n) & 0xFFFFFFFF, 0x1234ABCD) + payload, target)
    return count


def sipp(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    name = Path(args[args.index("-sf") + 1]).stem
    out = (cwd / f"{name}.out").open("ab")
    return subprocess.Popen(["sipp", *args, "-nostdin"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def measured_call(
    workdir: Path, label: str, seconds: float, pid: int, after_stream: Callable[[], None] | None = None
) -> tuple[MediaFigures, float]:
    """One bridged call through 4002; returns its media figures and the server's CPU % meanwhile."""
    caller_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller_sock.bind(("127.0.0.1", 0))
    agent_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    agent_sock.bind(("127.0.0.1", 0))
    agent_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    agent = sipp(
        [
            "-sf",
            "agent.xml",
            "-key",
            "rtp",
            str(agent_sock.getsockname()[1]),
            "-i",
            "127.0.0.1",
            "-p",
            str(AGENT_SIP_PORT),
            "-m",
            "1",
        ],
        workdir,
    )
    log = workdir / f"caller-{label}.log"
    hold_ms = int((seconds + 6) * 1000)
    (workdir / "caller.xml").write_text(
        CALLER_XML.replace("{hold_ms}", str(hold_ms)).replace("{port}", "[rtp]")
    )
    caller = sipp(
        [
            "127.0.0.1:5060",
            "-sf",
            "caller.xml",
            "-s",
            "4002",
            "-i",
            "127.0.0.1",
            "-p",
            "5063",
            "-m",
            "1",
            "-key",
            "rtp",
            str(caller_sock.getsockname()[1]),
            "-trace_logs",
            "-log_file",
            str(log),
        ],
        workdir,
    )
    try:
        deadline = time.monotonic() + 20
        server_port = None
        while time.monotonic() < deadline and server_port is None:
            time.sleep(0.1)
            found = re.search(r"SERVER_PORT m=audio (\d+)", log.read_text()) if log.exists() else None
            server_port = int(found.group(1)) if found else None
        if server_port is None:
            errors = "\n".join(
                path.read_text(errors="replace")[-1500:]
                for path in [*workdir.glob("caller*_errors.log"), *workdir.glob("*.out")]
            )
            raise SystemExit(f"the measured call was not answered ({label}):\n{errors}")
        time.sleep(1.0)  # the agent leg is bridged (its 300 ms is SIPp's 180 → 200 turn-around)
        receiver = Receiver(agent_sock, time.monotonic() + seconds + 2)
        receiver.start()
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        sent = send_stream(caller_sock, ("127.0.0.1", server_port), seconds)
        if after_stream is not None:
            after_stream()
        cpu_pct = 100 * (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        receiver.join()
        return receiver.figures(sent), cpu_pct
    finally:
        for process in (caller, agent):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                stop(process)
        caller_sock.close()
        agent_sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--load", type=int, default=100, help="callers sitting in the menu and the queue")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10,
        help="length of each measured stream (silent IVR callers last ~30 s)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: SIPp plays the queue callers' DTMF from a pcap with raw sockets", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "agent.xml").write_text(AGENT_XML)
        hold = int((2 * args.seconds + 60) * 1000)
        (workdir / "sitter.xml").write_text(SITTER_XML.replace("{hold_ms}", str(hold)))
        ib1 = (IB1 / "ib1_uac.xml").read_text()
        # the ib1 caller, held in the queue for the whole measurement instead of 6 s
        queued = re.sub(r'<pause milliseconds="\d+"\s*/>', f'<pause milliseconds="{hold}"/>', ib1)
        (workdir / "queued.xml").write_text(queued)
        subprocess.run(
            [sys.executable, str(IB1 / "make_ib1_pcap.py"), str(workdir / "ib1_caller_pcmu_dtmf1.pcap")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data_dir = workdir / "data"
        make_tenant(data_dir)
        server = HotlineServer(
            data_dir=data_dir, sip_port=5060, env={"HOTLINE_LOG_LEVEL": "warning"}, rtp_ports=(20000, 29999)
        ).start(timeout=60)
        assert server.process is not None
        pid = server.process.pid
        loads: list[subprocess.Popen[bytes]] = []
        try:
            time.sleep(2)
            idle, idle_cpu = measured_call(workdir, "idle", args.seconds, pid)
            in_menu = args.load // 2
            rate = "20"
            in_queue = args.load - in_menu
            menu_args = f"-sf sitter.xml -p 5061 -mp 32000 -stf menu.csv -r {rate} -m {in_menu} -l {in_menu}"
            queue_args = (
                f"-sf queued.xml -p 5062 -mp 34000 -stf queue.csv -r {rate} -m {in_queue} -l {in_queue}"
            )
            for extra in (menu_args, queue_args):
                common = "127.0.0.1:5060 -s 4001 -i 127.0.0.1 -trace_stat -fd 1 -trace_err"
                loads.append(sipp(f"{common} {extra}".split(), workdir))
            time.sleep(args.load / 40 + 3)  # all load callers are in; the queued ones have pressed 1
            in_calls: list[int] = []
            failed = 0

            def load_present() -> None:
                nonlocal failed
                in_calls.extend(_current_calls(workdir / name) for name in ("menu.csv", "queue.csv"))
                failed = _failed(workdir)

            loaded, loaded_cpu = measured_call(workdir, "loaded", args.seconds, pid, load_present)
        finally:
            for process in loads:
                stop(process)
            server.stop()
        with sqlite3.connect(data_dir / "tenants" / "load" / "tenant.db") as db:
            queued_events = db.execute(
                "select count(*) from events where type = 'call.queued' and payload like '%sales%'"
            ).fetchone()[0]
        print(f"load: {args.load} callers (half in the menu, half pressed 1 into a queue without agents)")
        print(f"calls queued in sales by the server (call.queued events): {queued_events}")
        for path in sorted(workdir.glob("*_errors.log")):
            lines = path.read_text(errors="replace").splitlines()
            if lines:
                print(f"{path.name}: {len(lines)} lines, e.g. {lines[min(1, len(lines) - 1)][:200]}")
        print(
            f"load callers connected when the measured stream ended: {in_calls[0]} in the menu, "
            f"{in_calls[1]} in the queue (SIPp's current calls; failed so far: {failed})"
        )
        header = (
            f"{'server':>8} {'sent':>6} {'recv':>6} {'loss %':>7} {'reord':>5} {'|Δt−20ms| p50':>14} "
            f"{'p99':>7} {'max':>7} {'jitter ms':>9} {'server CPU %':>12}"
        )
        print(header)
        for label, figures, cpu in (("idle", idle, idle_cpu), ("loaded", loaded, loaded_cpu)):
            print(
                f"{label:>8} {figures.sent:>6} {figures.received:>6} {figures.loss_pct:>7.2f} "
                f"{figures.reordered:>5} {figures.dev_p50_ms:>14.3f} {figures.dev_p99_ms:>7.3f} "
                f"{figures.dev_max_ms:>7.2f} {figures.jitter_ms:>9.3f} {cpu:>12.1f}"
            )
    return 0


def _stat(path: Path, column: str) -> int:
    rows = (
        [line.split(";") for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )
    return int(rows[-1][rows[0].index(column)]) if len(rows) > 1 else 0


def _current_calls(path: Path) -> int:
    return _stat(path, "CurrentCall")


def _failed(workdir: Path) -> int:
    return sum(_stat(workdir / name, "FailedCall(C)") for name in ("menu.csv", "queue.csv"))


if __name__ == "__main__":
    shutil.which("sipp") or sys.exit("sipp is not installed: run scripts/setup")
    sys.exit(main())
