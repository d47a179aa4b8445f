"""The demo tenant on real calls, and crash recovery (issue #4 "done when"; IVR-02, IVR-16, FM-09, FM-15).

`hotline demo` runs as a new user would start it; a softphone dials 4001, hears the menu, presses 1 and
waits in the sales queue; the event log and the CDRs show it. Then `kill -9` during calls and a restart:
every CDR of those calls is complete, ended with cause node_restart, and nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.peers import HOTLINE, Baresip, HotlineServer, free_port

pytestmark = pytest.mark.integration
SCENARIOS = Path(__file__).parent / "scenarios"


def demo_passwords(data_dir: Path) -> dict[str, str]:
    exported = subprocess.run(
        [
            str(HOTLINE),
            "config",
            "export",
            "--tenant",
            "demo",
            "--data-dir",
            str(data_dir),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {e["number"]: e["password"] for e in json.loads(exported.stdout)["extensions"]}


def events(data_dir: Path) -> list[dict[str, object]]:
    with sqlite3.connect(data_dir / "tenants" / "demo" / "tenant.db") as db:
        return [json.loads(row[0]) for row in db.execute("select payload from events order by seq")]


def cdrs(data_dir: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(data_dir / "tenants" / "demo" / "tenant.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("select * from cdr"))


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_softphone_dials_4001_presses_1_and_waits_in_the_sales_queue(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = HotlineServer(data_dir=data_dir, command="demo").start(timeout=60)
    try:
        password = demo_passwords(data_dir)["1001"]
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
                str(tmp_path / "in.wav"),
                "synth",
                "40",
                "sine",
                "500",
                "vol",
                "0.2",
            ],
            check=True,
        )
        phone = Baresip(
            tmp_path / "phone",
            f"<sip:1001@127.0.0.1:{server.sip_port}>;auth_pass={password};regint=60",
            tmp_path / "in.wav",
        ).start()
        try:
            assert phone.wait_for("200 OK", 10), phone.log()[-2000:]
            phone.command(f"/dial sip:4001@127.0.0.1:{server.sip_port}")
            assert phone.wait_for("Call established", 15), phone.log()[-2000:]
            # the welcome cannot be interrupted; the menu prompt can, so press 1 once the menu plays
            wait_until(
                lambda: any(e.get("node_id") == "menu" for e in events(data_dir)), 30, "the menu to play"
            )
            time.sleep(1)
            phone.command("1")
            wait_until(
                lambda: any(e["type"] == "call.queued" for e in events(data_dir)), 20, "the call to be queued"
            )
            time.sleep(2)  # music on hold
            phone.command("/hangup")
            wait_until(
                lambda: any(e["type"] == "call.ended" for e in events(data_dir)), 10, "the call to end"
            )
        finally:
            phone.stop()
        logged = events(data_dir)
        menu_exits = [e for e in logged if e["type"] == "ivr.node_exited" and e.get("input") == "1"]
        assert menu_exits, "the menu did not log the key pressed (IVR-16)"
        queued = [e for e in logged if e["type"] == "call.queued"]
        assert queued[0]["queue_id"] == "sales"
        assert phone.heard(), "nothing was heard"
        wait_until(lambda: any(row["ended_at"] for row in cdrs(data_dir)), 10, "the CDR")
        row = cdrs(data_dir)[0]
        assert row["dnis"] == "4001" and row["ani"] == "1001"
        assert row["first_queue_id"] == "sales" and row["queued_at"] is not None
        assert row["ivr_seconds"] > 1
    finally:
        server.stop()


def test_kill_9_during_calls_then_restart_leaves_every_cdr_complete(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = HotlineServer(data_dir=data_dir, command="demo").start(timeout=60)
    password = demo_passwords(data_dir)["1002"]
    callers = subprocess.Popen(
        [
            "sipp",
            f"127.0.0.1:{server.sip_port}",
            "-sf",
            str(SCENARIOS / "uac_auth_call.xml"),
            "-s",
            "9197",
            "-key",
            "user",
            "1002",
            "-au",
            "1002",
            "-ap",
            password,
            "-auth_uri",
            f"9197@127.0.0.1:{server.sip_port}",
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "-m",
            "3",
            "-l",
            "3",
            "-r",
            "3",
            "-d",
            "60000",
            "-nostdin",
            "-timeout",
            "30s",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: sum(e["type"] == "call.answered" for e in events(data_dir)) >= 3,
            30,
            "three answered calls",
        )
        server.kill()
        started = {e["call_id"] for e in events(data_dir) if e["type"] == "call.started"}
        assert len(started) == 3
        assert not any(e["type"] == "call.ended" for e in events(data_dir))
        server.start(timeout=60)  # same data directory, fresh ports
        wait_until(lambda: len([r for r in cdrs(data_dir) if r["ended_at"]]) >= 3, 20, "completed CDRs")
    finally:
        callers.kill()
        server.stop()
    logged = events(data_dir)
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1)), "gaps or duplicates in the log"
    assert len({e["id"] for e in logged}) == len(logged)
    ended = [e for e in logged if e["type"] == "call.ended"]
    assert sorted(e["call_id"] for e in ended) == sorted(started), "exactly one call.ended per call"
    assert all(e["cause"] == "node_restart" for e in ended)
    rows = {row["call_id"]: row for row in cdrs(data_dir)}
    assert set(rows) == started
    assert all(
        row["hangup_cause"] == "node_restart" and row["duration_seconds"] is not None for row in rows.values()
    )
