"""CDR and leg detail figures for known calls (SPEC §19 definitions), idempotency, tenant isolation."""

from __future__ import annotations

from datetime import timedelta

import pytest

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
from hotline.reporting import CdrProjection
from hotline.storage import EventLog, Storage
from tests.reporting.calls import BASE, CallScript, Clock


async def logged(storage: Storage, events: list[Event], tenant: str = "acme") -> tuple[EventLog, list[Event]]:
    if not await storage.tenant_database_exists(tenant):
        await storage.create_tenant_database(tenant)
    log = EventLog(storage)
    return log, await log.append_many(events)


def full_call(tenant: str = "acme", call_id: str = "c1", restart_at: float = float("inf")) -> list[Event]:
    """IVR, a ring-no-answer, an answer with hold, recording and wrap-up."""
    s = CallScript(Clock(tenant, restart_at), call_id)
    s.add(
        0,
        CallStarted,
        direction="inbound",
        ani="13800138000",
        dnis="+864001234567",
        region="Shanghai",
        trunk="ct",
    )
    s.add(0, LegCreated, leg_id="L0", kind="customer", direction="inbound", endpoint="ct")
    s.add(1, CallAnswered, by="system", leg_id="L0")
    s.add(1, LegAnswered, leg_id="L0")
    s.add(1, IvrNodeEntered, flow_id="main", flow_version=2, node_id="welcome", node_type="play")
    s.add(
        4,
        IvrNodeExited,
        flow_id="main",
        flow_version=2,
        node_id="welcome",
        node_type="play",
        exit_reason="next",
    )
    s.add(4, IvrNodeEntered, flow_id="main", flow_version=2, node_id="menu", node_type="menu")
    s.add(
        9,
        IvrNodeExited,
        flow_id="main",
        flow_version=2,
        node_id="menu",
        node_type="menu",
        input="1",
        exit_reason="match",
    )
    s.add(9, CallDataChanged, values={"account": "A-17", "vip": True, "tries": 1}, source="ivr")
    s.add(9, IvrNodeEntered, flow_id="main", flow_version=2, node_id="to_sales", node_type="queue")
    s.add(9, CallQueued, queue_id="sales", priority=5, service_level_seconds=20, short_abandon_seconds=5)
    s.add(10, CallOffered, agent_id="a1", leg_id="L1", queue_id="sales")
    s.add(10, LegCreated, leg_id="L1", kind="agent", direction="outbound", endpoint="sip:a1", agent_id="a1")
    s.add(25, CallOfferFailed, agent_id="a1", leg_id="L1", reason="ring_no_answer", queue_id="sales")
    s.add(25, LegEnded, leg_id="L1", cause="no_answer")
    s.add(26, CallOffered, agent_id="a2", leg_id="L2", queue_id="sales")
    s.add(26, LegCreated, leg_id="L2", kind="agent", direction="outbound", endpoint="sip:a2", agent_id="a2")
    s.add(30, LegAnswered, leg_id="L2")
    s.add(30, CallAnswered, by="agent", agent_id="a2", leg_id="L2", queue_id="sales")
    s.add(30, CallDequeued, queue_id="sales", outcome="answered", agent_id="a2")
    s.add(30, RecordingStarted, recording_id="r1", path="acme/r1.wav", format="wav")
    s.add(60, CallHeld, leg_id="L0", agent_id="a2")
    s.add(80, CallResumed, leg_id="L0", agent_id="a2")
    s.add(95, CallDataChanged, values={"tries": 2}, removed=["vip"], source="agent")
    s.add(100, CallEnded, hangup_side="customer")
    s.add(100, LegEnded, leg_id="L0")
    s.add(100, LegEnded, leg_id="L2")
    s.add(100, RecordingStopped, recording_id="r1", path="acme/r1.wav", format="wav", duration_seconds=70.0)
    s.add(100, AgentStateChanged, agent_id="a2", from_state="talking", to_state="wrap_up", call_id=call_id)
    s.add(115, AgentWrapupEnded, agent_id="a2", call_id=call_id, disposition="quote", fields={"product": "X"})
    s.add(115, AgentStateChanged, agent_id="a2", from_state="wrap_up", to_state="ready")
    return [event for _at, event in s.timeline]


