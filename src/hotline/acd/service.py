"""The ACD service: queues callers, offers them to agents, and keeps every agent's state (DESIGN.md, "A
call's walk" steps 4-6).

    acd = AcdService(switch, events, storage, directory)
    await acd.start()                      # loads every tenant's queues and agents, restores agents
    switch.queue_handler = acd.enqueue     # the IVR's queue node (and numbers whose target is queue:<name>)
    await acd.login("acme", "8001", "extension:1001")        # -> the agent.state dict
    await acd.ready("acme", "8001")
    ...
    await acd.stop()

Public API (every ``async`` operation raises :class:`hotline.acd.agents.AcdError` with a ``code`` and a
sentence when it is refused: ``unknown_tenant``, ``unknown_agent``, ``not_logged_in``, ``bad_device``,
``device_unavailable``, ``unknown_queue``, ``unknown_reason``, ``not_in_wrap_up``, ``disposition_required``,
``unknown_disposition``, ``no_such_call``, ``not_supported``, ``bad_state``...):

- ``enqueue(call, request) -> QueueOutcome``: ``call.queued``, music on hold, announcements of position and
  expected wait, overflow (ACD-06/07/21), maximum wait and length (ACD-19); returns ``answered`` once an
  agent's leg is bridged to the caller, ``abandoned``, ``timeout``, ``overflow`` or ``unavailable``.
- ``run_queue_target(call, queue)``: a number whose target is ``queue:<name>`` (no IVR flow in front).
- Agents: ``login(tenant, agent_id, device, queues=None)`` (the agent is then not ready; ``ready`` makes
  them available), ``ready``, ``not_ready(reason)``, ``logout``, ``end_wrapup(disposition, notes)``,
  ``extend_wrapup(seconds)``, ``hangup(call_id)``, ``hold(call_id)``, ``resume(call_id)``; during a call,
  ``not_ready`` and ``logout`` take effect when the call and its wrap-up end.
- Supervisors: ``force_state(tenant, agent_id, state, by)`` (SUP-05, the change event names ``by``),
  ``reserve_call(tenant, call_id, agent_id, seconds, by)`` and ``set_priority(tenant, call_id, priority,
  by)`` (ACD-16).
- Views: ``agent_state(tenant, agent_id)`` (the ``agent.state`` CTI event), ``snapshot(tenant)`` (the
  wallboard, docs/cti.md), ``queue_counts(tenant)`` (ACD-12), ``waiting_calls(tenant, queue=None)``.
- Call data the ACD reads: ``vip_level`` (0-9, raises priority by the queue's ``vip_boost`` per level),
  ``blacklisted`` (served last, ACD-20), ``preferred_agent`` (sticky, for the queue's ``sticky_seconds`` or
  20 s), ``dedicated_agent`` (only that agent while they are logged in).

Every agent state change is an ``agent.state_changed`` event; each offer a ``call.offered`` event with the
screen pop (ANI, DNIS, region, queue, wait, call data). Events go to the tenant's log in the order they
happen, through one writer task, so routing never waits for the database.

Zero stuck states: an offer rings for at most the queue's ``ring_timeout`` (then the agent is not ready,
"no_answer", ACD-09, and the call goes back to its place, FM-06); a watchdog releases an agent who is
reserved, ringing or on a call without a live call for more than ``stuck_seconds`` (30); every queued call
leaves the queue exactly once with one outcome (MET-01). Configuration changes apply at run time (ACD-18).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select

from hotline.acd.agents import (
    BUSY_STATES,
    CALL_STATES,
    EVENT_STATES,
    FROM_EVENT_STATES,
    NO_ANSWER,
    OFFER_STATES,
    REJECTED,
    SUPERVISOR,
    UNREACHABLE,
    AcdError,
    AgentState,
    AgentStatus,
    StateChange,
    parse_device,
)
from hotline.acd.config import OverflowRule, Queue, QueueDestination, ReasonCode
from hotline.acd.dialer import AcdCall, Dialer, RingResult, SwitchDialer
from hotline.acd.queues import QueueRuntime, WaitingCall
from hotline.acd.router import Offer, Router
from hotline.acd.strategies import wanted_skills
from hotline.events.models import (
    AgentStateChanged,
    AgentWrapupEnded,
    CallAnswered,
    CallDequeued,
    CallHeld,
    CallOffered,
    CallOfferFailed,
    CallQueued,
    CallResumed,
    Event,
    OfferFailure,
    parse_event,
)
from hotline.log import get_logger
from hotline.storage.eventlog import EventLog, events_table
from hotline.switch.control import (
    AllSkills,
    AnySkill,
    CallGone,
    NotSkill,
    QueueOutcome,
    QueueRequest,
    SkillAtLeast,
    SkillExpression,
    Speech,
)
from hotline.tenancy.masking import mask_number

log = get_logger("hotline.acd")

STUCK_SECONDS: Final = 30.0
WATCHDOG_INTERVAL: Final = 5.0
# Extra time a ring may take beyond the queue's ring timeout before the ACD stops waiting for the switch.
RING_GRACE: Final = 5.0
DEFAULT_STICKY_SECONDS: Final = 20.0
# How long an abandoned caller's enqueue waits for a running offer to wind down.
_WIND_DOWN_SECONDS: Final = 15.0
_LAST_AGENTS: Final = 100_000
_RESTORE_EVENTS: Final = 50_000
_FAILURE_REASONS: Final[dict[str, str]] = {
    "ring_no_answer": NO_ANSWER,
    "rejected": REJECTED,
    "unreachable": UNREACHABLE,
}


@dataclass(eq=False)
class _LiveCall:
    call: AcdCall
    waiting: WaitingCall
    request: QueueRequest
    ticket: asyncio.Future[QueueOutcome]
    offer: _OfferRun | None = None
    announce: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _OfferRun:
    offer: Offer
    rings: dict[str, asyncio.Task[RingResult]] = field(default_factory=dict)
    withdrawn: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Session:
    """An agent on an answered call."""

    call: AcdCall
    leg: Any
    agent_id: str
    queue: str
    answered_at: float
    hold_started: float | None = None
    hold_seconds: float = 0.0
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Tenant:
    tenant: str
    router: Router
    time_zone: ZoneInfo
    not_ready_reasons: dict[str, ReasonCode] = field(default_factory=dict)
    dispositions: dict[str, ReasonCode] = field(default_factory=dict)
    live: dict[str, _LiveCall] = field(default_factory=dict)
    offers: dict[str, _OfferRun] = field(default_factory=dict)  # call id -> its running offer
    sessions: dict[str, _Session] = field(default_factory=dict)  # agent id -> call
    last_agent: OrderedDict[str, str] = field(default_factory=OrderedDict)  # ANI -> agent (sticky)
    suspects: dict[str, tuple[int, float]] = field(default_factory=dict)  # agent -> (token, first seen)
    talk_of_last_call: dict[str, float] = field(default_factory=dict)


class _Outbox:
    """Appends events in the order they were put, one batch at a time, off the routing path."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self._pending: list[Event] = []
        self._put = 0
        self._done = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="acd-outbox")

    def put(self, event: Event) -> None:
        self._pending.append(event)
        self._put += 1
        self._wake.set()

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything put so far is logged (or failed and was logged as an error)."""
        target = self._put
        if self._task is None or self._done >= target:
            return
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait_for(lambda: self._done >= target), timeout)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self.events.append_many(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.error("acd.events_lost", count=len(batch), error=repr(error))
                self._done += len(batch)
                async with self._progress:
                    self._progress.notify_all()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pending:
            log.error("acd.events_lost", count=len(self._pending), error="closed before they were logged")
            self._pending = []
        self._done = self._put  # nobody waits for a writer that is gone
        async with self._progress:
            self._progress.notify_all()


class AcdService:
    def __init__(
        self,
        switch: Any,
        events: EventLog,
        storage: Any,
        directory: Any,
        *,
        dialer: Dialer | None = None,
        clock: Callable[[], float] = time.monotonic,
        stuck_seconds: float = STUCK_SECONDS,
        watchdog_interval: float = WATCHDOG_INTERVAL,
        manual_timers: bool = False,
    ) -> None:
        self.switch = switch
        self.events = events
        self.storage = storage
        self.directory = directory
        self.dialer: Dialer = dialer if dialer is not None else SwitchDialer(switch)
        self.clock = clock
        self.stuck_seconds = stuck_seconds
        self.watchdog_interval = watchdog_interval
        self.manual_timers = manual_timers
        self._tenants: dict[str, _Tenant] = {}
        self._outbox = _Outbox(events)
        self._timers: list[tuple[float, int, Callable[[float], None]]] = []
        self._timer_seq = itertools.count()
        self._timer_wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._reloads: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._stopping = False

    # ================================================================================== lifecycle

    async def start(self) -> None:
        """Load every active tenant's ACD configuration and restore logged-in agents from the event log."""
        self._stopping = False
        self._outbox.start()
        self._unsubscribe = self.directory.subscribe(self._config_changed)
        for info in self.directory.tenants():
            if getattr(info, "status", "active") != "active":
                continue
            try:
                await self._load(info.id)
                await self._restore(info.id)
                self._static_logins(self._tenants[info.id])
            except Exception as error:  # one tenant's broken data must not keep the others from routing
                log.error("acd.tenant_load_failed", tenant=info.id, error=repr(error))
        self._schedule(self.clock() + self.watchdog_interval, self._watchdog)
        if not self.manual_timers:
            self._timer_task = asyncio.get_running_loop().create_task(self._run_timers(), name="acd-timers")
        self._started = True

    async def stop(self) -> None:
        """Withdraw running offers, send waiting callers back ("unavailable"), log what is pending."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None
        for task in list(self._reloads.values()):
            task.cancel()
        for tenant in self._tenants.values():
            for run in list(tenant.offers.values()):
                if run.task is not None:
                    run.task.cancel()
        offers = [run.task for t in self._tenants.values() for run in t.offers.values() if run.task]
        await asyncio.gather(*offers, return_exceptions=True)
        for tenant in self._tenants.values():
            for live in list(tenant.live.values()):
                self._finish(
                    tenant, live, "unavailable", QueueOutcome("unavailable"), target="acd_stopped", force=True
                )
            for session in tenant.sessions.values():
                if session.task is not None:
                    session.task.cancel()
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._outbox.close()
        self._timers.clear()
        self._tenants.clear()
        self._started = False

    # ================================================================================== configuration

    def _config_changed(self, tenant: str) -> None:
        """Directory listener (ACD-18): reload the tenant's queues, agents, skills and reason codes."""
        if self._stopping:
            return
        running = self._reloads.get(tenant)
        if running is not None and not running.done():
            running.cancel()
        task = asyncio.get_running_loop().create_task(self._reload(tenant), name=f"acd-reload-{tenant}")
        self._reloads[tenant] = task

    async def _reload(self, tenant: str) -> None:
        try:
            self._static_logins(await self._load(tenant))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.error("acd.reload_failed", tenant=tenant, error=repr(error))

    async def _load(self, tenant: str) -> _Tenant:
        from hotline.tenancy.config_document import load_tenant_config

        config = await load_tenant_config(self.storage, tenant)
        info = self.directory.tenant_info(tenant)
        zone = ZoneInfo(getattr(info, "time_zone", None) or "Asia/Shanghai")
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(tenant, Router(tenant), zone)
        state.time_zone = zone
        state.not_ready_reasons = {r.code: r for r in config.reason_codes if r.kind == "not_ready"}
        state.dispositions = {r.code: r for r in config.reason_codes if r.kind == "disposition"}
        gone = state.router.configure(config.queues, config.agents)
        now = self.clock()
        for agent_id in gone:
            agent = state.router.agents[agent_id]
            self._log_out(state, agent, now, changed_by="configuration")
        self._dispatch(state)
        log.info("acd.configured", tenant=tenant, queues=len(config.queues), agents=len(config.agents))
        return state

    def _static_logins(self, t: _Tenant) -> None:
        """Static agents (``login_on_start`` with a ``device``, like static queue members) are logged in
        there and ready; one already logged in (by hand, or restored after a restart) keeps its state."""
        seats = getattr(self.directory.tenant_info(t.tenant), "seat_limit", None)
        in_use = sum(1 for agent in t.router.agents.values() if agent.logged_in)
        now = self.clock()
        for agent_id, config in t.router.agent_configs.items():
            agent = t.router.agents.get(agent_id)
            if not config.login_on_start or config.device is None or agent is None or agent.logged_in:
                continue
            try:
                device = parse_device(config.device)
                problem = self.dialer.device_problem(t.tenant, device)
                if problem is not None:
                    raise AcdError("device_unavailable", problem)
                if seats is not None and in_use >= seats:
                    raise AcdError("seat_limit", f"all {seats} licensed seats are in use")
                self._emit_change(t.tenant, t.router.login(agent_id, device, None, now, _now()))
            except AcdError as error:
                log.warning("acd.static_login_failed", tenant=t.tenant, agent=agent_id, error=error.message)
                continue
            in_use += 1
            self._change(t, agent, "ready", now, changed_by="configuration")
        self._dispatch(t)

    async def _tenant(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is not None:
            return state
        if self.directory.view(tenant) is None:
            raise AcdError("unknown_tenant", f"there is no active tenant {tenant}")
        return await self._load(tenant)

    def _known(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            raise AcdError("unknown_tenant", f"there is no active tenant {tenant}")
        return state

    # ================================================================================== restart

    async def _restore(self, tenant: str) -> None:
        """Agents logged in before a restart stay logged in (AGT-02); a call they were on that is gone
        leaves them ready, one that is still live is followed again."""
        state = self._tenants[tenant]
        latest: dict[str, AgentStateChanged] = {}
        logins: dict[str, AgentStateChanged] = {}
        async with self.storage.tenant_session(tenant) as session:
            rows = await session.execute(
                select(events_table.c.payload)
                .where(events_table.c.type == "agent.state_changed")
                .order_by(events_table.c.seq.desc())
                .limit(_RESTORE_EVENTS)
            )
            for (payload,) in rows:
                event = parse_event(payload)
                assert isinstance(event, AgentStateChanged)
                agent_id = event.agent_id
                if agent_id not in latest:
                    latest[agent_id] = event
                if agent_id not in logins and event.device is not None:
                    logins[agent_id] = event
        now = self.clock()
        for agent_id, event in latest.items():
            login = logins.get(agent_id)
            if event.to_state == "logged_out" or login is None or login.device is None:
                continue
            agent = state.router.agents.get(agent_id)
            if agent is None or agent.logged_in or agent_id not in state.router.agent_configs:
                continue
            try:
                device = parse_device(login.device)
                queues = [q for q in login.queues or [] if q in state.router.queues]
                state.router.login(
                    agent_id, device, queues if login.queues is not None else None, now, _now()
                )
            except AcdError as error:
                log.warning("acd.restore_failed", tenant=tenant, agent=agent_id, error=error.message)
                continue
            restored = FROM_EVENT_STATES.get(event.to_state, "not_ready")
            call = self.dialer.find_call(tenant, event.call_id) if event.call_id else None
            if restored in CALL_STATES and call is not None:
                # the call outlived the ACD (only the service restarted): follow it again
                state.router.change(agent, "ready", now)
                state.router.change(agent, "reserved", now, call_id=call.call_id)
                state.router.change(agent, "ringing", now)
                state.router.change(agent, "on_call", now)
                session = _Session(call, None, agent_id, agent.queue_id or "", now)
                state.sessions[agent_id] = session
                session.task = self._spawn(self._attend(state, session))
            elif restored == "not_ready":
                state.router.change(agent, "not_ready", now, reason=event.reason_code)
            else:
                state.router.change(agent, "ready", now)
                if event.to_state != "ready":
                    # the call it was on ended with the old process: say so in the log
                    self._outbox.put(
                        AgentStateChanged(
                            tenant=tenant,
                            agent_id=agent_id,
                            from_state=event.to_state,
                            to_state="ready",
                            reason_code="restart",
                            call_id=event.call_id,
                        )
                    )
            log.info("acd.agent_restored", tenant=tenant, agent=agent_id, state=agent.state)
        self._dispatch(state)

    # ================================================================================== events

    def _emit_change(self, tenant: str, change: StateChange) -> None:
        old, new = EVENT_STATES[change.from_state], EVENT_STATES[change.to_state]
        if old == new and change.from_state in OFFER_STATES and change.to_state in OFFER_STATES:
            return  # reserved -> ringing is one state in the log
        self._outbox.put(
            AgentStateChanged(
                tenant=tenant,
                agent_id=change.agent_id,
                from_state=old,  # type: ignore[arg-type]
                to_state=new,  # type: ignore[arg-type]
                reason_code=change.reason,
                call_id=change.call_id,
                changed_by=change.changed_by,
                device=change.device,
                queues=list(change.queues) if change.queues is not None else None,
                occurred_at=change.at,
            )
        )

    def _change(
        self,
        t: _Tenant,
        agent: AgentStatus,
        to_state: AgentState,
        now: float,
        *,
        reason: str | None = None,
        call_id: str | None = None,
        changed_by: str | None = None,
    ) -> None:
        change = t.router.change(
            agent, to_state, now, reason=reason, call_id=call_id, changed_by=changed_by, wall=_now()
        )
        t.suspects.pop(agent.agent_id, None)
        self._emit_change(t.tenant, change)

    # ================================================================================== timers

    def _schedule(self, deadline: float, callback: Callable[[float], None]) -> None:
        first = self._timers[0][0] if self._timers else None
        heapq.heappush(self._timers, (deadline, next(self._timer_seq), callback))
        if first is None or deadline < first:
            self._timer_wake.set()

    def run_due(self) -> int:
        """Run every timer that is due by the clock; returns how many ran (tests drive time with this)."""
        ran = 0
        while self._timers and self._timers[0][0] <= self.clock():
            _, _, callback = heapq.heappop(self._timers)
            ran += 1
            try:
                callback(self.clock())
            except Exception:
                log.exception("acd.timer_failed")
        return ran

    async def _run_timers(self) -> None:
        while True:
            self.run_due()
            self._timer_wake.clear()
            delay = self._timers[0][0] - self.clock() if self._timers else 3600.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), max(0.0, delay))

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("acd.task_failed", error=repr(task.exception()))

    # ================================================================================== routing

    def _dispatch(self, t: _Tenant) -> None:
        if self._stopping:
            return
        for offer in t.router.dispatch(self.clock(), _now()):
            live = t.live.get(offer.call.call_id)
            for change in offer.changes:
                self._emit_change(t.tenant, change)
            if live is None:  # cannot happen: every routed call is live; never leave agents reserved
                log.error("acd.offer_without_call", tenant=t.tenant, call_id=offer.call.call_id)
                t.router.finish_call(offer.call, "abandoned")
                for agent in offer.agents:
                    self._change(t, agent, "ready", self.clock())
                continue
            run = _OfferRun(offer)
            live.offer = run
            t.offers[offer.call.call_id] = run
            run.task = self._spawn(self._run_offer(t, live, run))

    async def _ring(self, t: _Tenant, live: _LiveCall, agent: AgentStatus, ring_seconds: float) -> RingResult:
        assert agent.device is not None
        try:
            return await self.dialer.ring(live.call, t.tenant, agent.agent_id, agent.device, ring_seconds)
        except (asyncio.CancelledError, CallGone):
            raise
        except Exception as error:
            log.error("acd.ring_failed", tenant=t.tenant, agent=agent.agent_id, error=repr(error))
            return RingResult(failure="unreachable")

    async def _run_offer(self, t: _Tenant, live: _LiveCall, run: _OfferRun) -> None:
        offer = run.offer
        call = live.call
        waiting = live.waiting
        runtime = t.router.queues.get(offer.queue)
        ring_seconds = runtime.config.ring_timeout if runtime is not None else 20.0
        now = self.clock()
        loop = asyncio.get_running_loop()
        ring_ids: dict[asyncio.Task[RingResult], str] = {}
        for agent in offer.agents:
            if agent.state != "reserved" or agent.call_id != waiting.call_id:
                continue
            self._change(t, agent, "ringing", now, call_id=waiting.call_id)
            self._outbox.put(
                CallOffered(
                    tenant=t.tenant,
                    call_id=waiting.call_id,
                    agent_id=agent.agent_id,
                    queue_id=offer.queue,
                    ani=call.ani or "",
                    withheld=call.ani is None,
                    dnis=call.dnis,
                    region=call.region,
                    waited_seconds=round(max(0.0, now - waiting.enqueued_at), 3),
                    device=str(agent.device) if agent.device is not None else None,
                    data=_json_data(call.data),
                )
            )
            task = loop.create_task(self._ring(t, live, agent, ring_seconds))
            run.rings[agent.agent_id] = task
            ring_ids[task] = agent.agent_id
        winner: tuple[str, Any] | None = None
        failures: list[tuple[str, OfferFailure]] = []
        extra_legs: list[Any] = []
        hangup = loop.create_task(call.wait_hung_up())
        pending: set[asyncio.Task[RingResult]] = set(ring_ids)
        deadline = loop.time() + ring_seconds + RING_GRACE
        cancelled = False
        try:
            while pending and winner is None and not call.hung_up:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(
                    {*pending, hangup}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for finished in done:
                    if finished is hangup or finished not in pending:
                        continue
                    ring = cast("asyncio.Task[RingResult]", finished)
                    pending.discard(ring)
                    agent_id = ring_ids[ring]
                    result = _ring_result(ring)
                    if result is None:
                        continue  # withdrawn (logout, force) or the caller went
                    if result.leg is not None:
                        if winner is None and not call.hung_up and agent_id not in run.withdrawn:
                            winner = (agent_id, result.leg)
                        else:
                            extra_legs.append(result.leg)
                    else:
                        failures.append((agent_id, result.failure or "unreachable"))
        except asyncio.CancelledError:
            # the caller left the queue (or the service stops): stop ringing, free the agents
            cancelled = True
            raise
        finally:
            hangup.cancel()
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            for task in pending:
                result = _ring_result(task)
                if result is not None and result.leg is not None:
                    extra_legs.append(result.leg)
            if cancelled and winner is not None:
                extra_legs.append(winner[1])
            for leg in extra_legs:
                await self._release(leg)
            t.offers.pop(waiting.call_id, None)
            live.offer = None
            if cancelled:
                self._withdraw_agents(t, offer, run, self.clock())
                self._dispatch(t)
        if self._stopping:
            if winner is not None:
                await self._release(winner[1])
            self._withdraw_agents(t, offer, run, self.clock())
            return
        now = self.clock()
        answered: set[str] = set()
        if winner is not None:
            agent_id, leg = winner
            answering = t.router.agents.get(agent_id)
            if (
                answering is None
                or answering.state not in OFFER_STATES
                or answering.call_id != waiting.call_id
                or waiting.status != "offering"
            ):
                await self._release(leg)
            else:
                try:
                    await self.dialer.connect(call, leg)
                except Exception as error:
                    if not isinstance(error, CallGone):
                        log.error(
                            "acd.connect_failed", tenant=t.tenant, call_id=waiting.call_id, error=repr(error)
                        )
                    await self._release(leg)
                    self._withdraw_agents(t, offer, run, self.clock())
                    if call.hung_up:
                        self._abandon(t, live)
                    else:
                        t.router.return_call(waiting)
                        self._after_return(t, live)
                    return
                answered.add(agent_id)
                self._answered(t, live, answering, leg, offer.queue)
        # everyone else who was offered this call
        for agent_id, reason in failures:
            if agent_id in answered or agent_id in run.withdrawn:
                continue
            offered = t.router.agents.get(agent_id)
            if offered is None or offered.state not in OFFER_STATES or offered.call_id != waiting.call_id:
                continue
            if call.hung_up:
                self._change(t, offered, "ready", now)
                continue
            if reason == "ring_no_answer":
                offered.figures.offers_no_answer += 1
            self._outbox.put(
                CallOfferFailed(
                    tenant=t.tenant,
                    call_id=waiting.call_id,
                    agent_id=agent_id,
                    reason=reason,
                    queue_id=offer.queue,
                )
            )
            # ACD-09: an agent who does not answer is not ready until they say otherwise.
            self._change(t, offered, "not_ready", now, reason=_FAILURE_REASONS[reason])
        for agent in offer.agents:
            if (
                agent.agent_id in answered
                or agent.state not in OFFER_STATES
                or agent.call_id != waiting.call_id
            ):
                continue
            if winner is None and not call.hung_up and agent.agent_id not in run.withdrawn:
                # rang past the timeout and the switch never said: treat as no answer
                agent.figures.offers_no_answer += 1
                self._outbox.put(
                    CallOfferFailed(
                        tenant=t.tenant,
                        call_id=waiting.call_id,
                        agent_id=agent.agent_id,
                        reason="ring_no_answer",
                        queue_id=offer.queue,
                    )
                )
                self._change(t, agent, "not_ready", now, reason=NO_ANSWER)
            else:
                self._change(t, agent, "ready", now)  # lost a ring-all race, or the caller went
        if answered:
            self._dispatch(t)
            return
        if call.hung_up:
            self._abandon(t, live)
            return
        t.router.return_call(waiting)
        self._after_return(t, live)

    def _after_return(self, t: _Tenant, live: _LiveCall) -> None:
        """A call back in its queue after a failed offer: timed out meanwhile, or routed again."""
        if live.waiting.status == "waiting" and self.clock() >= live.waiting.deadline:
            self._time_out(t, live)
        self._dispatch(t)

    def _withdraw_agents(self, t: _Tenant, offer: Offer, run: _OfferRun, now: float) -> None:
        for agent in offer.agents:
            if agent.state in OFFER_STATES and agent.call_id == offer.call.call_id:
                self._change(t, agent, "ready", now)

    async def _release(self, leg: Any) -> None:
        try:
            await asyncio.wait_for(self.dialer.release(leg), 5.0)
        except Exception as error:
            log.warning("acd.release_failed", error=repr(error))

    def _answered(self, t: _Tenant, live: _LiveCall, agent: AgentStatus, leg: Any, queue: str) -> None:
        now = self.clock()
        waiting = live.waiting
        call = live.call
        if not t.router.finish_call(waiting, "answered"):
            # the call left the queue while the leg was being bridged (its one outcome is logged): the
            # agent is on it all the same until it ends
            self._change(t, agent, "on_call", now, call_id=waiting.call_id)
            session = _Session(call, leg, agent.agent_id, queue, now)
            t.sessions[agent.agent_id] = session
            session.task = self._spawn(self._attend(t, session))
            return
        waiting.answered_queue = queue
        waiting.agent_id = agent.agent_id
        t.live.pop(waiting.call_id, None)
        if live.announce is not None:
            live.announce.cancel()
        self._change(t, agent, "on_call", now, call_id=waiting.call_id)
        agent.queue_id = queue
        agent.answered_at = now
        agent.figures.offers_answered += 1
        wait = max(0.0, now - waiting.enqueued_at)
        runtime = t.router.queues.get(queue)
        if runtime is not None:
            stats = self._stats(t, runtime)
            stats.answered += 1
            stats.answered_wait_seconds += wait
            if wait <= runtime.config.service_level_seconds:
                stats.answered_within_sl += 1
        self._outbox.put(
            CallAnswered(
                tenant=t.tenant,
                call_id=waiting.call_id,
                by="agent",
                agent_id=agent.agent_id,
                leg_id=getattr(leg, "id", None),
                queue_id=queue,
            )
        )
        for name in waiting.queues:
            self._outbox.put(
                CallDequeued(
                    tenant=t.tenant,
                    call_id=waiting.call_id,
                    queue_id=name,
                    outcome="answered" if name == queue else "overflowed",
                    agent_id=agent.agent_id if name == queue else None,
                )
            )
        if call.ani:
            t.last_agent[call.ani] = agent.agent_id
            t.last_agent.move_to_end(call.ani)
            while len(t.last_agent) > _LAST_AGENTS:
                t.last_agent.popitem(last=False)
        session = _Session(call, leg, agent.agent_id, queue, now)
        t.sessions[agent.agent_id] = session
        session.task = self._spawn(self._attend(t, session))
        if not live.ticket.done():
            live.ticket.set_result(
                QueueOutcome("answered", agent=agent.agent_id, waited_seconds=round(wait, 3))
            )

    async def _attend(self, t: _Tenant, session: _Session) -> None:
        await session.call.wait_hung_up()
        self._call_over(t, session)

    def _call_over(self, t: _Tenant, session: _Session) -> None:
        """The call an agent was on ended: wrap-up per the queue (ACD-08/10), then ready."""
        if t.sessions.get(session.agent_id) is not session:
            return
        del t.sessions[session.agent_id]
        agent = t.router.agents.get(session.agent_id)
        if agent is None or agent.state not in CALL_STATES or agent.call_id != session.call.call_id:
            return
        now = self.clock()
        if session.hold_started is not None:
            session.hold_seconds += now - session.hold_started
            session.hold_started = None
        talk = max(0.0, now - session.answered_at - session.hold_seconds)
        agent.figures.talk_seconds += talk
        agent.figures.hold_seconds += session.hold_seconds
        agent.figures.calls_handled += 1
        t.talk_of_last_call[agent.agent_id] = talk + session.hold_seconds
        runtime = t.router.queues.get(session.queue)
        config = runtime.config if runtime is not None else Queue(name="default")
        call_id = session.call.call_id
        if config.acw_mode == "none" or (
            config.acw_mode == "timed" and config.wrap_up_seconds <= 0 and not config.disposition_required
        ):
            self._count_handled(t, runtime, agent, 0.0)
            self._after_work(t, agent, now)
            return
        self._change(t, agent, "wrap_up", now, call_id=call_id)
        agent.queue_id = session.queue
        agent.wrap_up_started = now
        agent.wrap_up_deadline = None
        if config.acw_mode == "timed" and not config.disposition_required:
            agent.wrap_up_deadline = now + config.wrap_up_seconds
            token = agent.token
            self._schedule(agent.wrap_up_deadline, lambda at: self._wrap_up_due(t, agent, token, at))

    def _wrap_up_due(self, t: _Tenant, agent: AgentStatus, token: int, now: float) -> None:
        if agent.state != "wrap_up" or agent.token != token or agent.wrap_up_deadline is None:
            return
        if now < agent.wrap_up_deadline:
            return  # extended; a later timer ends it
        self._end_wrap_up(t, agent, now, ended_by="timer")

    def _end_wrap_up(
        self,
        t: _Tenant,
        agent: AgentStatus,
        now: float,
        *,
        ended_by: str,
        disposition: str | None = None,
        notes: str | None = None,
        changed_by: str | None = None,
        then: AgentState | None = None,
    ) -> None:
        acw = max(0.0, now - (agent.wrap_up_started or now))
        agent.figures.wrap_up_seconds += acw
        runtime = t.router.queues.get(agent.queue_id or "")
        self._count_handled(t, runtime, agent, acw)
        self._outbox.put(
            AgentWrapupEnded(
                tenant=t.tenant,
                agent_id=agent.agent_id,
                call_id=agent.call_id,
                disposition=disposition,
                fields={"notes": notes} if notes else {},
                ended_by=ended_by,  # type: ignore[arg-type]
            )
        )
        agent.wrap_up_started = None
        agent.wrap_up_deadline = None
        if then == "logged_out":
            self._log_out(t, agent, now, changed_by=changed_by)
            return
        self._after_work(t, agent, now, changed_by=changed_by)

    def _count_handled(
        self, t: _Tenant, runtime: QueueRuntime | None, agent: AgentStatus, acw: float
    ) -> None:
        if runtime is None:
            return
        stats = self._stats(t, runtime)
        stats.handled += 1
        stats.handle_seconds += t.talk_of_last_call.pop(agent.agent_id, 0.0) + acw

    def _after_work(self, t: _Tenant, agent: AgentStatus, now: float, changed_by: str | None = None) -> None:
        """After a call and its wrap-up: the state asked for meanwhile, else ready."""
        pending, agent.pending = agent.pending, None
        if pending is not None:
            state, reason, by = pending
            if state == "logged_out":
                self._log_out(t, agent, now, changed_by=by)
                return
            self._change(t, agent, state, now, reason=reason, changed_by=by or changed_by)
        else:
            self._change(t, agent, "ready", now, changed_by=changed_by)
        self._dispatch(t)

    def _log_out(self, t: _Tenant, agent: AgentStatus, now: float, changed_by: str | None = None) -> None:
        if agent.state == "logged_out":
            return
        if agent.state in OFFER_STATES:
            self._withdraw(t, agent)
        session = t.sessions.pop(agent.agent_id, None)
        if session is not None and session.task is not None:
            session.task.cancel()
        self._change(t, agent, "logged_out", now, changed_by=changed_by)
        self._dispatch(t)

    def _withdraw(self, t: _Tenant, agent: AgentStatus) -> None:
        """Stop ringing `agent` (logout, force); the offer goes on with the others or returns the call."""
        run = t.offers.get(agent.call_id or "")
        if run is None:
            return
        run.withdrawn.add(agent.agent_id)
        task = run.rings.get(agent.agent_id)
        if task is not None:
            task.cancel()

    # ================================================================================== calls

    async def enqueue(self, call: AcdCall, request: QueueRequest, *, _hops: int = 0) -> QueueOutcome:
        """Queue `call` until an agent answers it (the switch's queue_handler)."""
        started = self.clock()
        try:
            t = await self._tenant(call.tenant)
        except AcdError:
            return QueueOutcome("unavailable")
        runtime = t.router.queues.get(request.queue)
        if runtime is None or runtime.removed:
            log.warning("acd.unknown_queue", tenant=t.tenant, queue=request.queue, call_id=call.call_id)
            return QueueOutcome("unavailable")
        if call.hung_up:
            return QueueOutcome("abandoned")
        config = runtime.config
        if config.max_length is not None and len(runtime.calls) >= config.max_length:
            outcome = await self._refused(t, call, config.on_full, "full", _hops) if _hops < 3 else None
            if outcome is not None:
                return outcome
            return QueueOutcome("unavailable", overflow_target=_text(config.on_full))
        if not config.join_when_no_agents and not runtime.members:
            return QueueOutcome("unavailable")
        live = self._join(t, call, request, runtime, started)
        hangup: asyncio.Future[Any] = asyncio.ensure_future(call.wait_hung_up())
        try:
            await asyncio.wait([live.ticket, hangup], return_when=asyncio.FIRST_COMPLETED)
            if not live.ticket.done():
                self._abandon(t, live)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(live.ticket), _WIND_DOWN_SECONDS)
                if not live.ticket.done():
                    self._finish(t, live, "abandoned", QueueOutcome("abandoned"), force=True)
        except asyncio.CancelledError:
            # Whoever queued the call gave up on it (the IVR's watchdog): it leaves the queue now.
            if not live.ticket.done():
                self._leave(t, live)
            raise
        finally:
            hangup.cancel()
        outcome = live.ticket.result()
        await self._outbox.flush()
        return outcome

    def _join(
        self, t: _Tenant, call: AcdCall, request: QueueRequest, runtime: QueueRuntime, started: float
    ) -> _LiveCall:
        config = runtime.config
        now = self.clock()
        data = call.data
        priority = max(request.priority, config.priority) + config.vip_boost * _vip_level(data)
        if data.get("blacklisted") is True:
            priority = 0  # ACD-20: served last (rejecting or a message is the flow's choice)
        requirement = _requirement(request.skills) if request.skills is not None else config.skills
        max_wait = min(request.max_wait_seconds, config.max_wait)
        target, target_until = self._target_for(t, call, config, now)
        waiting = t.router.add_call(
            call.call_id,
            config.name,
            priority=min(100, priority),
            requirement=requirement,
            now=now,
            deadline=now + max_wait,
            ani=call.ani,
            target=target,
            target_until=target_until,
        )
        ticket: asyncio.Future[QueueOutcome] = asyncio.get_running_loop().create_future()
        live = _LiveCall(call, waiting, request, ticket)
        t.live[call.call_id] = live
        self._queued_event(t, waiting, config, overflow=False)
        with contextlib.suppress(CallGone):
            call.music_on_hold()
        self._schedule(waiting.deadline, lambda at: self._max_wait_due(t, live, at))
        if waiting.target is not None and waiting.target_until is not None:
            self._schedule(waiting.target_until, lambda at: self._target_due(t, live))
        rules = list(config.overflow)
        if request.overflow_queues:
            rules.append(
                OverflowRule(
                    after_seconds=request.overflow_after_seconds or 0.0, queues=list(request.overflow_queues)
                )
            )
        for rule in rules:
            self._schedule(now + rule.after_seconds, self._overflow_timer(t, live, rule))
        if request.announce_position and config.announce_every_seconds > 0:
            self._schedule(now + config.announce_every_seconds, lambda at: self._announce_due(t, live))
        self._dispatch(t)
        return live

    def _target_for(
        self, t: _Tenant, call: AcdCall, config: Queue, now: float
    ) -> tuple[str | None, float | None]:
        """A dedicated agent (call data ``dedicated_agent``: theirs while logged in), or a sticky one (call
        data ``preferred_agent``, or the agent who last served this caller when the queue is sticky)."""
        data = call.data
        dedicated = data.get("dedicated_agent")
        if isinstance(dedicated, str | int) and str(dedicated) in t.router.agents:
            return str(dedicated), None
        preferred = data.get("preferred_agent")
        if not isinstance(preferred, str | int) and config.sticky_seconds > 0 and call.ani:
            preferred = t.last_agent.get(call.ani)
        if isinstance(preferred, str | int) and str(preferred) in t.router.agents:
            return str(preferred), now + (config.sticky_seconds or DEFAULT_STICKY_SECONDS)
        return None, None

    def _queued_event(self, t: _Tenant, waiting: WaitingCall, config: Queue, *, overflow: bool) -> None:
        self._outbox.put(
            CallQueued(
                tenant=t.tenant,
                call_id=waiting.call_id,
                queue_id=config.name,
                priority=waiting.priority,
                skills=list(dict.fromkeys(wanted_skills(waiting.requirement))),
                overflow=overflow,
                service_level_seconds=config.service_level_seconds,
                short_abandon_seconds=config.short_abandon_seconds,
            )
        )

    async def _refused(
        self, t: _Tenant, call: AcdCall, destination: QueueDestination | None, why: str, hops: int = 0
    ) -> QueueOutcome | None:
        """A full queue with another queue as its destination queues the call there (ACD-19)."""
        if destination is not None and destination.kind == "queue" and destination.ref is not None:
            other = t.router.queues.get(destination.ref)
            if other is not None and not other.removed:
                log.info(
                    "acd.queue_refused", tenant=t.tenant, call_id=call.call_id, why=why, to=destination.ref
                )
                return await self.enqueue(call, QueueRequest(queue=destination.ref), _hops=hops + 1)
        return None

    def _abandon(self, t: _Tenant, live: _LiveCall) -> None:
        """The caller hung up: a waiting call leaves now; an offered one when its offer has wound down."""
        if live.waiting.status == "waiting":
            self._finish(t, live, "abandoned", QueueOutcome("abandoned"))
        elif live.waiting.status == "offering" and live.offer is None:
            self._finish(t, live, "abandoned", QueueOutcome("abandoned"), force=True)

    def _leave(self, t: _Tenant, live: _LiveCall) -> None:
        run = live.offer
        if run is not None and run.task is not None:
            run.task.cancel()  # its agents are freed once their ringing has stopped
        self._finish(t, live, "abandoned", QueueOutcome("abandoned"), force=True)

    def _finish(
        self,
        t: _Tenant,
        live: _LiveCall,
        outcome: str,
        result: QueueOutcome,
        *,
        target: str | None = None,
        force: bool = False,
    ) -> None:
        """The call leaves every queue with one outcome (MET-01): abandoned, timeout, diverted..."""
        waiting = live.waiting
        if waiting.status == "offering" and not force:
            return
        if not t.router.finish_call(waiting, outcome):
            return
        t.live.pop(waiting.call_id, None)
        if live.announce is not None:
            live.announce.cancel()
        now = self.clock()
        wait = max(0.0, now - waiting.enqueued_at)
        dequeued = {"abandoned": "abandoned", "timeout": "timeout"}.get(outcome, "diverted")
        for name in waiting.queues:
            self._outbox.put(
                CallDequeued(
                    tenant=t.tenant,
                    call_id=waiting.call_id,
                    queue_id=name,
                    outcome=dequeued,  # type: ignore[arg-type]
                    target=target,
                )
            )
        runtime = t.router.queues.get(waiting.queue)
        if runtime is not None:
            stats = self._stats(t, runtime)
            if outcome == "abandoned":
                if wait <= runtime.config.short_abandon_seconds:
                    stats.short_abandoned += 1
                else:
                    stats.abandoned += 1
            else:
                stats.diverted += 1
        if not live.ticket.done():
            live.ticket.set_result(
                QueueOutcome(
                    result.result,
                    agent=result.agent,
                    overflow_target=result.overflow_target,
                    waited_seconds=round(wait, 3),
                )
            )
        self._dispatch(t)

    def _max_wait_due(self, t: _Tenant, live: _LiveCall, now: float) -> None:
        if live.waiting.status == "waiting" and now >= live.waiting.deadline:
            self._time_out(t, live)
        # an offered call is looked at again when its offer ends (_after_return)

    def _time_out(self, t: _Tenant, live: _LiveCall) -> None:
        """ACD-19: the maximum wait passed; another queue as the destination keeps the call waiting."""
        waiting = live.waiting
        runtime = t.router.queues.get(waiting.queue)
        destination = runtime.config.on_max_wait if runtime is not None else None
        if destination is not None and destination.kind == "queue" and destination.ref is not None:
            other = t.router.queues.get(destination.ref)
            if (
                other is not None
                and destination.ref not in waiting.queues
                and t.router.add_queue(waiting, destination.ref, self.clock())
            ):
                self._queued_event(t, waiting, other.config, overflow=True)
                waiting.deadline = self.clock() + other.config.max_wait
                self._schedule(waiting.deadline, lambda at: self._max_wait_due(t, live, at))
                self._dispatch(t)
                return
        self._finish(
            t,
            live,
            "timeout",
            QueueOutcome("timeout", overflow_target=_text(destination)),
            target=_text(destination),
        )

    def _target_due(self, t: _Tenant, live: _LiveCall) -> None:
        waiting = live.waiting
        until = waiting.target_until
        if (
            waiting.status != "done"
            and waiting.target is not None
            and until is not None
            and until <= self.clock()
        ):
            t.router.release_target(live.waiting)
            self._dispatch(t)

    def _overflow_timer(self, t: _Tenant, live: _LiveCall, rule: OverflowRule) -> Callable[[float], None]:
        return lambda at: self._overflow_due(t, live, rule, at)

    def _overflow_due(self, t: _Tenant, live: _LiveCall, rule: OverflowRule, now: float) -> None:
        """ACD-06/07/21: also queue the call elsewhere (keeping its place), or divert it, when the rule's
        live conditions hold; else look again in a second."""
        waiting = live.waiting
        if waiting.status == "done":
            return
        runtime = t.router.queues.get(waiting.queue)
        if runtime is None:
            return
        if not self._overflow_applies(t, runtime, waiting, rule):
            if now + 1.0 < waiting.deadline:
                self._schedule(now + 1.0, lambda at: self._overflow_due(t, live, rule, at))
            return
        if rule.destination is not None and rule.destination.kind != "queue":
            if waiting.status == "waiting":
                self._stats(t, runtime).overflowed_out += 1
                self._finish(
                    t,
                    live,
                    "overflow",
                    QueueOutcome("overflow", overflow_target=str(rule.destination)),
                    target=str(rule.destination),
                )
            elif now + 1.0 < waiting.deadline:  # being offered: divert it if the offer fails
                self._schedule(now + 1.0, lambda at: self._overflow_due(t, live, rule, at))
            return
        targets = list(rule.queues)
        if rule.destination is not None and rule.destination.ref is not None:
            targets.append(rule.destination.ref)
        added = False
        for name in targets:
            other = t.router.queues.get(name)
            if other is None or other.removed:
                continue
            if rule.when_idle_at_least is not None and other.counts()["ready"] < rule.when_idle_at_least:
                continue
            if t.router.add_queue(waiting, name, now):
                added = True
                self._queued_event(t, waiting, other.config, overflow=True)
                self._stats(t, runtime).overflowed_out += 1
                self._stats(t, other).overflowed_in += 1
        if added:
            self._dispatch(t)

    def _overflow_applies(
        self, t: _Tenant, runtime: QueueRuntime, waiting: WaitingCall, rule: OverflowRule
    ) -> bool:
        if rule.when_waiting_over is not None and len(runtime.calls) <= rule.when_waiting_over:
            return False
        if rule.when_no_agents and runtime.members:
            return False
        if rule.when_expected_wait_over is not None:
            expected = runtime.expected_wait(runtime.position_of(waiting))
            if expected is not None and expected <= rule.when_expected_wait_over:
                return False
        if rule.when_idle_at_least is not None:
            names = list(rule.queues) + (
                [rule.destination.ref] if rule.destination and rule.destination.ref else []
            )
            return any(
                (other := t.router.queues.get(name)) is not None
                and other.counts()["ready"] >= rule.when_idle_at_least
                for name in names
            )
        return True

    def _announce_due(self, t: _Tenant, live: _LiveCall) -> None:
        if live.waiting.status != "waiting" or live.call.hung_up or self._stopping:
            return
        runtime = t.router.queues.get(live.waiting.queue)
        if runtime is None:
            return
        live.announce = self._spawn(self._announce(t, live, runtime))
        every = runtime.config.announce_every_seconds
        if every > 0:
            self._schedule(self.clock() + every, lambda at: self._announce_due(t, live))

    async def _announce(self, t: _Tenant, live: _LiveCall, runtime: QueueRuntime) -> None:
        """Position and expected wait (MET-09) in the caller's language, then music again."""
        position = runtime.position_of(live.waiting)
        expected = runtime.expected_wait(position)
        minutes = max(1, round(expected / 60)) if expected is not None else None
        if getattr(live.call, "language", "zh") == "en":
            text = f"You are number {position} in the queue."
            if minutes is not None:
                text += f" The expected wait is about {minutes} minute{'s' if minutes > 1 else ''}."
            prompt = Speech(text, "en")
        else:
            text = f"您前面还有{position - 1}位客户在等待。"
            if minutes is not None:
                text += f"预计等待时间约{minutes}分钟。"
            prompt = Speech(text, "zh")
        try:
            await live.call.play([prompt])
            if live.waiting.status == "waiting":
                live.call.music_on_hold()
        except CallGone:
            return

    async def run_queue_target(self, call: AcdCall, queue: str) -> None:
        """A number whose target is ``queue:<name>``: queue the call; when it comes back unanswered, take
        it to the queue's destination (an IVR flow through the switch's flow runner) or hang up."""
        try:
            await call.answer()  # the caller hears music while waiting
        except CallGone:
            return
        outcome = await self.enqueue(call, QueueRequest(queue=queue))
        if outcome.result == "answered":
            await call.wait_hung_up()
            return
        target = outcome.overflow_target or ""
        kind, _, ref = target.partition(":")
        runner = getattr(self.switch, "targets", {}).get("flow") if kind == "flow" else None
        if runner is not None and not call.hung_up:
            await runner(call, ref)
            return
        await call.hangup("no_agent" if outcome.result != "abandoned" else "normal_clearing")

    # ================================================================================== agents

    async def login(
        self, tenant: str, agent_id: str, device: str, queues: list[str] | None = None
    ) -> dict[str, Any]:
        """Log in on `device` to `queues` (default: the agent's configured queues); the agent is then not
        ready until ``ready``. Free seating (AGT-02): the device is the login's, not the agent's."""
        t = await self._tenant(tenant)
        parsed = parse_device(device)
        problem = self.dialer.device_problem(tenant, parsed)
        if problem is not None:
            raise AcdError("device_unavailable", problem)
        seats = getattr(self.directory.tenant_info(tenant), "seat_limit", None)
        agent = t.router.agents.get(agent_id)
        if seats is not None and agent is not None and not agent.logged_in:
            in_use = sum(1 for other in t.router.agents.values() if other.logged_in)
            if in_use >= seats:
                raise AcdError("seat_limit", f"all {seats} licensed seats are in use")
        change = t.router.login(agent_id, parsed, queues, self.clock(), _now())
        self._emit_change(tenant, change)
        log.info("acd.login", tenant=tenant, agent=agent_id, device=str(parsed))
        return t.router.agents[agent_id].view()

    def _logged_in(self, t: _Tenant, agent_id: str) -> AgentStatus:
        agent = t.router.agent(agent_id)
        if not agent.logged_in:
            raise AcdError("not_logged_in", f"agent {agent_id} is not logged in")
        return agent

    async def ready(self, tenant: str, agent_id: str) -> dict[str, Any]:
        """示闲. In wrap-up this ends it (unless the queue wants a disposition first); during a call it
        cancels a not-ready asked for meanwhile."""
        t = self._known(tenant)
        agent = self._logged_in(t, agent_id)
        now = self.clock()
        if agent.state == "not_ready":
            self._change(t, agent, "ready", now)
            self._dispatch(t)
        elif agent.state == "wrap_up":
            self._check_disposition(t, agent, None)
            self._end_wrap_up(t, agent, now, ended_by="agent")
        elif agent.state != "ready":
            agent.pending = None
        return agent.view()

    async def not_ready(self, tenant: str, agent_id: str, reason: str | None = None) -> dict[str, Any]:
        """示忙 with a tenant reason code; during a call or wrap-up it applies when they end (ACD-08)."""
        t = self._known(tenant)
        agent = self._logged_in(t, agent_id)
        if reason is not None and t.not_ready_reasons and reason not in t.not_ready_reasons:
            raise AcdError("unknown_reason", f"{reason!r} is not a not-ready reason of this tenant")
        if reason is not None and len(reason) > 64:
            raise AcdError("unknown_reason", "a reason code has at most 64 characters")
        if agent.state in ("ready", "not_ready"):
            self._change(t, agent, "not_ready", self.clock(), reason=reason)
        else:
            agent.pending = ("not_ready", reason, None)
        return agent.view()

    async def logout(self, tenant: str, agent_id: str) -> dict[str, Any]:
        """签出. A ringing offer goes to the next agent; during a call it applies when the call ends."""
        t = self._known(tenant)
        agent = t.router.agent(agent_id)
        if agent.logged_in:
            self._logout_or_defer(t, agent, None)
        return agent.view()

    def _logout_or_defer(self, t: _Tenant, agent: AgentStatus, by: str | None) -> None:
        now = self.clock()
        if agent.state in CALL_STATES or agent.state == "outbound":
            agent.pending = ("logged_out", None, by)
        elif agent.state == "wrap_up":
            self._end_wrap_up(
                t, agent, now, ended_by="supervisor" if by else "agent", changed_by=by, then="logged_out"
            )
        else:
            self._log_out(t, agent, now, changed_by=by)

    def _check_disposition(self, t: _Tenant, agent: AgentStatus, disposition: str | None) -> None:
        runtime = t.router.queues.get(agent.queue_id or "")
        if runtime is not None and runtime.config.disposition_required and not disposition:
            raise AcdError("disposition_required", "this queue needs a disposition before the next call")
        if disposition is not None and t.dispositions and disposition not in t.dispositions:
            raise AcdError("unknown_disposition", f"{disposition!r} is not a disposition of this tenant")

    async def end_wrapup(
        self, tenant: str, agent_id: str, disposition: str | None = None, notes: str | None = None
    ) -> dict[str, Any]:
        """End after-call work now, with the call's disposition and notes (AGT-09)."""
        t = self._known(tenant)
        agent = self._logged_in(t, agent_id)
        if agent.state != "wrap_up":
            raise AcdError("not_in_wrap_up", f"agent {agent_id} is not in wrap-up")
        if notes is not None and len(notes) > 4000:
            raise AcdError("notes_too_long", "notes have at most 4000 characters")
        self._check_disposition(t, agent, disposition)
        self._end_wrap_up(t, agent, self.clock(), ended_by="agent", disposition=disposition, notes=notes)
        return agent.view()

    async def extend_wrapup(self, tenant: str, agent_id: str, seconds: float) -> dict[str, Any]:
        """More time for after-call work (timed wrap-up)."""
        t = self._known(tenant)
        agent = self._logged_in(t, agent_id)
        if agent.state != "wrap_up":
            raise AcdError("not_in_wrap_up", f"agent {agent_id} is not in wrap-up")
        if not 0 < seconds <= 3600:
            raise AcdError("bad_seconds", "extend wrap-up by 1 s to 1 hour")
        if agent.wrap_up_deadline is not None:
            agent.wrap_up_deadline += seconds
            token = agent.token
            self._schedule(agent.wrap_up_deadline, lambda at: self._wrap_up_due(t, agent, token, at))
        return agent.view()

    async def force_state(self, tenant: str, agent_id: str, state: str, by: str) -> dict[str, Any]:
        """SUP-05: a supervisor forces an agent ready, not ready or logged out; the change event names
        `by`. A busy agent changes when the call ends."""
        t = self._known(tenant)
        agent = t.router.agent(agent_id)
        if state not in ("ready", "not_ready", "logged_out"):
            raise AcdError("bad_state", "force an agent to ready, not_ready or logged_out")
        log.info("acd.force_state", tenant=tenant, agent=agent_id, state=state, by=by, was=agent.state)
        if state == "logged_out":
            if agent.logged_in:
                self._logout_or_defer(t, agent, by)
            return agent.view()
        if not agent.logged_in:
            raise AcdError("not_logged_in", f"agent {agent_id} is not logged in")
        now = self.clock()
        if state == "ready":
            if agent.state == "not_ready":
                self._change(t, agent, "ready", now, changed_by=by)
                self._dispatch(t)
            elif agent.state == "wrap_up":
                self._end_wrap_up(t, agent, now, ended_by="supervisor", changed_by=by)
            elif agent.state != "ready":
                agent.pending = None
        elif agent.state in ("ready", "not_ready"):
            self._change(t, agent, "not_ready", now, reason=SUPERVISOR, changed_by=by)
        else:
            agent.pending = ("not_ready", SUPERVISOR, by)
        return agent.view()

    def _session(self, t: _Tenant, agent_id: str, call_id: str) -> _Session:
        self._logged_in(t, agent_id)
        session = t.sessions.get(agent_id)
        if session is None or session.call.call_id != call_id:
            raise AcdError("no_such_call", f"agent {agent_id} is not on call {call_id}")
        return session

    async def hangup(self, tenant: str, agent_id: str, call_id: str) -> dict[str, Any]:
        """The agent hangs up their call; wrap-up follows."""
        t = self._known(tenant)
        session = self._session(t, agent_id, call_id)
        await session.call.hangup("normal_clearing")
        self._call_over(t, session)
        return t.router.agents[agent_id].view()

    async def hold(self, tenant: str, agent_id: str, call_id: str) -> dict[str, Any]:
        t = self._known(tenant)
        session = self._session(t, agent_id, call_id)
        agent = t.router.agents[agent_id]
        if agent.state == "on_hold":
            return agent.view()
        await self.dialer.hold(session.call, session.leg)
        if t.sessions.get(agent_id) is session and agent.state == "on_call":
            session.hold_started = self.clock()
            self._change(t, agent, "on_hold", self.clock(), call_id=call_id)
            self._outbox.put(
                CallHeld(
                    tenant=tenant, call_id=call_id, agent_id=agent_id, leg_id=getattr(session.leg, "id", None)
                )
            )
        return agent.view()

    async def resume(self, tenant: str, agent_id: str, call_id: str) -> dict[str, Any]:
        t = self._known(tenant)
        session = self._session(t, agent_id, call_id)
        agent = t.router.agents[agent_id]
        if agent.state != "on_hold":
            return agent.view()
        await self.dialer.resume(session.call, session.leg)
        if t.sessions.get(agent_id) is session and agent.state == "on_hold":
            if session.hold_started is not None:
                session.hold_seconds += self.clock() - session.hold_started
                session.hold_started = None
            self._change(t, agent, "on_call", self.clock(), call_id=call_id)
            self._outbox.put(
                CallResumed(
                    tenant=tenant, call_id=call_id, agent_id=agent_id, leg_id=getattr(session.leg, "id", None)
                )
            )
        return agent.view()

    # ============================================================================ supervisor: queued calls

    def _queued(self, t: _Tenant, call_id: str) -> _LiveCall:
        live = t.live.get(call_id)
        if live is None or live.waiting.status == "done":
            raise AcdError("no_such_call", f"call {call_id} is not waiting in a queue")
        return live

    async def reserve_call(
        self, tenant: str, call_id: str, agent_id: str, seconds: float, by: str
    ) -> dict[str, Any]:
        """ACD-16: a supervisor keeps a waiting call for a named agent for `seconds`, then it is requeued
        for everyone (it never loses its place)."""
        t = self._known(tenant)
        live = self._queued(t, call_id)
        self._logged_in(t, agent_id)
        if not 0 < seconds <= 3600:
            raise AcdError("bad_seconds", "reserve a call for 1 s to 1 hour")
        until = self.clock() + seconds
        t.router.reserve_for(live.waiting, agent_id, until)
        self._schedule(until, lambda at: self._reservation_due(t, live, agent_id))
        log.info("acd.call_reserved", tenant=tenant, call_id=call_id, agent=agent_id, seconds=seconds, by=by)
        self._dispatch(t)
        return self._call_view(live)

    def _reservation_due(self, t: _Tenant, live: _LiveCall, agent_id: str) -> None:
        waiting = live.waiting
        if (
            waiting.status != "done"
            and waiting.target == agent_id
            and (waiting.target_until or 0) <= self.clock()
        ):
            t.router.release_target(waiting)
            self._dispatch(t)

    async def set_priority(self, tenant: str, call_id: str, priority: int, by: str) -> dict[str, Any]:
        """ACD-16: change a waiting call's priority (0-100)."""
        t = self._known(tenant)
        live = self._queued(t, call_id)
        if not 0 <= priority <= 100:
            raise AcdError("bad_priority", "priority runs from 0 to 100")
        t.router.set_priority(live.waiting, priority)
        log.info("acd.priority_changed", tenant=tenant, call_id=call_id, priority=priority, by=by)
        self._dispatch(t)
        return self._call_view(live)

    def _call_view(self, live: _LiveCall) -> dict[str, Any]:
        waiting = live.waiting
        return {
            "call_id": waiting.call_id,
            "queues": list(waiting.queues),
            "priority": waiting.priority,
            "status": waiting.status,
            "reserved_for": waiting.target,
            "waited_seconds": round(max(0.0, self.clock() - waiting.enqueued_at), 1),
            "ani_masked": mask_number(live.call.ani),
        }

    def waiting_calls(self, tenant: str, queue: str | None = None) -> list[dict[str, Any]]:
        """Calls waiting (or being offered), best placed first, for supervisors (SUP-09)."""
        t = self._known(tenant)
        lives = [live for live in t.live.values() if queue is None or queue in live.waiting.queues]
        lives.sort(key=lambda live: (live.waiting.rank, live.waiting.seq))
        return [self._call_view(live) for live in lives]

    # ================================================================================== watchdog

    def _watchdog(self, now: float) -> None:
        """Zero stuck states: an agent busy without a live call for `stuck_seconds` is released; a queued
        call whose caller has gone leaves its queue."""
        try:
            for t in list(self._tenants.values()):
                self._check_tenant(t, now)
        finally:
            if not self._stopping:
                self._schedule(now + self.watchdog_interval, self._watchdog)

    def _check_tenant(self, t: _Tenant, now: float) -> None:
        for agent in list(t.router.agents.values()):
            if agent.state not in BUSY_STATES:
                t.suspects.pop(agent.agent_id, None)
                continue
            if not self._stuck(t, agent):
                t.suspects.pop(agent.agent_id, None)
                continue
            token, first = t.suspects.setdefault(agent.agent_id, (agent.token, now))
            if token != agent.token:
                t.suspects[agent.agent_id] = (agent.token, now)
                continue
            if now - first >= self.stuck_seconds:
                log.warning(
                    "acd.agent_released",
                    tenant=t.tenant,
                    agent=agent.agent_id,
                    state=agent.state,
                    call_id=agent.call_id,
                )
                self._release_agent(t, agent, now)
        for live in list(t.live.values()):
            if live.waiting.status == "waiting" and not self.dialer.call_live(live.call):
                self._finish(t, live, "abandoned", QueueOutcome("abandoned"))

    def _stuck(self, t: _Tenant, agent: AgentStatus) -> bool:
        if agent.state in OFFER_STATES:
            run = t.offers.get(agent.call_id or "")
            if run is None or run.task is None or run.task.done():
                return True
            task = run.rings.get(agent.agent_id)
            return task is None or agent.agent_id in run.withdrawn
        session = t.sessions.get(agent.agent_id)
        return (
            session is None
            or session.call.call_id != agent.call_id
            or not self.dialer.call_live(session.call)
            or self.dialer.leg_ended(session.leg)
        )

    def _release_agent(self, t: _Tenant, agent: AgentStatus, now: float) -> None:
        t.suspects.pop(agent.agent_id, None)
        if agent.state in OFFER_STATES:
            call_id = agent.call_id or ""
            self._change(t, agent, "ready", now)
            live = t.live.get(call_id)
            run = t.offers.get(call_id)
            if (
                live is not None
                and live.waiting.status == "offering"
                and (run is None or run.task is None or run.task.done())
            ):
                t.offers.pop(call_id, None)
                live.offer = None
                if live.call.hung_up:
                    self._abandon(t, live)
                else:
                    t.router.return_call(live.waiting)
                    self._after_return(t, live)
            self._dispatch(t)
            return
        session = t.sessions.get(agent.agent_id)
        if session is not None and session.call.call_id == agent.call_id:
            if session.task is not None:
                session.task.cancel()
            if self.dialer.call_live(session.call):
                # the agent's leg is gone but the caller is still there, talking to nobody
                self._spawn(session.call.hangup("agent_lost"))
            self._call_over(t, session)
            return
        self._change(t, agent, "ready", now)
        self._dispatch(t)

    # ================================================================================== views

    def agent_state(self, tenant: str, agent_id: str) -> dict[str, Any]:
        """The ``agent.state`` CTI event for one agent (plus pending state, device, queues, figures)."""
        return self._known(tenant).router.agent(agent_id).view()

    def queue_counts(self, tenant: str) -> dict[str, int]:
        """Calls waiting per queue (ACD-12), offered ones included."""
        t = self._known(tenant)
        return {name: len(runtime.calls) for name, runtime in t.router.queues.items() if not runtime.removed}

    def snapshot(self, tenant: str) -> dict[str, Any]:
        """The wallboard (docs/cti.md): agents, queues with today's figures (MET-01/02/06/09), trunks."""
        t = self._known(tenant)
        now = self.clock()
        agents = []
        for agent in t.router.agents.values():
            if agent.agent_id not in t.router.agent_configs:
                continue
            session = t.sessions.get(agent.agent_id)
            live = t.live.get(agent.call_id or "")
            call = session.call if session is not None else (live.call if live is not None else None)
            agents.append(
                {
                    "agent_id": agent.agent_id,
                    "name": agent.name,
                    "state": agent.state,
                    "reason": agent.reason,
                    "since": agent.since_wall.isoformat(),
                    "seconds_in_state": round(max(0.0, now - agent.since), 1) if agent.logged_in else None,
                    "call_id": agent.call_id,
                    "queue": agent.queue_id,
                    "ani_masked": mask_number(call.ani) if call is not None else None,
                    "device": str(agent.device) if agent.device is not None and agent.logged_in else None,
                }
            )
        queues = [
            self._queue_view(t, runtime, now) for runtime in t.router.queues.values() if not runtime.removed
        ]
        return {"agents": agents, "queues": queues, "trunks": self._trunks(tenant)}

    def _queue_view(self, t: _Tenant, runtime: QueueRuntime, now: float) -> dict[str, Any]:
        stats = self._stats(t, runtime)
        counts = runtime.counts()
        waiting = [call for call in runtime.calls.values() if call.status != "done"]
        longest = max((now - call.enqueued_at for call in waiting), default=0.0)
        first_here = sum(1 for call in waiting if call.queue == runtime.name)
        excluded = stats.completed - stats.short_abandoned
        expected = runtime.expected_wait(len(waiting) + 1)
        config = runtime.config
        return {
            "queue": runtime.name,
            "name": config.display_name or runtime.name,
            "waiting": len(waiting),
            "longest_wait_seconds": round(longest, 1),
            "expected_wait_seconds": round(expected, 1) if expected is not None else None,
            "agents_ready": counts["ready"],
            "agents_not_ready": counts["not_ready"],
            "agents_on_call": counts["on_call"],
            "agents_ringing": counts["ringing"],
            "agents_wrap_up": counts["wrap_up"],
            "agents_logged_in": counts["logged_in"],
            "offered_today": stats.completed + first_here,
            "answered_today": stats.answered,
            "answered_within_sl_today": stats.answered_within_sl,
            "abandoned_today": stats.abandoned + stats.short_abandoned,
            "short_abandoned_today": stats.short_abandoned,
            "diverted_today": stats.diverted,
            "overflowed_in_today": stats.overflowed_in,
            "overflowed_out_today": stats.overflowed_out,
            "service_level_today": round(stats.answered_within_sl / excluded, 4) if excluded > 0 else None,
            "abandon_rate_today": round(stats.abandoned / excluded, 4) if excluded > 0 else None,
            "average_speed_of_answer_today": (
                round(stats.answered_wait_seconds / stats.answered, 1) if stats.answered else None
            ),
            "service_level_seconds": config.service_level_seconds,
            "service_level_target": config.service_level_target,
        }

    def _trunks(self, tenant: str) -> list[dict[str, Any]]:
        trunks = list(self.directory.trunks(tenant)) if hasattr(self.directory, "trunks") else []
        calls: Iterable[Any] = getattr(self.switch, "calls", {}).values() if self.switch is not None else ()
        from_trunks = [
            call
            for call in calls
            if getattr(call, "tenant", None) == tenant and call.data.get("origin") == "trunk"
        ]
        views = []
        for trunk in trunks:
            named = [call for call in from_trunks if call.data.get("trunk") == trunk.name]
            in_use = len(named) if named or len(trunks) > 1 else len(from_trunks)
            views.append(
                {"name": trunk.name, "channels_in_use": in_use, "channel_limit": trunk.channel_limit}
            )
        return views

    def _stats(self, t: _Tenant, runtime: QueueRuntime) -> Any:
        today = _today(t.time_zone)
        if runtime.stats.day != today:
            from hotline.acd.queues import QueueStats

            runtime.stats = QueueStats(day=today)
        return runtime.stats


