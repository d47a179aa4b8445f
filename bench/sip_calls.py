"""Sustained INVITE→200→ACK→BYE calls per second against `hotline serve`, driven by SIPp (issue #2).

Starts its own server on loopback with the test tenant, runs SIPp's built-in `uac` scenario from the
tenant's carrier address (127.0.0.2) to a number that answers and stays silent, at each rate for a fixed
time, and prints calls offered and completed, failures and the server's CPU ms per call.

    .venv/bin/python bench/sip_calls.py --rates 100,300,500 --seconds 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procstat import cpu_seconds, rss_bytes
from tests.integration.peers import HotlineServer, free_port, run_sipp
from tests.integration.tenant import CARRIER_ADDRESS, create_tenant


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,300,500", help="comma-separated calls/s")
    parser.add_argument("--seconds", type=int, default=20, help="duration of each step")
    parser.add_argument("--number", default="02161234560", help="number dialled (answers, stays silent)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(
            f"{'rate':>6} {'calls':>7} {'ok':>7} {'failed':>7} {'fail %':>7} "
            f"{'CPU ms/call':>12} {'RSS MB':>7}"
        )
        for rate in [int(r) for r in args.rates.split(",")]:
            data_dir = workdir / f"data-{rate}"
            create_tenant(data_dir)
            server = HotlineServer(data_dir=data_dir, env={"HOTLINE_LOG_LEVEL": "warning"}).start()
            assert server.process is not None
            pid = server.process.pid
            calls = rate * args.seconds
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            result = run_sipp(
                [
                    f"127.0.0.1:{server.sip_port}",
                    "-sn",
                    "uac",
                    "-s",
                    args.number,
                    "-i",
                    CARRIER_ADDRESS,
                    "-p",
                    str(free_port()),
                    "-r",
                    str(rate),
                    "-m",
                    str(calls),
                    "-l",
                    str(rate * 10),
                    "-d",
                    "1000",
                    "-recv_timeout",  # a call the server never finishes fails instead of holding the step
                    "10000",
                    "-timeout",
                    f"{args.seconds + 60}s",
                ],
                cwd=workdir,
                timeout=args.seconds + 120,
            )
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu_before
            rss = rss_bytes(pid) / 1e6
            server.stop()
            failed = calls - result.successful
            print(
                f"{rate:>6} {calls:>7} {result.successful:>7} {failed:>7} {100 * failed / calls:>7.2f} "
                f"{1000 * cpu / calls:>12.3f} {rss:>7.1f}   ({elapsed:.0f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
