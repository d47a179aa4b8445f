"""The CDR projection: one row per call (`cdr`) and one per leg (`cdr_legs`), derived from the event log.

    projection = CdrProjection(storage, event_log)
    await projection.apply(events)          # live: idempotent by seq, fills gaps from the log
    await projection.catch_up("acme")       # apply whatever the log has beyond the watermark
    await projection.rebuild("acme")        # empty the tables and replay the whole log
    task = projection.start(bus)            # follow the bus; resync from the log after missed events
    row = await projection.get_cdr("acme", call_id)

    appended = await reconcile_unfinished_calls(event_log, "acme")   # at startup, before taking calls

Definitions (SPEC §19). All durations come from event timestamps (monotonic clock when both ends read the
same one, else wall clock), in seconds rounded to milliseconds:

- `ivr_seconds`: time inside IVR nodes, not counting time in a queue.
- `queued_at`: first entry into an agent queue; the call belongs to that interval (MET conventions).
- `wait_seconds`: first queue entry to agent answer; for unanswered calls, to leaving the queue or to the
  end of the call. IVR time is excluded.
- `outcome` (MET-01), for calls that entered a queue only: `answered`, `short_abandon` (wait <= the
  queue's S), `abandon`, or `diverted` (a timeout or diversion sent it to voicemail, callback, ...).
  Exactly one per offered call; None for calls that never queued.
- `answered_within_sl`: answered with wait <= the answering queue's T (Ans_T of MET-01).
- `connected_seconds`: agent answer to transfer or end, summed; `hold_seconds` the customer's hold time;
  `talk_seconds` = connected - hold (MET-11); `wrapup_seconds` the agents' ACW for this call (MET-13).
- `queue_id`: the queue that answered the call, or else its first queue.
- `agent_id`: the first agent who answered; `last_agent_id` the last.
- `ivr_self_served`: a self-service success node was passed and the call never queued (MET-31).
"""

from __future__ import annotations

import asyncio
import copy
import operator
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.events.bus import DEFAULT_QUEUE_SIZE, EventBus, EventsMissed, SubscriptionClosed
from hotline.events.models import (
    AgentStateChanged,
    AgentWrapupEnded,
    CallAnswered,
    CallDataChanged,
    CallDequeued,
    CallEnded,
    CallEvent,
    CallHeld,
    CallOffered,
    CallOfferFailed,
    CallQueued,
    CallResumed,
    CallStarted,
    CallTransferred,
    EndCause,
    Event,
    IvrNodeEntered,
    IvrNodeExited,
    LegAnswered,
    LegCreated,
    LegEnded,
    RecordingStarted,
    RecordingStopped,
    clock_seconds,
    event_call_id,
    parse_event,
)
from hotline.log import get_logger
from hotline.reporting.projection import read_watermark, write_watermark
from hotline.storage.engines import Storage, validate_tenant_id
from hotline.storage.eventlog import EventLog, events_table
from hotline.storage.schema import BigInt, TenantBase, UtcDateTime

GATHER_SECONDS: Final = 0.2

log = get_logger(__name__)

PROJECTION_NAME: Final = "cdr"
OUTCOMES: Final = ("answered", "short_abandon", "abandon", "diverted")

