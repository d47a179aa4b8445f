"""The routing core against a brute-force oracle: whatever the sequence of arrivals, readiness changes,
answers, failed offers and abandons, each decision is the one a full scan would make (ACD-02/03/04), no call
waits while an eligible agent is ready, and an agent is never reserved twice (ACD-11)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.acd.agents import AcdError, AgentStatus, Device, InvalidTransition, parse_device
from hotline.acd.config import Agent, Queue
from hotline.acd.queues import AGING_POINTS_PER_SECOND, WaitingCall
from hotline.acd.router import Offer, Router
from hotline.acd.strategies import matches, ready_key
from hotline.switch.control import AllSkills, AnySkill, NotSkill, SkillAtLeast, SkillExpression
from hotline.tenancy.masking import mask_number

WALL = datetime.now(UTC)
DEVICE = Device("sip", "sip:a@127.0.0.1:5070")
REQUIREMENTS: list[SkillExpression | None] = [
    None,
    SkillAtLeast(skill="en", min_level=5),
    AnySkill(any=[SkillAtLeast(skill="zh"), SkillAtLeast(skill="en", min_level=8)]),
    AllSkills(all=[SkillAtLeast(skill="en"), NotSkill.model_validate({"not": {"skill": "zh"}})]),
]
STRATEGIES = ["longest_idle", "round_robin", "linear", "fewest_calls", "least_talk", "best_skill"]

agent_specs = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["q1", "q2", "q3"]), min_size=1, max_size=3, unique=True),
        st.dictionaries(st.sampled_from(["en", "zh"]), st.integers(1, 9), max_size=2),
    ),
    min_size=1,
    max_size=6,
)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"), st.sampled_from(["q1", "q2", "q3"]), st.integers(0, 3), st.integers(0, 100)
        ),
        st.tuples(st.just("ready"), st.integers(0, 5)),
        st.tuples(st.just("not_ready"), st.integers(0, 5)),
        st.tuples(st.just("answer"), st.integers(0, 20)),
        st.tuples(st.just("fail"), st.integers(0, 20)),
        st.tuples(st.just("abandon"), st.integers(0, 20)),
        st.tuples(st.just("overflow"), st.integers(0, 20), st.sampled_from(["q1", "q2", "q3"])),
        st.tuples(st.just("wait"), st.floats(0.1, 400)),
    ),
    max_size=60,
)


class Oracle:
    """Brute force over everything the router knows."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def eligible(self, agent: AgentStatus, call: WaitingCall, queue: str) -> bool:
        return queue in agent.queues and matches(agent.skills, call.requirement)

    def best_agent(self, call: WaitingCall) -> tuple[str, AgentStatus] | None:
        for name in call.queues:
            runtime = self.router.queues[name]
            ready = [
                a for a in runtime.members.values() if a.state == "ready" and self.eligible(a, call, name)
            ]
            if ready:
                strategy = runtime.config.strategy
                rng = random.Random(0)
                return name, min(ready, key=lambda a: ready_key(strategy, a, name, call.requirement, rng))
        return None

    def best_call(self, agent: AgentStatus) -> WaitingCall | None:
        waiting = [
            call
            for call in self.router.calls.values()
            if call.status == "waiting"
            and call.target is None
            and any(self.eligible(agent, call, name) for name in call.queues)
        ]
        return min(waiting, key=lambda c: (c.rank, c.seq), default=None)


