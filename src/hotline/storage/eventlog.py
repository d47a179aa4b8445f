"""The per-tenant, append-only event log (principle 4).

    log = EventLog(storage, bus)
    logged = await log.append(CallStarted(tenant="acme", ...))   # committed, then published; has .seq
    events = await log.read("acme", after_seq=120, limit=500)    # replay / resync, in seq order
    await log.close()

Each tenant's events live in the `events` table of that tenant's own database. `append` returns only after
the transaction holding the event has committed, and only then is the event published on the bus, so a
subscriber never sees an event that a crash could take back.

Sequence numbers are per tenant, start at 1 and have no gaps or duplicates, also across restarts: they
are assigned by one writer task per tenant, from the log's own maximum, to exactly the rows of the
transaction being committed; a failed transaction reassigns nothing. Appends that arrive while the writer
is busy (or within `batch_window` seconds of the first) share one transaction (group commit), each
caller awaiting its own result. Appending an event whose id is already logged returns the logged event
instead of writing it twice, so retrying an append is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from sqlalchemy import Column, Index, String, Table, Text, exists, func, insert, select
from sqlalchemy.exc import IntegrityError

from hotline.events.bus import EventBus
from hotline.events.models import Event, event_call_id, parse_event
from hotline.log import get_logger
from hotline.storage.engines import Storage, StorageError, UnknownTenant, validate_tenant_id
from hotline.storage.schema import BigInt, TenantBase, UtcDateTime

log = get_logger(__name__)

EventT = TypeVar("EventT", bound=Event)

events_table = Table(
    "events",
    TenantBase.metadata,
    Column("seq", BigInt, primary_key=True, autoincrement=False),
    Column("id", String(64), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("call_id", String(64), nullable=True),
    Column("occurred_at", UtcDateTime(), nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_events_type_call_id", "type", "call_id"),
    Index("ix_events_call_id_seq", "call_id", "seq"),
)

DEFAULT_BATCH_WINDOW: Final = 0.002
DEFAULT_MAX_BATCH: Final = 1000
MAX_READ_LIMIT: Final = 10_000
_CONFLICT_RETRIES: Final = 3


class EventLogClosed(StorageError):
    pass


class CorruptEventLog(StorageError):
    """A stored event does not belong where it was found."""


@dataclass
class _Pending:
    event: Event
    future: asyncio.Future[Event]


class _TenantWriter:
    """Owns the seq counter of one tenant and commits its appends in batches."""

    def __init__(self, owner: EventLog, tenant: str) -> None:
        self.owner = owner
        self.tenant = tenant
        self.queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self.next_seq: int | None = None
        self.batches_committed = 0
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"eventlog-writer:{tenant}")

    async def _run(self) -> None:
        batch: list[_Pending] = []
        try:
            stopping = False
            while not stopping:
                first = await self.queue.get()
                if first is None:
                    break
                batch = [first]
                if self.queue.empty() and self.owner.batch_window > 0:
                    await asyncio.sleep(self.owner.batch_window)
                while len(batch) < self.owner.max_batch:
                    try:
                        item = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                try:
                    await self._commit(batch)
                except Exception as error:  # the writer must survive anything one batch does
                    log.exception("event log batch failed", tenant=self.tenant, size=len(batch))
                    _fail(batch, error)
                batch = []
        finally:
            # Cancelled (close timed out): nobody may wait forever. The outcome of an interrupted commit is
            # unknown to its callers; appending the same event again is safe (deduplicated by id).
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None:
                    batch.append(item)
            _fail(batch, EventLogClosed("the event log closed before confirming this append"))

    async def _commit(self, batch: list[_Pending]) -> None:
        storage = self.owner.storage
        # Retried appends are rare: look for already-logged ids only after the unique index objected.
        look_for_logged = False
        for attempt in range(_CONFLICT_RETRIES):
            try:
                async with storage.tenant_session(self.tenant) as session:
                    if self.next_seq is None:
                        current = await session.scalar(select(func.max(events_table.c.seq)))
                        self.next_seq = (current or 0) + 1
                    known: dict[str, Event] = {}
                    if look_for_logged:
                        ids = list({pending.event.id for pending in batch})
                        rows = await session.execute(
                            select(events_table.c.id, events_table.c.payload).where(
                                events_table.c.id.in_(ids)
                            )
                        )
                        for event_id, payload in rows:
                            known[event_id] = parse_event(payload)
                    next_seq = self.next_seq
                    results: list[Event] = []
                    fresh: list[Event] = []
                    for pending in batch:
                        logged = known.get(pending.event.id)
                        if logged is None:
                            logged = known[pending.event.id] = pending.event.with_seq(next_seq)
                            next_seq += 1
                            fresh.append(logged)
                        results.append(logged)
                    if fresh:
                        await session.execute(insert(events_table), [_row(event) for event in fresh])
                # Committed: only now do the seqs count and may anyone hear of the events.
                self.next_seq = next_seq
                break
            except IntegrityError:
                # An id already logged (a retried append), or another writer (node) took these seqs:
                # re-read the maximum, skip logged ids, and try again.
                self.next_seq = None
                look_for_logged = True
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
            except BaseException:
                self.next_seq = None
                raise
        self.batches_committed += 1
        bus = self.owner.bus
        if bus is not None:
            for event in fresh:
                try:
                    await bus.publish(event)
                except Exception:
                    log.exception("publishing a logged event failed", tenant=self.tenant, seq=event.seq)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _row(event: Event) -> dict[str, object]:
    return {
        "seq": event.seq,
        "id": event.id,
        "type": event.type,
        "call_id": event_call_id(event),
        "occurred_at": event.occurred_at,
        "payload": event.model_dump_json(),
    }


class EventLog:
    """Appends events to their tenant's log, then publishes them; reads them back for replay."""

    def __init__(
        self,
        storage: Storage,
        bus: EventBus | None = None,
        *,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.storage = storage
        self.bus = bus
        self.batch_window = batch_window
        self.max_batch = max_batch
        self._writers: dict[str, _TenantWriter] = {}
        self._closed = False

    async def append(self, event: EventT) -> EventT:
        """Log `event` durably and publish it; returns it with its seq."""
        (future,) = await self._enqueue([event])
        logged = await asyncio.shield(future)
        return cast(EventT, logged)

    async def append_many(self, events: Sequence[Event]) -> list[Event]:
        """Log several events, in this order (consecutive seqs per tenant unless others interleave)."""
        futures = await self._enqueue(events)
        return list(await asyncio.gather(*(asyncio.shield(future) for future in futures)))

    async def _enqueue(self, events: Sequence[Event]) -> list[asyncio.Future[Event]]:
        if self._closed:
            raise EventLogClosed("the event log is closed")
        for event in events:
            if event.seq is not None:
                raise ValueError(f"{event.type} {event.id} already has seq {event.seq}; append the original")
            tenant = validate_tenant_id(event.tenant)
            if tenant not in self._writers and not await self.storage.tenant_database_exists(tenant):
                # Fail here rather than inside a batch shared with other callers.
                raise UnknownTenant(f"tenant {tenant!r} has no database")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Event]] = []
        # No awaits from here on: the events enter their writers' queues in the order given.
        for event in events:
            writer = self._writers.get(event.tenant)
            if writer is None:
                writer = self._writers[event.tenant] = _TenantWriter(self, event.tenant)
            future: asyncio.Future[Event] = loop.create_future()
            writer.queue.put_nowait(_Pending(event, future))
            futures.append(future)
        return futures

    async def read(self, tenant: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` events of `tenant` with seq > `after_seq`, in seq order."""
        validate_tenant_id(tenant)
        if not 1 <= limit <= MAX_READ_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_READ_LIMIT}")
        async with self.storage.tenant_session(tenant) as session:
            rows = await session.execute(
                select(events_table.c.seq, events_table.c.payload)
                .where(events_table.c.seq > after_seq)
                .order_by(events_table.c.seq)
                .limit(limit)
            )
            return [_checked(tenant, seq, payload) for seq, payload in rows]

    async def replay(self, tenant: str, after_seq: int = 0, page: int = 1000) -> AsyncIterator[Event]:
        """Every event after `after_seq`, page by page, until the end of the log as it is now."""
        end = await self.last_seq(tenant)
        position = after_seq
        while position < end:
            events = await self.read(tenant, position, min(page, MAX_READ_LIMIT))
            if not events:
                return
            for event in events:
                if event.seq is not None and event.seq > end:
                    return
                yield event
            last = events[-1].seq
            assert last is not None
            position = last

    async def last_seq(self, tenant: str) -> int:
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            current = await session.scalar(select(func.max(events_table.c.seq)))
        return int(current or 0)

    async def events_for_call(self, tenant: str, call_id: str) -> list[Event]:
        """Every logged event of one call (call_id column), in seq order."""
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            rows = await session.execute(
                select(events_table.c.seq, events_table.c.payload)
                .where(events_table.c.call_id == call_id)
                .order_by(events_table.c.seq)
            )
            return [_checked(tenant, seq, payload) for seq, payload in rows]

    async def calls_without_end(self, tenant: str) -> list[str]:
        """Calls that have `call.started` but no `call.ended` in the log, oldest first."""
        ended = events_table.alias("ended")
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            rows = await session.execute(
                select(events_table.c.call_id)
                .where(events_table.c.type == "call.started")
                .where(
                    ~exists()
                    .where(ended.c.call_id == events_table.c.call_id)
                    .where(ended.c.type == "call.ended")
                )
                .order_by(events_table.c.seq)
            )
            return [call_id for (call_id,) in rows if call_id is not None]

    def batches_committed(self, tenant: str) -> int:
        writer = self._writers.get(tenant)
        return writer.batches_committed if writer is not None else 0

    async def close(self, timeout: float = 10.0) -> None:
        """Finish queued appends (within `timeout` seconds per writer), then stop the writers."""
        self._closed = True
        writers = list(self._writers.values())
        for writer in writers:
            writer.queue.put_nowait(None)
        for writer in writers:
            try:
                await asyncio.wait_for(asyncio.shield(writer.task), timeout=timeout)
            except TimeoutError:
                writer.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer.task
        self._writers.clear()


def _checked(tenant: str, seq: int, payload: str) -> Event:
    event = parse_event(payload)
    if event.tenant != tenant or event.seq != seq:
        raise CorruptEventLog(f"event at seq {seq} of tenant {tenant!r} is not that tenant's event {seq}")
    return event