cdr_table = Table(
    "cdr",
    TenantBase.metadata,
    Column("call_id", String(64), primary_key=True),
    Column("first_seq", BigInt, nullable=False),
    Column("last_seq", BigInt, nullable=False),
    Column("direction", String(16)),
    Column("ani", String(64)),
    Column("withheld", Boolean, nullable=False),
    Column("dnis", String(64)),
    Column("region", String(64)),
    Column("trunk", String(128)),
    Column("entry_target", String(128)),
    Column("started_at", UtcDateTime()),
    Column("system_answered_at", UtcDateTime()),
    Column("ivr_started_at", UtcDateTime()),
    Column("ivr_seconds", Float, nullable=False),
    Column("ivr_last_node", String(64)),
    Column("ivr_self_served", Boolean, nullable=False),
    Column("queued_at", UtcDateTime()),
    Column("first_queue_id", String(64)),
    Column("queue_id", String(64)),
    Column("overflowed", Boolean, nullable=False),
    Column("offered_at", UtcDateTime()),
    Column("offer_count", Integer, nullable=False),
    Column("offer_failures", Integer, nullable=False),
    Column("agent_answered_at", UtcDateTime()),
    Column("agent_id", String(64)),
    Column("last_agent_id", String(64)),
    Column("wait_seconds", Float),
    Column("answered_within_sl", Boolean),
    Column("connected_seconds", Float, nullable=False),
    Column("hold_seconds", Float, nullable=False),
    Column("hold_count", Integer, nullable=False),
    Column("talk_seconds", Float, nullable=False),
    Column("transfer_count", Integer, nullable=False),
    Column("wrapup_seconds", Float, nullable=False),
    Column("disposition", String(128)),
    Column("wrapup_fields", JSON, nullable=False),
    Column("ended_at", UtcDateTime()),
    Column("duration_seconds", Float),
    Column("hangup_cause", String(64)),
    Column("hangup_side", String(16)),
    Column("outcome", String(16)),
    Column("recording_id", String(64)),
    Column("recording_path", String(512)),
    Column("recording_format", String(16)),
    Column("recording_seconds", Float),
    Column("call_data", JSON, nullable=False),
    # Open intervals (start stamps) the projection needs to finish later; not for reports.
    Column("working", JSON, nullable=False),
    Index("ix_cdr_started_at", "started_at"),
    Index("ix_cdr_queued_at", "queued_at"),
    Index("ix_cdr_agent_id", "agent_id"),
)

cdr_legs_table = Table(
    "cdr_legs",
    TenantBase.metadata,
    Column("leg_id", String(64), primary_key=True),
    Column("call_id", String(64), nullable=False),
    Column("first_seq", BigInt, nullable=False),
    Column("last_seq", BigInt, nullable=False),
    Column("kind", String(16)),
    Column("direction", String(16)),
    Column("endpoint", String(256)),
    Column("agent_id", String(64)),
    Column("queue_id", String(64)),
    Column("created_at", UtcDateTime()),
    Column("answered_at", UtcDateTime()),
    Column("ended_at", UtcDateTime()),
    Column("ring_seconds", Float),
    Column("connected_seconds", Float),
    Column("offer_result", String(16)),
    Column("end_cause", String(64)),
    Column("sip_status", Integer),
    Column("recording_id", String(64)),
    Column("recording_path", String(512)),
    Column("recording_format", String(16)),
    Column("recording_seconds", Float),
    Column("working", JSON, nullable=False),
    Index("ix_cdr_legs_call_id", "call_id"),
)

Row = dict[str, Any]
Stamp = list[Any]  # [occurred_at ISO text, monotonic, boot_id]: JSON-friendly


# ------------------------------------------------------------------------------------------ time


def _stamp(event: Event) -> Stamp:
    return [event.occurred_at.isoformat(), event.monotonic, event.boot_id]


def _seconds_between(start: Stamp, end: Stamp) -> float:
    seconds = clock_seconds(
        datetime.fromisoformat(start[0]), start[1], start[2], datetime.fromisoformat(end[0]), end[1], end[2]
    )
    return round(seconds, 3)


def _seconds(start: Stamp, end: Event) -> float:
    return _seconds_between(start, _stamp(end))


def _add(total: float | None, seconds: float) -> float:
    return round((total or 0.0) + seconds, 3)


# ------------------------------------------------------------------------------------------ rows


def new_cdr_row(call_id: str, seq: int) -> Row:
    row: Row = {column.name: None for column in cdr_table.columns}
    row.update(
        call_id=call_id,
        first_seq=seq,
        last_seq=seq,
        withheld=False,
        ivr_seconds=0.0,
        ivr_self_served=False,
        overflowed=False,
        offer_count=0,
        offer_failures=0,
        connected_seconds=0.0,
        hold_seconds=0.0,
        hold_count=0,
        talk_seconds=0.0,
        transfer_count=0,
        wrapup_seconds=0.0,
        wrapup_fields={},
        call_data={},
        working={},
    )
    return row


