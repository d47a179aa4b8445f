"""Replay equals live: random valid call traffic projected live (in odd batches, with repeats, gaps and a
lossy bus) gives exactly the rows that a rebuild from the log gives, and that a pure fold of the log gives.
FM-09: each offered call has exactly one MET-01 outcome, so O = Ans + Sh + Ab + D."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from hotline.events import CallQueued, Event, InProcessBus
from hotline.reporting import OUTCOMES, CdrProjection
from hotline.reporting.cdr import Row, fold
from hotline.storage import EventLog, Storage
from tests.reporting.calls import random_traffic


def pure_fold(events: list[Event]) -> tuple[list[Row], list[Row]]:
    calls: dict[str, Row] = {}
    legs: dict[str, Row] = {}
    fold(calls, legs, events)
    return [calls[key] for key in sorted(calls)], [legs[key] for key in sorted(legs)]


def check_met01(events: list[Event], rows: list[Row]) -> None:
    queued = {event.call_id for event in events if isinstance(event, CallQueued)}
    assert all(row["ended_at"] is not None for row in rows)
    for row in rows:
        if row["call_id"] in queued:
            assert row["outcome"] in OUTCOMES, row
            assert row["wait_seconds"] is not None and row["wait_seconds"] >= 0
        else:
            assert row["outcome"] is None, row
    counts = Counter(row["outcome"] for row in rows if row["outcome"] is not None)
    assert sum(counts.values()) == len(queued)
    answered = [row for row in rows if row["outcome"] == "answered"]
    assert all(row["agent_id"] is not None and row["talk_seconds"] >= 0 for row in answered)


async def project_live_in_random_batches(
    projection: CdrProjection, events: list[Event], rng: random.Random
) -> None:
    position = 0
    while position < len(events):
        size = rng.randint(1, 60)
        batch = events[position : position + size]
        if rng.random() < 0.15:
            batch = batch[size // 2 :]  # lose the front of this batch: a gap to fill from the log
        if rng.random() < 0.15 and position:
            batch = events[max(0, position - 30) : position] + batch  # deliver some again
        if rng.random() < 0.1:
            rng.shuffle(batch)
        await projection.apply(batch)
        position += size


async def test_random_traffic_live_equals_rebuild_equals_fold(storage: Storage) -> None:
    seeds = range(3) if storage.backend == "sqlite" else range(1)
    for seed in seeds:
        tenant = f"replay{seed}"
        await storage.create_tenant_database(tenant)
        log = EventLog(storage)
        projection = CdrProjection(storage, log, batch_size=97)
        try:
            restart_at = random.Random(seed).choice([None, 250.0])
            events = await log.append_many(random_traffic(seed, tenant, calls=40, restart_at=restart_at))
            await project_live_in_random_batches(projection, events, random.Random(seed))
            assert await projection.watermark(tenant) == len(events)
            live = await projection.snapshot(tenant)

            assert await projection.rebuild(tenant) == len(events)
            rebuilt = await projection.snapshot(tenant)
            assert rebuilt == live
            assert pure_fold(events) == live
            check_met01(events, live[0])
        finally:
            await log.close()


async def test_following_a_lossy_bus_ends_equal_to_a_rebuild(storage: Storage) -> None:
    """The projection follows the bus with a tiny queue, so it misses events and must resync from the log."""
    await storage.create_tenant_database("acme")
    bus = InProcessBus()
    log = EventLog(storage, bus)
    projection = CdrProjection(storage, log, batch_size=50)
    task = projection.start(bus, tenant="acme", maxsize=16)
    try:
        traffic = random_traffic(7, "acme", calls=30)
        for start in range(0, len(traffic), 40):
            await asyncio.gather(*(log.append(event) for event in traffic[start : start + 40]))
        last = await log.last_seq("acme")
        for _ in range(500):
            if await projection.watermark("acme") == last:
                break
            await asyncio.sleep(0.02)
        assert await projection.watermark("acme") == last
        (following,) = bus.subscriptions
        assert following.dropped > 0, "the test meant the projection to miss events and resync"
        live = await projection.snapshot("acme")
        await projection.rebuild("acme")
        assert await projection.snapshot("acme") == live
        check_met01(await log.read("acme", limit=10_000), live[0])
    finally:
        await projection.stop()
        await log.close()
        await bus.close()
    assert task.done()