def _now() -> datetime:
    return datetime.now(UTC)


def _today(zone: ZoneInfo) -> date:
    return datetime.now(zone).date()


def _text(destination: QueueDestination | None) -> str | None:
    return str(destination) if destination is not None else None


def _vip_level(data: dict[str, Any]) -> int:
    value = data.get("vip_level")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0
    try:
        return max(0, min(9, int(value)))
    except ValueError:
        return 0


_skill_expression: TypeAdapter[SkillExpression] = TypeAdapter(SkillExpression)


def _requirement(value: Any) -> SkillExpression | None:
    """A call's skill requirement; the JSON form (a dict) is accepted too."""
    if isinstance(value, SkillAtLeast | AllSkills | AnySkill | NotSkill):
        return value
    try:
        return _skill_expression.validate_python(value)
    except ValidationError as error:
        log.warning("acd.bad_skill_requirement", error=str(error))
        return None


def _ring_result(task: asyncio.Task[RingResult]) -> RingResult | None:
    if not task.done() or task.cancelled():
        return None
    error = task.exception()
    if error is not None:
        return None if isinstance(error, CallGone) else RingResult(failure="unreachable")
    return task.result()


def _json_data(data: dict[str, Any]) -> dict[str, Any]:
    """The call data for the screen pop; values that are not JSON become text rather than failing."""
    try:
        loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return loaded
    except (TypeError, ValueError):
        return {}