def new_leg_row(leg_id: str, call_id: str, seq: int) -> Row:
    row: Row = {column.name: None for column in cdr_legs_table.columns}
    row.update(leg_id=leg_id, call_id=call_id, first_seq=seq, last_seq=seq, working={})
    return row


def _pause_ivr(row: Row, event: Event) -> None:
    started = row["working"].pop("ivr", None)
    if started is not None:
        row["ivr_seconds"] = _add(row["ivr_seconds"], _seconds(started, event))


def _close_hold(row: Row, event: Event) -> None:
    started = row["working"].pop("hold", None)
    if started is not None:
        row["hold_seconds"] = _add(row["hold_seconds"], _seconds(started, event))
        _update_talk(row)


def _close_connected(row: Row, event: Event) -> None:
    started = row["working"].pop("connected", None)
    if started is not None:
        row["connected_seconds"] = _add(row["connected_seconds"], _seconds(started, event))
        _update_talk(row)


def _update_talk(row: Row) -> None:
    row["talk_seconds"] = round(max(0.0, row["connected_seconds"] - row["hold_seconds"]), 3)


def _close_wrapup(row: Row, event: Event, agent_id: str) -> None:
    open_wrapups: dict[str, Stamp] = row["working"].get("wrapup", {})
    started = open_wrapups.pop(agent_id, None)
    if started is not None:
        row["wrapup_seconds"] = _add(row["wrapup_seconds"], _seconds(started, event))
    if not open_wrapups:
        row["working"].pop("wrapup", None)


# ----------------------------------------------------------------------------------------- folds


def fold_call(row: Row, event: Event) -> None:
    """Apply one event to a call's CDR row (in place). Pure: the same events give the same row."""
    working: dict[str, Any] = row["working"]
    at = event.occurred_at
    if isinstance(event, CallStarted):
        row.update(
            direction=event.direction,
            ani=event.ani,
            withheld=event.withheld,
            dnis=event.dnis,
            region=event.region,
            trunk=event.trunk,
            entry_target=event.entry_target,
            started_at=at,
        )
        working["start"] = _stamp(event)
    elif isinstance(event, CallAnswered):
        if event.by == "system":
            if row["system_answered_at"] is None:
                row["system_answered_at"] = at
        else:
            _pause_ivr(row, event)
            if row["agent_answered_at"] is None:
                row["agent_answered_at"] = at
                row["agent_id"] = event.agent_id
                if row["queued_at"] is not None:
                    wait = _seconds(working["first_queue"], event)
                    row["wait_seconds"] = wait
                    row["answered_within_sl"] = wait <= working["queue_params"]["sl"]
                    row["outcome"] = "answered"
                    row["queue_id"] = event.queue_id or working.get("current_queue") or row["queue_id"]
            row["last_agent_id"] = event.agent_id
            working.setdefault("connected", _stamp(event))
    elif isinstance(event, IvrNodeEntered):
        _pause_ivr(row, event)
        if row["ivr_started_at"] is None:
            row["ivr_started_at"] = at
        working["ivr"] = _stamp(event)
        row["ivr_last_node"] = event.node_id
    elif isinstance(event, IvrNodeExited):
        _pause_ivr(row, event)
        if event.self_service_success:
            working["self_service"] = True
    elif isinstance(event, CallQueued):
        _pause_ivr(row, event)
        params = {"sl": event.service_level_seconds, "short": event.short_abandon_seconds}
        if row["queued_at"] is None:
            row["queued_at"] = at
            row["first_queue_id"] = row["queue_id"] = event.queue_id
            working["first_queue"] = _stamp(event)
            working["first_params"] = params
        if event.overflow:
            row["overflowed"] = True
        working["current_queue"] = event.queue_id
        working["queue_params"] = params
        working.pop("diverted", None)
        working.pop("left_queue", None)
    elif isinstance(event, CallDequeued):
        if event.outcome == "overflowed":
            row["overflowed"] = True
        elif event.outcome in ("timeout", "diverted"):
            working["diverted"] = True
            working["left_queue"] = _stamp(event)
        elif event.outcome == "abandoned":
            working["left_queue"] = _stamp(event)
    elif isinstance(event, CallOffered):
        if row["offered_at"] is None:
            row["offered_at"] = at
        row["offer_count"] += 1
    elif isinstance(event, CallOfferFailed):
        row["offer_failures"] += 1
    elif isinstance(event, CallHeld):
        if "hold" not in working:
            working["hold"] = _stamp(event)
            row["hold_count"] += 1
    elif isinstance(event, CallResumed):
        _close_hold(row, event)
    elif isinstance(event, CallTransferred):
        row["transfer_count"] += 1
        _close_hold(row, event)
        _close_connected(row, event)
    elif isinstance(event, CallDataChanged):
        data = dict(row["call_data"])
        data.update(event.values)
        for key in event.removed:
            data.pop(key, None)
        row["call_data"] = data
    elif isinstance(event, CallEnded):
        _fold_end(row, event)
    elif isinstance(event, RecordingStarted):
        if row["recording_id"] is None:
            row.update(
                recording_id=event.recording_id, recording_path=event.path, recording_format=event.format
            )
    elif isinstance(event, RecordingStopped):
        if row["recording_id"] in (None, event.recording_id):
            row.update(
                recording_id=event.recording_id,
                recording_path=event.path,
                recording_format=event.format,
                recording_seconds=round(event.duration_seconds, 3),
            )
    elif isinstance(event, AgentStateChanged):
        if event.to_state == "wrap_up" and event.from_state != "wrap_up":
            working.setdefault("wrapup", {}).setdefault(event.agent_id, _stamp(event))
        elif event.from_state == "wrap_up" and event.to_state != "wrap_up":
            _close_wrapup(row, event, event.agent_id)
    elif isinstance(event, AgentWrapupEnded):
        _close_wrapup(row, event, event.agent_id)
        if event.disposition is not None:
            row["disposition"] = event.disposition
        if event.fields:
            row["wrapup_fields"] = {**row["wrapup_fields"], **event.fields}
    else:
        return
    row["last_seq"] = event.seq


