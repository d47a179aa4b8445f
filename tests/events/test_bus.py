"""The in-process bus: pattern routing, isolation from slow and failing subscribers, gap notices."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from hotline.events import (
    AgentStateChanged,
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    EventNotLogged,
    EventsMissed,
    InProcessBus,
)
from hotline.events.bus import Delivery

_seqs: dict[str, int] = {}


@pytest.fixture(autouse=True)
def fresh_sequences() -> None:
    _seqs.clear()


def logged(event: Event) -> Event:
    """Stand in for the event log: number events per tenant."""
    _seqs[event.tenant] = _seqs.get(event.tenant, 0) + 1
    return event.with_seq(_seqs[event.tenant])


def started(tenant: str = "acme", call_id: str = "c1") -> Event:
    return logged(CallStarted(tenant=tenant, call_id=call_id, direction="inbound", ani="1001", dnis="4001"))


def agent_ready(tenant: str = "acme") -> Event:
    return logged(AgentStateChanged(tenant=tenant, agent_id="a1", from_state="not_ready", to_state="ready"))


async def drain(get: Callable[[], Awaitable[Delivery]], count: int) -> list[Event]:
    """The next `count` deliveries, which must all be events."""
    items = [await asyncio.wait_for(get(), 1.0) for _ in range(count)]
    assert all(isinstance(item, Event) for item in items), items
    return [item for item in items if isinstance(item, Event)]


async def test_patterns_route_by_event_name_and_tenant() -> None:
    bus = InProcessBus()
    calls = bus.subscribe("call.*")
    everything = bus.subscribe("*")
    exact = bus.subscribe("agent.state_changed")
    endings = bus.subscribe("*.ended")
    only_beta = bus.subscribe("*", tenant="beta")

    events = [
        started("acme"),
        agent_ready("acme"),
        logged(CallEnded(tenant="beta", call_id="c9", hangup_side="customer")),
    ]
    for event in events:
        await bus.publish(event)

    assert [e.type for e in await drain(calls.get, 2)] == ["call.started", "call.ended"]
    assert await drain(everything.get, 3) == events
    assert [e.type for e in await drain(exact.get, 1)] == ["agent.state_changed"]
    assert [e.type for e in await drain(endings.get, 1)] == ["call.ended"]
    assert [e.tenant for e in await drain(only_beta.get, 1)] == ["beta"]
    for subscription in (calls, everything, exact, endings, only_beta):
        assert subscription.pending == 0
    await bus.close()


async def test_only_logged_events_can_be_published() -> None:
    bus = InProcessBus()
    sub = bus.subscribe("*")
    with pytest.raises(EventNotLogged):
        await bus.publish(CallAnswered(tenant="acme", call_id="c1", by="system"))
    assert sub.pending == 0
    with pytest.raises(ValueError):
        bus.subscribe("")
    await bus.close()


async def test_a_slow_subscriber_misses_events_without_slowing_anyone() -> None:
    bus = InProcessBus()
    slow = bus.subscribe("*", maxsize=10)
    received: list[Event] = []

    async def fast_handler(item: Delivery) -> None:
        assert isinstance(item, Event)
        received.append(item)

    bus.subscribe("*", fast_handler)
    events = [logged(CallAnswered(tenant="acme", call_id=f"c{i}", by="system")) for i in range(2000)]

    began = time.perf_counter()
    for event in events:
        await bus.publish(event)
    publish_seconds = time.perf_counter() - began
    assert publish_seconds < 1.0  # appends only; nobody was waited for

    for _ in range(100):
        if len(received) == len(events):
            break
        await asyncio.sleep(0.01)
    assert received == events

    first_ten = await drain(slow.get, 10)
    assert first_ten == events[:10]
    notice = await slow.get()
    assert notice == EventsMissed(after_seq={"acme": 10}, dropped=1990)
    assert events[9].seq == 10
    assert slow.dropped == 1990

    # After the notice, live delivery resumes; the subscriber resyncs the gap from the log by seq.
    later = logged(CallAnswered(tenant="acme", call_id="late", by="system"))
    await bus.publish(later)
    assert await slow.get() == later
    await bus.close()


async def test_the_gap_notice_names_the_resume_point_per_tenant() -> None:
    bus = InProcessBus()
    sub = bus.subscribe("*", maxsize=2)
    a1, a2, a3 = started("acme", "x1"), started("acme", "x2"), started("acme", "x3")
    b1 = started("beta", "y1")
    a4 = started("acme", "x4")
    for event in (a1, a2, a3, b1, a4):
        await bus.publish(event)
    assert await drain(sub.get, 2) == [a1, a2]
    notice = await sub.get()
    assert isinstance(notice, EventsMissed)
    assert a2.seq is not None and b1.seq is not None
    assert notice.after_seq == {"acme": a2.seq, "beta": b1.seq - 1}
    assert notice.dropped == 3
    await bus.close()


async def test_a_failing_or_stuck_handler_does_not_stop_delivery() -> None:
    bus = InProcessBus()
    seen_by_failing: list[Delivery] = []
    healthy: list[Delivery] = []
    stuck_started = asyncio.Event()

    async def failing(item: Delivery) -> None:
        seen_by_failing.append(item)
        raise RuntimeError("bug in a subscriber")

    async def stuck(item: Delivery) -> None:
        stuck_started.set()
        await asyncio.sleep(3600)

    async def collect(item: Delivery) -> None:
        healthy.append(item)

    failing_sub = bus.subscribe("*", failing)
    bus.subscribe("*", stuck, maxsize=5)
    bus.subscribe("call.*", collect)

    events = [started("acme", f"c{i}") for i in range(50)]
    for event in events:
        await bus.publish(event)
    await asyncio.wait_for(stuck_started.wait(), 1.0)
    for _ in range(100):
        if len(healthy) == 50 and len(seen_by_failing) == 50:
            break
        await asyncio.sleep(0.01)
    assert healthy == events
    assert seen_by_failing == events  # it kept receiving after each failure
    assert failing_sub.handler_failures == 50

    began = time.perf_counter()
    await bus.close(timeout=0.2)  # the stuck handler is cancelled after a bounded wait
    assert time.perf_counter() - began < 2.0


async def test_iteration_ends_when_the_subscription_is_closed() -> None:
    bus = InProcessBus()
    sub = bus.subscribe("*")
    first = started()
    await bus.publish(first)
    sub.close()
    await bus.publish(started())  # not delivered: closed
    assert [item async for item in sub] == [first]
    assert sub not in bus.subscriptions
    await bus.close()


async def test_get_batch_returns_what_is_queued_and_waits_for_the_first() -> None:
    bus = InProcessBus()
    sub = bus.subscribe("*")
    waiter = asyncio.create_task(sub.get_batch(100))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    events = [started("acme", f"c{i}") for i in range(5)]
    for event in events:
        await bus.publish(event)
    assert await asyncio.wait_for(waiter, 1.0) == events
    await bus.close()
