"""RTP relay cost, loss and jitter of Hotline's media engine, measured the way
../shared/bench/media-anchors.md measured Asterisk, rtpengine and a bare uvloop relay (issue #3 item 11;
FM-17, REC-02).

One run on loopback:
- the relay: a `MediaEngine` in a subprocess on uvloop (asyncio.Runner + uvloop.new_event_loop), N bridged
  calls (2N legs, each with its RTP and RTCP port), optionally each recorded (two-channel WAV or MP3) and
  optionally M more legs playing music on hold;
- two blaster processes (caller side, agent side), each one socket sending N streams of 172-byte PCMU RTP
  at 50 packets/s, phases spread evenly over the 20 ms, never reading their socket (like the anchors);
- a receiver process that is the agent of call 0: it sends that call's agent stream and timestamps the
  relay->agent stream in the kernel (SO_TIMESTAMPNS) to get |delta t - 20 ms| p50/p99;
- a steady window (default 30 s; the anchors used 60 s) after a warm-up: relay utime+stime from
  /proc/PID/stat -> CPU % and µs per relayed packet; loss per direction from the relay's own counters
  (received by the caller legs vs sent by the agent legs, and back); drops of the relay's sockets from
  /proc/net/udp and UDP RcvbufErrors; memory per call = (RSS after the calls are up - RSS before) / N.

    .venv/bin/python bench/media_relay.py                      # 100, 200, 400 plain; 200 recorded; MOH
    .venv/bin/python bench/media_relay.py --steps 200 --window 60
    .venv/bin/python bench/media_relay.py --steps none --record-steps 200 --record-format mp3
    .venv/bin/python bench/media_relay.py --steps none --record-steps none --moh 1000 --moh-calls 100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from bench.procstat import cpu_seconds, rss_bytes  # noqa: E402

PERIOD = 0.02
PAYLOAD = bytes((0xFF - (i % 16)) & 0xFF for i in range(160))  # quiet µ-law noise, 160 bytes: 172-byte RTP
HEADER = struct.Struct("!BBHII")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the socket module may lack the name


# --- helpers ------------------------------------------------------------------------------------------------


def bound_udp_socket() -> tuple[socket.socket, int]:
    """A socket on a free port, bound here and handed to a helper process (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    return sock, port


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds (/proc/PID/fd links to socket:[inode])."""
    inodes = set()
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def udp_socket_drops(inodes: set[int]) -> int:
    """Sum of the kernel's drop counters of the given UDP sockets (/proc/net/udp: inode, drops columns)."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[9]) in inodes:
                total += int(fields[-1])
    return total


def udp_snmp() -> dict[str, int]:
    lines = [
        line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")
    ]
    return dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))


def machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) of all CPUs from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def process_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


# --- the relay process --------------------------------------------------------------------------------------