def _fold_end(row: Row, event: CallEnded) -> None:
    if row["ended_at"] is not None:
        return  # a call ends once; a second end changes nothing
    working: dict[str, Any] = row["working"]
    row["ended_at"] = event.occurred_at
    if "start" in working:
        row["duration_seconds"] = _seconds(working["start"], event)
    _pause_ivr(row, event)
    _close_hold(row, event)
    _close_connected(row, event)
    row["hangup_cause"] = event.cause
    row["hangup_side"] = event.hangup_side
    if row["queued_at"] is not None and row["outcome"] is None:
        left = working.get("left_queue")
        first = working["first_queue"]
        wait = _seconds_between(first, left) if left is not None else _seconds(first, event)
        row["wait_seconds"] = wait
        row["answered_within_sl"] = False
        if working.get("diverted"):
            row["outcome"] = "diverted"
        else:
            short = working["first_params"]["short"]
            row["outcome"] = "short_abandon" if wait <= short else "abandon"
    row["ivr_self_served"] = bool(working.get("self_service")) and row["queued_at"] is None


def fold_leg(row: Row, event: Event) -> None:
    """Apply one event to a leg's row (in place)."""
    working: dict[str, Any] = row["working"]
    if isinstance(event, LegCreated):
        row.update(
            kind=event.kind, direction=event.direction, endpoint=event.endpoint, created_at=event.occurred_at
        )
        if event.agent_id is not None:
            row["agent_id"] = event.agent_id
        working["created"] = _stamp(event)
    elif isinstance(event, LegAnswered):
        if row["answered_at"] is None:
            row["answered_at"] = event.occurred_at
            if "created" in working:
                row["ring_seconds"] = _seconds(working["created"], event)
            working["answered"] = _stamp(event)
    elif isinstance(event, LegEnded):
        if row["ended_at"] is not None:
            return
        row.update(ended_at=event.occurred_at, end_cause=event.cause, sip_status=event.sip_status)
        if "answered" in working:
            row["connected_seconds"] = _seconds(working["answered"], event)
        elif "created" in working:
            row["ring_seconds"] = _seconds(working["created"], event)
        working.clear()
    elif isinstance(event, CallOffered):
        row.update(agent_id=event.agent_id, queue_id=event.queue_id)
    elif isinstance(event, CallOfferFailed):
        row["offer_result"] = event.reason
    elif isinstance(event, CallAnswered):
        row["offer_result"] = "answered"
    elif isinstance(event, RecordingStarted):
        if row["recording_id"] is None:
            row.update(
                recording_id=event.recording_id, recording_path=event.path, recording_format=event.format
            )
    elif isinstance(event, RecordingStopped):
        if row["recording_id"] in (None, event.recording_id):
            row.update(
                recording_id=event.recording_id,
                recording_path=event.path,
                recording_format=event.format,
                recording_seconds=round(event.duration_seconds, 3),
            )
    else:
        return
    row["last_seq"] = event.seq


