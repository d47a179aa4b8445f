"""Screenshots of every page of the built front end, against mocked REST and CTI endpoints.

    cd frontend && npm run build && npx vite preview --port 4173 --strictPort &
    python e2e/screenshots.py --base http://127.0.0.1:4173 --out /tmp/hotline-shots

Needs the Python ``playwright`` package and Debian's Chromium (/usr/bin/chromium); never downloads a
browser. The REST API is answered by ``page.route`` and the CTI WebSocket by ``page.route_web_socket``,
playing the server's side of docs/cti.md; the browser media channel is negotiated for real with a second
page acting as the server's WebRTC peer, so the agent's softphone shows a working voice channel. Every
console error or page error fails the run (the pages must keep the console clean).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, Route, WebSocketRoute, sync_playwright

HERE = Path(__file__).resolve().parent
DEMO_FLOW = json.loads((HERE.parent / "tests" / "fixtures" / "demo-flow.json").read_text(encoding="utf-8"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def iso(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


USERS = {
    "8001": {"username": "8001", "display_name": "演示坐席 8001", "roles": ["agent"], "agent_id": "8001"},
    "lead": {
        "username": "lead",
        "display_name": "王班长",
        "roles": ["supervisor", "team_leader"],
        "agent_id": None,
    },
    "admin": {"username": "admin", "display_name": "管理员", "roles": ["tenant_admin"], "agent_id": None},
}
PASSWORD = "Demo2024pass"

CONFIG: dict[str, list[dict[str, Any]]] = {
    "queues": [
        {
            "name": "sales",
            "display_name": "销售",
            "strategy": "longest_idle",
            "acw_mode": "timed",
            "wrap_up_seconds": 15,
        },
        {"name": "support", "display_name": "技术支持", "strategy": "round_robin", "acw_mode": "mandatory"},
    ],
    "agents": [
        {
            "id": str(8001 + i),
            "name": f"演示坐席 Agent {8001 + i}",
            "queues": ["sales" if i < 5 else "support"],
            "skills": {"sales" if i < 5 else "support": 5},
            "extension": str(1001 + i),
            "enabled": True,
        }
        for i in range(10)
    ],
    "extensions": [
        {"number": str(1001 + i), "password": "x7Kp2mQa9", "name": f"Demo {1001 + i}", "agent": str(8001 + i)}
        for i in range(10)
    ],
    "numbers": [
        {"number": "4001", "target": "flow:main", "public": True},
        {"number": "9196", "target": "echo", "public": False},
        {"number": "9197", "target": "readback", "public": False},
    ],
    "users": [{**user, "enabled": True} for user in USERS.values()],
    "reason-codes": [
        {"code": "break", "name": "小休", "name_en": "Break", "kind": "not_ready", "max_minutes": 15},
        {"code": "lunch", "name": "就餐", "name_en": "Lunch", "kind": "not_ready", "max_minutes": 60},
        {"code": "training", "name": "培训", "name_en": "Training", "kind": "not_ready"},
        {"code": "resolved", "name": "已解决", "name_en": "Resolved", "kind": "disposition"},
        {"code": "follow_up", "name": "需回访", "name_en": "Follow-up", "kind": "disposition"},
    ],
    "calendars": [
        {
            "id": "office",
            "name": "办公时间 Office hours",
            "timezone": "Asia/Shanghai",
            "weekly": {str(d): [{"start": "09:00", "end": "18:00"}] for d in range(1, 6)},
            "holidays": [{"name": "国庆节", "start": "2024-10-01", "end": "2024-10-07"}],
            "special_workdays": [{"name": "国庆调休", "date": "2024-10-12", "as_weekday": 1}],
        },
    ],
    "skills": [{"id": "sales", "name": "销售"}, {"id": "support", "name": "技术支持"}],
}


def wallboard_snapshot() -> dict[str, Any]:
    states = [
        "on_call",
        "on_call",
        "ready",
        "ringing",
        "wrap_up",
        "not_ready",
        "on_hold",
        "ready",
        "logged_out",
        "on_call",
    ]
    agents = []
    for i, state in enumerate(states):
        busy = state in ("on_call", "ringing", "on_hold")
        agents.append(
            {
                "agent_id": str(8001 + i),
                "name": f"坐席 {8001 + i}",
                "state": state,
                "reason": "lunch" if state == "not_ready" else None,
                "since": iso(17 + i * 41),
                "call_id": f"c{i}" if busy else None,
                "queue": ("sales" if i < 5 else "support") if busy else None,
                "ani_masked": f"13{i}****{5678 + i}" if busy else None,
                "device": "browser" if state != "logged_out" else None,
            }
        )
    return {
        "agents": agents,
        "queues": [
            {
                "queue": "sales",
                "name": "销售",
                "waiting": 3,
                "longest_wait_seconds": 74.0,
                "agents_ready": 1,
                "agents_not_ready": 0,
                "agents_on_call": 3,
                "offered_today": 126,
                "answered_today": 114,
                "abandoned_today": 7,
                "service_level_today": 0.83,
                "abandon_rate_today": 0.056,
            },
            {
                "queue": "support",
                "name": "技术支持",
                "waiting": 0,
                "longest_wait_seconds": 0.0,
                "agents_ready": 1,
                "agents_not_ready": 1,
                "agents_on_call": 2,
                "offered_today": 58,
                "answered_today": 55,
                "abandoned_today": 1,
                "service_level_today": 0.55,
                "abandon_rate_today": 0.017,
            },
        ],
        "trunks": [{"name": "carrier", "channels_in_use": 7, "channel_limit": 30}],
    }


class MockServer:
    """The REST API and CTI WebSocket of docs/cti.md, enough to drive every page."""

    def __init__(self, answerer: Page) -> None:
        self.answerer = answerer
        self.user: dict[str, Any] | None = None
        self.ws: WebSocketRoute | None = None
        self.seq = 100
        self.sent_ops: list[str] = []
        self.draft_saves = 0
        self.agent_state = "logged_out"

    # --- REST ---
    def route(self, route: Route) -> None:
        request = route.request
        path = request.url.split("/api/v1", 1)[1].split("?", 1)[0]
        method = request.method
        body = json.loads(request.post_data) if request.post_data else None

        def reply(status: int, payload: Any) -> None:
            route.fulfill(
                status=status, content_type="application/json", body=json.dumps(payload, ensure_ascii=False)
            )

        def error(status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> None:
            reply(status, {"error": {"code": code, "message": message, "fields": fields or {}}})

        if path == "/session":
            if method == "GET":
                return (
                    reply(200, self.session())
                    if self.user
                    else error(401, "unauthenticated", "Not signed in")
                )
            if method == "DELETE":
                self.user = None
                return reply(200, {})
            user = USERS.get(body.get("username", ""))
            if not user or body.get("password") != PASSWORD or body.get("tenant") != "demo":
                return error(401, "bad_credentials", "Wrong tenant, username or password")
            self.user = user
            return reply(200, self.session())
        if not self.user:
            return error(401, "unauthenticated", "Not signed in")
        if path == "/live":
            return reply(200, wallboard_snapshot())
        if path == "/cdrs":
            rows = [
                {
                    "call_id": f"x{i}",
                    "agent_id": "8001",
                    "talk_seconds": 95 + 20 * i,
                    "wrapup_seconds": 12 + i,
                }
                for i in range(14)
            ]
            return reply(200, {"items": rows, "total": len(rows)})
        if path == "/flows":
            flows = [
                {"id": "main", "name": DEMO_FLOW["name"], "published_version": 3, "draft_version": None},
                {"id": "survey", "name": "满意度调查 Survey", "published_version": 1, "draft_version": None},
            ]
            return reply(200, {"items": [{**flow, "versions": 3} for flow in flows], "total": 2})
        if path.startswith("/flows/"):
            parts = path.split("/")
            flow_id = parts[2]
            if len(parts) == 3:
                flow = (
                    {**DEMO_FLOW, "version": 3}
                    if flow_id == "main"
                    else {
                        "id": flow_id,
                        "name": "满意度调查 Survey",
                        "version": 1,
                        "entry": "ask",
                        "nodes": [
                            {
                                "id": "ask",
                                "type": "collect",
                                "store_as": "score",
                                "max_digits": 1,
                                "prompts": [
                                    {"kind": "tts", "text": {"zh": "请为本次服务打分", "en": "Please rate"}}
                                ],
                                "exits": {"next": "bye"},
                            },
                            {"id": "bye", "type": "hangup"},
                        ],
                    }
                )
                version = {"version": flow["version"], "document": flow}
                return reply(200, {"id": flow_id, "name": flow["name"], "published": version, "draft": None})
            if parts[3] == "draft":
                self.draft_saves += 1
                if self.draft_saves == 1:
                    return error(
                        422,
                        "invalid_flow",
                        "The flow has problems",
                        {
                            "menu": [
                                "options.1: no node named 'salez'",
                                "timeout_too_short: the node timeout is shorter than its prompts",
                            ],
                            "support": "queue 'supportt' does not exist",
                        },
                    )
                return reply(200, {"id": flow_id, "version": 4, "status": "draft"})
            if parts[3] == "publish":
                return reply(200, {"id": flow_id, "version": 4, "status": "published"})
        kind = path.strip("/").split("/")[0]
        if kind in CONFIG:
            if method == "GET":
                return reply(200, {"items": CONFIG[kind], "total": len(CONFIG[kind])})
            return reply(200, body or {})
        return error(404, "not_found", f"No such resource {path}")

    def session(self) -> dict[str, Any]:
        return {"user": self.user, "tenant": {"id": "demo", "name": "Hotline 演示 Demo"}}

    # --- CTI ---
    def websocket(self, ws: WebSocketRoute) -> None:
        self.ws = ws
        ws.on_message(lambda message: self.on_command(json.loads(message)))

    def event(self, type_: str, **fields: Any) -> None:
        self.seq += 1
        assert self.ws is not None, "the page never opened the CTI socket"
        self.ws.send(json.dumps({"type": type_, "seq": self.seq, "at": iso(), **fields}, ensure_ascii=False))

    def state(self, state: str, **fields: Any) -> None:
        self.agent_state = state
        self.event(
            "agent.state",
            agent_id="8001",
            state=state,
            reason=fields.pop("reason", None),
            since=iso(),
            call_id=fields.pop("call_id", None),
        )

    def on_command(self, command: dict[str, Any]) -> None:
        op = command["op"]
        self.sent_ops.append(op)
        reply: dict[str, Any] = {"reply_to": command["id"], "ok": True}
        if op == "hello":
            if self.user and self.user.get("agent_id"):
                figures = {
                    "offers": 15,
                    "offers_answered": 14,
                    "calls_handled": 14,
                    "talk_seconds": 3150.0,
                    "wrap_up_seconds": 252.0,
                    "average_talk_seconds": 225.0,
                    "average_wrap_up_seconds": 18.0,
                }
                agent = {"agent_id": "8001", "state": self.agent_state, "since": iso(3), "figures": figures}
                reply.update(agent=agent, calls=[])
            reply["last_seq"] = self.seq
            assert self.ws is not None
            self.ws.send(json.dumps(reply))
            if self.user and "supervisor" in self.user["roles"]:
                self.event("wallboard", **wallboard_snapshot())
            return
        if op == "webrtc.offer":
            reply["sdp"] = self.answer(command["sdp"])
        assert self.ws is not None
        self.ws.send(json.dumps(reply))
        if op == "agent.login":
            self.state("not_ready", reason="login")
            self.event("queue.counts", counts={"sales": 0})
        elif op == "agent.ready":
            self.state("ready")
        elif op == "call.answer":
            self.event("call.answered", call_id="c1")
            self.state("on_call", call_id="c1")
        elif op == "call.hangup":
            self.event("call.ended", call_id="c1", cause="agent_hangup")
            self.state("wrap_up", call_id="c1")
        elif op == "wrapup.end":
            self.state("ready")

    def answer(self, offer: str) -> str:
        """The server's WebRTC answer, made by a real peer connection in another page."""
        return self.answerer.evaluate(
            """async (offer) => {
                const pc = new RTCPeerConnection()
                window.serverPeer = pc
                const ctx = new AudioContext()
                const osc = ctx.createOscillator()
                const dest = ctx.createMediaStreamDestination()
                osc.connect(dest); osc.start()
                for (const track of dest.stream.getAudioTracks()) pc.addTrack(track, dest.stream)
                await pc.setRemoteDescription({ type: 'offer', sdp: offer })
                await pc.setLocalDescription(await pc.createAnswer())
                await new Promise((resolve) => {
                    if (pc.iceGatheringState === 'complete') return resolve()
                    const done = () => pc.iceGatheringState === 'complete' && resolve()
                    pc.addEventListener('icegatheringstatechange', done)
                    setTimeout(resolve, 3000)
                })
                return pc.localDescription.sdp
            }""",
            offer,
        )