async def relay_main(args: argparse.Namespace) -> None:
    from hotline.log import configure
    from hotline.media.bridge import Bridge
    from hotline.media.player import music_on_hold_source
    from hotline.media.recorder import Recorder
    from hotline.media.session import MediaDirection, MediaEngine, MediaParams

    configure("warning", json=False)  # to stderr: stdout carries the bench's JSON lines
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    first, last = (int(p) for p in args.ports.split("-"))
    engine = MediaEngine(
        "127.0.0.1", (first, last), inactivity_timeout=None, batch_interval=args.batch_ms / 1000.0
    )
    rss_before = rss_bytes(os.getpid())

    def params(port: int, direction: MediaDirection = MediaDirection.SENDRECV) -> MediaParams:
        return MediaParams(
            "127.0.0.1", port, {0: "PCMU", 101: "telephone-event"}, 0, 101, direction=direction
        )

    callers = []
    agents = []
    bridges = []
    recorders = []
    record_root = Path(args.record) if args.record else None
    for index in range(args.calls):
        caller = await engine.create_session(params(args.caller_port), name=f"caller-{index}")
        agent_port = args.receiver_port if index == 0 else args.agent_port
        agent = await engine.create_session(params(agent_port), name=f"agent-{index}")
        recorder = None
        if record_root is not None:
            recorder = Recorder(record_root, "bench", f"call-{index}", format=args.record_format)
            recorders.append(recorder)
        bridges.append(Bridge(caller, agent, recorder))
        callers.append(caller)
        agents.append(agent)
    held = []
    shared_music = engine.broadcast(music_on_hold_source())
    for index in range(args.moh):
        leg = await engine.create_session(
            params(args.caller_port, MediaDirection.SENDONLY), name=f"moh-{index}", rtcp_mux=True
        )
        leg.hold(shared_music if args.moh_mode == "shared" else music_on_hold_source())
        held.append(leg)
    rss_after = rss_bytes(os.getpid())
    ports = sorted(
        {s.local_port for s in engine.sessions.values()}
        | {s.rtcp_port for s in engine.sessions.values() if s.rtcp_port is not None}
    )
    print(
        json.dumps(
            {
                "ready": True,
                "pid": os.getpid(),
                "caller_ports": [s.local_port for s in callers],
                "agent_ports": [s.local_port for s in agents],
                "ports": ports,
                "rss_before": rss_before,
                "rss_sessions": rss_after,
                "loop": type(loop).__module__,
            }
        ),
        flush=True,
    )

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line in ("", "quit"):
            break
        if line == "stats":
            stats = {
                "caller_rx": sum(s.rx_packets for s in callers),
                "caller_tx": sum(s.tx_packets for s in callers),
                "agent_rx": sum(s.rx_packets for s in agents),
                "agent_tx": sum(s.tx_packets for s in agents),
                "moh_tx": sum(s.tx_packets for s in held),
                "late_ticks": engine.late_ticks,
                "ticks": engine.ticks,
                "rss": rss_bytes(os.getpid()),
                "time": time.monotonic(),
            }
            print(json.dumps(stats), flush=True)
    for bridge in bridges:
        bridge.unbridge()
    for recorder in recorders:
        await recorder.close()
    await engine.close()


def run_relay(args: argparse.Namespace) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(relay_main(args))


# --- the blasters and the receiver --------------------------------------------------------------------------


