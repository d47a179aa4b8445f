"""Hotline's spine, end to end (issue #6 item 5 and "done when"; TEL-11, FM-04, SUP-01, IVR-15).

`hotline demo` runs as a new user starts it. Agent 8001 signs in at /login in headless Chromium (fake
microphone: a beep), chooses the browser as the phone and goes ready; the supervisor watches /supervisor.
baresip, registered as extension 1002 and sending a 500 Hz tone, dials 4001, hears the menu and presses 1:
the call waits in sales, the agent's browser rings with the screen pop, the agent answers. Audio flows both
ways (the browser's inbound RTP grows with audio energy; baresip hears the agent's 400 Hz beeps), the call
is recorded with both parties on their own channel (500 Hz left, 400 Hz right), and after baresip hangs up
the agent goes to wrap-up and back to ready after the queue's 5 s; the supervisor's page shows each step as
it happens. Then the admin
changes the menu in the IVR editor (key 2 → sales, support moves to key 3, the prompts say so) and
publishes: the next call presses 2 and is queued in sales by the new flow version. A screenshot of every
page is saved (tmp dir and /tmp/hotline-screenshots).

Everything runs on 127.0.0.1; Chromium offers ICE candidates on every interface, so the test runs itself
inside a network namespace that has only loopback.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    INBOUND_AUDIO,
    PC_SPY,
    LoopbackBaresip,
    Screenshots,
    demo_web_users,
    dominant_hz,
    peak,
    recording_channels,
    rerun_in_loopback_namespace,
    tone_wav,
    wav_frames,
)
from tests.integration.peers import HotlineServer
from tests.integration.test_demo import demo_passwords, events, wait_until

pytestmark = pytest.mark.e2e

AGENT = "8001"  # on extension 1001, in queue sales
CALLER = "1002"
CALLER_HZ = 500  # the tone baresip sends
FAKE_MICROPHONE_HZ = 400  # Chromium's fake microphone beeps at 400 Hz
TENANT = "demo"
WAIT_MS = 20_000
# Records, in the supervisor's page, every state its cell for the agent shows (to prove each step was seen).
WATCH_AGENT_CELL = """agent => {
  window.__seen = [];
  const look = () => {
    const cell = document.querySelector(`[data-testid="wb-agent-${agent}"]`);
    const state = cell ? cell.dataset.state : null;
    if (state && window.__seen[window.__seen.length - 1] !== state) window.__seen.push(state);
  };
  look();
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""
PC_CONNECTED = """() => (window.__hotlinePcs || []).some(pc => pc.connectionState === 'connected')"""
NEW_MENU_ZH = "销售请按1或2，技术支持请按3，人工服务请按0，留言请按9。"
NEW_MENU_EN = (
    "For sales press 1 or 2, for support press 3, for the operator press 0, to leave a message press 9."
)
STATE_IS = """([selector, key, state]) => document.querySelector(selector)?.dataset[key] === state"""


def wait_http(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/api/v1/session", timeout=2).status_code == 401:
                return
        time.sleep(0.2)
    raise AssertionError(f"{base} did not answer within {timeout} s")


def wait_state(page: Any, selector: str, state: str, timeout_ms: int = WAIT_MS, key: str = "state") -> None:
    """Waits until the element's data-<key> attribute (default data-state) says `state`."""
    try:
        page.wait_for_function(STATE_IS, arg=[selector, key, state], timeout=timeout_ms)
    except Exception as error:
        shown = page.evaluate("([s, k]) => document.querySelector(s)?.dataset[k] ?? null", [selector, key])
        raise AssertionError(f"{selector} did not reach {state!r} (shows {shown!r})") from error


def sign_in(page: Any, base: str, username: str, password: str, shots: Screenshots | None = None) -> None:
    page.goto(f"{base}/login")
    page.get_by_test_id("login-tenant").fill(TENANT)
    page.get_by_test_id("login-username").fill(username)
    page.get_by_test_id("login-password").fill(password)
    if shots is not None:
        shots.take(page, "login")
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(re.compile(r"/(agent|supervisor|admin)"), timeout=WAIT_MS)


def choose_exit(page: Any, key: str, node_id: str) -> None:
    """In the menu node's panel, sends `key` to the node `node_id`."""
    page.get_by_test_id(f"option-target-{key}").click()
    # only the dropdown that is open now: closed ones stay in the DOM, hidden
    page.locator(
        '.el-popper[aria-hidden="false"] .el-select-dropdown__item',
        has_text=re.compile(rf"^\s*{node_id}\s*$"),
    ).click()
    page.wait_for_function(
        """([key, node]) => {
          const select = document.querySelector(`[data-testid="option-target-${key}"]`);
          return (select?.closest('.el-select') ?? select)?.textContent.trim() === node;
        }""",
        arg=[key, node_id],
        timeout=5_000,
    )


def rewrite_prompt(page: Any, testid: str, starting: str, text: str) -> None:
    """In the selected node's panel, replaces the prompt text that starts with `starting`."""
    boxes = [box for box in page.get_by_test_id(testid).all() if box.input_value().startswith(starting)]
    assert len(boxes) == 1, f"{len(boxes)} {testid} prompts start with {starting!r}"
    boxes[0].fill(text)


def console_error(page_name: str, message: Any, errors: list[str]) -> None:
    if message.type != "error":
        return
    url = str((message.location or {}).get("url", ""))
    if url.endswith("/api/v1/session") and "401" in message.text:
        return  # the router asks whether anyone is signed in; before sign-in the answer is 401 (docs/cti.md)
    errors.append(f"{page_name}: console: {message.text} ({url})")


def call_events(data_dir: Path, call_id: str) -> list[dict[str, Any]]:
    return [e for e in events(data_dir) if e.get("call_id") == call_id]


def new_call_at_menu(data_dir: Path, known: set[str]) -> str:
    """Waits until a call not in `known` has entered the menu node; returns its id."""
    found: list[str] = []

    def entered() -> bool:
        found[:] = [
            str(e["call_id"])
            for e in events(data_dir)
            if e["type"] == "ivr.node_entered" and e.get("node_id") == "menu" and e["call_id"] not in known
        ]
        return bool(found)

    wait_until(entered, 40, "the call to reach the menu")
    return found[0]


def queued_in(data_dir: Path, call_id: str) -> str:
    queued: list[str] = []

    def check() -> bool:
        queued[:] = [str(e["queue_id"]) for e in call_events(data_dir, call_id) if e["type"] == "call.queued"]
        return bool(queued)

    wait_until(check, 20, f"call {call_id} to be queued")
    return queued[0]


def inbound_audio(page: Any) -> dict[str, Any]:
    return page.evaluate(INBOUND_AUDIO)  # type: ignore[no-any-return]


def test_a_phone_call_reaches_the_browser_agent_and_the_next_call_follows_the_edited_menu(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if rerun_in_loopback_namespace(request.node.nodeid, tmp_path / "inner"):
        return
    from playwright.sync_api import sync_playwright

    data_dir = tmp_path / "data"
    shots = Screenshots(tmp_path / "screenshots")
    browser_errors: list[str] = []
    with contextlib.ExitStack() as stack:
        # 1. the demo, as a new user starts it
        # No host candidates but loopback exist here; by default the server offers every other interface.
        server = HotlineServer(
            data_dir=data_dir, command="demo", env={"HOTLINE_ICE_HOST_ADDRESSES": '["127.0.0.1"]'}
        )
        stack.callback(server.stop)
        server.start(timeout=90)
        base = f"http://127.0.0.1:{server.http_port}"
        wait_http(base)
        sip_passwords = demo_passwords(data_dir)
        web_users = demo_web_users(server.log_tail(400))
        assert {"admin", "super"} <= set(web_users), server.log_tail(60)

        # baresip cuts its dump files' paths at 127 characters (then both directions share one name)
        phone_dir = Path(tempfile.mkdtemp(prefix="hotline-e2e-"))
        stack.callback(shutil.rmtree, phone_dir, ignore_errors=True)
        stack.callback(shutil.copytree, phone_dir, tmp_path / "phone", dirs_exist_ok=True)
        phone = LoopbackBaresip(
            phone_dir,
            f"<sip:{CALLER}@127.0.0.1:{server.sip_port}>;auth_pass={sip_passwords[CALLER]};regint=60",
            tone_wav(tmp_path / "caller.wav", 90, CALLER_HZ),
        )
        stack.callback(phone.stop)
        phone.start()
        assert phone.wait_for("200 OK", 15), phone.log()[-2000:]

        driver = stack.enter_context(sync_playwright())
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        stack.callback(browser.close)
        pages: dict[str, Any] = {}

        def on_failure(kind: type[BaseException] | None, *_: object) -> None:
            if kind is None:
                return
            for name, page in pages.items():
                with contextlib.suppress(Exception):
                    shots.take(page, f"failed-{name}")
            print(f"--- hotline log ---\n{server.log_tail(80)}\n--- baresip log ---\n{phone.log()[-3000:]}")

        stack.push(on_failure)

        def new_page(name: str, *, spy: bool = False) -> Any:
            context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
            context.set_default_timeout(WAIT_MS)
            if spy:
                context.add_init_script(PC_SPY)
            page = context.new_page()
            pages[name] = page
            page.on("pageerror", lambda error: browser_errors.append(f"{name}: page error: {error}"))
            page.on("console", lambda message: console_error(name, message, browser_errors))
            return page

        # 2. agent 8001 signs in, takes the browser as the phone, goes ready
        agent = new_page("agent", spy=True)
        sign_in(agent, base, AGENT, sip_passwords["1001"], shots)
        agent.wait_for_url(re.compile(r"/agent$"))
        agent.get_by_test_id("agent-id").filter(has_text=AGENT).wait_for()
        agent.wait_for_function("() => !document.querySelector('[data-testid=btn-sign-in]')?.disabled")
        agent.get_by_test_id("device-browser").click()
        agent.get_by_test_id("btn-sign-in").click()
        wait_state(agent, "[data-testid=media-status]", "connected", key="media")
        # the page says connected once the answer is in; the call needs ICE and DTLS to be up
        agent.wait_for_function(PC_CONNECTED, timeout=15_000)
        agent.get_by_test_id("btn-ready").click()
        wait_state(agent, "[data-testid=agent-state]", "ready")
        shots.take(agent, "agent-ready")

        supervisor = new_page("supervisor")
        sign_in(supervisor, base, "super", web_users["super"])
        supervisor.wait_for_url(re.compile(r"/supervisor$"))
        agent_cell = f"[data-testid=wb-agent-{AGENT}]"
        wait_state(supervisor, agent_cell, "ready")
        supervisor.evaluate(WATCH_AGENT_CELL, AGENT)
        shots.take(supervisor, "supervisor-agent-ready")

        # 3. the phone dials 4001, presses 1 in the menu; the browser rings with the screen pop
        phone.command(f"/dial sip:4001@127.0.0.1:{server.sip_port}")
        assert phone.wait_for("Call established", 15), phone.log()[-2000:]
        first_call = new_call_at_menu(data_dir, set())
        time.sleep(1)  # into the menu prompt (the welcome cannot be interrupted)
        phone.command("1")
        assert queued_in(data_dir, first_call) == "sales"
        agent.get_by_test_id("ringing-indicator").wait_for()
        pop = agent.get_by_test_id("screen-pop")
        assert CALLER in pop.get_by_test_id("pop-caller").inner_text()
        assert "sales" in pop.get_by_test_id("pop-queue").inner_text()
        ivr_data = pop.get_by_test_id("pop-data").inner_text()
        assert "welcome → hours → menu → sales" in ivr_data, f"the screen pop lacks the IVR path: {ivr_data}"
        shots.take(agent, "agent-ringing-screen-pop")
        agent.get_by_test_id("btn-answer").click()
        wait_state(agent, "[data-testid=agent-state]", "on_call")
        answered_at = time.monotonic()
        wait_state(supervisor, agent_cell, "on_call", 10_000)
        # pushed over the CTI WebSocket (实时推送), not found by the page's fallback polling (定时刷新)
        supervisor.get_by_test_id("wb-status").filter(has_text="实时推送").wait_for(timeout=5_000)

        # 4. audio both ways: the browser receives the caller's RTP with sound in it ...
        before = inbound_audio(agent)
        time.sleep(2)
        after = inbound_audio(agent)
        assert after["packets"] >= before["packets"] + 50, (before, after)
        assert after["energy"] > before["energy"], f"the agent's browser receives silence: {before} {after}"
        shots.take(agent, "agent-in-call")
        shots.take(supervisor, "supervisor-agent-on-call")
        time.sleep(max(0.0, 4.0 - (time.monotonic() - answered_at)))
        talked = time.monotonic() - answered_at

        # 5. the caller hangs up: wrap-up, then ready after the queue's 5 s; the supervisor sees each step
        phone.command("/hangup")
        wait_state(agent, "[data-testid=agent-state]", "wrap_up", 10_000)
        agent.get_by_test_id("wrapup-panel").wait_for()
        shots.take(agent, "agent-wrap-up")
        # seen by the supervisor's page as it happened (the cell's history, in case wrap-up already ended)
        supervisor.wait_for_function("() => window.__seen.includes('wrap_up')", timeout=10_000)
        wait_state(agent, "[data-testid=agent-state]", "ready", 15_000)
        wait_state(supervisor, agent_cell, "ready", 10_000)
        seen = supervisor.evaluate("() => window.__seen")
        steps = iter(seen)
        assert all(step in steps for step in ("ready", "on_call", "wrap_up", "ready")), seen

        # ... and the phone heard the agent's microphone (Chromium's fake one beeps) after the answer
        wait_until(lambda: phone.heard(), 10, "baresip's recording of what it heard")
        heard, rate = wav_frames(phone.heard()[-1])
        bridged = heard[len(heard) - int((talked - 0.5) * rate) : len(heard) - int(0.3 * rate)]
        assert bridged.size > rate, f"baresip's dump is too short: {heard.size} samples"
        assert peak(bridged) > 1000, f"the caller heard silence from the agent (peak {peak(bridged)})"
        assert abs(dominant_hz(bridged, rate) - FAKE_MICROPHONE_HZ) < 25, dominant_hz(bridged, rate)

        # ... and the recording has both parties, each on its channel (left caller, right agent)
        stopped: list[dict[str, Any]] = []

        def recorded() -> bool:
            stopped[:] = [e for e in call_events(data_dir, first_call) if e["type"] == "recording.stopped"]
            return bool(stopped)

        wait_until(recorded, 10, "recording.stopped")
        recording = Path(str(stopped[0]["path"]))
        assert recording.exists(), recording
        channels = recording_channels(recording)
        assert len(channels) == 2 and channels[0].size > 3 * 8000, [c.size for c in channels]
        peaks = [peak(channel) for channel in channels]
        assert min(peaks) > 1000, f"a silent channel in {recording}: peaks {peaks}"
        pitches = [round(dominant_hz(channel, 8000)) for channel in channels]
        assert abs(pitches[0] - CALLER_HZ) < 25 and abs(pitches[1] - FAKE_MICROPHONE_HZ) < 25, pitches
        first_flow = {e["flow_version"] for e in call_events(data_dir, first_call) if "flow_version" in e}
        assert first_flow == {1}, first_flow

        # 6. the admin sends key 2 to sales in the IVR editor and publishes
        admin = new_page("admin")
        sign_in(admin, base, "admin", web_users["admin"])
        admin.goto(f"{base}/admin?tab=queues")
        admin.get_by_test_id("resource-queues").get_by_text("sales", exact=True).first.wait_for()
        shots.take(admin, "admin-queues")
        admin.goto(f"{base}/admin?tab=flows")
        admin.get_by_test_id("flow-editor").wait_for()
        admin.get_by_test_id("flow-item-main").click()
        admin.get_by_test_id("flow-node-menu").wait_for()
        admin.wait_for_timeout(500)  # vue-flow lays the nodes out
        shots.take(admin, "admin-flow-editor")
        admin.get_by_test_id("flow-node-menu").click()
        admin.get_by_test_id("node-panel").wait_for()
        choose_exit(admin, "2", "sales")
        # support stays reachable on a new key (the editor refuses a node no path leads to)
        admin.get_by_test_id("new-option-key").fill("3")
        admin.get_by_test_id("add-option").click()
        choose_exit(admin, "3", "support")
        # and the menu says so, in both languages
        rewrite_prompt(admin, "prompt-zh", "销售请按1", NEW_MENU_ZH)
        rewrite_prompt(admin, "prompt-en", "For sales press 1", NEW_MENU_EN)
        admin.get_by_test_id("flow-dirty").wait_for()
        shots.take(admin, "admin-flow-editor-menu-edited")
        admin.get_by_test_id("flow-publish").click()
        admin.locator(".el-message-box .el-button--primary").click()
        admin.get_by_test_id("flow-version").filter(has_text="v2").wait_for()
        admin.get_by_test_id("flow-dirty").wait_for(state="hidden")
        stored = admin.request.get(f"{base}/api/v1/flows/main").json()
        assert stored["published"]["version"] == 2, stored
        menu = next(n for n in stored["published"]["document"]["nodes"] if n["id"] == "menu")
        options = {"1": "sales", "2": "sales", "3": "support", "0": "operator", "9": "voicemail"}
        assert menu["options"] == options, menu["options"]
        assert {"zh": NEW_MENU_ZH} in [p["text"] for p in menu["prompts"]], menu["prompts"]
        shots.take(admin, "admin-flow-published")

        # the next call presses 2 and waits in sales: the new version is followed
        wallboard = supervisor.context.new_page()
        pages["wallboard"] = wallboard
        wallboard.goto(f"{base}/wallboard")
        wait_state(wallboard, agent_cell, "ready")
        phone.command(f"/dial sip:4001@127.0.0.1:{server.sip_port}")
        second_call = new_call_at_menu(data_dir, {first_call})
        time.sleep(1)
        phone.command("2")
        assert queued_in(data_dir, second_call) == "sales", "key 2 did not follow the published menu"
        second_flow = {e["flow_version"] for e in call_events(data_dir, second_call) if "flow_version" in e}
        assert second_flow == {2}, second_flow
        exits = [e for e in call_events(data_dir, second_call) if e["type"] == "ivr.node_exited"]
        assert any(e.get("node_id") == "menu" and e.get("input") == "2" for e in exits), exits
        agent.get_by_test_id("ringing-indicator").wait_for()
        assert "sales" in agent.get_by_test_id("pop-queue").inner_text()
        ivr_data = agent.get_by_test_id("pop-data").inner_text()
        assert re.search(r"ivr\.version\s+2\b", ivr_data), ivr_data
        assert re.search(r"ivr\.inputs\.menu\s+2\b", ivr_data), ivr_data
        wait_state(wallboard, agent_cell, "ringing", 10_000)
        shots.take(wallboard, "wallboard-agent-ringing")
        shots.take(agent, "agent-ringing-second-call")
        phone.command("/hangup")  # the caller gives up while it rings: the agent is ready again
        wait_state(agent, "[data-testid=agent-state]", "ready", 15_000)
        shots.take(supervisor, "supervisor-after-calls")

    # 7. the pages rendered without errors in the browser console
    assert len(shots.taken) >= 9
    assert not browser_errors, "\n".join(browser_errors)
