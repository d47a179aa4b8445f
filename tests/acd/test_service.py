"""The ACD service against a fake switch: offers, answers, ring-no-answer, wrap-up, abandon, timeouts,
overflow, priorities, agent and supervisor operations, events and the wallboard (#5)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hotline.acd.agents import AcdError
from hotline.events.models import (
    AgentStateChanged,
    AgentWrapupEnded,
    CallAnswered,
    CallDequeued,
    CallOffered,
    CallOfferFailed,
    CallQueued,
)
from tests.acd.fakes import TENANT, Env, agents, document


async def _answered(env: Env, agent_id: str) -> None:
    env.dialer.answer(agent_id)
    await env.settle()


async def test_a_call_reaches_the_longest_idle_agent_with_its_screen_pop(env: Env) -> None:
    await env.ready("a1", "a2")  # a1 has been ready a second longer
    call, task = env.call(data={"ivr": {"digits": "1"}, "customer": {"name": "张三"}})
    await env.settle()
    assert env.dialer.ringing("a1") and not env.dialer.ringing("a2")
    assert env.state("a1") == "ringing"
    assert call.moh == 1  # music on hold while waiting

    leg = env.dialer.answer("a1")
    outcome = await task
    assert outcome.result == "answered" and outcome.agent == "a1"
    assert call.bridged is leg
    assert env.state("a1") == "on_call"

    offered = [e for e in await env.logged("call.offered") if isinstance(e, CallOffered)]
    assert len(offered) == 1
    pop = offered[0]
    assert (pop.agent_id, pop.queue_id, pop.ani, pop.dnis, pop.region) == (
        "a1",
        "sales",
        "13812345678",
        "4001",
        "上海",
    )
    assert pop.data["customer"] == {"name": "张三"}
    answered = [e for e in await env.logged("call.answered") if isinstance(e, CallAnswered)]
    assert [(e.by, e.agent_id, e.queue_id, e.leg_id) for e in answered] == [("agent", "a1", "sales", leg.id)]
    dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
    assert [(e.queue_id, e.outcome, e.agent_id) for e in dequeued] == [("sales", "answered", "a1")]
    states = [
        (e.from_state, e.to_state)
        for e in await env.logged("agent.state_changed")
        if isinstance(e, AgentStateChanged) and e.agent_id == "a1"
    ]
    assert states == [
        ("logged_out", "not_ready"),
        ("not_ready", "ready"),
        ("ready", "ringing"),
        ("ringing", "talking"),
    ]


async def test_ring_no_answer_makes_the_agent_not_ready_and_the_call_goes_on(env: Env) -> None:
    await env.ready("a1", "a2")
    _call, task = env.call()
    await env.settle()
    env.dialer.no_answer("a1")
    await env.settle()
    assert env.acd.agent_state(TENANT, "a1")["state"] == "not_ready"
    assert env.acd.agent_state(TENANT, "a1")["reason"] == "no_answer"  # ACD-09
    assert env.dialer.ringing("a2")  # FM-06: straight back to the head and on to the next agent
    await _answered(env, "a2")
    assert (await task).agent == "a2"
    failed = [e for e in await env.logged("call.offer_failed") if isinstance(e, CallOfferFailed)]
    assert [(e.agent_id, e.reason) for e in failed] == [("a1", "ring_no_answer")]
    # the not-ready agent gets nothing more until they are ready again
    _, second = env.call()
    await env.settle()
    assert not env.dialer.ringing("a1") and not second.done()
    await env.acd.ready(TENANT, "a1")
    await env.settle()
    assert env.dialer.ringing("a1")


async def test_wrap_up_holds_the_agent_five_seconds_then_ready(env: Env) -> None:
    await env.ready("a1")
    call, task = env.call()
    await env.settle()
    await _answered(env, "a1")
    await task
    await env.advance(30)
    call.caller_hangs_up()
    await env.settle()
    assert env.state("a1") == "wrap_up"
    _, waiting = env.call()  # ACD-08: no new offer during wrap-up
    await env.advance(4.9)
    assert env.state("a1") == "wrap_up" and not env.dialer.ringing("a1")
    await env.advance(0.1)
    assert env.dialer.ringing("a1")  # ready at 5 s, and the waiting call is offered at once
    ended = [e for e in await env.logged("agent.wrapup_ended") if isinstance(e, AgentWrapupEnded)]
    assert [(e.agent_id, e.call_id, e.ended_by) for e in ended] == [("a1", call.call_id, "timer")]
    figures = env.acd.agent_state(TENANT, "a1")["figures"]
    assert figures["calls_handled"] == 1 and figures["talk_seconds"] == pytest.approx(30, abs=0.01)
    assert figures["wrap_up_seconds"] == pytest.approx(5, abs=0.01)
    waiting.cancel()


async def test_agent_ends_wrap_up_early_with_a_disposition(tmp_path: Any) -> None:
    doc = document(
        queues=[{"name": "sales", "acw_mode": "mandatory", "disposition_required": True}],
        reason_codes=[{"code": "sold", "name": "成交", "kind": "disposition"}],
    )
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("a1")
        call, _task = env.call()
        await env.settle()
        await _answered(env, "a1")
        call.caller_hangs_up()
        await env.advance(600)
        assert env.state("a1") == "wrap_up"  # mandatory: no timer ends it (ACD-10)
        with pytest.raises(AcdError) as missing:
            await env.acd.end_wrapup(TENANT, "a1")
        assert missing.value.code == "disposition_required"
        with pytest.raises(AcdError) as unknown:
            await env.acd.end_wrapup(TENANT, "a1", "maybe")
        assert unknown.value.code == "unknown_disposition"
        view = await env.acd.end_wrapup(TENANT, "a1", "sold", notes="wants the blue one")
        assert view["state"] == "ready"
        ended = [e for e in await env.logged("agent.wrapup_ended") if isinstance(e, AgentWrapupEnded)]
        assert [(e.disposition, e.fields, e.ended_by) for e in ended] == [
            ("sold", {"notes": "wants the blue one"}, "agent")
        ]
    finally:
        await env.close()


async def test_not_ready_or_logout_during_a_call_apply_after_it(env: Env) -> None:
    await env.ready("a1", "a2")
    call1, _t1 = env.call()
    await env.settle()
    await _answered(env, "a1")
    call2, _t2 = env.call()
    await env.settle()
    await _answered(env, "a2")
    await env.acd.not_ready(TENANT, "a1", "lunch")
    view = await env.acd.logout(TENANT, "a2")
    assert view["state"] == "on_call" and view["pending"] == "logged_out"
    assert env.state("a1") == "on_call"
    call1.caller_hangs_up()
    call2.caller_hangs_up()
    await env.advance(5)
    assert env.acd.agent_state(TENANT, "a1")["state"] == "not_ready"
    assert env.acd.agent_state(TENANT, "a1")["reason"] == "lunch"
    assert env.state("a2") == "logged_out"


async def test_caller_who_hangs_up_leaves_the_queue_once(env: Env) -> None:
    call, task = env.call()
    await env.advance(3)
    call.caller_hangs_up()
    outcome = await task
    assert outcome.result == "abandoned" and outcome.waited_seconds == pytest.approx(3)
    dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
    assert [(e.call_id, e.outcome) for e in dequeued] == [(call.call_id, "abandoned")]
    queue = env.acd.snapshot(TENANT)["queues"][0]
    assert (queue["offered_today"], queue["abandoned_today"], queue["short_abandoned_today"]) == (1, 1, 1)
    assert queue["waiting"] == 0


async def test_caller_who_hangs_up_while_ringing_frees_the_agent(env: Env) -> None:
    await env.ready("a1")
    call, task = env.call()
    await env.settle()
    assert env.dialer.ringing("a1")
    await env.advance(10)
    call.caller_hangs_up()
    assert (await task).result == "abandoned"
    await env.settle()
    assert env.state("a1") == "ready"  # not the agent's fault
    assert not await env.logged("call.offer_failed")
    queue = env.acd.snapshot(TENANT)["queues"][0]
    assert (queue["abandoned_today"], queue["short_abandoned_today"]) == (1, 0)  # waited 10 s > S


async def test_maximum_wait_times_out_to_the_queue_destination(tmp_path: Any) -> None:
    env = await Env(tmp_path).open(
        document(queues=[{"name": "sales", "max_wait": 60, "on_max_wait": "voicemail"}])
    )
    try:
        _, task = env.call(max_wait_seconds=120)
        await env.advance(59)
        assert not task.done()
        await env.advance(1)
        outcome = await task
        assert (outcome.result, outcome.overflow_target) == ("timeout", "voicemail")
        dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
        assert [(e.outcome, e.target) for e in dequeued] == [("timeout", "voicemail")]
    finally:
        await env.close()


async def test_full_queue_and_empty_queue_rules(tmp_path: Any) -> None:
    doc = document(
        queues=[
            {"name": "sales", "max_length": 1, "on_full": "queue:support"},
            {"name": "support", "join_when_no_agents": False},
        ],
        agent_list=agents("a1", queues=["sales", "support"]),
    )
    env = await Env(tmp_path).open(doc)
    try:
        first_call, first = env.call()
        await env.settle()
        # sales is full; its destination support refuses calls while nobody is logged in
        _, second = env.call()
        assert (await second).result == "unavailable"
        await env.acd.login(TENANT, "a1", "sip:a1@127.0.0.1:5070")
        _, third = env.call()
        await env.settle()
        assert env.acd.queue_counts(TENANT) == {"sales": 1, "support": 1}
        await env.acd.ready(TENANT, "a1")
        await env.settle()
        assert env.dialer.history[0] == ("a1", first_call.call_id)  # the oldest call first
        first.cancel()
        third.cancel()
    finally:
        await env.close()


async def test_overflow_queues_the_call_in_both_and_it_keeps_its_place(tmp_path: Any) -> None:
    doc = document(
        queues=[
            {"name": "sales", "overflow": [{"after_seconds": 30, "queues": ["support"]}]},
            {"name": "support"},
        ],
        agent_list=agents("s1", queues=["support"]),
    )
    env = await Env(tmp_path).open(doc)
    try:
        await env.acd.login(TENANT, "s1", "sip:s1@127.0.0.1:5070")
        early, early_task = env.call("sales")
        await env.advance(20)
        late, late_task = env.call("support")
        await env.advance(10)  # the early call overflows into support, ahead of the later one
        await env.acd.ready(TENANT, "s1")
        await env.settle()
        assert env.dialer.history == [("s1", early.call_id)]
        await _answered(env, "s1")
        assert (await early_task).agent == "s1"
        queued = [e for e in await env.logged("call.queued") if isinstance(e, CallQueued)]
        assert [(e.call_id, e.queue_id, e.overflow) for e in queued] == [
            (early.call_id, "sales", False),
            (late.call_id, "support", False),
            (early.call_id, "support", True),
        ]
        dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
        assert {(e.queue_id, e.outcome) for e in dequeued if e.call_id == early.call_id} == {
            ("sales", "overflowed"),
            ("support", "answered"),
        }
        late_task.cancel()
    finally:
        await env.close()


async def test_priority_vip_and_fifo_then_ageing(env: Env) -> None:
    await env.acd.login(TENANT, "a1", "sip:a1@127.0.0.1:5070")
    plain1, _ = env.call(priority=10)
    await env.advance(1)
    plain2, _ = env.call(priority=10)
    await env.advance(1)
    vip, _ = env.call(priority=10, data={"vip_level": 5})  # +50 (ACD-03, tier priority)
    await env.advance(1)
    order = []
    for _ in range(3):
        await env.acd.ready(TENANT, "a1")
        await env.settle()
        order.append(env.dialer.rings["a1"].call.call_id)
        env.dialer.no_answer("a1")
        await env.settle()
        order_call = env.dialer.history[-1][1]
        # take the offered call away so the next one comes up
        env.acd._tenants[TENANT].live[order_call].call.caller_hangs_up()
        await env.settle()
    assert order == [vip.call_id, plain1.call_id, plain2.call_id]


async def test_a_long_wait_beats_a_higher_priority(env: Env) -> None:
    await env.acd.login(TENANT, "a1", "sip:a1@127.0.0.1:5070")
    old, _ = env.call(priority=0)
    await env.advance(250)  # 41.7 points of ageing
    _new, _ = env.call(priority=41)
    await env.acd.ready(TENANT, "a1")
    await env.settle()
    assert env.dialer.rings["a1"].call is old


async def test_skills_and_requirements(tmp_path: Any) -> None:
    doc = document(
        agent_list=[
            {"id": "en1", "queues": ["sales"], "skills": {"en": 3}},
            {"id": "en9", "queues": ["sales"], "skills": {"en": 9, "billing": 2}},
            {"id": "zh5", "queues": ["sales"], "skills": {"zh": 5}},
        ],
        queues=[{"name": "sales", "strategy": "best_skill"}],
    )
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("en1", "en9", "zh5")
        english, task = env.call(skills={"skill": "en", "min_level": 2})
        await env.settle()
        assert env.dialer.history == [("en9", english.call_id)]  # best skill match
        env.dialer.no_answer("en9")
        await env.settle()
        assert env.dialer.history[-1] == ("en1", english.call_id)
        await _answered(env, "en1")
        await task
        # NOT: anyone without billing; AND/OR with levels
        await env.acd.ready(TENANT, "en9")
        no_billing, _ = env.call(skills={"not": {"skill": "billing"}})
        await env.settle()
        assert env.dialer.history[-1] == ("zh5", no_billing.call_id)
        either, _ = env.call(skills={"all": [{"any": [{"skill": "zh"}, {"skill": "en", "min_level": 9}]}]})
        await env.settle()
        assert env.dialer.history[-1] == ("en9", either.call_id)
    finally:
        await env.close()


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("linear", ["a1", "a1", "a1"]),
        ("round_robin", ["a1", "a2", "a3"]),
        ("longest_idle", ["a3", "a2", "a1"]),
    ],
)
async def test_strategies_pick_in_their_order(tmp_path: Any, strategy: str, expected: list[str]) -> None:
    """Each call is offered, not answered; the agent is made ready again before the next call."""
    doc = document(queues=[{"name": "sales", "strategy": strategy}], agent_list=agents("a1", "a2", "a3"))
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("a3", "a2", "a1")  # a3 idle longest
        picked = []
        for _ in range(3):
            call, _task = env.call()
            await env.settle()
            agent_id = env.dialer.history[-1][0]
            picked.append(agent_id)
            call.caller_hangs_up()
            await env.settle()
            if strategy == "longest_idle":
                # take the agent out for a while so the next longest idle is chosen
                await env.acd.not_ready(TENANT, agent_id)
        assert picked == expected
    finally:
        await env.close()


async def test_fewest_calls_and_least_talk(tmp_path: Any) -> None:
    for strategy in ("fewest_calls", "least_talk"):
        doc = document(
            queues=[{"name": "sales", "strategy": strategy, "acw_mode": "none"}],
            agent_list=agents("a1", "a2"),
        )
        env = await Env(tmp_path / strategy).open(doc)
        try:
            await env.ready("a1", "a2")
            call, _task = env.call()
            await env.settle()
            assert env.dialer.history[-1][0] == "a1"
            await _answered(env, "a1")
            await env.advance(60)
            call.caller_hangs_up()
            await env.settle()
            assert env.state("a1") == "ready"
            await env.acd.not_ready(TENANT, "a2")
            await env.acd.ready(TENANT, "a2")  # a2 is now the most recently idle, but has taken nothing
            nxt, _ = env.call()
            await env.settle()
            assert env.dialer.history[-1] == ("a2", nxt.call_id), strategy
            nxt.caller_hangs_up()
        finally:
            await env.close()


async def test_ring_all_first_answer_wins_and_the_others_stop_ringing(tmp_path: Any) -> None:
    doc = document(queues=[{"name": "sales", "strategy": "ring_all"}], agent_list=agents("a1", "a2", "a3"))
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("a1", "a2", "a3")
        _call, task = env.call()
        await env.settle()
        assert {agent for agent, _ in env.dialer.history} == {"a1", "a2", "a3"}
        await _answered(env, "a2")
        assert (await task).agent == "a2"
        assert sorted(agent for agent, _ in env.dialer.cancelled) == ["a1", "a3"]
        assert (env.state("a1"), env.state("a2"), env.state("a3")) == ("ready", "on_call", "ready")
    finally:
        await env.close()


async def test_sticky_agent_then_fallback_and_dedicated_agent(tmp_path: Any) -> None:
    doc = document(queues=[{"name": "sales", "sticky_seconds": 15}], agent_list=agents("a1", "a2"))
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("a1", "a2")
        first, task = env.call()
        await env.settle()
        await _answered(env, "a1")
        await task
        # the same caller again while a1 is still on the first call: waits for a1, though a2 is free
        again, again_task = env.call()
        await env.advance(14.9)
        assert not env.dialer.ringing("a2")
        await env.advance(0.2)
        assert env.dialer.history[-1] == ("a2", again.call_id)  # fallback after 15 s
        env.dialer.no_answer("a2")
        await env.settle()
        # a dedicated agent (a2, not ready now): a1 does not get the call, however free
        first.caller_hangs_up()
        await env.advance(5)
        assert env.dialer.history[-1] == ("a1", again.call_id)
        dedicated, dedicated_task = env.call(data={"dedicated_agent": "a2"}, ani=None)
        await env.advance(30)
        assert dedicated.call_id not in {call for _, call in env.dialer.history}
        await env.acd.logout(TENANT, "a2")  # the dedicated agent leaves: anyone may take it
        again.caller_hangs_up()
        await env.settle()
        assert env.dialer.history[-1] == ("a1", dedicated.call_id)
        dedicated_task.cancel()
        again_task.cancel()
    finally:
        await env.close()


async def test_supervisor_forces_states_and_is_named(env: Env) -> None:
    await env.ready("a1")
    await env.acd.force_state(TENANT, "a1", "not_ready", by="sup1")
    assert env.acd.agent_state(TENANT, "a1")["reason"] == "supervisor"
    await env.acd.force_state(TENANT, "a1", "ready", by="sup1")
    await env.acd.force_state(TENANT, "a1", "logged_out", by="sup2")
    changes = [e for e in await env.logged("agent.state_changed") if isinstance(e, AgentStateChanged)]
    assert [(e.to_state, e.changed_by) for e in changes[-3:]] == [
        ("not_ready", "sup1"),
        ("ready", "sup1"),
        ("logged_out", "sup2"),
    ]
    with pytest.raises(AcdError) as error:
        await env.acd.force_state(TENANT, "a1", "on_call", by="sup1")
    assert error.value.code == "bad_state"


async def test_agent_operations_refuse_clearly(env: Env) -> None:
    cases: list[tuple[Any, str]] = [
        (env.acd.login(TENANT, "nobody", "browser"), "unknown_agent"),
        (env.acd.login(TENANT, "a1", "pager:1"), "bad_device"),
        (env.acd.ready(TENANT, "a1"), "not_logged_in"),
        (env.acd.end_wrapup(TENANT, "a2"), "not_logged_in"),
        (env.acd.login("nosuch", "a1", "browser"), "unknown_tenant"),
    ]
    for coroutine, code in cases:
        with pytest.raises(AcdError) as error:
            await coroutine
        assert error.value.code == code, code
    env.dialer.unusable["browser"] = "browser phones are not available on this server"
    with pytest.raises(AcdError) as error:
        await env.acd.login(TENANT, "a1", "browser")
    assert error.value.code == "device_unavailable"
    await env.acd.login(TENANT, "a1", "extension:1001")
    with pytest.raises(AcdError) as error:
        await env.acd.login(TENANT, "a1", "extension:1001")
    assert error.value.code == "already_logged_in"
    with pytest.raises(AcdError) as error:
        await env.acd.hangup(TENANT, "a1", "nocall")
    assert error.value.code == "no_such_call"


async def test_hold_and_resume_and_agent_hangup(env: Env) -> None:
    await env.ready("a1")
    call, task = env.call()
    await env.settle()
    await _answered(env, "a1")
    await task
    assert (await env.acd.hold(TENANT, "a1", call.call_id))["state"] == "on_hold"
    await env.advance(10)
    assert (await env.acd.resume(TENANT, "a1", call.call_id))["state"] == "on_call"
    await env.advance(20)
    view = await env.acd.hangup(TENANT, "a1", call.call_id)
    assert view["state"] == "wrap_up" and call.hung_up
    assert env.acd.agent_state(TENANT, "a1")["figures"]["talk_seconds"] == pytest.approx(20, abs=0.01)
    assert [e.type for e in await env.logged() if e.type in ("call.held", "call.resumed")] == [
        "call.held",
        "call.resumed",
    ]


async def test_watchdog_releases_an_agent_whose_leg_vanished(env: Env) -> None:
    await env.ready("a1")
    call, task = env.call()
    await env.settle()
    leg = env.dialer.answer("a1")
    await task
    leg.ended = True  # the agent's device crashed; no BYE ever arrives
    await env.advance(29)
    assert env.state("a1") == "on_call"
    await env.advance(10)
    assert env.state("a1") in ("wrap_up", "ready")
    assert call.hung_up  # the caller is not left talking to nobody


async def test_wallboard_snapshot_and_agent_state_shapes(env: Env) -> None:
    await env.ready("a1", "a2")
    call, task = env.call()
    await env.settle()
    await _answered(env, "a1")
    await task
    _, waiting = env.call(ani="13987654321")
    await env.acd.not_ready(TENANT, "a2", "lunch")
    await env.advance(7)
    snapshot = env.acd.snapshot(TENANT)
    assert set(snapshot) == {"agents", "queues", "trunks"}
    by_id = {agent["agent_id"]: agent for agent in snapshot["agents"]}
    assert by_id["a1"]["state"] == "on_call" and by_id["a1"]["ani_masked"] == "138****5678"
    assert by_id["a1"]["queue"] == "sales" and by_id["a1"]["device"] == "sip:a1@127.0.0.1:5070"
    assert by_id["a2"]["reason"] == "lunch"
    queue = snapshot["queues"][0]
    assert queue["name"] == "销售" and queue["waiting"] == 1
    assert queue["longest_wait_seconds"] == pytest.approx(7, abs=0.1)
    assert (queue["agents_ready"], queue["agents_not_ready"], queue["agents_on_call"]) == (0, 1, 1)
    assert (queue["offered_today"], queue["answered_today"], queue["service_level_today"]) == (2, 1, 1.0)
    state = env.acd.agent_state(TENANT, "a1")
    assert {"agent_id", "state", "reason", "since", "call_id"} <= set(state)
    assert state["call_id"] == call.call_id
    assert env.acd.queue_counts(TENANT) == {"sales": 1}
    waiting.cancel()


async def test_configuration_changes_apply_at_run_time(env: Env) -> None:
    await env.ready("a1")
    _, task = env.call("support")
    await env.settle()
    assert (await task).result == "unavailable"  # no such queue yet
    doc = document(
        queues=[{"name": "sales"}, {"name": "support", "strategy": "linear"}],
        agent_list=agents("a1", queues=["sales", "support"]) + agents("a3", queues=["support"]),
    )
    await env.reconfigure(doc)  # ACD-18: no restart
    support, support_task = env.call("support")
    await env.settle()
    assert env.dialer.history[-1] == ("a1", support.call_id)  # a1 follows its configured queues
    await env.ready("a3")
    assert env.acd.agent_state(TENANT, "a3")["queues"] == ["support"]
    support_task.cancel()


async def test_agents_stay_logged_in_across_a_restart(env: Env) -> None:
    await env.ready("a1")
    await env.acd.login(TENANT, "a2", "extension:1002")
    await env.acd.not_ready(TENANT, "a2", "training")
    call, task = env.call()
    await env.settle()
    await _answered(env, "a1")
    await task
    call.caller_hangs_up()  # the call ends with the old process
    await env.settle()
    await env.acd.stop()
    await env.start()
    assert env.acd.agent_state(TENANT, "a1")["state"] == "ready"
    a2 = env.acd.agent_state(TENANT, "a2")
    assert (a2["state"], a2["reason"], a2["device"]) == ("not_ready", "training", "extension:1002")
    again, again_task = env.call()
    await env.settle()
    assert env.dialer.history[-1] == ("a1", again.call_id)
    again_task.cancel()


async def test_stop_sends_waiting_callers_back(env: Env) -> None:
    _, task = env.call()
    await env.settle()
    await env.acd.stop()
    assert (await task).result == "unavailable"
    await env.start()


async def test_an_ivr_watchdog_cancelling_the_queue_leaves_it(env: Env) -> None:
    await env.acd.login(TENANT, "a1", "sip:a1@127.0.0.1:5070")
    _call, task = env.call()
    await env.settle()
    task.cancel()
    await env.settle()
    assert env.acd.queue_counts(TENANT) == {"sales": 0}
    dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
    assert [e.outcome for e in dequeued] == ["abandoned"]
    await env.acd.ready(TENANT, "a1")
    await env.settle()
    assert not env.dialer.ringing("a1")


async def test_announcements_tell_position_and_expected_wait(tmp_path: Any) -> None:
    env = await Env(tmp_path).open(document(queues=[{"name": "sales", "announce_every_seconds": 30}]))
    try:
        await env.ready("a1")
        env.call()  # rings a1
        second, _ = env.call()
        await env.advance(31)
        assert second.played, "no announcement"
        text = second.played[0][0].text  # type: ignore[union-attr]
        assert "1位" in text and "分钟" in text  # one ahead; expected wait from AHT (MET-09)
        assert second.moh == 2  # music again afterwards
    finally:
        await env.close()


async def test_supervisor_reserves_a_waiting_call_and_changes_priorities(env: Env) -> None:
    await env.acd.login(TENANT, "a1", "sip:a1@127.0.0.1:5070")
    await env.acd.login(TENANT, "a2", "sip:a2@127.0.0.1:5070")
    first, _ = env.call()
    await env.advance(1)
    second, _ = env.call()
    await env.advance(1)
    blacklisted, _ = env.call(priority=80, data={"blacklisted": True})  # ACD-20: served last
    await env.settle()
    assert [c["call_id"] for c in env.acd.waiting_calls(TENANT)] == [
        first.call_id,
        second.call_id,
        blacklisted.call_id,
    ]
    view = await env.acd.reserve_call(TENANT, second.call_id, "a2", 20, by="sup")  # ACD-16
    assert view["reserved_for"] == "a2"
    await env.acd.set_priority(TENANT, first.call_id, 0, by="sup")
    await env.acd.set_priority(TENANT, blacklisted.call_id, 60, by="sup")
    await env.acd.ready(TENANT, "a1")
    await env.settle()
    assert env.dialer.history[-1] == ("a1", blacklisted.call_id)  # raised above the first call
    await env.acd.ready(TENANT, "a2")
    await env.settle()
    assert env.dialer.history[-1] == ("a2", second.call_id)  # kept for a2
    with pytest.raises(AcdError) as error:
        await env.acd.set_priority(TENANT, "nocall", 5, by="sup")
    assert error.value.code == "no_such_call"


async def test_conditional_overflow_on_live_figures(tmp_path: Any) -> None:
    """ACD-07: more than 1 waiting in sales and at least 1 idle in support -> also queue in support."""
    rule = {"after_seconds": 0, "queues": ["support"], "when_waiting_over": 1, "when_idle_at_least": 1}
    doc = document(
        queues=[{"name": "sales", "overflow": [rule]}, {"name": "support"}],
        agent_list=agents("s1", queues=["support"]),
    )
    env = await Env(tmp_path).open(doc)
    try:
        await env.ready("s1")
        first, first_task = env.call("sales")
        await env.advance(0.5)
        assert not env.dialer.history  # one waiting is not more than one
        second, second_task = env.call("sales")
        await env.advance(0.2)
        assert env.dialer.history == [("s1", second.call_id)]
        await env.advance(2)  # s1 is busy now: the first call's rule finds nobody idle in support
        assert first.call_id not in {call for _, call in env.dialer.history}
        queued = [e for e in await env.logged("call.queued") if isinstance(e, CallQueued)]
        assert [(e.call_id, e.queue_id, e.overflow) for e in queued][-1] == (second.call_id, "support", True)
        first_task.cancel()
        second_task.cancel()
    finally:
        await env.close()


async def test_a_call_that_leaves_while_being_bridged_keeps_one_outcome(env: Env) -> None:
    await env.ready("a1")
    env.dialer.connect_gate = asyncio.Event()
    call, task = env.call()
    await env.settle()
    env.dialer.answer("a1")
    await env.settle()  # the bridge is being made...
    task.cancel()  # ...when the IVR's watchdog gives up on the queue
    await env.settle()
    env.dialer.connect_gate.set()
    await env.settle()
    assert env.state("a1") == "on_call"  # the agent has the caller all the same
    dequeued = [e for e in await env.logged("call.dequeued") if isinstance(e, CallDequeued)]
    assert [e.outcome for e in dequeued] == ["abandoned"]  # one outcome, not two
    assert not [e for e in await env.logged("call.answered")]
    call.caller_hangs_up()
    await env.advance(5)
    assert env.state("a1") == "ready"