@settings(max_examples=150, deadline=None)
@given(
    strategies=st.lists(st.sampled_from(STRATEGIES), min_size=3, max_size=3),
    specs=agent_specs,
    ops=operations,
)
def test_router_decides_like_a_full_scan(strategies: list[str], specs: list[Any], ops: list[Any]) -> None:
    router = Router("t", rng=random.Random(1))
    queues = [Queue(name=f"q{n + 1}", strategy=strategy) for n, strategy in enumerate(strategies)]  # type: ignore[arg-type]
    agents = [Agent(id=f"a{n}", queues=qs, skills=skills) for n, (qs, skills) in enumerate(specs)]
    router.configure(queues, agents)
    oracle = Oracle(router)
    now = 1000.0
    offers: list[Offer] = []
    serial = 0
    for agent in router.agents.values():
        router.login(agent.agent_id, DEVICE, None, now, WALL)

    def check(new: list[Offer]) -> None:
        held: set[str] = set()
        for offer in offers + new:
            for agent in offer.agents:
                assert agent.agent_id not in held, "an agent holds two offers"
                held.add(agent.agent_id)
        # work conserving: no waiting call has an eligible ready agent
        for call in router.calls.values():
            if call.status == "waiting" and call.target is None:
                assert oracle.best_agent(call) is None, (call.call_id, oracle.best_agent(call))
        offers.extend(new)

    for op in ops:
        kind = op[0]
        if kind == "call":
            _, queue, requirement, priority = op
            serial += 1
            call = router.add_call(
                f"c{serial}",
                queue,
                priority=priority,
                requirement=REQUIREMENTS[requirement],
                now=now,
                deadline=now + 1e9,
            )
            expected = oracle.best_agent(call)
            new = router.dispatch(now, WALL)
            if expected is None:
                assert not new
            else:
                assert len(new) == 1 and new[0].call is call
                assert (new[0].queue, new[0].agents[0].agent_id) == (expected[0], expected[1].agent_id)
            check(new)
        elif kind in ("ready", "not_ready"):
            agents_list = list(router.agents.values())
            agent = agents_list[op[1] % len(agents_list)]
            if agent.state not in ("ready", "not_ready") or agent.state == kind:
                continue
            expected_call = oracle.best_call(agent) if kind == "ready" else None
            router.change(agent, kind, now, wall=WALL)
            new = router.dispatch(now, WALL)
            if expected_call is None:
                assert not new
            else:
                assert [o.call for o in new] == [expected_call] and new[0].agents == [agent]
            check(new)
        elif kind in ("answer", "fail") and offers:
            offer = offers.pop(op[1] % len(offers))
            agent = offer.agents[0]
            router.change(agent, "ringing", now, wall=WALL)
            if kind == "answer":
                router.change(agent, "on_call", now, wall=WALL)
                router.finish_call(offer.call, "answered")
                router.change(agent, "wrap_up", now, wall=WALL)
                agent.figures.calls_handled += 1
                new = []
            else:
                router.change(agent, "not_ready", now, reason="no_answer", wall=WALL)
                router.return_call(offer.call)
                new = router.dispatch(now, WALL)
            check(new)
        elif kind == "abandon":
            waiting = [c for c in router.calls.values() if c.status == "waiting"]
            if waiting:
                router.finish_call(waiting[op[1] % len(waiting)], "abandoned")
        elif kind == "overflow":
            waiting = [c for c in router.calls.values() if c.status == "waiting"]
            if waiting:
                router.add_queue(waiting[op[1] % len(waiting)], op[2], now)
                check(router.dispatch(now, WALL))
        elif kind == "wait":
            now += op[1]
            for agent in router.agents.values():
                if agent.state == "wrap_up":
                    router.change(agent, "ready", now, wall=WALL)
                    check(router.dispatch(now, WALL))


def test_priority_rises_with_the_wait() -> None:
    router = Router("t")
    router.configure([Queue(name="q")], [Agent(id="a", queues=["q"])])
    old = router.add_call("old", "q", priority=0, requirement=None, now=0.0, deadline=1e9)
    new = router.add_call(
        "new", "q", priority=90, requirement=None, now=100 / AGING_POINTS_PER_SECOND, deadline=1e9
    )
    assert (old.rank, old.seq) < (new.rank, new.seq)  # 100 points of ageing beat 90 points of priority
    assert old.effective_priority(100 / AGING_POINTS_PER_SECOND) == 100.0


def test_agent_state_machine_refuses_impossible_moves() -> None:
    agent = AgentStatus("a")
    with pytest.raises(InvalidTransition):
        agent.change("on_call", 1.0)
    agent.change("not_ready", 1.0)
    with pytest.raises(InvalidTransition) as refused:
        agent.change("reserved", 2.0)  # ACD-11: never offered while not ready
    assert refused.value.code == "invalid_state"
    agent.change("ready", 3.0)
    assert agent.idle_since == 3.0
    agent.change("reserved", 4.0, call_id="c1")
    agent.change("ready", 5.0)  # a withdrawn offer does not restart the idle time
    assert agent.idle_since == 3.0


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("browser", "browser"),
        ("extension:1001", "extension:1001"),
        ("sip:agent7@10.0.0.5:5070", "sip:agent7@10.0.0.5:5070"),
        ("external:13800000000", "external:13800000000"),
    ],
)
def test_devices_parse_and_print_back(text: str, shown: str) -> None:
    assert str(parse_device(text)) == shown


@pytest.mark.parametrize("text", ["", "phone", "extension:abc", "external:12", "sip:nohost", "http://x"])
def test_bad_devices_are_refused_with_a_sentence(text: str) -> None:
    with pytest.raises(AcdError) as refused:
        parse_device(text)
    assert refused.value.code == "bad_device" and "browser" in refused.value.message


def test_numbers_are_masked_for_the_wallboard() -> None:
    # the one rule of screens, lists and exports (TEN-06): extensions are not personal and stay whole
    assert mask_number("13812345678") == "138****5678"
    assert mask_number("02161234567") == "021****4567"
    assert mask_number("1002") == "1002"
    assert mask_number(None) is None