async def test_a_full_call_gives_the_dictionary_figures(storage: Storage) -> None:
    log, events = await logged(storage, full_call())
    projection = CdrProjection(storage, log)
    try:
        assert await projection.apply(events) == len(events)
        row = await projection.get_cdr("acme", "c1")
        assert row is not None
        expected = {
            "ani": "13800138000",
            "withheld": False,
            "dnis": "+864001234567",
            "region": "Shanghai",
            "direction": "inbound",
            "trunk": "ct",
            "started_at": BASE,
            "system_answered_at": BASE + timedelta(seconds=1),
            "ivr_started_at": BASE + timedelta(seconds=1),
            "ivr_seconds": 8.0,  # welcome 3 s + menu 5 s; time in the queue is not IVR time
            "ivr_last_node": "to_sales",
            "queued_at": BASE + timedelta(seconds=9),
            "first_queue_id": "sales",
            "queue_id": "sales",
            "offered_at": BASE + timedelta(seconds=10),
            "offer_count": 2,
            "offer_failures": 1,
            "agent_answered_at": BASE + timedelta(seconds=30),
            "agent_id": "a2",
            "wait_seconds": 21.0,  # queue entry to agent answer, ringing included (MET-03)
            "answered_within_sl": False,  # 21 s > T = 20 s
            "outcome": "answered",
            "connected_seconds": 70.0,
            "hold_seconds": 20.0,
            "hold_count": 1,
            "talk_seconds": 50.0,  # connected - hold (MET-11)
            "wrapup_seconds": 15.0,
            "disposition": "quote",
            "wrapup_fields": {"product": "X"},
            "ended_at": BASE + timedelta(seconds=100),
            "duration_seconds": 100.0,
            "hangup_cause": "normal_clearing",
            "hangup_side": "customer",
            "recording_id": "r1",
            "recording_path": "acme/r1.wav",
            "recording_seconds": 70.0,
            "call_data": {"account": "A-17", "tries": 2},
            "ivr_self_served": False,
            "transfer_count": 0,
        }
        assert {key: row[key] for key in expected} == expected
        legs = {leg["leg_id"]: leg for leg in await projection.list_legs("acme", "c1")}
        assert legs["L0"]["ring_seconds"] == 1.0 and legs["L0"]["connected_seconds"] == 99.0
        assert legs["L1"]["offer_result"] == "ring_no_answer"
        assert legs["L1"]["ring_seconds"] == 15.0 and legs["L1"]["connected_seconds"] is None
        assert legs["L1"]["end_cause"] == "no_answer"
        assert legs["L2"]["offer_result"] == "answered"
        assert (legs["L2"]["agent_id"], legs["L2"]["queue_id"]) == ("a2", "sales")
        assert legs["L2"]["ring_seconds"] == 4.0 and legs["L2"]["connected_seconds"] == 70.0
    finally:
        await log.close()


async def test_durations_across_a_restart_fall_back_to_the_wall_clock(storage: Storage) -> None:
    log, events = await logged(storage, full_call(restart_at=50))
    projection = CdrProjection(storage, log)
    try:
        await projection.apply(events)
        row = await projection.get_cdr("acme", "c1")
        assert row is not None
        assert (row["duration_seconds"], row["talk_seconds"], row["hold_seconds"]) == (100.0, 50.0, 20.0)
    finally:
        await log.close()


def queued_call(call_id: str, *, wait: float, how: str, short: float = 5.0) -> list[Event]:
    s = CallScript(Clock("acme"), call_id)
    s.add(0, CallStarted, direction="inbound", ani="", withheld=True, dnis="4001")
    s.add(2, CallQueued, queue_id="q1", service_level_seconds=20, short_abandon_seconds=short)
    left = 2 + wait
    if how == "answered":
        s.add(left, CallAnswered, by="agent", agent_id="a1", queue_id="q1")
        s.add(left + 30, CallEnded, hangup_side="agent")
    elif how == "abandon":
        s.add(left, CallDequeued, queue_id="q1", outcome="abandoned")
        s.add(left, CallEnded, hangup_side="customer")
    elif how == "hangup_in_queue":  # no dequeue event: the end of the call is when the caller left
        s.add(left, CallEnded, hangup_side="customer")
    elif how == "diverted":
        s.add(left, CallDequeued, queue_id="q1", outcome="timeout", target="voicemail")
        s.add(left, IvrNodeEntered, flow_id="f", flow_version=1, node_id="vm", node_type="voicemail")
        s.add(left + 40, CallEnded, hangup_side="customer")
    return [event for _at, event in s.timeline]


OUTCOME_CASES = [
    ("answered", 12.0, "answered", True),
    ("answered", 20.0, "answered", True),  # exactly T counts as within
    ("answered", 20.5, "answered", False),
    ("abandon", 3.0, "short_abandon", False),
    ("abandon", 5.0, "short_abandon", False),  # wait <= S
    ("abandon", 5.5, "abandon", False),
    ("hangup_in_queue", 40.0, "abandon", False),
    ("diverted", 60.0, "diverted", False),
]


async def test_each_offered_call_has_exactly_one_met01_outcome(storage: Storage) -> None:
    events = [
        event
        for n, (how, wait, _outcome, _within) in enumerate(OUTCOME_CASES)
        for event in queued_call(f"c{n}", wait=wait, how=how)
    ]
    log, logged_events = await logged(storage, events)
    projection = CdrProjection(storage, log)
    try:
        await projection.apply(logged_events)
        for n, (how, wait, outcome, within_sl) in enumerate(OUTCOME_CASES):
            row = await projection.get_cdr("acme", f"c{n}")
            assert row is not None
            found = (row["outcome"], row["wait_seconds"], row["answered_within_sl"])
            assert found == (outcome, wait, within_sl), how
            assert (row["ani"], row["withheld"]) == ("", True)
    finally:
        await log.close()


