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
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from hotline.media.player import decode_audio_file
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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotlineServer]:
    server = HotlineServer(data_dir=tmp_path_factory.mktemp("demo") / "data", command="demo").start(
        timeout=60
    )
    yield server
    server.stop()


def menu_call(
    server: HotlineServer, tmp_path: Path, key: str, then: Callable[[], None]
) -> tuple[str, Baresip]:
    """Extension 1001 (sending a 500 Hz tone) dials 4001, presses `key` once the menu plays, does `then`,
    hangs up. Returns the call's id and the phone."""
    data_dir = server.data_dir
    before = {e["call_id"] for e in events(data_dir) if e["type"] == "call.started"}
    tone = tmp_path / "in.wav"
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
            str(tone),
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
        f"<sip:1001@127.0.0.1:{server.sip_port}>;auth_pass={demo_passwords(data_dir)['1001']};regint=60",
        tone,
    ).start()
    try:
        assert phone.wait_for("200 OK", 10), phone.log()[-2000:]
        phone.command(f"/dial sip:4001@127.0.0.1:{server.sip_port}")
        assert phone.wait_for("Call established", 15), phone.log()[-2000:]
        call_ids: set[str] = set()
        wait_until(lambda: bool(call_ids.update(ids_started(data_dir) - before) or call_ids), 10, "the call")
        (call_id,) = call_ids
        # the welcome cannot be interrupted; the menu prompt can, so press the key once the menu plays
        wait_until(
            lambda: any(e.get("node_id") == "menu" for e in events_of(data_dir, call_id)), 30, "the menu"
        )
        time.sleep(1)
        phone.command(key)
        then()
        phone.command("/hangup")
        wait_until(
            lambda: any(e["type"] == "call.ended" for e in events_of(data_dir, call_id)), 10, "the end"
        )
    finally:
        phone.stop()
    return call_id, phone


def ids_started(data_dir: Path) -> set[str]:
    return {str(e["call_id"]) for e in events(data_dir) if e["type"] == "call.started"}


def events_of(data_dir: Path, call_id: str) -> list[dict[str, object]]:
    return [e for e in events(data_dir) if e.get("call_id") == call_id]


def test_softphone_dials_4001_presses_1_and_waits_in_the_sales_queue(
    demo: HotlineServer, tmp_path: Path
) -> None:
    data_dir = demo.data_dir

    def queued_then_hold() -> None:
        wait_until(
            lambda: any(e["type"] == "call.queued" for e in events(data_dir)), 20, "the call to be queued"
        )
        time.sleep(2)  # music on hold

    call_id, phone = menu_call(demo, tmp_path, "1", queued_then_hold)
    logged = events_of(data_dir, call_id)
    menu_exits = [e for e in logged if e["type"] == "ivr.node_exited" and e.get("input") == "1"]
    assert menu_exits, "the menu did not log the key pressed (IVR-16)"
    queued = [e for e in logged if e["type"] == "call.queued"]
    assert queued[0]["queue_id"] == "sales"
    assert phone.heard(), "nothing was heard"
    wait_until(
        lambda: any(row["call_id"] == call_id and row["ended_at"] for row in cdrs(data_dir)), 10, "the CDR"
    )
    (row,) = [row for row in cdrs(data_dir) if row["call_id"] == call_id]
    assert row["dnis"] == "4001" and row["ani"] == "1001"
    assert row["first_queue_id"] == "sales" and row["queued_at"] is not None
    assert row["ivr_seconds"] > 1


def test_key_9_leaves_a_voicemail_stored_like_a_recording(demo: HotlineServer, tmp_path: Path) -> None:
    """IVR-09: the caller's words after the beep are recorded, stored like a call recording, and become a
    work item event with the caller's number."""
    data_dir = demo.data_dir

    def speak_after_the_beep() -> None:
        wait_until(lambda: any(e["type"] == "recording.started" for e in events(data_dir)), 30, "the beep")
        time.sleep(4)

    call_id, _phone = menu_call(demo, tmp_path, "9", speak_after_the_beep)
    logged = events_of(data_dir, call_id)
    (stopped,) = [e for e in logged if e["type"] == "recording.stopped"]
    assert float(stopped["duration_seconds"]) > 2  # type: ignore[arg-type]
    left = decode_audio_file(Path(str(stopped["path"])), 8000).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left[len(left) // 4 : 3 * len(left) // 4]))
    assert abs(np.argmax(spectrum) * 8000 / (len(left) // 2) - 500) < 15, (
        "the message is not the caller's tone"
    )
    (message,) = [e for e in logged if e["type"] == "ivr.voicemail_recorded"]
    assert message["recording_id"] == stopped["recording_id"]


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
