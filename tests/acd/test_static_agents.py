"""Static agents (``device`` + ``login_on_start``, like static queue members): logged in and ready when the
tenant's configuration loads, at start and on a run-time reload (ACD-18); the ib1 benchmark relies on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hotline.acd.config import Agent
from hotline.storage.engines import Storage
from hotline.tenancy.service import TenancyService
from tests.acd.fakes import TENANT, Env, agents, document


def _static(agent_id: str, device: str, **extra: Any) -> dict[str, Any]:
    return {**agents(agent_id)[0], "device": device, "login_on_start": True, **extra}


async def test_static_agents_are_ready_at_start_and_take_calls(tmp_path: Path) -> None:
    doc = document(
        agent_list=[
            _static("s1", "sip:agent001@127.0.0.1:5070"),
            *agents("a1"),
            {**agents("s2")[0], "device": "extension:1002"},  # a device but no login_on_start
        ]
    )
    env = await Env(tmp_path).open(doc)
    try:
        s1 = env.acd.agent_state(TENANT, "s1")
        assert (s1["state"], s1["device"], s1["queues"]) == (
            "ready",
            "sip:agent001@127.0.0.1:5070",
            ["sales"],
        )
        assert env.acd.agent_state(TENANT, "a1")["state"] == "logged_out"
        assert env.acd.agent_state(TENANT, "s2")["state"] == "logged_out"
        _call, task = env.call()
        await env.settle()
        assert env.dialer.ringing("s1")
        assert str(env.dialer.rings["s1"].device) == "sip:agent001@127.0.0.1:5070"
        env.dialer.answer("s1")
        assert (await task).agent == "s1"
    finally:
        await env.close()


async def test_a_reload_logs_in_new_static_agents_and_keeps_the_state_of_others(env: Env) -> None:
    await env.ready("a1")
    await env.acd.not_ready(TENANT, "a1", None)
    doc = document(agent_list=[*agents("a1", "a2"), _static("s3", "sip:agent003@127.0.0.1:5070")])
    await env.reconfigure(doc)
    assert env.acd.agent_state(TENANT, "s3")["state"] == "ready"
    assert env.acd.agent_state(TENANT, "a1")["state"] == "not_ready"  # a manual login is left alone
    await env.acd.not_ready(TENANT, "s3", None)
    await env.reconfigure(doc)
    assert env.acd.agent_state(TENANT, "s3")["state"] == "not_ready"  # already logged in: kept as is


async def test_static_logins_stop_at_the_licensed_seats(tmp_path: Path) -> None:
    doc = document(agent_list=[_static(f"s{n}", f"sip:agent{n:03d}@127.0.0.1:5070") for n in range(1, 4)])
    storage = Storage(tmp_path)
    await storage.migrate()
    await TenancyService(storage).create_tenant(TENANT, "Acme", concurrent_call_limit=10, seat_limit=2)
    await storage.close()
    env = await Env(tmp_path).open(doc)
    try:
        states = [env.acd.agent_state(TENANT, f"s{n}")["state"] for n in range(1, 4)]
        assert states == ["ready", "ready", "logged_out"]
    finally:
        await env.close()


def test_a_static_agent_needs_a_valid_device() -> None:
    with pytest.raises(ValidationError, match="needs a device"):
        Agent(id="8001", login_on_start=True)
    with pytest.raises(ValidationError, match="not one of"):
        Agent(id="8001", device="phone:1001")
    assert Agent(id="8001", device=" extension:1001 ", login_on_start=True).device == "extension:1001"
