"""Agent selection strategies and skill matching (ACD-02, ACD-04, SPEC §20).

- :func:`matches`: does an agent's skill set satisfy a call's requirement (AND/OR/NOT with minimum levels;
  NOT excludes agents who hold the skill)?
- :func:`skill_score`: how well an agent fits a requirement (the levels and preferences of the skills the
  requirement asks for), for ``best_skill``.
- :func:`requirement_key`: a stable text form of a requirement; calls with equal keys share routing
  indexes.
- :func:`ready_key`: the order in which a queue offers calls to its ready agents; the smallest key goes
  first. Strategies: ``longest_idle`` (default), ``round_robin`` (the agent offered longest ago, so each
  gets a turn, remembered across calls), ``linear`` (configuration order, top-down), ``ring_all`` (every
  eligible agent rings; the key only orders the ring list), ``random``, ``fewest_calls``,
  ``least_talk``, ``best_skill``.

Keys are computed when an agent becomes ready and stay valid until the agent's state changes: every input
(idle time, today's calls and talk time, the last offer) only changes when the agent leaves ready.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Final

from hotline.acd.agents import AgentStatus
from hotline.acd.config import AgentSkill
from hotline.switch.control import AllSkills, AnySkill, NotSkill, SkillAtLeast, SkillExpression

# More than this many agents ringing at once for one call is a storm, not a strategy.
RING_ALL_LIMIT: Final = 50

StrategyKey = tuple[float, ...]


def matches(skills: Mapping[str, AgentSkill], requirement: SkillExpression | None) -> bool:
    if requirement is None:
        return True
    if isinstance(requirement, SkillAtLeast):
        held = skills.get(requirement.skill)
        return held is not None and held.level >= requirement.min_level
    if isinstance(requirement, AllSkills):
        return all(matches(skills, part) for part in requirement.all)
    if isinstance(requirement, AnySkill):
        return any(matches(skills, part) for part in requirement.any)
    if isinstance(requirement, NotSkill):
        return not matches(skills, requirement.not_)
    raise TypeError(f"not a skill expression: {requirement!r}")


def wanted_skills(requirement: SkillExpression | None, negated: bool = False) -> list[str]:
    """The skills a requirement asks for (not those it excludes)."""
    if requirement is None:
        return []
    if isinstance(requirement, SkillAtLeast):
        return [] if negated else [requirement.skill]
    if isinstance(requirement, AllSkills):
        return [skill for part in requirement.all for skill in wanted_skills(part, negated)]
    if isinstance(requirement, AnySkill):
        return [skill for part in requirement.any for skill in wanted_skills(part, negated)]
    return wanted_skills(requirement.not_, not negated)


def skill_score(skills: Mapping[str, AgentSkill], requirement: SkillExpression | None) -> tuple[int, int]:
    """(sum of levels, sum of preferences) over the skills the requirement asks for; higher fits better."""
    level = preference = 0
    for skill in dict.fromkeys(wanted_skills(requirement)):
        held = skills.get(skill)
        if held is not None:
            level += held.level
            preference += held.preference
    return level, preference


def requirement_key(requirement: SkillExpression | None) -> str:
    return "" if requirement is None else requirement.model_dump_json(by_alias=True)


def ready_key(
    strategy: str,
    agent: AgentStatus,
    queue: str,
    requirement: SkillExpression | None,
    rng: random.Random,
) -> StrategyKey:
    """The agent's place among the queue's ready agents for calls with `requirement`: smallest first."""
    if strategy == "round_robin":
        return (float(agent.last_offered.get(queue, -1)), float(agent.rank))
    if strategy == "linear":
        return (float(agent.rank),)
    if strategy == "random":
        return (rng.random(),)
    if strategy == "fewest_calls":
        return (float(agent.figures.calls_handled), agent.idle_since)
    if strategy == "least_talk":
        return (agent.figures.talk_seconds, agent.idle_since)
    if strategy == "best_skill":
        level, preference = skill_score(agent.skills, requirement)
        return (-float(level), -float(preference), agent.idle_since)
    # longest_idle (the default, §20) and ring_all (ordered by idle time too)
    return (agent.idle_since, float(agent.rank))