_LEG_CREATING = (LegCreated, LegAnswered, LegEnded, CallOffered, CallOfferFailed)


def _leg_id(event: Event) -> str | None:
    if isinstance(event, CallAnswered) and event.by != "agent":
        return None
    value = getattr(event, "leg_id", None)
    return value if isinstance(value, str) else None


def fold(calls: dict[str, Row], legs: dict[str, Row], events: Iterable[Event]) -> None:
    """Fold events (in seq order) into call and leg rows keyed by id; new calls and legs get rows."""
    for event in events:
        assert event.seq is not None
        call_id = event_call_id(event)
        if call_id is not None:
            row = calls.get(call_id)
            # Agent events only annotate calls the log has already introduced.
            if row is None and isinstance(event, CallEvent):
                row = calls[call_id] = new_cdr_row(call_id, event.seq)
            if row is not None:
                fold_call(row, event)
        leg_id = _leg_id(event)
        if leg_id is not None and call_id is not None:
            leg = legs.get(leg_id)
            if leg is None and isinstance(event, _LEG_CREATING):
                leg = legs[leg_id] = new_leg_row(leg_id, call_id, event.seq)
            if leg is not None:
                fold_leg(leg, event)


# ----------------------------------------------------------------------------------- projection


class CdrProjection:
    """Keeps `cdr` and `cdr_legs` of each tenant equal to the fold of that tenant's log."""

    def __init__(self, storage: Storage, event_log: EventLog, *, batch_size: int = 500) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.storage = storage
        self.event_log = event_log
        self.batch_size = batch_size
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    def _lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())

    async def apply(self, events: Sequence[Event]) -> int:
        """Apply logged events (any tenants, any order); returns how many were newly applied."""
        by_tenant: dict[str, dict[int, Event]] = {}
        for event in events:
            if event.seq is None:
                raise ValueError(f"{event.type} {event.id} has no seq: project logged events only")
            by_tenant.setdefault(event.tenant, {})[event.seq] = event
        applied = 0
        for tenant, by_seq in by_tenant.items():
            async with self._lock(tenant):
                applied += await self._apply_tenant(tenant, [by_seq[seq] for seq in sorted(by_seq)])
        return applied

    async def _apply_tenant(self, tenant: str, events: list[Event]) -> int:
        applied = 0
        target = events[-1].seq
        assert target is not None
        while True:
            async with self.storage.tenant_session(tenant) as session:
                mark = await read_watermark(session, PROJECTION_NAME)
                if mark >= target:
                    return applied
                chunk: list[Event] = []
                for event in events:
                    assert event.seq is not None
                    if event.seq <= mark:
                        continue
                    if event.seq != mark + 1 + len(chunk) or len(chunk) >= self.batch_size:
                        break
                    chunk.append(event)
                if not chunk:
                    # A gap before these events: the log has the ones this projection missed.
                    chunk = await _read_log(session, tenant, mark, min(self.batch_size, target - mark))
                    if not chunk:
                        log.warning("events beyond the end of the log", tenant=tenant, seq=target)
                        return applied
                await self._fold_and_store(session, chunk)
                applied += len(chunk)

    async def catch_up(self, tenant: str) -> int:
        """Apply every logged event beyond the watermark; returns how many."""
        validate_tenant_id(tenant)
        async with self._lock(tenant):
            return await self._catch_up(tenant)

    async def _catch_up(self, tenant: str) -> int:
        applied = 0
        while True:
            async with self.storage.tenant_session(tenant) as session:
                mark = await read_watermark(session, PROJECTION_NAME)
                chunk = await _read_log(session, tenant, mark, self.batch_size)
                if not chunk:
                    return applied
                await self._fold_and_store(session, chunk)
                applied += len(chunk)

    async def rebuild(self, tenant: str) -> int:
        """Empty the CDR tables of `tenant` and replay its whole log; returns events applied."""
        validate_tenant_id(tenant)
        async with self._lock(tenant):
            async with self.storage.tenant_session(tenant) as session:
                await session.execute(delete(cdr_legs_table))
                await session.execute(delete(cdr_table))
                await write_watermark(session, PROJECTION_NAME, 0)
            return await self._catch_up(tenant)

    async def watermark(self, tenant: str) -> int:
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            return await read_watermark(session, PROJECTION_NAME)

    async def _fold_and_store(self, session: AsyncSession, events: list[Event]) -> None:
        call_ids = sorted({call_id for event in events if (call_id := event_call_id(event)) is not None})
        leg_ids = sorted({leg_id for event in events if (leg_id := _leg_id(event)) is not None})
        calls = await _load(session, cdr_table, "call_id", call_ids)
        legs = await _load(session, cdr_legs_table, "leg_id", leg_ids)
        before_calls, before_legs = set(calls), set(legs)
        fold(calls, legs, events)
        await _store(session, cdr_table, "call_id", calls, before_calls)
        await _store(session, cdr_legs_table, "leg_id", legs, before_legs)
        last = events[-1].seq
        assert last is not None
        await write_watermark(session, PROJECTION_NAME, last)

    # ------------------------------------------------------------------------------- following

    def start(
        self, bus: EventBus, *, tenant: str | None = None, maxsize: int = DEFAULT_QUEUE_SIZE
    ) -> asyncio.Task[None]:
        """Follow the bus in a task (subscribing now, so nothing published from here on is missed)."""
        subscription = bus.subscribe("*", tenant=tenant, maxsize=maxsize)

        async def follow() -> None:
            try:
                while True:
                    batch = await subscription.get_batch(self.batch_size)
                    # CDRs are not read live (the wallboard reads the ACD): gather what arrives in the next
                    # moment too, so a busy node writes one transaction per window instead of one per event
                    await asyncio.sleep(GATHER_SECONDS)
                    while subscription.pending and len(batch) < self.batch_size:
                        batch += await subscription.get_batch(self.batch_size - len(batch))
                    events = [item for item in batch if isinstance(item, Event)]
                    try:
                        if events:
                            await self.apply(events)
                        for item in batch:
                            if isinstance(item, EventsMissed):
                                for missed_tenant in item.after_seq:
                                    await self.catch_up(missed_tenant)
                    except Exception:
                        # The next event finds the watermark behind and reads the log: nothing is lost.
                        log.exception("CDR projection failed to apply a batch")
            except SubscriptionClosed:
                return
            finally:
                subscription.close()

        self._task = asyncio.get_running_loop().create_task(follow(), name="cdr-projection")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # --------------------------------------------------------------------------------- queries

    async def get_cdr(self, tenant: str, call_id: str) -> Row | None:
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            result = await session.execute(select(cdr_table).where(cdr_table.c.call_id == call_id))
            found = result.mappings().first()
        return _public(dict(found)) if found is not None else None

    async def list_cdrs(self, tenant: str) -> list[Row]:
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            result = await session.execute(select(cdr_table).order_by(cdr_table.c.first_seq))
            return [_public(dict(row)) for row in result.mappings()]

    async def list_legs(self, tenant: str, call_id: str | None = None) -> list[Row]:
        statement = select(cdr_legs_table).order_by(cdr_legs_table.c.first_seq)
        if call_id is not None:
            statement = statement.where(cdr_legs_table.c.call_id == call_id)
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            result = await session.execute(statement)
            return [_public(dict(row)) for row in result.mappings()]

    async def snapshot(self, tenant: str) -> tuple[list[Row], list[Row]]:
        """Every CDR and leg row including internal columns, ordered by id (for checks and tests)."""
        async with self.storage.tenant_session(validate_tenant_id(tenant)) as session:
            calls = await session.execute(select(cdr_table).order_by(cdr_table.c.call_id))
            legs = await session.execute(select(cdr_legs_table).order_by(cdr_legs_table.c.leg_id))
            return [dict(row) for row in calls.mappings()], [dict(row) for row in legs.mappings()]


