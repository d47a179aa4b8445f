"""No stuck state (#5 item 7, FM-05/06/09, ACD-11): hypothesis interleaves calls, answers, ring-no-answer,
rejections, caller and agent hang-ups, lost BYEs (a leg vanishes), vanished calls, logins, logouts,
supervisor forcing, wrap-up and restarts of the ACD, against the fake switch, and checks after every step:

- no agent is ever rung for two calls at once, and no agent holds two offers;
- no agent is reserved, ringing or on a call without a live call for longer than the watchdog allows;
- no call waits while an agent of its queue is ready (a ready agent is offered at once);
- each agent's logged states chain (each change starts where the previous one ended);
- every queued call leaves its queue exactly once, with one outcome (MET-01), and all have left at the end.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hotline.acd.agents import BUSY_STATES
from hotline.acd.service import STUCK_SECONDS, WATCHDOG_INTERVAL
from hotline.events.models import AgentStateChanged, CallDequeued, CallQueued
from tests.acd.fakes import TENANT, Env, FakeCall, agents, document

AGENTS = ("a1", "a2", "a3")
QUEUES = ("sales", "support")
_template: list[Path] = []


def template() -> Path:
    """One tenant database, made once and copied for every example (setup stays cheap)."""
    if not _template:
        path = Path(tempfile.mkdtemp(prefix="acd-template-"))

        async def build() -> None:
            doc = document(
                queues=[
                    {"name": "sales", "ring_timeout": 5, "max_wait": 120, "announce_every_seconds": 0},
                    {
                        "name": "support",
                        "strategy": "ring_all",
                        "acw_mode": "none",
                        "announce_every_seconds": 0,
                    },
                ],
                agent_list=agents("a1", "a2", queues=["sales", "support"]) + agents("a3", queues=["support"]),
            )
            env = Env(path)
            await env.open(doc)
            await env.close()

        asyncio.run(build())
        _template.append(path)
    return _template[0]


class AcdMachine(RuleBasedStateMachine):
    @initialize(trouble=st.sampled_from([None, "agent_hangs_up", "lost_bye", "call_vanishes"]))
    def open(self, trouble: str | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="acd-sm-"))
        shutil.copytree(template(), self.dir, dirs_exist_ok=True)
        self.loop = asyncio.new_event_loop()
        self.env = Env(self.dir)
        self.run(self.env.open(None))
        self.calls: list[FakeCall] = []
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.suspect_since: dict[str, tuple[int, float]] = {}
        # mid-shift, so every rule has something to act on from the first step: three calls ringing
        # three agents, one of them answered
        self.run(self.env.ready(*AGENTS, gap=0.0))
        for queue in ("sales", "sales", "support"):
            self.new_call(queue, 0)
        leg = self.env.dialer.answer("a1")
        self.run(self.env.settle())
        if trouble is not None:
            self._trouble(leg, trouble)

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        if not hasattr(self, "env"):
            return
        try:
            self.run(self._drain())
        finally:
            self.run(self.env.close())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _drain(self) -> None:
        """Everyone hangs up; every queued call must then have left its queue exactly once."""
        env = self.env
        # first only time passes: whatever is stuck now must be released by the watchdog alone
        await self._pass(STUCK_SECONDS + 4 * WATCHDOG_INTERVAL)
        for call in self.calls:
            if not call.lost:  # a call the switch lost never says goodbye
                call.caller_hangs_up()
        for agent_id in list(env.dialer.rings):
            if not env.dialer.rings[agent_id].future.done():
                env.dialer.no_answer(agent_id)
        await env.advance(STUCK_SECONDS + 2 * WATCHDOG_INTERVAL)
        pending = [task for task in self.tasks.values() if not task.done()]
        if pending:  # the last events are being committed (real time, not the fake clock)
            await asyncio.wait(pending, timeout=10)
        for call_id, task in self.tasks.items():
            assert task.done(), f"call {call_id} never left its queue"
        queued = {e.call_id for e in await env.logged("call.queued") if isinstance(e, CallQueued)}
        first_queue: dict[str, str] = {}
        for event in await env.logged("call.queued"):
            assert isinstance(event, CallQueued)
            first_queue.setdefault(event.call_id, event.queue_id)
        outcomes: dict[str, list[str]] = {}
        for event in await env.logged("call.dequeued"):
            assert isinstance(event, CallDequeued)
            if event.queue_id == first_queue[event.call_id]:
                outcomes.setdefault(event.call_id, []).append(event.outcome)
        for call_id in queued:
            assert len(outcomes.get(call_id, [])) == 1, (call_id, outcomes.get(call_id))
        await self._check_state_chain()
        for agent_id in AGENTS:
            assert env.state(agent_id) not in BUSY_STATES, env.acd.agent_state(TENANT, agent_id)

    async def _check_state_chain(self) -> None:
        last: dict[str, str] = {}
        for event in await self.env.logged("agent.state_changed"):
            assert isinstance(event, AgentStateChanged)
            previous = last.get(event.agent_id, "logged_out")
            assert event.from_state == previous, (event.agent_id, previous, event.from_state, event.to_state)
            last[event.agent_id] = event.to_state

    # ----------------------------------------------------------------------------------- agents

    @rule(agent=st.sampled_from(AGENTS))
    def login(self, agent: str) -> None:
        if self.env.state(agent) == "logged_out":
            self.run(self.env.acd.login(TENANT, agent, f"sip:{agent}@127.0.0.1:5070"))

    @rule(agent=st.sampled_from(AGENTS))
    def ready(self, agent: str) -> None:
        if self.env.state(agent) != "logged_out":
            self.run(self._settled(self.env.acd.ready(TENANT, agent)))

    @rule(agent=st.sampled_from(AGENTS))
    def not_ready(self, agent: str) -> None:
        if self.env.state(agent) != "logged_out":
            self.run(self._settled(self.env.acd.not_ready(TENANT, agent, "break")))

    @rule(agent=st.sampled_from(AGENTS))
    def logout(self, agent: str) -> None:
        self.run(self._settled(self.env.acd.logout(TENANT, agent)))

    @rule(agent=st.sampled_from(AGENTS), state=st.sampled_from(["ready", "not_ready", "logged_out"]))
    def force(self, agent: str, state: str) -> None:
        if state == "logged_out" or self.env.state(agent) != "logged_out":
            self.run(self._settled(self.env.acd.force_state(TENANT, agent, state, by="sup")))

    @rule(agent=st.sampled_from(AGENTS))
    def end_wrapup(self, agent: str) -> None:
        if self.env.state(agent) == "wrap_up":
            self.run(self._settled(self.env.acd.end_wrapup(TENANT, agent, None)))

    # ----------------------------------------------------------------------------------- calls

    @rule(queue=st.sampled_from(QUEUES), priority=st.integers(0, 100))
    def new_call(self, queue: str, priority: int) -> None:
        async def arrive() -> tuple[FakeCall, asyncio.Task[Any]]:
            placed = self.env.call(queue, priority=priority)
            await self.env.settle()
            return placed

        call, task = self.run(arrive())
        self.calls.append(call)
        self.tasks[call.call_id] = task

    @precondition(lambda self: bool(self.env.dialer.rings))
    @rule(data=st.data(), how=st.sampled_from(["answer", "ring_no_answer", "rejected", "unreachable"]))
    def ring_ends(self, data: st.DataObject, how: str) -> None:
        dialer = self.env.dialer
        agent = data.draw(st.sampled_from(sorted(dialer.rings)))
        if dialer.rings[agent].future.done():
            return
        if how == "answer":
            dialer.answer(agent)
        else:
            dialer.no_answer(agent, how)
        self.run(self.env.settle())

    @precondition(lambda self: any(not call.hung_up for call in self.calls))
    @rule(data=st.data())
    def caller_hangs_up(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from([call for call in self.calls if not call.hung_up]))
        call.caller_hangs_up()
        self.run(self.env.settle())

    @precondition(
        lambda self: any(leg.call.bridged is leg and not leg.ended for _, leg in self.env.dialer.connected)
    )
    @rule(data=st.data(), how=st.sampled_from(["agent_hangs_up", "lost_bye", "call_vanishes"]))
    def connected_call_trouble(self, data: st.DataObject, how: str) -> None:
        legs = [leg for _, leg in self.env.dialer.connected if leg.call.bridged is leg and not leg.ended]
        self._trouble(data.draw(st.sampled_from(legs)), how)

    def _trouble(self, leg: Any, how: str) -> None:
        if how == "agent_hangs_up":
            leg.ended = True
            leg.call.caller_hangs_up()  # the switch releases a two-party call when the agent hangs up
        elif how == "lost_bye":
            leg.ended = True  # the agent's device is gone and nobody says so
        else:
            leg.call.lost = True  # the switch lost the call without an event
        self.run(self.env.settle())

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        self.run(self._pass(seconds))

    async def _pass(self, seconds: float) -> None:
        """Time goes by in steps of one watchdog interval at most, the stuck-agent check after each."""
        while seconds > 0:
            step = min(WATCHDOG_INTERVAL, seconds)
            await self.env.advance(step)
            seconds -= step
            self.nobody_busy_without_a_call_for_long()

    @rule()
    def restart(self) -> None:
        async def again() -> None:
            await self.env.acd.stop()
            await self.env.start()
            await self.env.settle()

        self.run(again())

    async def _settled(self, coroutine: Any) -> None:
        await coroutine
        await self.env.settle()

    # ----------------------------------------------------------------------------------- invariants

    @invariant()
    def never_two_offers_at_once(self) -> None:
        if not hasattr(self, "env"):
            return
        assert not self.env.dialer.double_offers, self.env.dialer.double_offers
        tenant = self.env.acd._tenants.get(TENANT)
        if tenant is None:
            return
        holders: dict[str, str] = {}
        for call_id, run in tenant.offers.items():
            for agent in run.offer.agents:
                if (
                    agent.agent_id in run.withdrawn
                    or agent.call_id != call_id
                    or agent.state not in BUSY_STATES
                ):
                    continue
                assert agent.agent_id not in holders, (agent.agent_id, holders[agent.agent_id], call_id)
                holders[agent.agent_id] = call_id

    @invariant()
    def nobody_busy_without_a_call_for_long(self) -> None:
        if not hasattr(self, "env"):
            return
        env = self.env
        tenant = env.acd._tenants.get(TENANT)
        if tenant is None:
            return
        now = env.clock.now
        for agent in tenant.router.agents.values():
            if agent.state not in BUSY_STATES or not env.acd._stuck(tenant, agent):
                self.suspect_since.pop(agent.agent_id, None)
                continue
            token, since = self.suspect_since.setdefault(agent.agent_id, (agent.token, now))
            if token != agent.token:
                self.suspect_since[agent.agent_id] = (agent.token, now)
                continue
            assert now - since <= STUCK_SECONDS + 2 * WATCHDOG_INTERVAL, (agent.agent_id, agent.state)

    @invariant()
    def no_call_waits_while_its_agent_is_ready(self) -> None:
        if not hasattr(self, "env"):
            return
        tenant = self.env.acd._tenants.get(TENANT)
        if tenant is None:
            return
        for call in tenant.router.calls.values():
            if call.status != "waiting" or call.target is not None:
                continue
            for name in call.queues:
                ready = [
                    a.agent_id for a in tenant.router.queues[name].members.values() if a.state == "ready"
                ]
                assert not ready, (call.call_id, name, ready)


AcdMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestAcdStateMachine = AcdMachine.TestCase
