"""Routing decision latency of the ACD core with 10,000 agents and 10,000 waiting calls (issue #5 item 8;
target p99 <= 1 ms).

    .venv/bin/python bench/routing.py [--agents 10000] [--calls 10000] [--decisions 20000] [--seed 1]

A tenant with 20 queues (every strategy but ring-all), 8 skills, agents in two queues each with one to three
skills, and calls with a mix of requirements (none, one skill at a minimum level, AND/OR/NOT). All agents
start busy and 10,000 calls wait. Then, over and over:

- an agent becomes ready (after a call, or from not ready): the decision is the state change plus the
  dispatch that finds the best waiting call over the agent's queues and requirements and reserves the agent
  ("agent freed");
- the offered call is answered, and a new call arrives so 10,000 keep waiting: the decision is queueing
  it plus the dispatch that looks for a ready agent ("call arrives").

A second phase starts with every agent ready and no call waiting, and measures calls arriving one at a time
(each picks the best of up to 10,000 ready agents by its queue's strategy).

Each decision is timed twice: the thread's CPU time (time.thread_time_ns: what routing costs, unaffected by
other processes) and wall time (time.perf_counter_ns: what a caller waits, which on a busy machine includes
time the OS gave to others). The verdict uses CPU time; the load average is printed with the figures. Both
cover the routing core alone (hotline.acd.router, what AcdService runs synchronously for each change);
events and ringing happen afterwards, off this path. The first call of a requirement new to a queue builds
that queue's index for it once (O(members)); that one-off cost is shown on its own line.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from datetime import UTC, datetime
from typing import Any

from hotline.acd.agents import AgentStatus, Device
from hotline.acd.config import STRATEGIES, Agent, Queue
from hotline.acd.router import Offer, Router
from hotline.switch.control import AllSkills, AnySkill, NotSkill, SkillAtLeast, SkillExpression

SKILLS = [f"s{n}" for n in range(8)]
WALL = datetime.now(UTC)


def build(agents: int, seed: int) -> tuple[Router, random.Random]:
    rng = random.Random(seed)
    strategies = [s for s in STRATEGIES if s != "ring_all"]
    queues = [Queue(name=f"q{n:02d}", strategy=strategies[n % len(strategies)]) for n in range(20)]
    configs = []
    for n in range(agents):
        held = rng.sample(SKILLS, rng.randint(1, 3))
        configs.append(
            Agent(
                id=f"a{n:05d}",
                queues=rng.sample([q.name for q in queues], 2),
                skills={skill: rng.randint(1, 9) for skill in held},
            )
        )
    router = Router("bench", rng=random.Random(seed + 1))
    router.configure(queues, configs)
    return router, rng


REQUIREMENTS: list[SkillExpression | None] = [
    None,
    None,
    None,
    SkillAtLeast(skill="s0", min_level=3),
    SkillAtLeast(skill="s1"),
    SkillAtLeast(skill="s2", min_level=5),
    AnySkill(any=[SkillAtLeast(skill="s3"), SkillAtLeast(skill="s4", min_level=4)]),
    AllSkills(all=[SkillAtLeast(skill="s5"), NotSkill.model_validate({"not": {"skill": "s6"}})]),
]


class Samples:
    """Per-decision wall time and the thread's CPU time (the second leaves out time the OS gave to other
    processes, which on a busy machine dominates the first)."""

    def __init__(self) -> None:
        self.wall: list[int] = []
        self.cpu: list[int] = []
        self._start = (0, 0)

    def start(self) -> None:
        self._start = (time.perf_counter_ns(), time.thread_time_ns())

    def stop(self) -> None:
        wall, cpu = self._start
        self.wall.append(time.perf_counter_ns() - wall)
        self.cpu.append(time.thread_time_ns() - cpu)


class Bench:
    def __init__(self, router: Router, rng: random.Random) -> None:
        self.router = router
        self.rng = rng
        self.now = 1000.0
        self.calls = 0
        self.freed = Samples()
        self.arrived = Samples()
        self.answered = 0

    def tick(self) -> float:
        self.now += 0.001
        return self.now

    def add_call(
        self, queue: str | None = None, requirement: SkillExpression | str | None = "random"
    ) -> list[Offer]:
        self.calls += 1
        self.router.add_call(
            f"c{self.calls:07d}",
            queue or f"q{self.rng.randrange(20):02d}",
            priority=self.rng.choice((0, 0, 0, 10, 50)),
            requirement=self.rng.choice(REQUIREMENTS) if isinstance(requirement, str) else requirement,
            now=self.tick(),
            deadline=self.now + 1e9,
        )
        return self.router.dispatch(self.now, WALL)

    def warm_up(self) -> Samples:
        """The first call of each requirement in each queue builds that queue's index for it (once)."""
        first = Samples()
        for n in range(20):
            for requirement in [r for i, r in enumerate(REQUIREMENTS) if r not in REQUIREMENTS[:i]]:
                first.start()
                offers = self.add_call(f"q{n:02d}", requirement)
                first.stop()
                self.answer(offers)
        return first

    def answer(self, offers: list[Offer]) -> None:
        """Offered calls are answered: the agent goes on the call, the call leaves its queues."""
        router = self.router
        for offer in offers:
            for agent in offer.agents:
                router.change(agent, "ringing", self.now, wall=WALL)
                router.change(agent, "on_call", self.now, wall=WALL)
            router.finish_call(offer.call, "answered")
            self.answered += 1

    def login_all(self, ready: bool) -> None:
        device = Device("sip", "sip:bench@127.0.0.1:5070")
        for agent_id in self.router.agents:
            self.router.login(agent_id, device, None, self.tick(), WALL)
            if ready:
                self.router.change(self.router.agents[agent_id], "ready", self.now, wall=WALL)
        self.router.dispatch(self.now, WALL)

    def fill(self, calls: int) -> None:
        for _ in range(calls):
            self.answer(self.add_call())

    def agent_freed(self, agent: AgentStatus) -> None:
        self.freed.start()
        self.router.change(agent, "ready", self.tick(), wall=WALL)
        offers = self.router.dispatch(self.now, WALL)
        self.freed.stop()
        if offers:
            self.answer(offers)
            self.arrived.start()
            more = self.add_call()
            self.arrived.stop()
            self.answer(more)


