"""Property (FM-03): random valid flows, driven by random callers, always end within the watchdog bound,
never crash, end the call one way or another, and log one exit for every node entered."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.ivr.interpreter import Interpreter, WatchdogLimits
from hotline.ivr.schema import NODE_TYPES
from hotline.ivr.validator import load_flow, validate_document
from hotline.switch.control import QueueOutcome, RecordingRef
from tests.ivr.call_double import HANG_UP, SILENT, Barge, ScriptedCall, Stall
from tests.ivr.flows import office_calendar, tts

MAX_VISITS = 40
KEYS = "0123456789*#"

SUBFLOW = load_flow(
    {
        "id": "sub",
        "entry": "ask",
        "nodes": [
            {
                "id": "ask",
                "type": "menu",
                "prompts": [tts("子菜单")],
                "options": {"1": "@return", "2": "@hangup"},
                "exits": {"no_input": "@return", "no_match": "@return"},
            }
        ],
    }
)


def lookup_answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/ok":
        return httpx.Response(200, json={"a": {"b": 1}, "tier": "vip"})
    if request.url.path == "/junk":
        return httpx.Response(200, content=b"{oops")
    return httpx.Response(503, json={"error": "down"})


@st.composite
def flows(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 7))
    ids = [f"n{i}" for i in range(count)]
    targets = st.sampled_from([*ids, "@hangup", "@return"])

    def named(*names: str) -> dict[str, str]:
        return {name: draw(targets) for name in names if draw(st.booleans())}

    nodes: list[dict[str, Any]] = []
    for index, node_id in enumerate(ids):
        # The default exit always leads forward, so every node is reachable and can reach the end.
        default = ids[index + 1] if index + 1 < count else "@hangup"
        kind = draw(st.sampled_from(NODE_TYPES))
        node: dict[str, Any] = {"id": node_id, "type": kind}
        exits: dict[str, str] = {"default": default}
        prompts = [tts("提示{ani}", "prompt {data.x}")]
        if kind == "play":
            node |= {"prompts": prompts, "interruptible": draw(st.booleans())}
            exits |= named("next")
        elif kind in ("menu", "language"):
            keys = draw(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=4, unique=True))
            if kind == "menu":
                node |= {
                    "prompts": prompts,
                    "options": {k: draw(targets) for k in keys},
                    "retries": draw(st.integers(0, 2)),
                }
                exits |= named("no_input", "no_match")
            else:
                node |= {
                    "prompts": prompts,
                    "options": {k: draw(st.sampled_from(["zh", "en"])) for k in keys},
                }
                exits |= named("next")
        elif kind == "collect":
            node |= {
                "prompts": prompts,
                "store_as": draw(st.sampled_from(["x", "acct.no"])),
                "min_digits": draw(st.integers(0, 3)),
                "max_digits": draw(st.integers(3, 6)),
                "pattern": draw(st.sampled_from([None, r"\d+", r"[1-9]\d*"])),
                "retries": draw(st.integers(0, 2)),
            }
            exits |= named("next", "invalid", "no_input")
        elif kind == "set":
            node |= {"assignments": {"x": draw(st.sampled_from(["{ani}", "1", 2, None]))}}
            exits |= named("next")
        elif kind == "branch":
            condition = draw(
                st.sampled_from(
                    [
                        {"subject": "data", "key": "x", "op": "exists"},
                        {"subject": "calendar", "calendar": "office"},
                        {"subject": "tier", "op": "eq", "value": "vip"},
                        {"subject": "ani", "op": "missing"},
                        {"subject": "weekday", "days": [1, 2, 3]},
                    ]
                )
            )
            node |= {"rules": [{"when": [condition], "goto": draw(targets)}]}
            exits |= named("otherwise")
        elif kind == "lookup":
            path = draw(st.sampled_from(["/ok", "/junk", "/down"]))
            node |= {
                "url": f"http://lookup.test{path}",
                "response_map": {"x": "a.b", "customer.tier": "tier"},
            }
            exits |= named("next", "fallback")
        elif kind == "queue":
            node |= {"queue": "q"}
            exits |= named("timeout", "overflow", "unavailable")
        elif kind == "transfer":
            node |= {"target": {"kind": "extension", "address": "8000"}}
            exits |= named("failed")
        elif kind == "voicemail":
            exits |= named("next", "no_message")
        elif kind == "callback":
            node |= {"prompts": prompts, "queue": "q"}
            exits |= named("accepted", "declined")
        elif kind == "subflow":
            node |= {"flow": "sub"}
            exits |= named("next")
        elif kind == "hangup":
            node |= {"cause": "done"}
        node["exits"] = exits
        nodes.append(node)
    return {"id": "random", "entry": "n0", "nodes": nodes}


callers = st.lists(
    st.one_of(
        st.text(alphabet=KEYS, max_size=5),
        st.just(SILENT),
        st.builds(Barge, st.sampled_from(KEYS)),
        st.builds(Stall, st.floats(0, 0.002)),
        st.just(HANG_UP),
    ),
    max_size=30,
)
queue_outcomes = st.lists(
    st.builds(QueueOutcome, st.sampled_from(["answered", "abandoned", "timeout", "overflow", "unavailable"])),
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=flows(),
    script=callers,
    outcomes=queue_outcomes,
    transfers=st.lists(st.booleans(), max_size=5),
    recordings=st.lists(st.sampled_from([None, RecordingRef("r", 3.0)]), max_size=5),
    withheld=st.booleans(),
)
def test_random_flows_always_terminate(
    document: dict[str, Any],
    script: list[Any],
    outcomes: list[QueueOutcome],
    transfers: list[bool],
    recordings: list[RecordingRef | None],
    withheld: bool,
) -> None:
    flow, problems = validate_document(document, flow_exists={"sub"}, calendars={"office"})
    assert problems == [] and flow is not None  # valid by construction

    async def scenario() -> None:
        call = ScriptedCall(
            script,
            ani=None if withheld else "13812345678",
            queue_outcomes=outcomes,
            transfer_results=transfers,
            recordings=recordings,
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(lookup_answer)) as client:
            interpreter = Interpreter(
                flows={"sub": SUBFLOW},
                calendars={"office": office_calendar()},
                limits=WatchdogLimits(max_node_visits=MAX_VISITS, max_flow_seconds=2.0),
                http=client,
                clock=lambda: datetime(2024, 9, 24, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
            )
            result = await asyncio.wait_for(interpreter.run(call, flow), timeout=5)
        assert result.outcome != "error", call.events_of("ivr.error")
        assert result.visits <= MAX_VISITS + 1
        entered = call.events_of("ivr.node_entered")
        assert len(entered) <= MAX_VISITS
        assert len(call.events_of("ivr.node_exited")) == len(entered)
        if result.outcome in ("hung_up", "watchdog"):
            assert len(call.hangup_causes) == 1
        elif result.outcome == "handed_off":
            assert call.hangup_causes == [] and (call.queued or call.transfers)
        else:
            assert result.outcome == "caller_hung_up" and call.hangup_causes == []
        assert call.data["ivr"]["outcome"] == result.outcome
        assert len(call.data["ivr"]["path"]) == len(entered)

    asyncio.run(scenario())
