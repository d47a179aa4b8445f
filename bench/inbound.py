"""The reference inbound scenario ib1 against `hotline serve` (issue #5 item 8), with the SIPp files of
../shared/bench/ib1 unchanged, so the figures compare with ../shared/bench/asterisk-baseline.md.

Callers dial 4001, hear a 1 s prompt, press 1 (RFC 4733), wait in queue `sales` and are answered by one of
500 agents on static SIP URIs (one SIPp UAS that echoes audio); calls last 6 s after answer. For each rate it
prints calls, failures by the ib1 rule, server CPU ms per call, INVITE→200 times and the time from queue
entry to agent answer (from the CDRs).

    sudo .venv/bin/python bench/inbound.py --rates 10,40,80,100 --seconds 60

Run as root: SIPp plays the caller's RTP from a pcap with raw sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds, rss_bytes
from tests.integration.peers import HotlineServer, run_sipp

IB1 = Path(__file__).resolve().parents[2] / "shared" / "bench" / "ib1"
AGENT_PORT = 5070
AGENTS = 500


def ib1_document() -> dict[str, object]:
    """Number 4001 → a 1 s prompt, one digit (5 s), 1 → queue sales with 500 static agents."""
    flow = {
        "id": "ib1",
        "name": "ib1",
        "entry": "welcome",
        "nodes": [
            {
                "id": "welcome",
                "type": "menu",
                "prompts": [{"kind": "file", "file": "ib1-prompt.wav"}],
                "options": {"1": "queue"},
                "input_timeout": 5,
                "retries": 0,
                "exits": {"default": "@hangup"},
            },
            {"id": "queue", "type": "queue", "queue": "sales", "exits": {"default": "@hangup"}},
        ],
    }
    agents = [
        {
            "id": f"{9000 + n}",
            "name": f"agent{n:03d}",
            "queues": ["sales"],
            "device": f"sip:agent{n:03d}@127.0.0.1:{AGENT_PORT}",
            "login_on_start": True,
        }
        for n in range(1, AGENTS + 1)
    ]
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
        "numbers": [{"number": "4001", "target": "flow:ib1", "public": False}],
        "flows": [flow],
        "queues": [{"name": "sales", "strategy": "longest_idle", "ring_timeout": 15, "wrap_up_seconds": 0}],
        "agents": agents,
    }


def write_prompt(path: Path) -> None:
    """The 1.0 s prompt: a quiet 8 kHz tone."""
    t = np.arange(8000) / 8000
    samples = (3000 * np.sin(2 * np.pi * 425 * t)).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


def make_tenant(data_dir: Path) -> None:
    async def create() -> None:
        from hotline.storage.engines import Storage
        from hotline.tenancy.config_document import import_tenant
        from hotline.tenancy.service import TenancyService

        storage = Storage(data_dir)
        try:
            await storage.migrate()
            tenancy = TenancyService(storage)
            await tenancy.create_tenant(
                "ib1", "ib1", time_zone="Asia/Shanghai", concurrent_call_limit=5000, seat_limit=AGENTS
            )
            result = await import_tenant(storage, tenancy, "ib1", ib1_document())
            if not result.ok:
                raise SystemExit("ib1 tenant rejected:\n" + "\n".join(map(str, result.problems)))
        finally:
            await storage.close()

    asyncio.run(create())
    write_prompt(data_dir / "tenants" / "ib1" / "prompts" / "ib1-prompt.wav")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def queue_to_answer_seconds(data_dir: Path) -> list[float]:
    db = data_dir / "tenants" / "ib1" / "tenant.db"
    with sqlite3.connect(db) as connection:
        rows = connection.execute("select wait_seconds from cdr where outcome = 'answered'").fetchall()
    return [float(row[0]) for row in rows if row[0] is not None]


def run_step(workdir: Path, rate: int, seconds: int, profile: Path | None = None) -> dict[str, float]:
    data_dir = workdir / f"data-{rate}"
    make_tenant(data_dir)
    server = HotlineServer(
        data_dir=data_dir, sip_port=5060, env={"HOTLINE_LOG_LEVEL": "warning"}, rtp_ports=(20000, 29999)
    ).start(timeout=60)
    assert server.process is not None
    pid = server.process.pid
    agents = subprocess.Popen(
        [
            "sipp",
            "-sf",
            str(IB1 / "ib1_uas_agents.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(AGENT_PORT),
            "-mi",
            "127.0.0.1",
            "-mp",
            "40000",
            "-rtp_echo",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(workdir / f"uas-{rate}.csv"),
            "-fd",
            "1",
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)  # the UAS binds (the static agents logged in when the server started)
    idle_before = cpu_seconds(pid)
    time.sleep(3)
    idle_cpu_pct = 100 * (cpu_seconds(pid) - idle_before) / 3
    calls = rate * seconds
    profiler = None
    if profile is not None:
        # sample the middle of the step (py-spy's raw format: one folded stack per line)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = profile / f"inbound-{rate}.txt"
        profiler = subprocess.Popen(
            [py_spy, "record", "-p", str(pid), "-d", str(max(5, seconds // 2)), "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    caller = run_sipp(
        [
            "127.0.0.1:5060",
            "-sf",
            str(workdir / "ib1_uac.xml"),
            "-s",
            "4001",
            "-i",
            "127.0.0.1",
            "-p",
            "5061",
            "-mi",
            "127.0.0.1",
            "-mp",
            "30000",
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-l",
            "5000",
            "-trace_rtt",
            "-rtt_freq",
            "50",
            "-timeout",
            f"{seconds + 90}s",
        ],
        workdir,
        timeout=seconds + 150,
    )
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    if profiler is not None:
        profiler.wait(60)
    rss = rss_bytes(pid)
    time.sleep(5)  # the agents' last BYEs
    agents.send_signal(signal.SIGUSR1)
    try:
        agents.wait(15)
    except subprocess.TimeoutExpired:
        agents.kill()
    server.stop()
    uas_ok = _successful(workdir / f"uas-{rate}.csv")
    created = caller.successful + caller.failed
    failures = caller.failed + max(0, caller.successful - uas_ok) + max(0, calls - created)
    setup = _setup_times(workdir)
    waits = queue_to_answer_seconds(data_dir)
    return {
        "rate": rate,
        "calls": calls,
        "uac_ok": caller.successful,
        "uac_failed": caller.failed,
        "uas_ok": uas_ok,
        "failed_pct": 100 * failures / calls,
        "cpu_ms_per_call": 1000 * cpu / calls,
        "cpu_pct_of_core": 100 * cpu / elapsed,
        "rss_mb": rss / 1e6,
        "idle_cpu_pct": idle_cpu_pct,
        "setup_p50_ms": percentile(setup, 0.5),
        "setup_p99_ms": percentile(setup, 0.99),
        "queue_to_agent_p50_ms": 1000 * percentile(waits, 0.5),
        "queue_to_agent_p99_ms": 1000 * percentile(waits, 0.99),
    }


def _successful(stat_csv: Path) -> int:
    if not stat_csv.exists():
        return 0
    rows = [line.split(";") for line in stat_csv.read_text().splitlines() if line.strip()]
    return int(rows[-1][rows[0].index("SuccessfulCall(C)")]) if len(rows) > 1 else 0


def _setup_times(workdir: Path) -> list[float]:
    times: list[float] = []
    for path in workdir.glob("ib1_uac_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2] == "setup":
                times.append(float(parts[1]))
        path.unlink()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="10,40,80,100")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--profile", type=Path, help="folder for py-spy raw profiles of each step")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: SIPp plays the callers' RTP from a pcap with raw sockets", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shutil.copy(IB1 / "ib1_uac.xml", workdir / "ib1_uac.xml")
        subprocess.run(
            [sys.executable, str(IB1 / "make_ib1_pcap.py"), str(workdir / "ib1_caller_pcmu_dtmf1.pcap")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        keys = [
            "rate",
            "calls",
            "uac_ok",
            "uas_ok",
            "failed_pct",
            "cpu_ms_per_call",
            "cpu_pct_of_core",
            "setup_p50_ms",
            "setup_p99_ms",
            "queue_to_agent_p50_ms",
            "queue_to_agent_p99_ms",
            "rss_mb",
            "idle_cpu_pct",
        ]
        print(" ".join(f"{k:>10}" for k in keys))
        for rate in [int(r) for r in args.rates.split(",")]:
            row = run_step(workdir, rate, args.seconds, args.profile)
            print(
                " ".join(f"{row[k]:>10.1f}" if isinstance(row[k], float) else f"{row[k]:>10}" for k in keys),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
