"""The interpreter against a scripted call: every node type, the demo menu, retries, timeouts, the
watchdog, hang-ups and crashes (IVR-02/04/06/07/08/09/16/17, FM-03, FM-11, FM-12, TEL-04, TEL-06, TEL-14)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hotline.events.models import CallDataChanged, IvrNodeEntered, IvrNodeExited, parse_event
from hotline.ivr.interpreter import FlowResult, Interpreter, WatchdogLimits
from hotline.ivr.schema import Flow
from hotline.ivr.validator import load_flow
from hotline.switch.control import AudioFile, QueueOutcome, RecordingRef, Speech, Tone, TransferTarget
from tests.ivr.call_double import BLOCK, HANG_UP, SILENT, Barge, ScriptedCall, Stall
from tests.ivr.flows import demo_flow, office_calendar, tts

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2024, 9, 24, 10, 0, tzinfo=SHANGHAI)
SATURDAY_10 = datetime(2024, 9, 28, 10, 0, tzinfo=SHANGHAI)
NATIONAL_DAY = datetime(2024, 10, 2, 10, 0, tzinfo=SHANGHAI)


def make_flow(*nodes: dict[str, Any], flow_id: str = "t", **extra: Any) -> Flow:
    return load_flow({"id": flow_id, "entry": nodes[0]["id"], "nodes": list(nodes), **extra})


def interpreter(now: datetime = TUESDAY_10, **kwargs: Any) -> Interpreter:
    return Interpreter(calendars={"office": office_calendar()}, clock=lambda: now, **kwargs)


async def run(flow: Flow, call: ScriptedCall, now: datetime = TUESDAY_10, **kwargs: Any) -> FlowResult:
    hang_up_at_end = kwargs.pop("hang_up_at_end", True)
    return await asyncio.wait_for(
        interpreter(now, **kwargs).run(call, flow, hang_up_at_end=hang_up_at_end), timeout=10
    )


def exits(call: ScriptedCall) -> list[tuple[str, str]]:
    return [(e["node_id"], e["exit_reason"]) for e in call.events_of("ivr.node_exited")]


# --- the demo line -----------------------------------------------------------------------------------


async def test_demo_sales_in_hours() -> None:
    call = ScriptedCall(["1", "1"])  # 中文, then sales
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "handed_off"
    assert call.queued[0].queue == "sales" and call.queued[0].priority == 10
    assert call.data["ivr"]["path"] == ["hours", "lang", "main", "sales"]
    assert call.data["ivr"]["inputs"] == {"lang": "1", "main": "1"}
    assert call.data["language"] == "zh"
    assert call.data["ivr"]["results"]["sales"]["result"] == "answered"
    assert exits(call) == [
        ("hours", "rule 0"),
        ("lang", "chosen"),
        ("main", "option 1"),
        ("sales", "answered"),
    ]
    assert call.hangup_causes == []  # the agent has the call now
    assert call.answered == 1


async def test_demo_events_match_the_event_models() -> None:
    call = ScriptedCall(["2", "2"], queue_outcomes=[QueueOutcome("timeout", waited_seconds=300)])
    await run(load_flow(demo_flow()), call)
    for fields in call.events_of("ivr.node_entered"):
        IvrNodeEntered(tenant=call.tenant, call_id=call.call_id, **fields)
    for fields in call.events_of("ivr.node_exited"):
        IvrNodeExited(tenant=call.tenant, call_id=call.call_id, **fields)
    (changed,) = call.events_of("call.data_changed")
    CallDataChanged(tenant=call.tenant, call_id=call.call_id, **changed)
    assert {"ivr", "language", "voicemail"} <= set(changed["values"])
    entered = [e["node_id"] for e in call.events_of("ivr.node_entered")]
    assert entered == ["hours", "lang", "main", "support", "vm", "bye"]
    ended = call.events_of("ivr.flow_ended")[0]
    assert ended["outcome"] == "hung_up" and ended["path"] == entered
    # every event of the run is a typed event the log accepts (nothing is dropped as untyped)
    for event_type, fields in call.events:
        parse_event({"type": event_type, "tenant": call.tenant, "call_id": call.call_id, **fields})


async def test_demo_support_queue_timeout_goes_to_voicemail_in_english() -> None:
    call = ScriptedCall(["2", "2"], queue_outcomes=[QueueOutcome("timeout", waited_seconds=300)])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "hung_up" and call.hangup_causes == ["normal"]
    request = call.queued[0]
    assert request.queue == "support" and request.overflow_queues == ("sales",)
    assert request.overflow_after_seconds == 60 and request.skills is not None
    assert call.language == "en" and call.data["language"] == "en"
    assert "Please leave a message after the tone" in call.spoken()
    assert all(p.language == "en" for p in call.played[1:] if isinstance(p, Speech))
    voicemail = call.data["voicemail"]
    assert voicemail["recording_id"] == "rec-1" and voicemail["caller"] == "13812345678"
    assert voicemail["mailbox"] == {"kind": "tenant", "id": None}
    (event,) = call.events_of("ivr.voicemail_recorded")
    assert event["caller"] == "13812345678" and event["at"] == "2024-09-24T02:00:00+00:00"


@pytest.mark.parametrize(
    ("transfer_ok", "outcome", "last"), [(True, "handed_off", "operator"), (False, "hung_up", "bye")]
)
async def test_demo_operator(transfer_ok: bool, outcome: str, last: str) -> None:
    call = ScriptedCall(["1", "0"], transfer_results=[transfer_ok])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == outcome and result.last_node == last
    assert call.transfers == [TransferTarget("extension", "8000")]


async def test_demo_voicemail_key() -> None:
    call = ScriptedCall(["1", "9"])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "hung_up"
    assert call.data["ivr"]["path"] == ["hours", "lang", "main", "vm", "bye"]
    assert call.operations.count("record") == 1


@pytest.mark.parametrize("now", [SATURDAY_10, NATIONAL_DAY, datetime(2024, 9, 24, 19, 0, tzinfo=SHANGHAI)])
async def test_demo_out_of_hours(now: datetime) -> None:
    call = ScriptedCall([])
    await run(load_flow(demo_flow()), call, now=now)
    assert call.data["ivr"]["path"] == ["hours", "closed", "vm", "bye"]
    assert "现在是非工作时间" in call.spoken()
    assert call.collects == []  # no menu out of hours


# --- menus: invalid input, timeouts, retries, repeat, type-ahead ------------------------------------


async def test_menu_retries_then_valid_choice() -> None:
    call = ScriptedCall(["1", "7", SILENT, "1"])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "handed_off" and call.queued[0].queue == "sales"
    spoken = call.spoken()
    assert spoken.index("输入有误") < spoken.index("您没有输入")
    menu_collects = call.collects[1:]
    assert len(menu_collects) == 3 and all(
        c["max_digits"] == 1 and c["timeout"] == 5.0 for c in menu_collects
    )


@pytest.mark.parametrize(
    ("script", "reason"), [(["1", "7", "8", "6"], "no_match"), (["1", SILENT, SILENT, SILENT], "no_input")]
)
async def test_menu_gives_up_after_retries(script: list[Any], reason: str) -> None:
    call = ScriptedCall(script, transfer_results=[True])
    await run(load_flow(demo_flow()), call)
    assert ("main", reason) in exits(call)
    assert call.transfers == [TransferTarget("extension", "8000")]  # no_input/no_match go to the operator
    assert len(call.collects) == 1 + 3  # language + first try + 2 retries


async def test_repeat_key_replays_without_using_a_retry() -> None:
    call = ScriptedCall(["1", "*", "*", "7", "7", "2"])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "handed_off" and call.queued[0].queue == "support"
    assert call.spoken().count("销售请按1，技术支持请按2，人工服务请按0，留言请按9") == 5


async def test_interrupted_prompt_keys_go_to_the_next_menu() -> None:
    flow = make_flow(
        {
            "id": "hello",
            "type": "play",
            "prompts": [tts("欢迎")],
            "interruptible": True,
            "exits": {"next": "menu"},
        },
        {"id": "menu", "type": "menu", "prompts": [tts("菜单")], "options": {"2": "@return"}},
    )
    call = ScriptedCall([Barge("2")])
    result = await run(flow, call, hang_up_at_end=False)
    assert result.outcome == "returned"
    assert call.spoken() == ["欢迎"]  # the menu prompt was skipped: the caller already chose
    assert call.collects == []
    assert exits(call)[0] == ("hello", "interrupted")


async def test_type_ahead_does_not_survive_a_non_interruptible_notice() -> None:
    flow = make_flow(
        {
            "id": "hello",
            "type": "play",
            "prompts": [tts("欢迎")],
            "interruptible": True,
            "exits": {"next": "note"},
        },
        {"id": "note", "type": "play", "prompts": [tts("通话可能被录音")], "exits": {"next": "menu"}},
        {"id": "menu", "type": "menu", "prompts": [tts("菜单")], "options": {"2": "@return"}, "retries": 0},
    )
    call = ScriptedCall([Barge("2"), "2"])
    result = await run(flow, call, hang_up_at_end=False)
    assert result.outcome == "returned" and call.spoken() == ["欢迎", "通话可能被录音", "菜单"]
    assert len(call.collects) == 1


async def test_non_interruptible_prompt_ignores_keys() -> None:
    flow = make_flow(
        {"id": "hello", "type": "play", "prompts": [tts("欢迎")], "exits": {"next": "menu"}},
        {"id": "menu", "type": "menu", "prompts": [tts("菜单")], "options": {"2": "@return"}, "retries": 0},
    )
    call = ScriptedCall([Barge("2"), "2"])
    result = await run(flow, call, hang_up_at_end=False)
    assert result.outcome == "returned" and call.spoken() == ["欢迎", "菜单"]


# --- collect, set, branch ----------------------------------------------------------------------------


def account_flow(**collect: Any) -> Flow:
    return make_flow(
        {
            "id": "account",
            "type": "collect",
            "prompts": [tts("请输入账号，以井号结束")],
            "invalid_prompts": [tts("账号有误")],
            "store_as": "customer.account",
            "min_digits": 6,
            "max_digits": 8,
            "pattern": r"[1-9]\d{5,7}",
            "exits": {"next": "@return", "invalid": "bad", "no_input": "bad"},
            **collect,
        },
        {"id": "bad", "type": "hangup", "cause": "no account"},
    )


async def test_collect_validates_and_stores_digits() -> None:
    call = ScriptedCall(["123", "0123456#", "1234567#"])
    result = await run(account_flow(), call, hang_up_at_end=False)
    assert result.outcome == "returned"
    assert call.data["customer"]["account"] == "1234567"
    assert call.spoken().count("账号有误") == 2
    assert call.collects[0] == {"max_digits": 8, "timeout": 5.0, "inter": 3.0, "term": "#"}
    assert exits(call) == [("account", "collected")]


async def test_collect_gives_up_and_masks_sensitive_input() -> None:
    call = ScriptedCall(["12", "99", "000000"])
    result = await run(account_flow(sensitive=True), call)
    assert result.outcome == "hung_up" and call.hangup_causes == ["no account"]
    exited = call.events_of("ivr.node_exited")[0]
    assert exited["exit_reason"] == "invalid" and exited["input"] == "******"
    assert "customer" not in call.data


async def test_collect_uses_type_ahead_as_first_digits() -> None:
    flow = make_flow(
        {"id": "hi", "type": "play", "prompts": [tts("hi")], "interruptible": True, "exits": {"next": "pin"}},
        {
            "id": "pin",
            "type": "collect",
            "prompts": [tts("PIN")],
            "store_as": "pin",
            "min_digits": 4,
            "max_digits": 4,
            "exits": {"next": "@return"},
        },
    )
    call = ScriptedCall([Barge("4"), "321"])
    await run(flow, call, hang_up_at_end=False)
    assert call.data["pin"] == "4321"
    assert call.collects[0]["max_digits"] == 3  # only the rest was asked for
    assert "PIN" not in call.spoken()


async def test_set_and_branch_on_call_values() -> None:
    flow = make_flow(
        {
            "id": "mark",
            "type": "set",
            "assignments": {
                "source": "ivr",
                "greeting": "来电 {ani} 拨打 {dnis}",
                "score": 3,
                "vip_checked": True,
            },
            "exits": {"next": "route"},
        },
        {
            "id": "route",
            "type": "branch",
            "rules": [
                {"when": [{"subject": "ani", "op": "missing"}], "goto": "withheld"},
                {"when": [{"subject": "tier", "op": "in", "value": ["vip", "gold"]}], "goto": "vip"},
                {"when": [{"subject": "region", "op": "eq", "value": "上海"}], "goto": "shanghai"},
                {"when": [{"subject": "ani", "op": "prefix", "value": "010"}], "goto": "beijing"},
            ],
            "exits": {"otherwise": "other"},
        },
        *[
            {"id": name, "type": "hangup", "cause": name}
            for name in ("withheld", "vip", "shanghai", "beijing", "other")
        ],
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ani": None}, "withheld"),
        ({"data": {"customer": {"tier": "vip"}}}, "vip"),
        ({"region": "上海"}, "shanghai"),
        ({"region": None, "ani": "01088886666"}, "beijing"),
        ({"region": "广东"}, "other"),
    ]
    for kwargs, cause in cases:
        call = ScriptedCall(**kwargs)
        await run(flow, call)
        assert call.hangup_causes == [cause], kwargs
    call = ScriptedCall(region="广东")
    await run(flow, call)
    assert call.data["greeting"] == "来电 13812345678 拨打 4008001234"
    assert call.data["score"] == 3 and call.data["vip_checked"] is True


@pytest.mark.parametrize(
    ("now", "cause"),
    [
        (TUESDAY_10, "open"),
        (datetime(2024, 9, 24, 20, 30, tzinfo=SHANGHAI), "evening"),  # closed, evening range
        (datetime(2024, 9, 24, 2, 0, tzinfo=SHANGHAI), "night"),  # wraps midnight
        (SATURDAY_10, "weekend"),
        (NATIONAL_DAY, "holiday"),
    ],
)
async def test_branch_on_calendar_time_and_weekday(now: datetime, cause: str) -> None:
    flow = make_flow(
        {
            "id": "when",
            "type": "branch",
            "rules": [
                {"when": [{"subject": "calendar", "calendar": "office", "state": "open"}], "goto": "open"},
                {"when": [{"subject": "weekday", "days": [6, 7]}], "goto": "weekend"},
                {"when": [{"subject": "time", "start": "18:00", "end": "22:00"}], "goto": "evening"},
                {"when": [{"subject": "time", "start": "22:00", "end": "08:00"}], "goto": "night"},
                {
                    "when": [{"subject": "calendar", "calendar": "office", "state": "closed"}],
                    "goto": "holiday",
                },
            ],
        },
        *[
            {"id": n, "type": "hangup", "cause": n}
            for n in ("open", "weekend", "evening", "night", "holiday")
        ],
    )
    call = ScriptedCall()
    await run(flow, call, now=now)
    assert call.hangup_causes == [cause]


async def test_flow_reads_agent_data_and_returns_results_to_the_agent() -> None:
    """FM-12 / IVR-07: an agent sends the caller into a verification flow and gets the result back."""
    flow = make_flow(
        {
            "id": "check",
            "type": "branch",
            "rules": [
                {
                    "when": [{"subject": "data", "key": "verify.kind", "op": "eq", "value": "pin"}],
                    "goto": "pin",
                }
            ],
        },
        {
            "id": "pin",
            "type": "collect",
            "prompts": [tts("{data.verify.name}，请输入密码")],
            "store_as": "verify.pin",
            "min_digits": 4,
            "max_digits": 4,
            "sensitive": True,
            "exits": {"next": "done"},
        },
        {
            "id": "done",
            "type": "set",
            "assignments": {"verify.result": "entered"},
            "exits": {"next": "@return"},
        },
    )
    agent_data = {"verify": {"kind": "pin", "name": "王芳"}, "ivr": {"inputs": {"main": "2"}}}
    call = ScriptedCall(["2468"], data=agent_data)
    result = await run(flow, call, hang_up_at_end=False)
    assert result.outcome == "returned" and call.hangup_causes == []
    assert call.spoken() == ["王芳，请输入密码"]
    assert call.data["verify"] == {"kind": "pin", "name": "王芳", "pin": "2468", "result": "entered"}
    assert call.data["ivr"]["inputs"] == {"main": "2", "pin": "****"}  # the first flow's inputs kept


# --- queue, transfer, voicemail, callback, sub-flow, language, hangup --------------------------------


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (QueueOutcome("timeout"), ("hung_up", "after timeout")),
        (QueueOutcome("overflow", overflow_target="q2"), ("hung_up", "after overflow")),
        (QueueOutcome("unavailable"), ("hung_up", "after unavailable")),
        (QueueOutcome("abandoned"), ("caller_hung_up", None)),
        (QueueOutcome("answered", agent="a7"), ("handed_off", None)),
    ],
)
async def test_queue_outcomes(outcome: QueueOutcome, expected: tuple[str, str | None]) -> None:
    flow = make_flow(
        {
            "id": "q",
            "type": "queue",
            "queue": "billing",
            "priority": 50,
            "max_wait": 30,
            "music": "moh-classic",
            "exits": {"timeout": "t", "overflow": "o", "unavailable": "u"},
        },
        {"id": "t", "type": "hangup", "cause": "after timeout"},
        {"id": "o", "type": "hangup", "cause": "after overflow"},
        {"id": "u", "type": "hangup", "cause": "after unavailable"},
    )
    call = ScriptedCall(queue_outcomes=[outcome])
    result = await run(flow, call)
    assert (result.outcome, call.hangup_causes[0] if call.hangup_causes else None) == expected
    assert call.queued[0].music == "moh-classic" and call.queued[0].max_wait_seconds == 30
    assert call.data["ivr"]["results"]["q"]["result"] == outcome.result


async def test_transfer_address_from_call_data_and_failure_exit() -> None:
    flow = make_flow(
        {
            "id": "x",
            "type": "transfer",
            "target": {"kind": "agent", "address": "{data.customer.agent}"},
            "exits": {"failed": "sorry"},
        },
        {"id": "sorry", "type": "hangup", "prompts": [tts("转接失败")], "cause": "transfer failed"},
    )
    call = ScriptedCall(data={"customer": {"agent": "agent-42"}}, transfer_results=[False])
    result = await run(flow, call)
    assert call.transfers == [TransferTarget("agent", "agent-42")]
    assert result.outcome == "hung_up" and call.hangup_causes == ["transfer failed"]
    # Without an address there is nothing to try.
    call = ScriptedCall()
    await run(flow, call)
    assert call.transfers == [] and exits(call)[0] == ("x", "no address")


async def test_out_of_hours_forward_does_not_answer() -> None:
    """TEL-14: out of hours, forward to a mobile without answering (no charge to the caller)."""
    flow = make_flow(
        {
            "id": "hours",
            "type": "branch",
            "rules": [
                {"when": [{"subject": "calendar", "calendar": "office", "state": "closed"}], "goto": "fwd"}
            ],
            "exits": {"otherwise": "@hangup"},
        },
        {"id": "fwd", "type": "transfer", "target": {"kind": "external", "address": "13900001111"}},
    )
    call = ScriptedCall()
    result = await run(flow, call, now=SATURDAY_10)
    assert result.outcome == "handed_off" and call.answered == 0
    assert call.transfers == [TransferTarget("external", "13900001111")]


async def test_voicemail_without_a_message_and_for_a_queue_mailbox() -> None:
    flow = make_flow(
        {
            "id": "vm",
            "type": "voicemail",
            "prompts": [{"kind": "file", "file": {"zh": "vm-greeting-zh", "en": "vm-greeting-en"}}],
            "mailbox": {"kind": "queue", "id": "support"},
            "max_seconds": 60,
            "exits": {"next": "@hangup", "no_message": "again"},
        },
        {"id": "again", "type": "hangup", "cause": "no message"},
    )
    call = ScriptedCall(recordings=[None], ani=None)
    await run(flow, call)
    assert call.hangup_causes == ["no message"] and "voicemail" not in call.data
    assert call.played[0] == AudioFile("vm-greeting-zh", "zh")
    call = ScriptedCall(recordings=[RecordingRef("rec-9", 30.0)], ani=None)
    await run(flow, call)
    message = call.data["voicemail"]
    assert message["mailbox"] == {"kind": "queue", "id": "support"}
    assert message["caller"] is None and message["caller_withheld"] is True  # TEL-04: flagged, not blank


def callback_flow() -> Flow:
    return make_flow(
        {
            "id": "offer",
            "type": "callback",
            "prompts": [tts("所有座席忙，需要回电请按1")],
            "number_prompts": [tts("请输入您的电话号码，以井号结束")],
            "confirm_prompts": [tts("我们会尽快回电")],
            "queue": "support",
            "exits": {"accepted": "bye", "declined": "@return"},
        },
        {"id": "bye", "type": "hangup", "cause": "callback booked"},
    )


async def test_callback_accepted_with_ani() -> None:
    call = ScriptedCall(["1"])
    await run(callback_flow(), call)
    assert call.hangup_causes == ["callback booked"]
    request = call.data["callback"]
    assert request["number"] == "13812345678" and request["queue"] == "support"
    assert call.events_of("ivr.callback_requested")[0]["number"] == "13812345678"
    assert "我们会尽快回电" in call.spoken()


async def test_callback_with_withheld_number_asks_for_one() -> None:
    call = ScriptedCall(["1", "02161234567#"], ani=None)
    await run(callback_flow(), call)
    assert call.data["callback"]["number"] == "02161234567"
    assert call.data["callback"]["caller_withheld"] is True


async def test_callback_declined() -> None:
    call = ScriptedCall(["2"])
    result = await run(callback_flow(), call, hang_up_at_end=False)
    assert result.outcome == "returned" and "callback" not in call.data


async def test_subflow_runs_and_returns() -> None:
    verify = make_flow(
        {
            "id": "ask",
            "type": "collect",
            "prompts": [tts("请输入会员号")],
            "store_as": "member",
            "min_digits": 3,
            "max_digits": 3,
            "exits": {"next": "@return", "no_input": "@hangup"},
        },
        flow_id="verify",
    )
    main = make_flow(
        {"id": "sub", "type": "subflow", "flow": "verify", "exits": {"next": "after"}},
        {
            "id": "after",
            "type": "play",
            "prompts": [tts("会员{data.member}，您好")],
            "exits": {"next": "@return"},
        },
        flow_id="main",
    )
    call = ScriptedCall(["777"])
    result = await run(main, call, flows={"verify": verify}, hang_up_at_end=False)
    assert result.outcome == "returned"
    assert call.data["ivr"]["path"] == ["sub", "verify/ask", "after"]
    assert call.spoken()[-1] == "会员777，您好"
    entered = call.events_of("ivr.node_entered")
    assert [(e["flow_id"], e["node_id"]) for e in entered] == [
        ("main", "sub"),
        ("verify", "ask"),
        ("main", "after"),
    ]
    # A hang-up inside the sub-flow ends the whole call.
    call = ScriptedCall([SILENT, SILENT, SILENT])
    result = await run(main, call, flows={"verify": verify})
    assert result.outcome == "hung_up" and result.last_node == "verify/ask"


async def test_unknown_and_runaway_subflows_take_the_default_exit() -> None:
    ping = make_flow({"id": "go", "type": "subflow", "flow": "pong"}, flow_id="ping")
    pong = make_flow({"id": "go", "type": "subflow", "flow": "ping"}, flow_id="pong")
    call = ScriptedCall()
    result = await run(
        ping,
        call,
        flows=lambda flow_id: {"ping": ping, "pong": pong}.get(flow_id),
        limits=WatchdogLimits(max_subflow_depth=4),
    )
    assert result.outcome == "hung_up" and call.hangup_causes == ["ivr default exit"]
    assert ("go", "sub-flow too deep") in exits(call)
    assert len(call.data["ivr"]["path"]) == 5
    call = ScriptedCall()
    await run(make_flow({"id": "go", "type": "subflow", "flow": "gone"}), call)
    assert exits(call) == [("go", "unknown flow")]


async def test_language_choice_and_kept_language() -> None:
    flow = make_flow(
        {
            "id": "lang",
            "type": "language",
            "prompts": [tts("中文请按1", "English press 2")],
            "retries": 1,
            "exits": {"next": "hi"},
        },
        {"id": "hi", "type": "play", "prompts": [tts("您好", "Hello")], "exits": {"next": "@return"}},
    )
    call = ScriptedCall(["2"])
    await run(flow, call, hang_up_at_end=False)
    assert call.language == "en" and call.spoken()[-1] == "Hello" and call.played[-1] == Speech("Hello", "en")
    call = ScriptedCall(["5", SILENT], language="zh")
    await run(flow, call, hang_up_at_end=False)
    assert call.language == "zh" and call.spoken()[-1] == "您好"
    assert exits(call)[0] == ("lang", "no_input")


async def test_hangup_node_plays_goodbye_and_tones() -> None:
    flow = make_flow(
        {
            "id": "bye",
            "type": "hangup",
            "prompts": [
                tts("再见"),
                {"kind": "tone", "frequencies": [425], "duration_ms": 200},
                {"kind": "silence", "duration_ms": 300},
            ],
            "cause": "done",
        }
    )
    call = ScriptedCall()
    result = await run(flow, call)
    assert result.outcome == "hung_up" and call.hangup_causes == ["done"]
    assert call.played[1] == Tone((425.0,), 200)


async def test_default_exit_hangup_is_named_in_the_cause() -> None:
    flow = make_flow(
        {"id": "m", "type": "menu", "prompts": [tts("菜单")], "options": {"1": "@return"}, "retries": 0}
    )
    call = ScriptedCall([SILENT])
    await run(flow, call)
    assert call.hangup_causes == ["ivr default exit"]


# --- bounds: node timeouts, the watchdog, hang-ups, crashes ------------------------------------------


async def test_node_timeout_takes_the_default_exit() -> None:
    flow = make_flow(
        {
            "id": "slow",
            "type": "play",
            "prompts": [tts("很长的公告")],
            "timeout": 0.1,
            "exits": {"next": "@return", "default": "late"},
        },
        {"id": "late", "type": "hangup", "cause": "announcement timed out"},
    )
    call = ScriptedCall([Stall(5)])
    started = asyncio.get_running_loop().time()
    await run(flow, call)
    assert asyncio.get_running_loop().time() - started < 1
    assert call.hangup_causes == ["announcement timed out"]
    assert exits(call)[0] == ("slow", "timeout")


def endless_flow() -> Flow:
    """Valid (there is a way out), but a silent caller goes round forever."""
    return make_flow(
        {
            "id": "menu",
            "type": "menu",
            "prompts": [tts("请选择")],
            "options": {"1": "@hangup"},
            "retries": 0,
            "exits": {"no_input": "again"},
        },
        {"id": "again", "type": "play", "prompts": [tts("再来一次")], "exits": {"next": "menu"}},
    )


async def test_watchdog_caps_node_visits() -> None:
    call = ScriptedCall()
    result = await run(endless_flow(), call, limits=WatchdogLimits(max_node_visits=25))
    assert result.outcome == "watchdog" and result.visits == 26
    assert call.hangup_causes == ["ivr watchdog"]
    (event,) = call.events_of("ivr.watchdog")
    assert event["reason"] == "max_node_visits"
    assert len(call.events_of("ivr.node_entered")) == 25


async def test_watchdog_caps_total_time() -> None:
    call = ScriptedCall(play_seconds=0.02)
    started = asyncio.get_running_loop().time()
    result = await run(
        endless_flow(), call, limits=WatchdogLimits(max_flow_seconds=0.3, max_node_visits=10_000)
    )
    elapsed = asyncio.get_running_loop().time() - started
    assert result.outcome == "watchdog" and 0.3 <= elapsed < 2
    assert call.events_of("ivr.watchdog")[0]["reason"] == "max_flow_seconds"
    assert call.events_of("ivr.node_exited")[-1]["exit_reason"] == "watchdog: max_flow_seconds"


async def test_caller_hang_up_mid_menu_ends_the_run() -> None:
    call = ScriptedCall(["1", HANG_UP])
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "caller_hung_up" and result.last_node == "main"
    assert call.hangup_causes == [] and call.queued == []
    assert exits(call)[-1] == ("main", "caller_hung_up")
    assert call.data["ivr"]["outcome"] == "caller_hung_up"


async def test_caller_hang_up_while_queued_ends_the_run_at_once() -> None:
    call = ScriptedCall(["1", "1"], queue_outcomes=[BLOCK])
    task = asyncio.create_task(interpreter().run(call, load_flow(demo_flow())))
    while not call.queued:
        await asyncio.sleep(0.01)
    call.caller_hangs_up()
    result = await asyncio.wait_for(task, timeout=1)
    assert result.outcome == "caller_hung_up" and result.last_node == "sales"


async def test_a_crash_ends_only_that_call() -> None:
    flow = load_flow(demo_flow())
    shared = interpreter()
    calls = [ScriptedCall(["1", "1"], call_id=f"c{i}") for i in range(5)]
    calls[2].fail_on = "queue"
    results = await asyncio.wait_for(asyncio.gather(*(shared.run(c, flow) for c in calls)), timeout=10)
    assert [r.outcome for r in results] == ["handed_off", "handed_off", "error", "handed_off", "handed_off"]
    assert calls[2].hangup_causes == ["ivr error"]
    (error,) = calls[2].events_of("ivr.error")
    assert error["error"] == "RuntimeError" and error["node"] == "sales"
    assert all(not c.events_of("ivr.error") for i, c in enumerate(calls) if i != 2)


async def test_event_log_failure_does_not_drop_the_call() -> None:
    call = ScriptedCall(["1", "1"], fail_on="event")
    result = await run(load_flow(demo_flow()), call)
    assert result.outcome == "handed_off"


async def test_run_can_be_cancelled_cleanly() -> None:
    call = ScriptedCall(["1", "1"], queue_outcomes=[BLOCK])
    task = asyncio.create_task(interpreter().run(call, load_flow(demo_flow())))
    while not call.queued:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pending = [t for t in asyncio.all_tasks() if t.get_name().startswith("ivr-")]
    assert pending == []