async def test_calls_that_never_queue_have_no_outcome_and_self_service_is_flagged(storage: Storage) -> None:
    s = CallScript(Clock("acme"), "ivr-only")
    s.add(0, CallStarted, direction="inbound", ani="1001", dnis="4001")
    s.add(1, CallAnswered, by="system")
    s.add(1, IvrNodeEntered, flow_id="f", flow_version=1, node_id="balance", node_type="query")
    s.add(
        7,
        IvrNodeExited,
        flow_id="f",
        flow_version=1,
        node_id="balance",
        node_type="query",
        exit_reason="next",
        self_service_success=True,
    )
    s.add(8, CallEnded, hangup_side="customer")
    log, events = await logged(storage, [event for _at, event in s.timeline])
    projection = CdrProjection(storage, log)
    try:
        await projection.apply(events)
        row = await projection.get_cdr("acme", "ivr-only")
        assert row is not None
        assert (row["outcome"], row["queued_at"], row["wait_seconds"]) == (None, None, None)
        assert (row["ivr_seconds"], row["ivr_self_served"], row["duration_seconds"]) == (6.0, True, 8.0)
    finally:
        await log.close()


async def test_a_transferred_call_keeps_one_row_and_sums_connected_time(storage: Storage) -> None:
    s = CallScript(Clock("acme"), "t1")
    s.add(0, CallStarted, direction="inbound", ani="1001", dnis="4001")
    s.add(0, CallQueued, queue_id="sales")
    s.add(10, CallAnswered, by="agent", agent_id="a1", queue_id="sales")
    s.add(40, CallTransferred, kind="blind", target_type="queue", target="support", from_agent_id="a1")
    s.add(40, CallQueued, queue_id="support")
    s.add(55, CallAnswered, by="agent", agent_id="a3", queue_id="support")
    s.add(75, CallEnded, hangup_side="agent")
    log, events = await logged(storage, [event for _at, event in s.timeline])
    projection = CdrProjection(storage, log)
    try:
        await projection.apply(events)
        row = await projection.get_cdr("acme", "t1")
        assert row is not None
        assert (row["agent_id"], row["last_agent_id"], row["transfer_count"]) == ("a1", "a3", 1)
        assert (row["queue_id"], row["first_queue_id"], row["outcome"]) == ("sales", "sales", "answered")
        assert (row["wait_seconds"], row["connected_seconds"], row["talk_seconds"]) == (10.0, 50.0, 50.0)
    finally:
        await log.close()


async def test_reapplying_is_a_no_op_and_gaps_are_filled_from_the_log(storage: Storage) -> None:
    log, events = await logged(storage, full_call())
    projection = CdrProjection(storage, log)
    try:
        assert await projection.apply(events[:5]) == 5
        assert await projection.apply(events[:5]) == 0  # same seqs again: nothing
        # Skip ahead: the projection reads seqs 6.. from the log before applying these.
        assert await projection.apply(events[20:22]) == 17
        assert await projection.watermark("acme") == 22
        assert await projection.apply(list(reversed(events))) == len(events) - 22
        assert await projection.apply(events) == 0
        once = await projection.snapshot("acme")
        await projection.rebuild("acme")
        assert await projection.snapshot("acme") == once
        with pytest.raises(ValueError, match="no seq"):
            await projection.apply([full_call()[0]])
    finally:
        await log.close()


async def test_tenants_never_see_each_others_cdrs(storage: Storage) -> None:
    acme_log, acme_events = await logged(storage, full_call("acme", "shared-id"), "acme")
    s = CallScript(Clock("beta"), "beta-call")
    s.add(0, CallStarted, direction="inbound", ani="2002", dnis="4002")
    s.add(9, CallEnded, hangup_side="customer")
    beta_log, beta_events = await logged(storage, [event for _at, event in s.timeline], "beta")
    projection = CdrProjection(storage, acme_log)
    try:
        await projection.apply([*acme_events, *beta_events])
        acme_rows = await projection.list_cdrs("acme")
        beta_rows = await projection.list_cdrs("beta")
        assert [row["call_id"] for row in acme_rows] == ["shared-id"]
        assert [row["call_id"] for row in beta_rows] == ["beta-call"]
        assert acme_rows[0]["ani"] == "13800138000" and beta_rows[0]["ani"] == "2002"
        assert await projection.get_cdr("beta", "shared-id") is None
        assert await projection.list_legs("beta") == []
    finally:
        await acme_log.close()
        await beta_log.close()