def expected_http_error(text: str) -> bool:
    # Chromium logs every 4xx response itself. The API answers 401 to GET /session before sign-in and
    # to a wrong password, and 422 to an invalid flow draft (docs/cti.md): those are the design.
    return text.startswith("Failed to load resource") and ("status of 401" in text or "status of 422" in text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:4173")
    parser.add_argument("--out", default="/tmp/hotline-shots")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        answerer = browser.new_page()
        answerer.goto("about:blank")
        server = MockServer(answerer)

        def new_page(locale: str = "zh-CN", size: tuple[int, int] = (1440, 900)) -> Page:
            server.user = None  # a new browser: nobody is signed in
            context = browser.new_context(
                viewport={"width": size[0], "height": size[1]}, locale=locale, permissions=["microphone"]
            )
            page = context.new_page()
            page.on(
                "console",
                lambda msg: (
                    msg.type == "error"
                    and not expected_http_error(msg.text)
                    and problems.append(f"console: {msg.text}")
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.route("**/api/v1/**", server.route)
            page.route_web_socket("**/api/v1/cti", server.websocket)
            return page

        def shot(page: Page, name: str, full: bool = False) -> None:
            page.wait_for_timeout(400)
            page.screenshot(path=str(out / f"{name}.png"), full_page=full)
            print(f"saved {out / name}.png")

        def login(page: Page, username: str) -> None:
            page.goto(f"{args.base}/login")
            page.get_by_test_id("login-username").fill(username)
            page.get_by_test_id("login-password").fill(PASSWORD)
            page.get_by_test_id("login-submit").click()

        # --- sign-in ---
        page = new_page()
        page.goto(f"{args.base}/agent")
        page.wait_for_url("**/login**")
        shot(page, "01-login")
        page.get_by_test_id("login-username").fill("8001")
        page.get_by_test_id("login-password").fill("wrong")
        page.get_by_test_id("login-submit").click()
        page.get_by_test_id("login-error").wait_for()
        shot(page, "02-login-error")

        # --- the agent desktop, a call from offer to wrap-up ---
        page.get_by_test_id("login-password").fill(PASSWORD)
        page.get_by_test_id("login-submit").click()
        page.wait_for_url("**/agent")
        page.get_by_test_id("btn-sign-in").wait_for()
        page.wait_for_function("() => !document.querySelector('[data-testid=btn-sign-in]').disabled")
        shot(page, "03-agent-logged-out")
        page.get_by_test_id("btn-sign-in").click()
        page.get_by_test_id("btn-ready").wait_for()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=media-status]')?.dataset.media === 'connected'",
            timeout=15_000,
        )
        page.get_by_test_id("btn-ready").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=agent-state]').dataset.state === 'ready'"
        )
        server.event("queue.counts", counts={"sales": 2, "vip": 0})
        server.event("message", **{"from": "王班长", "text": "销售队列排队较多，请尽快示闲接听。"})
        shot(page, "04-agent-ready")
        server.event(
            "call.offered",
            call_id="c1",
            ani=None,
            ani_masked="138****5678",
            dnis="4001",
            region="广东 深圳",
            queue="sales",
            waited_seconds=23.4,
            data={
                "language": "zh",
                "menu": "1",
                "ivr_path": ["welcome", "hours", "menu", "sales"],
                "customer": {"tier": "gold", "account": "A-1029"},
            },
        )
        server.state("ringing", call_id="c1")
        page.get_by_test_id("ringing-indicator").wait_for()
        shot(page, "05-agent-ringing")
        page.keyboard.press("Enter")  # Enter answers a ringing call
        page.get_by_test_id("btn-hangup").wait_for()
        page.get_by_test_id("btn-dtmf").click()
        page.get_by_test_id("btn-transfer").click()
        page.wait_for_timeout(2200)
        shot(page, "06-agent-on-call")
        stats = page.evaluate("""async () => {
            const audio = document.querySelector('[data-testid=remote-audio]')
            return { hasStream: !!audio.srcObject }
        }""")
        if not stats["hasStream"]:
            problems.append("the remote audio element has no stream after answering")
        page.get_by_test_id("btn-hangup").click()
        page.get_by_test_id("wrapup-panel").wait_for()
        page.get_by_test_id("wrapup-notes").fill("客户咨询套餐价格，已发送报价。")
        shot(page, "07-agent-wrap-up")
        page.get_by_test_id("btn-end-wrapup").click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=agent-state]').dataset.state === 'ready'"
        )
        page.get_by_test_id("lang-switch").click()
        shot(page, "08-agent-ready-english")
        page.get_by_test_id("lang-switch").click()
        page.context.close()

        # --- supervisor and wallboard ---
        page = new_page()
        login(page, "lead")
        page.wait_for_url("**/supervisor")
        page.get_by_test_id("wb-agent-8001").wait_for()
        shot(page, "09-supervisor", full=True)
        page.get_by_test_id("open-wallboard").click()
        page.wait_for_url("**/wallboard")
        page.get_by_test_id("wb-queue-sales").wait_for()
        shot(page, "10-wallboard")
        page.context.close()

        # --- admin console ---
        page = new_page()
        login(page, "admin")
        page.wait_for_url("**/admin**")
        page.get_by_test_id("flow-node-menu").wait_for()
        page.wait_for_timeout(600)
        page.get_by_test_id("flow-node-menu").click()
        shot(page, "11-admin-flow-editor")
        # Connect an exit by dragging from its handle onto another node's box.
        handle = page.get_by_test_id("exit-welcome-exits.default").bounding_box()
        target = page.get_by_test_id("flow-node-closed").bounding_box()
        assert handle and target
        page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
        page.mouse.down()
        page.mouse.move(target["x"] + target["width"] / 2, target["y"] + target["height"] / 2, steps=12)
        page.mouse.up()
        page.get_by_test_id("flow-text").click()
        text = page.get_by_test_id("flow-text-input").input_value()
        welcome = next(node for node in json.loads(text)["nodes"] if node["id"] == "welcome")
        if welcome.get("exits", {}).get("default") != "closed":
            problems.append(f"dragging welcome's default exit onto closed gave {welcome.get('exits')}")
        page.keyboard.press("Escape")
        page.get_by_test_id("flow-dirty").wait_for()
        page.get_by_test_id("flow-save").click()
        page.locator("[data-testid=flow-node-menu][data-invalid=true]").wait_for()
        shot(page, "12-admin-flow-problems")
        page.get_by_test_id("flow-publish").click()  # saves the draft (accepted now), then publishes
        page.locator(".el-message-box .el-button--primary").click()
        page.get_by_test_id("flow-version").filter(has_text="v4").wait_for()
        page.get_by_test_id("flow-dirty").wait_for(state="hidden")
        if page.locator("[data-testid^=flow-node-][data-invalid=true]").count():
            problems.append("problems stayed on the nodes after a successful save")
        for tab, name in (
            ("queues", "13-admin-queues"),
            ("agents", "14-admin-agents"),
            ("numbers", "15-admin-numbers"),
        ):
            page.goto(f"{args.base}/admin?tab={tab}")
            page.get_by_test_id(f"resource-{tab}").wait_for()
            page.wait_for_timeout(300)
            shot(page, name)
        page.goto(f"{args.base}/admin?tab=calendars")
        page.get_by_test_id("edit-calendars-office").click()
        page.get_by_test_id("weekly-1").wait_for()
        shot(page, "16-admin-calendar")
        page.context.close()
        browser.close()

    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(problems)} problems; CTI commands seen: {sorted(set(server.sent_ops))}")
    return 1 if problems else 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"took {time.monotonic() - start:.1f} s")
    raise SystemExit(code)