def run_blaster(args: argparse.Namespace) -> None:
    targets = [int(p) for p in args.targets.split(",") if p]
    sock = socket.socket(fileno=args.fd)
    count = len(targets)
    rng = random.Random(args.fd)
    seqs = [rng.randrange(1 << 16) for _ in targets]
    stamps = [rng.randrange(1 << 32) for _ in targets]
    ssrcs = [rng.randrange(1 << 32) for _ in targets]
    addresses = [("127.0.0.1", port) for port in targets]
    start, end = args.start_at, args.start_at + args.duration
    log_from = start + args.log_after
    logged: list[float] = []
    sent = 0
    late = 0
    index = 0
    pack, sendto, monotonic, sleep = HEADER.pack, sock.sendto, time.monotonic, time.sleep
    while count:
        stream = index % count
        due = start + (index // count) * PERIOD + stream * PERIOD / count
        if due > end:
            break
        now = monotonic()
        if due > now:
            sleep(due - now)
        elif now - due > 0.005:
            late += 1
        seq = seqs[stream]
        sendto(pack(0x80, 0, seq, stamps[stream], ssrcs[stream]) + PAYLOAD, addresses[stream])
        seqs[stream] = (seq + 1) & 0xFFFF
        stamps[stream] = (stamps[stream] + 160) & 0xFFFFFFFF
        if stream == 0 and due >= log_from:
            logged.append(monotonic())
        sent += 1
        index += 1
    deltas = [abs(b - a - PERIOD) * 1000 for a, b in itertools.pairwise(logged)]
    print(
        json.dumps(
            {
                "sent": sent,
                "late": late,
                "stream0_p50_ms": percentile(deltas, 0.5),
                "stream0_p99_ms": percentile(deltas, 0.99),
            }
        ),
        flush=True,
    )


def run_receiver(args: argparse.Namespace) -> None:
    """Agent of call 0: sends its stream to the relay, timestamps the relayed stream in the kernel."""
    sock = socket.socket(fileno=args.fd)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    target = ("127.0.0.1", int(args.targets))
    start, end = args.start_at, args.start_at + args.duration
    log_from = start + args.log_after
    arrivals: list[tuple[int, float]] = []
    seq, stamp, ssrc = 1000, 0, 0x5EED
    next_send = start
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_send:
            sock.sendto(HEADER.pack(0x80, 0, seq & 0xFFFF, stamp, ssrc) + PAYLOAD, target)
            seq += 1
            stamp = (stamp + 160) & 0xFFFFFFFF
            next_send += PERIOD
            continue
        for _ in selector.select(timeout=max(0.0, min(next_send, end) - now)):
            while True:
                try:
                    data, ancillary, _, _ = sock.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                stamp_ns = None
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        seconds, nanos = struct.unpack("qq", value[:16])
                        stamp_ns = seconds + nanos / 1e9
                if stamp_ns is not None and len(data) >= 12 and time.monotonic() >= log_from:
                    arrivals.append((HEADER.unpack_from(data)[2], stamp_ns))
    arrivals.sort(key=lambda item: item[1])
    deltas = []
    gaps = 0
    for (seq_a, t_a), (seq_b, t_b) in itertools.pairwise(arrivals):
        if (seq_b - seq_a) & 0xFFFF == 1:
            deltas.append(abs(t_b - t_a - PERIOD) * 1000)
        else:
            gaps += 1
    print(
        json.dumps(
            {
                "received": len(arrivals),
                "gaps": gaps,
                "p50_ms": percentile(deltas, 0.5),
                "p99_ms": percentile(deltas, 0.99),
                "max_ms": max(deltas) if deltas else float("nan"),
            }
        ),
        flush=True,
    )


# --- the orchestrator ---------------------------------------------------------------------------------------


@dataclass
class StepResult:
    label: str
    calls: int
    window: float
    relayed: int
    cpu_percent: float
    us_per_packet: float
    loss_caller_to_agent: float
    loss_agent_to_caller: float
    socket_drops: int
    rcvbuf_errors: int
    jitter_p50: float
    jitter_p99: float
    input_p99: float
    generator_cpu_percent: float
    machine_busy_percent: float
    background_cpu_percent: float
    memory_per_call_kb: float
    late_ticks: int
    notes: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the relay process did not start")
        self.ready: dict[str, Any] = json.loads(line)
        self.pid = self.process.pid

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        result: dict[str, Any] = json.loads(self.process.stdout.readline())
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=120)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def run_step(
    label: str,
    calls: int,
    args: argparse.Namespace,
    *,
    record: bool = False,
    moh: int = 0,
) -> StepResult:
    python = sys.executable
    script = str(Path(__file__).resolve())
    niced = ["nice", "-n", str(args.nice)] if args.nice else []
    (caller_socket, caller_port), (agent_socket, agent_port) = bound_udp_socket(), bound_udp_socket()
    receiver_socket, receiver_port = bound_udp_socket()
    with tempfile.TemporaryDirectory(prefix="hotline-media-bench-") as scratch:
        relay_command = [
            *niced, python, script, "--role", "relay", "--calls", str(calls), "--ports", args.ports,
            "--caller-port", str(caller_port), "--agent-port", str(agent_port),
            "--receiver-port", str(receiver_port), "--moh", str(moh),
            "--record-format", args.record_format, "--batch-ms", str(args.batch_ms),
            "--moh-mode", args.moh_mode,
        ]  # fmt: skip
        if record:
            relay_command += ["--record", scratch]
        relay = Relay(relay_command)
        helpers: list[subprocess.Popen[str]] = []
        try:
            caller_ports = relay.ready["caller_ports"]
            agent_ports = relay.ready["agent_ports"]
            start_at = time.monotonic() + 1.0
            duration = args.warmup + args.window + 2.0
            common = [
                "--start-at",
                repr(start_at),
                "--duration",
                str(duration),
                "--log-after",
                str(args.warmup),
            ]
            blasters = [
                (caller_socket, ",".join(str(p) for p in caller_ports), "blast"),
                (agent_socket, ",".join(str(p) for p in agent_ports[1:]), "blast"),
                (receiver_socket, str(agent_ports[0]), "receive"),
            ]
            for sock, targets, role in blasters:
                fd = sock.fileno()
                command = [
                    *niced,
                    python,
                    script,
                    "--role",
                    role,
                    "--fd",
                    str(fd),
                    "--targets",
                    targets,
                    *common,
                ]
                helpers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, pass_fds=[fd]))
                sock.close()  # the helper has it now
            time.sleep(max(0.0, start_at + args.warmup - time.monotonic()))
            inodes = socket_inodes(relay.pid)
            gen_pids = [h.pid for h in helpers[:2]]
            before = relay.stats()
            cpu0 = process_cpu(relay.pid)
            gen0 = sum(process_cpu(pid) for pid in gen_pids)
            drops0, snmp0, busy0 = udp_socket_drops(inodes), udp_snmp(), machine_busy()
            wall0 = time.monotonic()
            time.sleep(args.window)
            after = relay.stats()
            cpu1 = process_cpu(relay.pid)
            gen1 = sum(process_cpu(pid) for pid in gen_pids)
            drops1, snmp1, busy1 = udp_socket_drops(inodes), udp_snmp(), machine_busy()
            wall = time.monotonic() - wall0
            outputs = []
            for helper in helpers:
                out, _ = helper.communicate(timeout=duration + 60)
                outputs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for helper in helpers:
                if helper.poll() is None:
                    helper.kill()
                    helper.wait(timeout=10)
            relay.stop()
            for sock in (caller_socket, agent_socket, receiver_socket):
                sock.close()
    delta = {key: after[key] - before[key] for key in ("caller_rx", "caller_tx", "agent_rx", "agent_tx")}
    relayed = delta["caller_tx"] + delta["agent_tx"]
    cpu = cpu1 - cpu0
    loss_ca = (delta["caller_rx"] - delta["agent_tx"]) / max(1, delta["caller_rx"]) * 100
    loss_ac = (delta["agent_rx"] - delta["caller_tx"]) / max(1, delta["agent_rx"]) * 100
    busy = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * 100
    memory = (relay.ready["rss_sessions"] - relay.ready["rss_before"]) / max(1, calls) / 1024
    receiver = outputs[2]
    notes = []
    if receiver["gaps"]:
        notes.append(f"{receiver['gaps']} sequence gaps at the receiver")
    for side, output in zip(("caller", "agent"), outputs[:2], strict=True):
        if output["late"]:
            notes.append(f"{side} blaster late (>5 ms) {output['late']} times")
    if moh:
        moh_rate = (after["moh_tx"] - before["moh_tx"]) / wall
        notes.append(f"{moh} held legs sent {moh_rate:.0f} pkt/s of music on hold (expected {moh * 50})")
    ticks = (after["ticks"] - before["ticks"]) / wall
    if ticks < 49 or after["late_ticks"] > before["late_ticks"]:
        skipped = after["late_ticks"] - before["late_ticks"]
        notes.append(f"media clock ran {ticks:.1f} ticks/s, skipped {skipped} (the relay was starved)")
    return StepResult(
        label=label,
        calls=calls,
        window=wall,
        relayed=relayed,
        cpu_percent=cpu / wall * 100,
        us_per_packet=cpu / max(1, relayed) * 1e6,
        loss_caller_to_agent=loss_ca,
        loss_agent_to_caller=loss_ac,
        socket_drops=drops1 - drops0,
        rcvbuf_errors=snmp1.get("RcvbufErrors", 0) - snmp0.get("RcvbufErrors", 0),
        jitter_p50=receiver["p50_ms"],
        jitter_p99=receiver["p99_ms"],
        input_p99=outputs[0]["stream0_p99_ms"],
        generator_cpu_percent=(gen1 - gen0) / wall * 100,
        machine_busy_percent=busy,
        background_cpu_percent=busy * (os.cpu_count() or 1) - cpu / wall * 100 - (gen1 - gen0) / wall * 100,
        memory_per_call_kb=memory,
        late_ticks=after["late_ticks"] - before["late_ticks"],
        notes=notes,
    )