def _p(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000


def _figures(name: str, samples: Samples) -> str:
    if not samples.cpu:
        return f"{name:<46} (none)"
    cpu, wall = sorted(samples.cpu), sorted(samples.wall)
    return (
        f"{name:<46} n={len(cpu):>6}  cpu p50={_p(cpu, 0.5):6.1f} p99={_p(cpu, 0.99):7.1f} "
        f"max={cpu[-1] / 1000:7.1f} us | wall p50={_p(wall, 0.5):6.1f} p99={_p(wall, 0.99):8.1f} us"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    router, rng = build(args.agents, args.seed)
    bench = Bench(router, rng)
    bench.login_all(ready=False)  # everyone logged in and not ready: nothing can be offered yet
    bench.fill(args.calls)
    waiting = sum(1 for call in router.calls.values() if call.status == "waiting")
    gc.collect()
    gc.disable()  # a collection in the middle of one decision is the interpreter's pause, not routing's
    try:
        pool = list(router.agents.values())
        for _ in range(args.decisions):
            agent = rng.choice(pool)
            if agent.state == "on_call":
                router.change(agent, "wrap_up", bench.tick(), wall=WALL)
            if agent.state in ("wrap_up", "not_ready"):
                bench.agent_freed(agent)
        still_waiting = sum(1 for call in router.calls.values() if call.status == "waiting")
        ready_now = sum(1 for agent in pool if agent.state == "ready")

        # phase 2: every agent ready, calls arrive one by one
        router2, rng2 = build(args.agents, args.seed + 7)
        second = Bench(router2, rng2)
        second.login_all(ready=True)
        first_of_kind = second.warm_up()
        for _ in range(min(args.decisions, args.agents // 2)):
            second.arrived.start()
            offers = second.add_call()
            second.arrived.stop()
            second.answer(offers)
    finally:
        gc.enable()

    load = _load_average()
    print(
        f"routing core: {args.agents} agents in 20 queues, {waiting} calls waiting at the start; load {load}"
    )
    print(_figures("agent freed -> best waiting call, reserved", bench.freed))
    print(_figures("call arrives (10k waiting, few agents ready)", bench.arrived))
    print(_figures("call arrives (up to 10k agents ready)", second.arrived))
    print(_figures("first call of a requirement in a queue (once)", first_of_kind))
    print(
        f"calls answered {bench.answered}, still waiting {still_waiting}, agents ready at the end {ready_now}"
    )
    cpu = sorted(bench.freed.cpu + bench.arrived.cpu + second.arrived.cpu)
    wall = sorted(bench.freed.wall + bench.arrived.wall + second.arrived.wall)
    p99_cpu, p99_wall = _p(cpu, 0.99), _p(wall, 0.99)
    verdict = "PASS" if p99_cpu <= 1000 else "FAIL"
    print(
        f"all decisions: p99 cpu = {p99_cpu:.1f} us, wall = {p99_wall:.1f} us (target <= 1000 us): {verdict}"
    )
    return {"p99_cpu_us": p99_cpu, "p99_wall_us": p99_wall, "decisions": len(cpu)}


def _load_average() -> str:
    try:
        with open("/proc/loadavg") as file:
            return " ".join(file.read().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
