"""FM-15 / issue #4: after `kill -9`, everything append() returned for is in the log, nothing twice, and a
restart closes the calls that were live so every CDR is complete."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from hotline.events import CallEnded, CallStarted, EndCause, InProcessBus
from hotline.reporting import CdrProjection, reconcile_unfinished_calls
from hotline.storage import EventLog, Storage

REPO = Path(__file__).resolve().parents[2]


def run_until_killed(data_dir: Path, reported_at_least: int) -> list[tuple[str, int]]:
    """Start the writer, let it report `reported_at_least` committed events, SIGKILL it mid-stream."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.storage.crash_writer", str(data_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    output = b""
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while output.count(b"\n") < reported_at_least + 1:  # +1 for "ready"
            assert time.monotonic() < deadline, f"writer too slow: {output[-300:]!r}"
            if selector.select(timeout=0.5):
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, f"writer exited early: {process.stderr.read() if process.stderr else b''!r}"
                output += chunk
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        output += process.stdout.read()  # lines written before the kill are still in the pipe
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        selector.close()
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    lines = output.split(b"\n")
    assert lines[0] == b"ready"
    reported = []
    for line in lines[1:-1]:  # the last piece may be a line cut by the kill
        event_id, seq = line.decode().split()
        reported.append((event_id, int(seq)))
    return reported


async def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    reported = run_until_killed(tmp_path, reported_at_least=600)
    assert len(reported) >= 600

    storage = Storage(tmp_path)
    await storage.migrate()
    bus = InProcessBus()
    log = EventLog(storage, bus)
    try:
        stored = [e for after in range(0, 100_000, 5000) for e in await log.read("acme", after, 5000)]
        seqs = [e.seq for e in stored]
        assert seqs == list(range(1, len(stored) + 1)), "seqs must be gapless and unique"
        by_id = {e.id: e.seq for e in stored}
        assert len(by_id) == len(stored), "no event stored twice"
        missing = [(event_id, seq) for event_id, seq in reported if by_id.get(event_id) != seq]
        assert missing == [], f"acknowledged but lost after kill -9: {missing[:5]}"

        # Restart: calls that were live get a synthetic end, and the CDRs come out complete.
        started = {e.call_id for e in stored if isinstance(e, CallStarted)}
        ended = {e.call_id for e in stored if isinstance(e, CallEnded)}
        assert started - ended, "the kill should have caught some calls mid-way"
        closed = await reconcile_unfinished_calls(log, "acme")
        closed_calls = {e.call_id for e in closed if isinstance(e, CallEnded)}
        assert closed_calls == started - ended
        assert all(e.cause == EndCause.NODE_RESTART for e in closed if isinstance(e, CallEnded))
        assert await reconcile_unfinished_calls(log, "acme") == []  # idempotent

        # New events continue the sequence.
        after_restart = await log.append(
            CallStarted(tenant="acme", call_id="new", direction="inbound", ani="1", dnis="2")
        )
        assert after_restart.seq == len(stored) + len(closed) + 1

        projection = CdrProjection(storage, log)
        await projection.catch_up("acme")
        cdrs = {row["call_id"]: row for row in await projection.list_cdrs("acme")}
        assert set(cdrs) == started | {"new"}
        for call_id in started:
            row = cdrs[call_id]
            assert row["ended_at"] is not None, call_id
            expected_cause = EndCause.NODE_RESTART if call_id in closed_calls else EndCause.NORMAL
            assert row["hangup_cause"] == expected_cause
        open_legs = [leg for leg in await projection.list_legs("acme") if leg["ended_at"] is None]
        assert open_legs == []
    finally:
        await log.close()
        await bus.close()
        await storage.close()