def _public(row: Row) -> Row:
    row.pop("working", None)
    return row


async def _read_log(session: AsyncSession, tenant: str, after_seq: int, limit: int) -> list[Event]:
    rows = await session.execute(
        select(events_table.c.seq, events_table.c.payload)
        .where(events_table.c.seq > after_seq)
        .order_by(events_table.c.seq)
        .limit(limit)
    )
    events = []
    for seq, payload in rows:
        event = parse_event(payload)
        if event.tenant != tenant or event.seq != seq:
            raise ValueError(f"event log of {tenant!r} holds a foreign or misnumbered event at seq {seq}")
        events.append(event)
    return events


async def _load(session: AsyncSession, table: Table, key: str, ids: list[str]) -> dict[str, Row]:
    if not ids:
        return {}
    rows: dict[str, Row] = {}
    column = table.c[key]
    for start in range(0, len(ids), 500):
        result = await session.execute(select(table).where(column.in_(ids[start : start + 500])))
        for found in result.mappings():
            row = dict(found)
            # JSON columns come back as fresh objects, but copy anyway: folds mutate in place.
            row["working"] = copy.deepcopy(row["working"])
            rows[row[key]] = row
    return rows


async def _store(
    session: AsyncSession, table: Table, key: str, rows: dict[str, Row], existing: set[str]
) -> None:
    new = [row for row_id, row in sorted(rows.items(), key=operator.itemgetter(0)) if row_id not in existing]
    old = [row for row_id, row in sorted(rows.items(), key=operator.itemgetter(0)) if row_id in existing]
    if new:
        await session.execute(insert(table), new)
    if old:
        statement = (
            update(table)
            .where(table.c[key] == bindparam("_key"))
            .values(
                {
                    column.name: bindparam(column.name, type_=column.type)
                    for column in table.columns
                    if column.name != key
                }
            )
        )
        await session.execute(
            statement, [{"_key": row[key], **{k: v for k, v in row.items() if k != key}} for row in old]
        )


