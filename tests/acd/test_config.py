"""ACD configuration models: queue defaults from the SPEC, destinations, agents' skills and passwords."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hotline.acd.config import (
    STRATEGIES,
    Agent,
    AgentSkill,
    Queue,
    QueueDestination,
    ReasonCode,
    hash_password,
    password_problem,
    verify_password,
)


def test_queue_defaults_are_the_spec_defaults() -> None:
    queue = Queue(name="sales")
    assert queue.strategy == "longest_idle"  # SPEC §20
    assert queue.wrap_up_seconds == 5  # ACD-08
    assert queue.acw_mode == "timed"
    assert queue.service_level_seconds == 20
    assert queue.service_level_target == 80
    assert queue.short_abandon_seconds == 5


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_is_accepted(strategy: str) -> None:
    assert Queue.model_validate({"name": "q", "strategy": strategy}).strategy == strategy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strategy", "cheapest"),
        ("acw_mode", "sometimes"),
        ("wrap_up_seconds", -1),
        ("service_level_target", 120),
        ("max_length", 0),
        ("ring_timeout", 0),
        ("name", "has space"),
        ("colour", "red"),
    ],
)
def test_queue_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Queue.model_validate({"name": "q", field: value})
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("text", ["voicemail", "callback", "hangup", "queue:support", "flow:after_hours"])
def test_destination_text_form_round_trips(text: str) -> None:
    dumped: object = QueueDestination.model_validate(text).model_dump()
    assert dumped == text
    assert Queue.model_validate({"name": "q", "on_full": text}).model_dump()["on_full"] == text


@pytest.mark.parametrize(
    ("text", "message"),
    [("queue", "names one"), ("voicemail:box", "takes no name"), ("pager", "Input should be")],
)
def test_destination_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        QueueDestination.model_validate(text)


def test_agent_password_is_hashed_and_never_dumped() -> None:
    agent = Agent.model_validate({"id": 8001, "password": "secret123", "extension": 1001})
    assert agent.id == "8001" and agent.extension == "1001"  # YAML integers are text
    assert agent.password is None
    assert agent.password_hash is not None and agent.password_hash.startswith("$argon2id$")
    assert agent.check_password("secret123")
    assert not agent.check_password("secret124")
    dumped = agent.model_dump(mode="json")
    assert "password" not in dumped
    assert "secret123" not in str(dumped)
    # The hash survives a round trip through the document form.
    assert Agent.model_validate(dumped).check_password("secret123")


@pytest.mark.parametrize(
    ("password", "problem"),
    [("abc12", "longer than 6"), ("abcdefgh", "letters and digits"), ("12345678", "letters and digits")],
)
def test_weak_agent_passwords_are_refused(password: str, problem: str) -> None:
    assert problem in (password_problem(password) or "")
    with pytest.raises(ValidationError, match=problem):
        Agent.model_validate({"id": "8001", "password": password})


def test_agent_password_and_hash_problems() -> None:
    with pytest.raises(ValidationError, match="not both"):
        Agent.model_validate(
            {"id": "8001", "password": "secret123", "password_hash": hash_password("x1y2z3w4")}
        )
    with pytest.raises(ValidationError, match="argon2"):
        Agent.model_validate({"id": "8001", "password_hash": "5f4dcc3b5aa765d61d8327deb882cf99"})
    assert not verify_password("not a hash", "secret123")


def test_agent_skills_levels_and_preferences() -> None:
    agent = Agent.model_validate(
        {"id": "8001", "skills": {"sales": 7, "vip": {"level": 9, "preference": 2}}, "queues": ["sales"]}
    )
    assert agent.skills["sales"] == AgentSkill(level=7, preference=5)
    assert agent.skills["vip"] == AgentSkill(level=9, preference=2)
    # A bare level in the document form when the preference is the default.
    assert agent.model_dump()["skills"] == {"sales": 7, "vip": {"level": 9, "preference": 2}}
    with pytest.raises(ValidationError, match="listed twice"):
        Agent.model_validate({"id": "8001", "queues": ["sales", "sales"]})


@given(level=st.integers(min_value=-5, max_value=15), preference=st.integers(min_value=-5, max_value=15))
@settings(max_examples=60, deadline=None)
def test_skill_levels_and_preferences_run_from_1_to_9(level: int, preference: int) -> None:
    valid = 1 <= level <= 9 and 1 <= preference <= 9
    try:
        skill = AgentSkill.model_validate({"level": level, "preference": preference})
    except ValidationError:
        assert not valid
    else:
        assert valid and (skill.level, skill.preference) == (level, preference)


def test_reason_codes() -> None:
    code = ReasonCode.model_validate({"code": "meal", "name": "就餐", "max_minutes": 60})
    assert code.kind == "not_ready"
    with pytest.raises(ValidationError):
        ReasonCode.model_validate({"code": "meal", "name": ""})
