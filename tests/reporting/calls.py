"""Valid call event sequences for projection tests: hand-written scripts and a random call simulator.

`Clock` stamps events at chosen offsets (seconds) from a base time. Before `restart_at` events read monotonic
clock "boot-a"; after it "boot-b", whose monotonic values are unrelated, so durations across the restart
must fall back to the wall clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hotline.events import (
    AgentStateChanged,
    AgentWrapupEnded,
    CallAnswered,
    CallDataChanged,
    CallDequeued,
    CallEnded,
    CallHeld,
    CallOffered,
    CallOfferFailed,
    CallQueued,
    CallResumed,
    CallStarted,
    CallTransferred,
    Event,
    IvrNodeEntered,
    IvrNodeExited,
    LegAnswered,
    LegCreated,
    LegEnded,
    RecordingStarted,
    RecordingStopped,
)

BASE = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)


@dataclass
class Clock:
    tenant: str
    restart_at: float = float("inf")

    def stamp(self, at: float) -> dict[str, Any]:
        if at < self.restart_at:
            boot, monotonic = "boot-a", 1000.0 + at
        else:
            boot, monotonic = "boot-b", 5.0 + (at - self.restart_at)
        return {
            "tenant": self.tenant,
            "occurred_at": BASE + timedelta(seconds=at),
            "monotonic": monotonic,
            "boot_id": boot,
        }


@dataclass
class CallScript:
    """Events of one call (plus its agents' events), each at a time offset."""

    clock: Clock
    call_id: str
    timeline: list[tuple[float, Event]] = field(default_factory=list)

    def add(self, at: float, cls: type[Event], **fields: Any) -> None:
        if "call_id" in cls.model_fields and "call_id" not in fields:
            fields["call_id"] = self.call_id
        self.timeline.append((at, cls(**self.clock.stamp(at), **fields)))


def in_time_order(scripts: list[CallScript]) -> list[Event]:
    """All scripts' events merged by time; a call's own events keep their order."""
    tagged = [
        (at, n, i, event) for n, script in enumerate(scripts) for i, (at, event) in enumerate(script.timeline)
    ]
    tagged.sort(key=lambda item: (item[0], item[1], item[2]))
    return [event for _at, _n, _i, event in tagged]


def simulate_call(rng: random.Random, clock: Clock, call_id: str, start: float) -> CallScript:
    """A random but valid call: IVR, queues with offers and failures, answer, holds, transfers, wrap-up,
    or an abandon, a diversion or a hang-up in the IVR along the way."""
    script = CallScript(clock, call_id)
    t = start

    def later(low: float = 0.0, high: float = 20.0) -> float:
        nonlocal t
        t = round(t + rng.uniform(low, high), 6)
        return t

    customer = f"{call_id}-c"
    withheld = rng.random() < 0.1
    script.add(
        t,
        CallStarted,
        direction="inbound",
        ani="" if withheld else f"138{rng.randrange(10**8):08d}",
        withheld=withheld,
        dnis="+864001234567",
        region=rng.choice(["Shanghai", "Beijing", None]),
        trunk="ct-1",
        entry_target="flow:main",
    )
    script.add(t, LegCreated, leg_id=customer, kind="customer", direction="inbound", endpoint="ct-1")

    def end(side: str, cause: str = "normal_clearing") -> CallScript:
        at = later(0, 5)
        script.add(at, CallEnded, hangup_side=side, cause=cause)
        script.add(at, LegEnded, leg_id=customer)
        return script

    if rng.random() < 0.1:
        return end("customer", "no_answer")  # gave up while ringing
    script.add(later(0, 3), CallAnswered, by="system", leg_id=customer)
    script.add(t, LegAnswered, leg_id=customer)
    script.add(t, RecordingStarted, recording_id=f"{call_id}-r", path=f"rec/{call_id}.wav", format="wav")

    for node in range(rng.randrange(0, 4)):
        script.add(t, IvrNodeEntered, flow_id="main", flow_version=3, node_id=f"n{node}", node_type="menu")
        if rng.random() < 0.3:
            script.add(later(0, 5), CallDataChanged, values={f"k{node}": rng.randrange(100)}, source="ivr")
        if rng.random() < 0.1:
            script.add(
                later(),
                IvrNodeExited,
                flow_id="main",
                flow_version=3,
                node_id=f"n{node}",
                node_type="menu",
                exit_reason="hangup",
            )
            return end("customer")
        success = rng.random() < 0.1
        script.add(
            later(),
            IvrNodeExited,
            flow_id="main",
            flow_version=3,
            node_id=f"n{node}",
            node_type="menu",
            input=str(rng.randrange(10)),
            exit_reason="match",
            self_service_success=success,
        )
        if success and rng.random() < 0.7:
            return end("customer")

    def queue_and_serve(queue: str, depth: int) -> bool:
        """Queue the call; True if it ended inside."""
        script.add(
            later(0, 1), IvrNodeEntered, flow_id="main", flow_version=3, node_id="q", node_type="queue"
        )
        sl, short = rng.choice([20.0, 30.0]), rng.choice([3.0, 5.0, 10.0])
        script.add(
            t,
            CallQueued,
            queue_id=queue,
            priority=rng.randrange(101),
            skills=["zh"],
            service_level_seconds=sl,
            short_abandon_seconds=short,
        )
        if rng.random() < 0.15:
            script.add(later(5, 30), CallQueued, queue_id=f"{queue}-overflow", overflow=True)
        for attempt in range(rng.randrange(0, 4)):
            agent = f"a{rng.randrange(6)}"
            leg = f"{call_id}-{queue}-{depth}-{attempt}"
            script.add(later(0, 15), CallOffered, agent_id=agent, leg_id=leg, queue_id=queue)
            script.add(
                t,
                LegCreated,
                leg_id=leg,
                kind="agent",
                direction="outbound",
                endpoint=f"sip:{agent}",
                agent_id=agent,
            )
            script.add(
                t, AgentStateChanged, agent_id=agent, from_state="ready", to_state="ringing", call_id=call_id
            )
            fate = rng.random()
            if fate < 0.3:
                reason = rng.choice(["ring_no_answer", "rejected", "unreachable"])
                script.add(
                    later(1, 20), CallOfferFailed, agent_id=agent, leg_id=leg, reason=reason, queue_id=queue
                )
                script.add(t, LegEnded, leg_id=leg, cause="no_answer")
                script.add(
                    t,
                    AgentStateChanged,
                    agent_id=agent,
                    from_state="ringing",
                    to_state="not_ready",
                    reason_code="no_answer",
                )
                continue
            if fate < 0.4:  # the caller hangs up while the agent's phone rings
                script.add(later(0, 5), CallDequeued, queue_id=queue, outcome="abandoned")
                script.add(t, LegEnded, leg_id=leg, cause="cancelled")
                end("customer")
                script.add(t, AgentStateChanged, agent_id=agent, from_state="ringing", to_state="ready")
                return True
            script.add(later(1, 10), LegAnswered, leg_id=leg)
            script.add(t, CallAnswered, by="agent", agent_id=agent, leg_id=leg, queue_id=queue)
            script.add(t, CallDequeued, queue_id=queue, outcome="answered", agent_id=agent)
            script.add(
                t,
                AgentStateChanged,
                agent_id=agent,
                from_state="ringing",
                to_state="talking",
                call_id=call_id,
            )
            script.add(
                t, RecordingStarted, recording_id=f"{leg}-r", path=f"rec/{leg}.wav", format="wav", leg_id=leg
            )
            for _ in range(rng.randrange(0, 3)):
                script.add(later(), CallHeld, leg_id=customer, agent_id=agent)
                if rng.random() < 0.85:
                    script.add(later(), CallResumed, leg_id=customer, agent_id=agent)
                    break
            if rng.random() < 0.2 and depth == 0:
                script.add(
                    later(),
                    CallTransferred,
                    kind="blind",
                    target_type="queue",
                    target="support",
                    from_agent_id=agent,
                )
                script.add(t, LegEnded, leg_id=leg)
                script.add(
                    t,
                    RecordingStopped,
                    recording_id=f"{leg}-r",
                    path=f"rec/{leg}.wav",
                    format="wav",
                    duration_seconds=12.5,
                    leg_id=leg,
                )
                wrap_up(agent)
                return queue_and_serve("support", depth + 1)
            side = rng.choice(["customer", "agent"])
            at = later(5, 120)
            script.add(at, CallEnded, hangup_side=side)
            script.add(at, LegEnded, leg_id=customer)
            script.add(at, LegEnded, leg_id=leg)
            script.add(
                at,
                RecordingStopped,
                recording_id=f"{leg}-r",
                path=f"rec/{leg}.wav",
                format="wav",
                duration_seconds=round(rng.uniform(5, 100), 3),
                leg_id=leg,
            )
            wrap_up(agent)
            return True
        fate = rng.random()
        if fate < 0.5:
            script.add(later(0, 40), CallDequeued, queue_id=queue, outcome="abandoned")
            end("customer")
            return True
        script.add(later(10, 60), CallDequeued, queue_id=queue, outcome="timeout", target="voicemail")
        script.add(t, IvrNodeEntered, flow_id="main", flow_version=3, node_id="vm", node_type="voicemail")
        end(rng.choice(["customer", "system"]))
        return True

    def wrap_up(agent: str) -> None:
        script.add(
            t, AgentStateChanged, agent_id=agent, from_state="talking", to_state="wrap_up", call_id=call_id
        )
        if rng.random() < 0.9:
            script.add(
                later(0, 30),
                AgentWrapupEnded,
                agent_id=agent,
                call_id=call_id,
                disposition=rng.choice(["sale", "info", None]),
                fields={"note": "ok"},
                ended_by=rng.choice(["agent", "timer"]),
            )
            script.add(t, AgentStateChanged, agent_id=agent, from_state="wrap_up", to_state="ready")

    if not queue_and_serve("sales", 0):
        end("customer")
    return script


def random_traffic(seed: int, tenant: str, calls: int, restart_at: float | None = None) -> list[Event]:
    rng = random.Random(seed)
    clock = Clock(tenant, restart_at if restart_at is not None else float("inf"))
    scripts = [simulate_call(rng, clock, f"call-{seed}-{n}", rng.uniform(0, 600)) for n in range(calls)]
    idle = CallScript(clock, "-")
    for n in range(rng.randrange(1, 10)):  # agent events about no call at all
        idle.add(
            rng.uniform(0, 600), AgentStateChanged, agent_id=f"a{n}", from_state="not_ready", to_state="ready"
        )
    return in_time_order([*scripts, idle])