# --------------------------------------------------------------------------------- reconciliation


async def reconcile_unfinished_calls(event_log: EventLog, tenant: str) -> list[Event]:
    """Close calls left open by a crash: append `leg.ended` for open legs and `call.ended` (cause
    `node_restart`, side `system`) for every call with `call.started` but no `call.ended` in the log.

    Run at startup, for the tenants this node serves, before it takes calls. The synthetic events carry
    the timestamps of the call's last logged event: the last moment the call was known to be alive, so
    durations are not stretched by the downtime. Returns the appended events.
    """
    appended: list[Event] = []
    for call_id in await event_log.calls_without_end(tenant):
        history = await event_log.events_for_call(tenant, call_id)
        if not history:
            continue
        last = history[-1]
        open_legs: dict[str, None] = {}
        for event in history:
            if isinstance(event, LegCreated):
                open_legs[event.leg_id] = None
            elif isinstance(event, LegEnded):
                open_legs.pop(event.leg_id, None)
        # Stamped like the last logged event: the last moment the call was known to be alive.
        closing: list[Event] = [
            LegEnded(
                tenant=tenant,
                call_id=call_id,
                leg_id=leg_id,
                cause=EndCause.NODE_RESTART,
                occurred_at=last.occurred_at,
                monotonic=last.monotonic,
                boot_id=last.boot_id,
            )
            for leg_id in open_legs
        ]
        closing.append(
            CallEnded(
                tenant=tenant,
                call_id=call_id,
                cause=EndCause.NODE_RESTART,
                hangup_side="system",
                occurred_at=last.occurred_at,
                monotonic=last.monotonic,
                boot_id=last.boot_id,
            )
        )
        appended.extend(await event_log.append_many(closing))
        log.warning("closed a call left open by a restart", tenant=tenant, call_id=call_id)
    return appended
