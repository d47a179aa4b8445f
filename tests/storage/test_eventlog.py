"""The event log: per-tenant gapless seqs, commit before publish, group commit, replay and resync."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import hotline.storage.eventlog as eventlog_module
from hotline.events import (
    CallAnswered,
    CallDataChanged,
    CallStarted,
    Event,
    EventsMissed,
    InProcessBus,
)
from hotline.events.bus import Delivery
from hotline.storage import EventLog, EventLogClosed, Storage, UnknownTenant


def call_started(tenant: str, call_id: str) -> CallStarted:
    return CallStarted(
        tenant=tenant, call_id=call_id, direction="inbound", ani="13800138000", dnis="4001234567"
    )


async def test_seqs_start_at_one_per_tenant_and_reads_stay_in_the_tenant(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    await storage.create_tenant_database("beta")
    log = EventLog(storage)
    try:
        acme = [await log.append(call_started("acme", f"a{i}")) for i in range(5)]
        beta = [await log.append(call_started("beta", f"b{i}")) for i in range(3)]
        assert [e.seq for e in acme] == [1, 2, 3, 4, 5]
        assert [e.seq for e in beta] == [1, 2, 3]
        assert await log.read("acme") == acme
        assert await log.read("beta") == beta
        assert await log.read("acme", after_seq=2, limit=2) == acme[2:4]
        assert await log.read("acme", after_seq=5) == []
        assert [e async for e in log.replay("acme", after_seq=1, page=2)] == acme[1:]
        assert await log.last_seq("acme") == 5
        assert await log.events_for_call("beta", "b1") == [beta[1]]
        assert await log.events_for_call("acme", "b1") == []
    finally:
        await log.close()


async def test_concurrent_appends_get_gapless_unique_seqs_in_few_transactions(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    try:
        events = [CallDataChanged(tenant="acme", call_id=f"c{i % 40}", values={"i": i}) for i in range(1500)]
        logged = await asyncio.gather(*(log.append(event) for event in events))
        assert sorted(e.seq for e in logged if e.seq) == list(range(1, 1501))
        assert [e.id for e in logged] == [e.id for e in events]
        # Group commit: many appends share each transaction.
        assert log.batches_committed("acme") <= 150
        stored = [e for page in (0, 1000) for e in await log.read("acme", after_seq=page, limit=1000)]
        assert {e.id: e.seq for e in stored} == {e.id: e.seq for e in logged}
    finally:
        await log.close()


async def test_append_many_keeps_order(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    try:
        events = [call_started("acme", f"c{i}") for i in range(20)]
        logged = await log.append_many(events)
        assert [e.seq for e in logged] == list(range(1, 21))
        assert [e.id for e in logged] == [e.id for e in events]
    finally:
        await log.close()


async def test_seqs_continue_without_gaps_after_a_restart(backend: str, tmp_path: Path) -> None:
    from tests.storage.backends import drop_schemas, open_storage

    storage, prefix = await open_storage(backend, tmp_path)
    try:
        await storage.create_tenant_database("acme")
        log = EventLog(storage)
        await asyncio.gather(*(log.append(call_started("acme", f"c{i}")) for i in range(30)))
        await log.close()
        await storage.close()

        storage = Storage(tmp_path, storage._pg_url, schema_prefix=storage.schema_prefix)
        await storage.migrate()
        log = EventLog(storage)
        more = await asyncio.gather(*(log.append(call_started("acme", f"d{i}")) for i in range(10)))
        assert sorted(e.seq for e in more if e.seq) == list(range(31, 41))
        all_seqs = [e.seq for e in await log.read("acme", limit=100)]
        assert all_seqs == list(range(1, 41))
        await log.close()
    finally:
        await storage.close()
        if prefix is not None:
            await drop_schemas(prefix)


async def test_a_failed_transaction_costs_no_seq(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    real_insert = eventlog_module.insert  # type: ignore[attr-defined]
    failures = [1]

    def flaky_insert(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise OSError("disk went away")
        return real_insert(*args, **kwargs)

    try:
        first = await log.append(call_started("acme", "c1"))
        monkeypatch.setattr(eventlog_module, "insert", flaky_insert)
        with pytest.raises(OSError, match="disk went away"):
            await log.append(call_started("acme", "lost"))
        second = await log.append(call_started("acme", "c2"))
        assert (first.seq, second.seq) == (1, 2)
        assert [e.call_id for e in await log.read("acme") if isinstance(e, CallStarted)] == ["c1", "c2"]
    finally:
        await log.close()


async def test_appending_the_same_event_twice_stores_it_once(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    try:
        event = call_started("acme", "c1")
        first = await log.append(event)
        retried, concurrent = await asyncio.gather(log.append(event), log.append(event))
        assert first == retried == concurrent
        other = await log.append(call_started("acme", "c2"))
        assert other.seq == 2
        assert len(await log.read("acme")) == 2
    finally:
        await log.close()


async def test_bad_appends_are_refused_clearly(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)
    logged = await log.append(call_started("acme", "c1"))
    with pytest.raises(ValueError, match="already has seq"):
        await log.append(logged)
    with pytest.raises(UnknownTenant):
        await log.append(call_started("nobody", "c1"))
    with pytest.raises(ValueError, match="limit"):
        await log.read("acme", limit=0)
    await log.close()
    with pytest.raises(EventLogClosed):
        await log.append(call_started("acme", "c2"))


async def test_a_stuck_writer_cannot_leave_appenders_waiting_forever(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await storage.create_tenant_database("acme")
    log = EventLog(storage)

    async def stuck_commit(self: object, batch: object) -> None:
        await asyncio.sleep(3600)  # e.g. a database that stopped answering

    monkeypatch.setattr(eventlog_module._TenantWriter, "_commit", stuck_commit)
    waiting = asyncio.create_task(log.append(call_started("acme", "c1")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await log.close(timeout=0.1)
    with pytest.raises(EventLogClosed):
        await asyncio.wait_for(waiting, 1.0)


async def test_events_are_committed_before_subscribers_hear_of_them(storage: Storage) -> None:
    """Principle 4: whatever a subscriber receives is already in the log."""
    await storage.create_tenant_database("acme")
    bus = InProcessBus()
    log = EventLog(storage, bus)
    checked: list[bool] = []

    async def verify(item: Delivery) -> None:
        assert isinstance(item, Event) and item.seq is not None
        stored = await log.read(item.tenant, after_seq=item.seq - 1, limit=1)
        checked.append(stored == [item])

    bus.subscribe("*", verify)
    try:
        await asyncio.gather(*(log.append(call_started("acme", f"c{i}")) for i in range(50)))
        for _ in range(200):
            if len(checked) == 50:
                break
            await asyncio.sleep(0.01)
        assert checked == [True] * 50
    finally:
        await log.close()
        await bus.close()


async def test_a_subscriber_that_missed_events_resyncs_from_the_log(storage: Storage) -> None:
    await storage.create_tenant_database("acme")
    bus = InProcessBus()
    log = EventLog(storage, bus)
    slow = bus.subscribe("*", maxsize=8)
    try:
        appended = await log.append_many([call_started("acme", f"c{i}") for i in range(100)])
        seen: dict[int, Event] = {}
        while slow.pending or len(seen) < 100:
            item = await asyncio.wait_for(slow.get(), 1.0)
            if isinstance(item, EventsMissed):
                for tenant, after in item.after_seq.items():
                    async for event in log.replay(tenant, after_seq=after):
                        assert event.seq is not None
                        seen.setdefault(event.seq, event)
            else:
                assert item.seq is not None
                seen.setdefault(item.seq, item)
        assert [seen[seq] for seq in sorted(seen)] == appended
    finally:
        await log.close()
        await bus.close()


async def test_sqlite_sustains_two_thousand_events_per_second_per_tenant(tmp_path: Path) -> None:
    """100 calls emitting events back to back. Capacity is judged on the CPU time the process used, so a
    busy test machine (other processes taking the cores) does not decide the result; wall time is printed."""
    storage = Storage(tmp_path)
    await storage.migrate()
    await storage.create_tenant_database("acme")
    log = EventLog(storage, InProcessBus())
    calls, per_call = 100, 60

    async def call(n: int) -> None:
        for i in range(per_call):
            await log.append(CallAnswered(tenant="acme", call_id=f"c{n}-{i}", by="system"))

    try:
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(call(n) for n in range(calls)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total = calls * per_call
        transactions = log.batches_committed("acme")
        print(
            f"event log on SQLite: {total / cpu:.0f} events per CPU second, "
            f"{total / wall:.0f} events/s wall, {transactions} transactions"
        )
        assert total / cpu >= 2000
        assert transactions <= total / 10  # group commit at work
        assert await log.last_seq("acme") == total
    finally:
        await log.close()
        await storage.close()
