"""The routing core of one tenant: agents, queues, waiting calls and the decisions that pair them.

No I/O, no clock, no asyncio: callers pass the monotonic time ``now`` and get back state changes and
:class:`Offer` decisions (TaskRouter's model: tasks are waiting calls, workers are agents, task queues are
queues, activities are agent states). :class:`hotline.acd.service.AcdService` drives it.

- :meth:`Router.configure`: queues and agents from the tenant's configuration (again at run time, ACD-18).
- Agents: :meth:`Router.login`, :meth:`Router.change` (every state move goes through here so the indexes
  follow), :meth:`Router.logout`.
- Calls: :meth:`Router.add_call`, :meth:`Router.add_queue` (overflow: the call is also queued elsewhere and
  keeps its place, ACD-06), :meth:`Router.release_target` (a sticky agent's time is up),
  :meth:`Router.return_call` (a failed offer: back to its place at the head, FM-06),
  :meth:`Router.finish_call` (exactly one outcome, MET-01).
- :meth:`Router.dispatch`: after any change, the offers that have become possible. An offer reserves its
  agents at once (ACD-11: never two offers to one agent; a state change applies before the next decision).

Data structures (routing decision p99 well under 1 ms at 10,000 agents and 10,000 waiting calls, see
bench/routing.py): each queue keeps one heap of waiting calls and one index of ready agents per distinct
skill requirement, so a freed agent looks at one heap top per (queue, requirement) it satisfies, and a new
call looks at the top of one index per queue it is in. Nothing scans all agents or all calls.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hotline.acd.agents import AcdError, AgentState, AgentStatus, Device, StateChange
from hotline.acd.config import Agent, Queue
from hotline.acd.queues import LazyHeap, QueueRuntime, WaitingCall, waiting_entry_valid
from hotline.acd.strategies import RING_ALL_LIMIT, matches, ready_key, requirement_key
from hotline.switch.control import SkillExpression


@dataclass(eq=False)
class Offer:
    """A decision: `call` is offered through `queue` to `agents` (several for ring-all), all reserved."""

    id: int
    call: WaitingCall
    queue: str
    agents: list[AgentStatus]
    changes: list[StateChange] = field(default_factory=list)


class Router:
    def __init__(self, tenant: str, *, rng: random.Random | None = None) -> None:
        self.tenant = tenant
        self.rng = rng or random.Random()
        self.agents: dict[str, AgentStatus] = {}
        self.agent_configs: dict[str, Agent] = {}
        self.queues: dict[str, QueueRuntime] = {}
        self.calls: dict[str, WaitingCall] = {}
        # agent id -> calls waiting for that agent only (sticky or dedicated), best first
        self.targeted: dict[str, LazyHeap[WaitingCall]] = {}
        self._seq = itertools.count(1)
        self._offers = itertools.count(1)
        self._dirty_agents: dict[str, None] = {}
        self._dirty_calls: dict[str, None] = {}
        self._match_cache: dict[tuple[str, str], bool] = {}

    # ------------------------------------------------------------------------------------ configuration

    def configure(self, queues: Sequence[Queue], agents: Sequence[Agent]) -> list[str]:
        """Apply a tenant configuration; returns the ids of logged-in agents who are no longer configured
        or enabled (the service logs them out after their call)."""
        known = {queue.name for queue in queues}
        for queue in queues:
            runtime = self.queues.get(queue.name)
            if runtime is None:
                self.queues[queue.name] = QueueRuntime(queue)
            else:
                runtime.config = queue
                runtime.removed = False
        for name, runtime in self.queues.items():
            if name not in known:
                runtime.removed = True
        self.agent_configs = {agent.id: agent for agent in agents}
        gone = []
        for rank, config in enumerate(agents):
            status = self.agents.get(config.id)
            if status is None:
                status = self.agents[config.id] = AgentStatus(config.id)
            status.name = config.name
            status.skills = dict(config.skills)
            status.rank = rank
            status.enabled = config.enabled
        for agent_id, status in self.agents.items():
            if agent_id not in self.agent_configs or not status.enabled:
                if status.logged_in:
                    gone.append(agent_id)
            elif status.logged_in:
                wanted = (
                    status.chosen_queues if status.chosen_queues is not None else self._configured(status)
                )
                self._set_queues(status, tuple(q for q in wanted if q in self.queues))
        self._match_cache.clear()
        self._reindex()
        return gone

    def _configured(self, agent: AgentStatus) -> tuple[str, ...]:
        config = self.agent_configs.get(agent.agent_id)
        return tuple(config.queues) if config is not None else ()

    def _set_queues(self, agent: AgentStatus, queues: tuple[str, ...]) -> None:
        for name in agent.queues:
            runtime = self.queues.get(name)
            if runtime is not None:
                runtime.members.pop(agent.agent_id, None)
        agent.queues = queues
        for name in queues:
            self.queues[name].members[agent.agent_id] = agent

    def _reindex(self) -> None:
        """Rebuild every ready index (a strategy, skill or membership changed)."""
        for runtime in self.queues.values():
            for key in runtime.ready:
                runtime.ready[key] = LazyHeap()
        for agent in self.agents.values():
            if agent.state == "ready":
                self._index_ready(agent)
        for call in self.calls.values():
            if call.status == "waiting":
                self._dirty_calls[call.call_id] = None

    # ------------------------------------------------------------------------------------ agents

    def agent(self, agent_id: str) -> AgentStatus:
        agent = self.agents.get(agent_id)
        if agent is None or agent_id not in self.agent_configs:
            raise AcdError("unknown_agent", f"there is no agent {agent_id}")
        return agent

    def login(
        self, agent_id: str, device: Device, queues: Sequence[str] | None, now: float, wall: datetime
    ) -> StateChange:
        agent = self.agent(agent_id)
        if not agent.enabled:
            raise AcdError("agent_disabled", f"agent {agent_id} is disabled")
        if agent.logged_in:
            raise AcdError("already_logged_in", f"agent {agent_id} is already logged in")
        if queues is not None:
            unknown = [name for name in queues if name not in self.queues or self.queues[name].removed]
            if unknown:
                raise AcdError("unknown_queue", f"no such queue: {', '.join(unknown)}")
        agent.device = device
        agent.chosen_queues = tuple(dict.fromkeys(queues)) if queues is not None else None
        wanted = agent.chosen_queues if agent.chosen_queues is not None else self._configured(agent)
        self._set_queues(agent, tuple(q for q in wanted if q in self.queues))
        agent.pending = None
        return self.change(agent, "not_ready", now, wall=wall)

    def change(
        self,
        agent: AgentStatus,
        to_state: AgentState,
        now: float,
        *,
        reason: str | None = None,
        call_id: str | None = None,
        changed_by: str | None = None,
        wall: datetime | None = None,
    ) -> StateChange:
        """Move an agent; ready agents enter the indexes and are looked at by the next dispatch."""
        change = agent.change(to_state, now, reason=reason, call_id=call_id, changed_by=changed_by, wall=wall)
        if to_state == "ready":
            self._index_ready(agent)
            self._dirty_agents[agent.agent_id] = None
        elif to_state == "logged_out":
            self._set_queues(agent, ())
            agent.device = None
            agent.chosen_queues = None
            self._untarget(agent.agent_id)
        return change

    def _index_ready(self, agent: AgentStatus) -> None:
        for name in agent.queues:
            runtime = self.queues.get(name)
            if runtime is None:
                continue
            strategy = runtime.config.strategy
            for key, index in runtime.ready.items():
                requirement = runtime.requirements.get(key)
                if self._matches(agent, key, requirement):
                    index.push(ready_key(strategy, agent, name, requirement, self.rng), agent.token, agent)
            if len(runtime.ready) and any(
                len(index) > 3 * len(runtime.members) + 64 for index in runtime.ready.values()
            ):
                for index in runtime.ready.values():
                    index.compact(runtime.ready_valid)

    def _matches(self, agent: AgentStatus, key: str, requirement: SkillExpression | None) -> bool:
        cache_key = (agent.agent_id, key)
        found = self._match_cache.get(cache_key)
        if found is None:
            found = self._match_cache[cache_key] = matches(agent.skills, requirement)
        return found

    def _untarget(self, agent_id: str) -> None:
        """The agent left: calls waiting for them only go to everyone (dedicated agent's fallback)."""
        heap = self.targeted.pop(agent_id, None)
        if heap is None:
            return
        for call in list(heap.items(lambda c, token: c.target == agent_id and c.version == token)):
            if call.status != "done":
                self.release_target(call)

    # ------------------------------------------------------------------------------------ calls

    def add_call(
        self,
        call_id: str,
        queue: str,
        *,
        priority: int,
        requirement: SkillExpression | None,
        now: float,
        deadline: float,
        ani: str | None = None,
        target: str | None = None,
        target_until: float | None = None,
    ) -> WaitingCall:
        if call_id in self.calls:
            raise AcdError("already_queued", f"call {call_id} is already queued")
        runtime = self.queues.get(queue)
        if runtime is None or runtime.removed:
            raise AcdError("unknown_queue", f"no such queue: {queue}")
        call = WaitingCall(
            call_id=call_id,
            queue=queue,
            priority=max(0, min(100, priority)),
            requirement=requirement,
            class_key=requirement_key(requirement),
            seq=next(self._seq),
            enqueued_at=now,
            deadline=deadline,
            ani=ani,
        )
        self.calls[call_id] = call
        call.queues[queue] = now
        runtime.calls[call_id] = call
        self._ensure_class(runtime, call)
        target_agent = self.agents.get(target) if target is not None else None
        if target_agent is not None and target_agent.logged_in:
            call.target = target_agent.agent_id
            call.target_until = target_until
            self.targeted.setdefault(target_agent.agent_id, LazyHeap()).push(
                (call.rank, float(call.seq)), call.version, call
            )
        else:
            self._push_waiting(call)
        self._dirty_calls[call_id] = None
        return call

    def add_queue(self, call: WaitingCall, queue: str, now: float) -> bool:
        """Also queue `call` in `queue`, keeping its place (ACD-06); False if it is there or cannot be."""
        runtime = self.queues.get(queue)
        if runtime is None or runtime.removed or queue in call.queues or call.status == "done":
            return False
        call.queues[queue] = now
        runtime.calls[call.call_id] = call
        self._ensure_class(runtime, call)
        if call.status == "waiting" and call.target is None:
            self._push_entry(runtime, call)
            self._dirty_calls[call.call_id] = None
        return True

    def release_target(self, call: WaitingCall) -> None:
        if call.target is None:
            return
        call.target = None
        call.target_until = None
        if call.status == "waiting":
            call.version += 1
            self._push_waiting(call)
            self._dirty_calls[call.call_id] = None

    def reserve_for(self, call: WaitingCall, agent_id: str, until: float) -> None:
        """ACD-16: only `agent_id` is offered the call until `until` (then everyone again)."""
        call.target = agent_id
        call.target_until = until
        call.version += 1
        if call.status == "waiting":
            self.targeted.setdefault(agent_id, LazyHeap()).push(
                (call.rank, float(call.seq)), call.version, call
            )
            self._dirty_calls[call.call_id] = None

    def set_priority(self, call: WaitingCall, priority: int) -> None:
        """ACD-16: a new priority; the call's place follows (its wait still counts)."""
        call.priority = max(0, min(100, priority))
        call.version += 1
        if call.status == "waiting":
            if call.target is not None:
                self.targeted.setdefault(call.target, LazyHeap()).push(
                    (call.rank, float(call.seq)), call.version, call
                )
            else:
                self._push_waiting(call)
            self._dirty_calls[call.call_id] = None

    def return_call(self, call: WaitingCall) -> None:
        """A failed offer: the call goes back to where it was (the head, as it was the best), FM-06."""
        if call.status != "offering":
            return
        call.status = "waiting"
        call.version += 1
        if call.target is not None:
            target = self.agents.get(call.target)
            if target is None or not target.logged_in:
                call.target = None
        if call.target is not None:
            self.targeted.setdefault(call.target, LazyHeap()).push(
                (call.rank, float(call.seq)), call.version, call
            )
        else:
            self._push_waiting(call)
        self._dirty_calls[call.call_id] = None

    def finish_call(self, call: WaitingCall, outcome: str) -> bool:
        """The call leaves every queue with `outcome`; False when it had already left (exactly once)."""
        if call.status == "done":
            return False
        call.status = "done"
        call.outcome = outcome
        call.version += 1
        for name in call.queues:
            runtime = self.queues.get(name)
            if runtime is not None:
                runtime.calls.pop(call.call_id, None)
        self.calls.pop(call.call_id, None)
        return True

    def _ensure_class(self, runtime: QueueRuntime, call: WaitingCall) -> None:
        key = call.class_key
        if key in runtime.ready:
            return
        runtime.requirements[key] = call.requirement
        runtime.waiting[key] = LazyHeap()
        index: LazyHeap[AgentStatus] = LazyHeap()
        runtime.ready[key] = index
        # A requirement new to this queue: its index starts with the ready members who satisfy it (once;
        # later changes keep it up to date).
        strategy = runtime.config.strategy
        requirement = call.requirement
        index.extend(
            (ready_key(strategy, agent, runtime.name, requirement, self.rng), agent.token, agent)
            for agent in runtime.members.values()
            if agent.state == "ready" and self._matches(agent, key, requirement)
        )

    def _push_waiting(self, call: WaitingCall) -> None:
        for name in call.queues:
            runtime = self.queues.get(name)
            if runtime is not None:
                self._push_entry(runtime, call)

    def _push_entry(self, runtime: QueueRuntime, call: WaitingCall) -> None:
        heap = runtime.waiting[call.class_key]
        heap.push((call.rank, float(call.seq)), call.version, call)
        if len(heap) > 3 * len(runtime.calls) + 64:
            heap.compact(waiting_entry_valid)

    # ------------------------------------------------------------------------------------ decisions

    def dispatch(self, now: float, wall: datetime | None = None) -> list[Offer]:
        """Every offer that the changes since the last dispatch made possible."""
        offers: list[Offer] = []
        while self._dirty_agents or self._dirty_calls:
            if self._dirty_agents:
                agent_id = next(iter(self._dirty_agents))
                del self._dirty_agents[agent_id]
                agent = self.agents.get(agent_id)
                if agent is None or agent.state != "ready":
                    continue
                found = self.best_call_for(agent)
                if found is not None:
                    call, queue = found
                    offers.append(self._offer(call, queue, [agent], now, wall))
                continue
            call_id = next(iter(self._dirty_calls))
            del self._dirty_calls[call_id]
            waiting = self.calls.get(call_id)
            if waiting is None or waiting.status != "waiting":
                continue
            chosen = self.best_agents_for(waiting)
            if chosen is not None:
                queue, agents = chosen
                offers.append(self._offer(waiting, queue, agents, now, wall))
        return offers

    def best_call_for(self, agent: AgentStatus) -> tuple[WaitingCall, str] | None:
        """The waiting call a just-freed agent should take: one kept for them, else the best place over
        its queues (ACD-03)."""
        best: tuple[float, float] | None = None
        found: tuple[WaitingCall, str] | None = None
        own = self.targeted.get(agent.agent_id)
        if own is not None:
            agent_id = agent.agent_id
            top = own.peek(
                lambda c, token: c.status == "waiting" and c.version == token and c.target == agent_id
            )
            if top is not None:
                # Calls waiting for this agent alone (reserved, sticky, dedicated) come first: nobody
                # else may take them, and their callers were promised this agent.
                return top[1], top[1].queue
        for name in agent.queues:
            runtime = self.queues.get(name)
            if runtime is None:
                continue
            for key, heap in runtime.waiting.items():
                if not len(heap) or not self._matches(agent, key, runtime.requirements.get(key)):
                    continue
                top = heap.peek(waiting_entry_valid)
                if top is None:
                    continue
                place = (top[0][0], top[0][1])
                if best is None or place < best:
                    best = place
                    found = (top[1], name)
        return found

    def best_agents_for(self, call: WaitingCall) -> tuple[str, list[AgentStatus]] | None:
        """The agent(s) a waiting call should be offered to, by its queues' strategies (ACD-04)."""
        if call.target is not None:
            agent = self.agents.get(call.target)
            if agent is not None and agent.state == "ready":
                return call.queue, [agent]
            return None
        for name in call.queues:
            runtime = self.queues.get(name)
            if runtime is None:
                continue
            index = runtime.ready.get(call.class_key)
            if index is None or not len(index):
                continue
            if runtime.config.strategy == "ring_all":
                agents = index.best(runtime.ready_valid, RING_ALL_LIMIT)
                if agents:
                    return name, agents
                continue
            top = index.peek(runtime.ready_valid)
            if top is not None:
                return name, [top[1]]
        return None

    def _offer(
        self, call: WaitingCall, queue: str, agents: list[AgentStatus], now: float, wall: datetime | None
    ) -> Offer:
        call.status = "offering"
        offer = Offer(next(self._offers), call, queue, agents)
        for agent in agents:
            agent.last_offered[queue] = offer.id
            agent.queue_id = queue
            agent.figures.offers += 1
            offer.changes.append(self.change(agent, "reserved", now, call_id=call.call_id, wall=wall))
        return offer

    # ------------------------------------------------------------------------------------ views

    def waiting_calls(self, queue: str) -> Iterable[WaitingCall]:
        runtime = self.queues.get(queue)
        return runtime.calls.values() if runtime is not None else ()
