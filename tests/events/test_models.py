"""Event models: exact JSON round trip for every type, the contract checks, sortable ids, durations."""

from __future__ import annotations

import types
import typing
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hotline.events import (
    EVENT_TYPES,
    AgentStateChanged,
    CallAnswered,
    CallDataChanged,
    CallStarted,
    Event,
    elapsed_seconds,
    new_id,
    parse_event,
)
from hotline.events.ids import uuid7_time_ms

BRIEF_TYPES = {
    "call.started",
    "call.answered",
    "ivr.node_entered",
    "ivr.node_exited",
    "call.queued",
    "call.dequeued",
    "call.offered",
    "call.offer_failed",
    "call.held",
    "call.resumed",
    "call.transferred",
    "call.ended",
    "leg.created",
    "leg.answered",
    "leg.ended",
    "recording.started",
    "recording.stopped",
    "call.data_changed",
    "agent.state_changed",
    "agent.wrapup_ended",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.builds(
    lambda moment, offset_minutes: moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes))),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "tenant": st.from_regex(r"\A[a-z][a-z0-9_]{1,12}\Z"),
    "seq": st.none() | st.integers(min_value=1, max_value=2**62),
    "occurred_at": timestamps,
    "monotonic": st.floats(min_value=0, max_value=1e9, allow_nan=False),
    "priority": st.integers(min_value=0, max_value=100),
    "flow_version": st.integers(min_value=0, max_value=10_000),
    "sip_status": st.none() | st.integers(min_value=100, max_value=699),
    "size_bytes": st.none() | st.integers(min_value=0, max_value=2**40),
    "duration_seconds": st.floats(min_value=0, max_value=1e6, allow_nan=False),
    "service_level_seconds": st.floats(min_value=0, max_value=600, allow_nan=False),
    "short_abandon_seconds": st.floats(min_value=0, max_value=600, allow_nan=False),
    "values": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    "fields": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    "mailbox": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    "data": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    "at": timestamps,
    "requested_at": timestamps,
    "visits": st.integers(min_value=0, max_value=10_000),
    "seconds": st.floats(min_value=0, max_value=1e6, allow_nan=False),
}


def _strategy(annotation: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strategy(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_strategy(arg) for arg in typing.get_args(annotation)])
    if origin is list:
        return st.lists(_strategy(typing.get_args(annotation)[0]), max_size=3)
    if annotation is type(None):
        return st.none()
    if annotation is str:
        return st.text(min_size=1, max_size=16)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.integers(min_value=0, max_value=10_000)
    if annotation is float:
        return st.floats(min_value=0, max_value=1e6, allow_nan=False)
    raise AssertionError(f"no strategy for {annotation!r}")


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    cls = draw(st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.__name__)))
    kwargs: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if name == "type":
            continue
        strategy = FIELD_STRATEGIES[name] if name in FIELD_STRATEGIES else _strategy(field.annotation)
        if not field.is_required() and draw(st.booleans()):
            continue  # leave it to the default
        kwargs[name] = draw(strategy)
    try:
        return cls(**kwargs)
    except ValidationError:
        assume(False)
        raise


def test_every_type_the_design_needs_exists() -> None:
    assert set(EVENT_TYPES) >= BRIEF_TYPES
    for name, cls in EVENT_TYPES.items():
        domain, verb = name.split(".")
        assert domain and verb, name
        assert cls.model_fields["type"].default == name


@settings(max_examples=200, deadline=None)
@given(any_event())
def test_json_round_trip_is_exact(event: Event) -> None:
    text = event.model_dump_json()
    again = parse_event(text)
    assert type(again) is type(event)
    assert again == event
    assert again.model_dump_json() == text
    assert parse_event(event.model_dump(mode="json")) == event


def test_timestamps_are_stored_in_utc_and_naive_times_are_refused() -> None:
    beijing = timezone(timedelta(hours=8))
    event = CallStarted(
        tenant="acme",
        call_id="c1",
        direction="inbound",
        ani="13800138000",
        dnis="4001234567",
        occurred_at=datetime(2024, 5, 1, 9, 30, tzinfo=beijing),
    )
    assert event.occurred_at == datetime(2024, 5, 1, 1, 30, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.model_dump_json().count('"occurred_at":"2024-05-01T01:30:00Z"') == 1
    with pytest.raises(ValidationError):
        CallStarted(
            tenant="acme",
            call_id="c1",
            direction="inbound",
            ani="1",
            dnis="2",
            occurred_at=datetime(2024, 5, 1, 9, 30),
        )


def test_a_call_without_caller_number_must_be_flagged_withheld() -> None:
    """TEL-04 / FM-10: never a blank ANI without the withheld flag."""
    with pytest.raises(ValidationError, match="withheld"):
        CallStarted(tenant="acme", call_id="c1", direction="inbound", dnis="4001234567")
    withheld = CallStarted(tenant="acme", call_id="c1", direction="inbound", dnis="4001234567", withheld=True)
    assert withheld.withheld and withheld.ani == ""


def test_an_agent_answer_names_the_agent() -> None:
    with pytest.raises(ValidationError, match="agent_id"):
        CallAnswered(tenant="acme", call_id="c1", by="agent")
    assert CallAnswered(tenant="acme", call_id="c1", by="system").agent_id is None


def test_bad_input_is_refused_with_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        parse_event('{"type": "call.exploded", "tenant": "acme", "call_id": "c"}')
    with pytest.raises(ValidationError):
        parse_event("not json")
    with pytest.raises(ValidationError):
        CallStarted(tenant="Bad Tenant", call_id="c", direction="inbound", ani="1", dnis="2")
    with pytest.raises(ValidationError):  # unknown fields are typos, not data
        CallStarted(tenant="acme", call_id="c", direction="inbound", ani="1", dnis="2", colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        CallDataChanged(tenant="acme", call_id="c", values={"x": float("nan")})
    with pytest.raises(ValidationError):
        AgentStateChanged(tenant="acme", agent_id="a1", from_state="ready", to_state="sleeping")  # type: ignore[arg-type]


def test_events_are_immutable_and_with_seq_copies() -> None:
    event = CallAnswered(tenant="acme", call_id="c1", by="system")
    with pytest.raises(ValidationError):
        event.seq = 3
    logged = event.with_seq(3)
    assert logged.seq == 3 and event.seq is None and logged.id == event.id


def test_ids_are_uuid7_and_sort_in_creation_order() -> None:
    before_ms = int(datetime.now(UTC).timestamp() * 1000)
    ids = [new_id() for _ in range(5000)]
    after_ms = int(datetime.now(UTC).timestamp() * 1000)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        value = uuid.UUID(text)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before_ms <= uuid7_time_ms(value) <= after_ms + 1


def test_durations_use_the_monotonic_clock_when_both_ends_share_it() -> None:
    wall = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)
    start = CallAnswered(
        tenant="acme", call_id="c", by="system", occurred_at=wall, monotonic=100.0, boot_id="b1"
    )
    # The wall clock stepped back by NTP during the call; the monotonic clock did not.
    end = CallAnswered(
        tenant="acme",
        call_id="c",
        by="system",
        occurred_at=wall - timedelta(seconds=2),
        monotonic=130.5,
        boot_id="b1",
    )
    assert elapsed_seconds(start, end) == 30.5
    # Another machine or boot: only the wall clock is comparable (and never negative).
    elsewhere = end.model_copy(update={"boot_id": "b2", "occurred_at": wall + timedelta(seconds=12)})
    assert elapsed_seconds(start, elsewhere) == 12.0
    assert elapsed_seconds(elsewhere, start) == 0.0