def print_table(results: list[StepResult]) -> None:
    header = (
        f"{'step':<22} {'N':>4} {'relayed/s':>9} {'CPU %':>6} {'µs/pkt':>7} {'loss c>a %':>10} "
        f"{'loss a>c %':>10} {'drops':>5} {'jit p50':>7} {'jit p99':>7} {'(input)':>7} {'gen %':>6} "
        f"{'busy %':>6} {'other %':>7} {'KB/call':>7}"
    )
    print(header)
    for r in results:
        print(
            f"{r.label:<22} {r.calls:>4} {r.relayed / r.window:>9.0f} {r.cpu_percent:>6.1f} "
            f"{r.us_per_packet:>7.2f} {r.loss_caller_to_agent:>10.4f} {r.loss_agent_to_caller:>10.4f} "
            f"{r.socket_drops:>5} {r.jitter_p50:>7.2f} {r.jitter_p99:>7.2f} "
            f"{r.input_p99:>7.2f} {r.generator_cpu_percent:>6.1f} {r.machine_busy_percent:>6.1f} "
            f"{r.background_cpu_percent:>7.1f} "
            f"{r.memory_per_call_kb:>7.1f}"
        )
        for note in r.notes:
            print(f"{'':<24}- {note}")


def parse_steps(text: str) -> list[int]:
    return [] if text in ("", "none") else [int(n) for n in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", default="bench", choices=["bench", "relay", "blast", "receive"])
    parser.add_argument("--steps", default="100,200,400", help="plain bridged calls per step ('none')")
    parser.add_argument("--record-steps", default="200", help="recorded bridged calls per step ('none')")
    parser.add_argument("--record-format", default="wav", choices=["wav", "mp3", "opus"])
    parser.add_argument(
        "--moh", type=int, default=1000, help="legs on music on hold in the MOH step (0: none)"
    )
    parser.add_argument("--moh-calls", type=int, default=100, help="bridged calls alongside the MOH legs")
    parser.add_argument(
        "--moh-mode",
        default="shared",
        choices=["shared", "own"],
        help="one music-on-hold broadcast for all held legs, or a player per leg",
    )
    parser.add_argument("--window", type=float, default=30.0, help="steady window, seconds (anchors: 60)")
    parser.add_argument("--warmup", type=float, default=7.0, help="seconds from first packet to window")
    parser.add_argument("--ports", default="20000-29999", help="the relay's RTP port range")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice value for the relay, blasters and receiver (negative: shield them from a busy machine)",
    )
    parser.add_argument(
        "--batch-ms", type=float, default=0.5, help="MediaEngine(batch_interval=...) in ms (0: off)"
    )
    # internal: the subprocesses
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--record", default="")
    parser.add_argument("--caller-port", type=int, default=0)
    parser.add_argument("--agent-port", type=int, default=0)
    parser.add_argument("--receiver-port", type=int, default=0)
    parser.add_argument("--fd", type=int, default=-1, help="the helper's socket, bound by the orchestrator")
    parser.add_argument("--targets", default="")
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--log-after", type=float, default=0.0)
    args = parser.parse_args()

    if args.role == "relay":
        run_relay(args)
        return 0
    if args.role == "blast":
        run_blaster(args)
        return 0
    if args.role == "receive":
        run_receiver(args)
        return 0

    print(
        f"media relay bench: window {args.window:.0f} s after {args.warmup:.0f} s warm-up, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before start, nice {args.nice}, "
        f"batch {args.batch_ms} ms",
        flush=True,
    )
    results = []
    plan: list[tuple[str, int, bool, int]] = [(f"plain {n}", n, False, 0) for n in parse_steps(args.steps)]
    plan += [(f"recorded ({args.record_format}) {n}", n, True, 0) for n in parse_steps(args.record_steps)]
    if args.moh:
        plan.append((f"+{args.moh} on MOH ({args.moh_mode})", args.moh_calls, False, args.moh))
    for label, calls, record, moh in plan:
        result = run_step(label, calls, args, record=record, moh=moh)
        results.append(result)
        print_table([result])
        sys.stdout.flush()
    print()
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
