"""Run an IVR flow for one call through the call-control API (DESIGN "A call's walk", steps 3-4).

    interpreter = Interpreter(flows=..., calendars=..., timezone="Asia/Shanghai")
    result = await interpreter.run(call, flow)          # -> FlowResult(outcome, cause, ...)

One :class:`Interpreter` serves every call of a tenant; the state of a run lives in the run. What the flow
learns goes into ``call.data`` (FM-11): the values collect, set and lookup nodes store at their paths,
the chosen ``language``, ``voicemail`` and ``callback`` requests, and under ``ivr``: ``flow``,
``version``, ``path`` (node ids; ``flow/node`` inside sub-flows), ``inputs`` (keys per node),
``results`` (lookup and queue results per node), ``outcome`` and ``self_service_success``.

Events go through ``call.event(type, **fields)`` (IVR-16). Node visits use the fields of
``hotline.events.models``: ``ivr.node_entered`` (flow_id, flow_version, node_id, node_type) and
``ivr.node_exited`` (the same plus input, exit_reason, next_node_id, self_service_success); durations
come from the event timestamps. At its end a run emits one ``call.data_changed`` (values, removed,
source="ivr") with the top-level call-data keys it set. Also emitted, with the fields shown:
``ivr.flow_started`` (flow_id, flow_version), ``ivr.flow_ended`` (flow_id, flow_version, outcome,
cause, visits, seconds, last_node, path), ``ivr.watchdog`` (flow_id, reason, node, visits, seconds),
``ivr.error`` (flow_id, node, error, message), ``ivr.voicemail_recorded`` (recording_id,
duration_seconds, mailbox, caller, caller_withheld, dnis, at: the work item of IVR-09) and
``ivr.callback_requested`` (number, queue, caller_withheld, requested_at; for ACD-15).

Bounds (FM-03): each node visit is limited by the node's ``timeout`` (then its default exit; ``fallback``
for lookups, ``timeout`` for queues); :class:`WatchdogLimits` caps the whole run's time and node visits
(then it hangs up with cause ``"ivr watchdog"``) and the sub-flow depth (the sub-flow node then takes
its default exit). A caller hang-up ends the run at once. An
exception inside the run hangs up this call with cause ``"ivr error"`` and logs ``ivr.error``; other
calls are untouched. Nothing here blocks the loop: waits are the protocol's awaitables and
``asyncio.timeout``.

Outcomes (:class:`FlowResult`): ``handed_off`` (queue answered or transfer done), ``hung_up`` (a hang-up
node or ``@hangup``), ``caller_hung_up``, ``returned`` (``@return`` at top level with
``hang_up_at_end=False``, e.g. an agent sent the caller into a verification flow, IVR-07/FM-12),
``watchdog`` and ``error``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import httpx

from hotline.ivr.calendar import BusinessCalendar, is_open
from hotline.ivr.patterns import compile_digit_pattern
from hotline.ivr.schema import (
    CUSTOMER_TIER_PATH,
    HANGUP,
    RESERVED_TARGETS,
    RETURN,
    BranchNode,
    CalendarCondition,
    CallbackNode,
    CollectNode,
    Condition,
    FilePrompt,
    Flow,
    HangupNode,
    LanguageNode,
    LocalizedText,
    LookupNode,
    MenuNode,
    NodeBase,
    PlayNode,
    PromptSpec,
    QueueNode,
    SetNode,
    SubflowNode,
    TimeCondition,
    TonePrompt,
    TransferNode,
    TtsPrompt,
    ValueCondition,
    VoicemailNode,
    WeekdayCondition,
)
from hotline.ivr.variables import MISSING, RESERVED_DATA_KEY, get_path, render, set_path
from hotline.log import get_logger
from hotline.switch.control import (
    DTMF_KEYS,
    AudioFile,
    CallControl,
    CallGone,
    Language,
    Prompt,
    QueueRequest,
    Silence,
    Speech,
    Tone,
    TransferTarget,
)

Outcome = Literal["handed_off", "hung_up", "caller_hung_up", "returned", "watchdog", "error"]
FlowSource = Callable[[str], Flow | None] | Mapping[str, Flow]

DATA_CHANGED: Final = "call.data_changed"
_message_tasks: set[asyncio.Future[_Step]] = set()
NODE_ENTERED: Final = "ivr.node_entered"
NODE_EXITED: Final = "ivr.node_exited"
FLOW_STARTED: Final = "ivr.flow_started"
FLOW_ENDED: Final = "ivr.flow_ended"
WATCHDOG: Final = "ivr.watchdog"
ERROR: Final = "ivr.error"
VOICEMAIL_RECORDED: Final = "ivr.voicemail_recorded"
CALLBACK_REQUESTED: Final = "ivr.callback_requested"

CAUSE_WATCHDOG: Final = "ivr watchdog"
CAUSE_ERROR: Final = "ivr error"
CAUSE_DEFAULT_EXIT: Final = "ivr default exit"

_MAX_LOOKUP_BYTES: Final = 256 * 1024
_MAX_REPEATS: Final = 3
_CALLBACK_NUMBER_DIGITS: Final = 20

_log = get_logger("hotline.ivr")
# Node types that keep keys typed ahead during an interruptible prompt for the next input node.
_KEEPS_TYPE_AHEAD = (
    MenuNode,
    CollectNode,
    LanguageNode,
    CallbackNode,
    SetNode,
    BranchNode,
    LookupNode,
    SubflowNode,
)


@dataclass(frozen=True, slots=True)
class WatchdogLimits:
    """Bounds of one run (FM-03). ``control_timeout`` bounds hang-up and event calls made while ending."""

    max_flow_seconds: float = 1800.0
    max_node_visits: int = 300
    max_subflow_depth: int = 8
    control_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class FlowResult:
    outcome: Outcome
    cause: str
    last_node: str | None
    visits: int
    seconds: float


class FlowRuntimeError(Exception):
    """The flow cannot go on (e.g. an exit to a node that does not exist in an unvalidated flow)."""


class _Finished(Exception):
    def __init__(self, outcome: Outcome, cause: str, reason: str) -> None:
        super().__init__(cause)
        self.outcome = outcome
        self.cause = cause
        self.reason = reason


class _WatchdogTripped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Step:
    """How a node visit ended: the exit taken (or an explicit ``target``), why, and the caller's input."""

    exit: str
    reason: str
    input: str | None = None
    target: str | None = None


@dataclass(slots=True)
class _OpenVisit:
    flow: Flow
    node: NodeBase
    started: float


@dataclass(slots=True)
class _Run:
    call: CallControl
    flow: Flow
    ivr: dict[str, Any]
    started: float
    visits: int = 0
    answered: bool = False
    pending_keys: str = ""
    last_exit_was_default: bool = False
    open_visits: list[_OpenVisit] = field(default_factory=list)
    last_label: str | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    return _as_text(left) == _as_text(right)


def _as_float(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(actual: Any, condition: ValueCondition) -> bool:
    present = actual is not MISSING and actual is not None and actual != ""
    op, expected = condition.op, condition.value
    if op == "exists":
        return present
    if op == "missing":
        return not present
    if not present:
        return op in ("ne", "not_in")
    if op in ("in", "not_in"):
        choices = expected if isinstance(expected, list) else [expected]
        found = any(_same(actual, choice) for choice in choices)
        return found if op == "in" else not found
    if op == "eq":
        return _same(actual, expected)
    if op == "ne":
        return not _same(actual, expected)
    if op == "prefix":
        return expected is not None and _as_text(actual).startswith(_as_text(expected))
    left, right = _as_float(actual), _as_float(expected)
    if left is None or right is None:
        return False
    return {"lt": left < right, "le": left <= right, "gt": left > right, "ge": left >= right}[op]


def _in_time_range(clock: time, start: time, end: time) -> bool:
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end  # wraps midnight; start == end means all day


class Interpreter:
    """Runs flows for calls. ``flows`` resolves sub-flow ids; ``calendars`` are the tenant's calendars
    by id; ``timezone`` is the tenant's zone for time and weekday conditions; ``http`` is a shared
    client for lookups (one per lookup otherwise); ``clock`` returns the current aware datetime."""

    def __init__(
        self,
        *,
        flows: FlowSource | None = None,
        calendars: Mapping[str, BusinessCalendar] | None = None,
        timezone: str | ZoneInfo = "Asia/Shanghai",
        limits: WatchdogLimits | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._flows: FlowSource = flows if flows is not None else {}
        self._calendars: Mapping[str, BusinessCalendar] = calendars or {}
        self._zone = timezone if isinstance(timezone, ZoneInfo) else ZoneInfo(timezone)
        self.limits = limits or WatchdogLimits()
        self._http = http
        self._clock = clock or (lambda: datetime.now(UTC))

    # --- a run -------------------------------------------------------------------------------------------

    async def run(self, call: CallControl, flow: Flow, *, hang_up_at_end: bool = True) -> FlowResult:
        loop = asyncio.get_running_loop()
        data_before = copy.deepcopy(call.data)
        ivr = self._prepare_data(call, flow)
        run = _Run(call=call, flow=flow, ivr=ivr, started=loop.time())
        log = _log.bind(tenant=call.tenant, call_id=call.call_id, flow=flow.id)
        await self._emit(run, FLOW_STARTED, flow_id=flow.id, flow_version=flow.version)

        body = asyncio.create_task(self._body(run), name=f"ivr-{call.call_id}")
        hangup_watch = asyncio.create_task(call.wait_hung_up(), name=f"ivr-hangup-{call.call_id}")
        try:
            done, _ = await asyncio.wait({body, hangup_watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            body.cancel()
            hangup_watch.cancel()
            await asyncio.gather(body, hangup_watch, return_exceptions=True)
            raise
        if body not in done:
            body.cancel()
            await asyncio.gather(body, return_exceptions=True)
        hangup_watch.cancel()
        await asyncio.gather(hangup_watch, return_exceptions=True)

        outcome: Outcome
        failure = body.exception() if body.done() and not body.cancelled() else None
        if body.cancelled() or isinstance(failure, CallGone):
            outcome, cause, reason = "caller_hung_up", "caller hung up", "caller_hung_up"
        elif failure is None:
            if hang_up_at_end:
                outcome, cause, reason = "hung_up", "normal", "flow ended"
                await self._hangup(run, cause)
            else:
                outcome, cause, reason = "returned", "returned", "returned"
        elif isinstance(failure, _Finished):
            outcome, cause, reason = failure.outcome, failure.cause, failure.reason
            if outcome == "hung_up":
                await self._hangup(run, cause)
        elif isinstance(failure, _WatchdogTripped):
            outcome, cause, reason = "watchdog", CAUSE_WATCHDOG, f"watchdog: {failure.reason}"
            log.warning("ivr watchdog", reason=failure.reason, node=run.last_label, visits=run.visits)
            await self._emit(
                run,
                WATCHDOG,
                flow_id=flow.id,
                reason=failure.reason,
                node=run.last_label,
                visits=run.visits,
                seconds=round(loop.time() - run.started, 3),
            )
            await self._hangup(run, CAUSE_WATCHDOG)
        else:
            outcome, cause, reason = "error", CAUSE_ERROR, "error"
            log.error("ivr flow failed", node=run.last_label, exc_info=failure)
            await self._emit(
                run,
                ERROR,
                flow_id=flow.id,
                node=run.last_label,
                error=type(failure).__name__,
                message=str(failure)[:500],
            )
            await self._hangup(run, CAUSE_ERROR)

        await self._close_open_visits(run, 0, reason)
        seconds = round(loop.time() - run.started, 3)
        ivr["outcome"] = outcome
        await self._emit_data_changes(run, data_before)
        await self._emit(
            run,
            FLOW_ENDED,
            flow_id=flow.id,
            flow_version=flow.version,
            outcome=outcome,
            cause=cause,
            visits=run.visits,
            seconds=seconds,
            last_node=run.last_label,
            path=list(ivr["path"]),
        )
        return FlowResult(outcome, cause, run.last_label, run.visits, seconds)

    def _prepare_data(self, call: CallControl, flow: Flow) -> dict[str, Any]:
        previous = call.data.get(RESERVED_DATA_KEY)
        inputs = previous.get("inputs") if isinstance(previous, dict) else None
        results = previous.get("results") if isinstance(previous, dict) else None
        ivr: dict[str, Any] = {
            "flow": flow.id,
            "version": flow.version,
            "path": [],
            # An agent may send the caller into a second flow (IVR-07): keep what the first one learned.
            "inputs": dict(inputs) if isinstance(inputs, dict) else {},
            "results": dict(results) if isinstance(results, dict) else {},
            "outcome": None,
        }
        call.data[RESERVED_DATA_KEY] = ivr
        call.data["language"] = call.language
        return ivr

    async def _emit_data_changes(self, run: _Run, before: dict[str, Any]) -> None:
        """One ``call.data_changed`` (source ivr) with the top-level keys the run set or changed."""
        data = run.call.data
        values = {key: value for key, value in data.items() if key not in before or before[key] != value}
        removed = [key for key in before if key not in data]
        if values or removed:
            await self._emit(run, DATA_CHANGED, values=copy.deepcopy(values), removed=removed, source="ivr")

    async def _body(self, run: _Run) -> None:
        try:
            async with asyncio.timeout(self.limits.max_flow_seconds):
                await self._walk(run, run.flow, 0)
        except TimeoutError:
            raise _WatchdogTripped("max_flow_seconds") from None

    async def _walk(self, run: _Run, flow: Flow, depth: int) -> None:
        """Visit nodes from the entry until ``@return`` (returns) or the run finishes (raises)."""
        nodes = flow.node_map()
        node_id = flow.entry
        while node_id != RETURN:
            if node_id == HANGUP:
                cause = CAUSE_DEFAULT_EXIT if run.last_exit_was_default else "normal"
                raise _Finished("hung_up", cause, "hangup")
            node = nodes.get(node_id)
            if node is None:
                raise FlowRuntimeError(f"flow {flow.id} has no node {node_id!r}")
            run.visits += 1
            if run.visits > self.limits.max_node_visits:
                raise _WatchdogTripped("max_node_visits")
            node_id = await self._visit(run, flow, node, depth)

    async def _visit(self, run: _Run, flow: Flow, node: NodeBase, depth: int) -> str:
        loop = asyncio.get_running_loop()
        label = node.id if depth == 0 else f"{flow.id}/{node.id}"
        run.last_label = label
        run.ivr["path"].append(label)
        if node.self_service_success:
            run.ivr["self_service_success"] = True
        await self._emit(run, NODE_ENTERED, **_node_fields(flow, node))
        if not isinstance(node, _KEEPS_TYPE_AHEAD) and not (
            isinstance(node, PlayNode) and node.interruptible
        ):
            run.pending_keys = ""  # keys typed ahead are for the next input, not past a queue or a notice
        level = len(run.open_visits)
        run.open_visits.append(_OpenVisit(flow, node, loop.time()))
        try:
            async with asyncio.timeout(node.timeout):
                step = await self._handle(run, flow, node, label, depth)
        except TimeoutError:
            await self._close_open_visits(run, level + 1, "parent_timeout")
            step = _Step(node.timeout_exit, "timeout")
        run.open_visits.pop()
        target = step.target or node.exit_target(step.exit)
        # Did the visit fall through to the default exit? (Names the cause if that leads to @hangup.)
        run.last_exit_was_default = step.target is None and (
            step.exit == "default" or getattr(node.exits, step.exit, None) is None
        )
        await self._emit(
            run,
            NODE_EXITED,
            **_node_fields(flow, node),
            input=_clip(step.input, 256),
            exit_reason=_clip(step.reason, 32),
            next_node_id=None if target in RESERVED_TARGETS else target,
            self_service_success=node.self_service_success,
        )
        return target

    async def _close_open_visits(self, run: _Run, level: int, reason: str) -> None:
        """Emit ``node_exited`` for visits cut short (innermost first) from ``level`` up."""
        while len(run.open_visits) > level:
            visit = run.open_visits.pop()
            await self._emit(
                run,
                NODE_EXITED,
                **_node_fields(visit.flow, visit.node),
                input=None,
                exit_reason=_clip(reason, 32),
                next_node_id=None,
                self_service_success=visit.node.self_service_success,
            )

    async def _handle(self, run: _Run, flow: Flow, node: NodeBase, label: str, depth: int) -> _Step:
        if isinstance(node, PlayNode):
            return await self._play(run, node)
        if isinstance(node, MenuNode):
            return await self._menu(run, node, label)
        if isinstance(node, CollectNode):
            return await self._collect(run, node, label)
        if isinstance(node, SetNode):
            return self._set(run, node)
        if isinstance(node, BranchNode):
            return self._branch(run, node)
        if isinstance(node, LookupNode):
            return await self._lookup(run, node, label)
        if isinstance(node, QueueNode):
            return await self._queue(run, node, label)
        if isinstance(node, TransferNode):
            return await self._transfer(run, node)
        if isinstance(node, VoicemailNode):
            return await self._voicemail(run, node)
        if isinstance(node, CallbackNode):
            return await self._callback(run, node, label)
        if isinstance(node, SubflowNode):
            return await self._subflow(run, flow, node, depth)
        if isinstance(node, LanguageNode):
            return await self._language(run, node, label)
        if isinstance(node, HangupNode):
            if node.prompts:
                await self._answer(run)
                await run.call.play(self._prompts(run, node.prompts))
            raise _Finished("hung_up", node.cause, "hangup")
        raise FlowRuntimeError(f"unknown node type {type(node).__name__}")

    # --- node types ----------------------------------------------------------------------------------------

    async def _play(self, run: _Run, node: PlayNode) -> _Step:
        if node.interruptible and run.pending_keys:
            return _Step("next", "skipped by type-ahead")
        await self._answer(run)
        key = await run.call.play(self._prompts(run, node.prompts), interruptible=node.interruptible)
        if node.interruptible and key and key in DTMF_KEYS:
            run.pending_keys += key  # the key belongs to the next menu or collect (type-ahead)
            return _Step("next", "interrupted", input=key)
        return _Step("next", "played")

    async def _one_key(
        self, run: _Run, prompts: Sequence[PromptSpec], timeout: float, interruptible: bool = True
    ) -> str:
        if run.pending_keys:
            key, run.pending_keys = run.pending_keys[0], run.pending_keys[1:]
            return key
        await self._answer(run)
        rendered = self._prompts(run, prompts)
        if not interruptible and rendered:
            await run.call.play(rendered)
            rendered = []
        keys = await run.call.collect(
            rendered, max_digits=1, timeout=timeout, inter_digit_timeout=timeout, terminator=None
        )
        return keys[:1]

    async def _menu(self, run: _Run, node: MenuNode, label: str) -> _Step:
        failures = repeats = 0
        lead: list[PromptSpec] = []
        while True:
            key = await self._one_key(run, [*lead, *node.prompts], node.input_timeout, node.interruptible)
            if key and key == node.repeat_key and repeats < _MAX_REPEATS:
                repeats += 1
                lead = []
                continue
            if key in node.options:
                run.ivr["inputs"][label] = key
                return _Step(f"option {key}", f"option {key}", input=key, target=node.options[key])
            failures += 1
            if failures > node.retries:
                return _Step("no_match" if key else "no_input", "no_match" if key else "no_input", input=key)
            lead = list(node.invalid_prompts if key else node.timeout_prompts)

    async def _collect(self, run: _Run, node: CollectNode, label: str) -> _Step:
        pattern = compile_digit_pattern(node.pattern) if node.pattern is not None else None
        failures = 0
        lead: list[PromptSpec] = []
        while True:
            digits = await self._gather_digits(run, node, [*lead, *node.prompts])
            shown = "*" * len(digits) if node.sensitive else digits
            if not digits and node.min_digits > 0:
                kind = "no_input"
            elif len(digits) < node.min_digits or (pattern is not None and not pattern.fullmatch(digits)):
                kind = "invalid"
            else:
                set_path(run.call.data, node.store_as, digits)
                run.ivr["inputs"][label] = shown
                return _Step("next", "collected", input=shown)
            failures += 1
            if failures > node.retries:
                return _Step(kind, kind, input=shown)
            lead = list(node.invalid_prompts if kind == "invalid" else node.timeout_prompts)

    async def _gather_digits(self, run: _Run, node: CollectNode, prompts: Sequence[PromptSpec]) -> str:
        typed_ahead, run.pending_keys = run.pending_keys, ""
        if typed_ahead:
            if node.terminator and node.terminator in typed_ahead:
                return typed_ahead.split(node.terminator, 1)[0][: node.max_digits]
            if len(typed_ahead) >= node.max_digits:
                return typed_ahead[: node.max_digits]
            more = await run.call.collect(
                [],
                max_digits=node.max_digits - len(typed_ahead),
                timeout=node.inter_digit_timeout,
                inter_digit_timeout=node.inter_digit_timeout,
                terminator=node.terminator,
            )
            raw = typed_ahead + more
        else:
            await self._answer(run)
            raw = await run.call.collect(
                self._prompts(run, prompts),
                max_digits=node.max_digits,
                timeout=node.input_timeout,
                inter_digit_timeout=node.inter_digit_timeout,
                terminator=node.terminator,
            )
        if node.terminator and node.terminator in raw:
            raw = raw.split(node.terminator, 1)[0]
        return "".join(key for key in raw if key in DTMF_KEYS)[: node.max_digits]

    def _set(self, run: _Run, node: SetNode) -> _Step:
        for path, value in node.assignments.items():
            if path.split(".", 1)[0] == RESERVED_DATA_KEY:
                raise FlowRuntimeError(f"set node {node.id} writes reserved data {path!r}")
            if isinstance(value, str):
                value = render(value, self._call_values(run.call), run.call.data)
            set_path(run.call.data, path, value)
        return _Step("next", "set")

    def _branch(self, run: _Run, node: BranchNode) -> _Step:
        now = self._clock()
        for index, rule in enumerate(node.rules):
            if all(self._holds(run, condition, now) for condition in rule.when):
                return _Step(f"rule {index}", f"rule {index}", target=rule.goto)
        return _Step("otherwise", "otherwise")

    def _holds(self, run: _Run, condition: Condition, now: datetime) -> bool:
        call = run.call
        if isinstance(condition, ValueCondition):
            actual: Any
            if condition.subject == "data":
                actual = get_path(call.data, condition.key) if condition.key else MISSING
            elif condition.subject == "tier":
                actual = get_path(call.data, CUSTOMER_TIER_PATH)
            else:
                actual = {
                    "ani": call.ani,
                    "dnis": call.dnis,
                    "region": call.region,
                    "language": call.language,
                }[condition.subject]
            return _compare(actual, condition)
        if isinstance(condition, CalendarCondition):
            calendar = self._calendars.get(condition.calendar)
            if calendar is None:
                _log.warning("ivr unknown calendar", calendar=condition.calendar, call_id=call.call_id)
                return False
            return is_open(calendar, now) == (condition.state == "open")
        local = now.astimezone(self._zone)
        if isinstance(condition, TimeCondition):
            return _in_time_range(local.time().replace(tzinfo=None), condition.start, condition.end)
        if isinstance(condition, WeekdayCondition):
            return local.isoweekday() in condition.days
        raise FlowRuntimeError(f"unknown condition {type(condition).__name__}")

    async def _lookup(self, run: _Run, node: LookupNode, label: str) -> _Step:
        loop = asyncio.get_running_loop()
        started = loop.time()
        values, data = self._call_values(run.call), run.call.data
        params = {key: render(value, values, data) for key, value in node.params.items()}
        body = {key: render(value, values, data) for key, value in node.body.items()} if node.body else None
        status = "ok"
        payload: Any = None
        try:
            # A little under the node's timeout, so the lookup, not the node, reports the timeout.
            async with asyncio.timeout(node.timeout * 0.95):
                payload_bytes, http_status = await self._fetch(node, params, body)
            if not 200 <= http_status < 300:
                status = f"http {http_status}"
            else:
                try:
                    payload = json.loads(payload_bytes)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    status = "bad json"
        except TimeoutError:
            status = "timeout"
        except httpx.HTTPError as error:
            status = f"error: {type(error).__name__}"
        except _TooLarge:
            status = "response too large"
        result: dict[str, Any] = {"status": status, "ms": round((loop.time() - started) * 1000)}
        run.ivr["results"][label] = result
        if status != "ok":
            return _Step("fallback", status)
        missing = []
        for data_path, source in node.response_map.items():
            value = get_path(payload, source)
            if value is MISSING:
                missing.append(source)
            else:
                set_path(run.call.data, data_path, value)
        if missing:
            result["missing"] = missing
        return _Step("next", "ok")

    async def _fetch(
        self, node: LookupNode, params: dict[str, str], body: dict[str, str] | None
    ) -> tuple[bytes, int]:
        if self._http is not None:
            return await self._fetch_with(self._http, node, params, body)
        async with httpx.AsyncClient() as client:
            return await self._fetch_with(client, node, params, body)

    @staticmethod
    async def _fetch_with(
        client: httpx.AsyncClient, node: LookupNode, params: dict[str, str], body: dict[str, str] | None
    ) -> tuple[bytes, int]:
        request = client.build_request(
            node.method,
            node.url,
            params=params or None,
            json=body if node.method == "POST" else None,
            headers={"Accept": "application/json", **node.headers},
            timeout=node.timeout,
        )
        response = await client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _MAX_LOOKUP_BYTES:
                    raise _TooLarge
                chunks.append(chunk)
            return b"".join(chunks), response.status_code
        finally:
            await response.aclose()

    async def _queue(self, run: _Run, node: QueueNode, label: str) -> _Step:
        await self._answer(run)
        request = QueueRequest(
            queue=node.queue,
            priority=node.priority,
            skills=node.skills,
            max_wait_seconds=node.max_wait,
            overflow_queues=tuple(node.overflow_queues),
            overflow_after_seconds=node.overflow_after,
            music=node.music,
            announce_position=node.announce_position,
        )
        outcome = await run.call.queue(request)
        run.ivr["results"][label] = {
            "queue": node.queue,
            "result": outcome.result,
            "waited_seconds": outcome.waited_seconds,
            "agent": outcome.agent,
            "overflow_target": outcome.overflow_target,
        }
        if outcome.result == "answered":
            raise _Finished("handed_off", f"answered in queue {node.queue}", "answered")
        if outcome.result == "abandoned":
            raise CallGone("abandoned in queue")
        return _Step(outcome.result, f"queue {outcome.result}")

    async def _transfer(self, run: _Run, node: TransferNode) -> _Step:
        address = render(node.target.address, self._call_values(run.call), run.call.data).strip()
        if not address:
            return _Step("failed", "no address")
        if node.prompts:
            await self._answer(run)
            await run.call.play(self._prompts(run, node.prompts))
        if await run.call.transfer(TransferTarget(node.target.kind, address)):
            raise _Finished("handed_off", f"transferred to {node.target.kind} {address}", "transferred")
        return _Step("failed", "transfer failed", input=address)

    async def _voicemail(self, run: _Run, node: VoicemailNode) -> _Step:
        await self._answer(run)
        if node.prompts:
            await run.call.play(self._prompts(run, node.prompts))
        # Callers end a message by hanging up, which cancels the run: the recording and its work item
        # (IVR-09) are finished in a task of their own all the same.
        task = asyncio.ensure_future(self._record_message(run, node))
        _message_tasks.add(task)
        task.add_done_callback(_message_tasks.discard)
        return await asyncio.shield(task)

    async def _record_message(self, run: _Run, node: VoicemailNode) -> _Step:
        recording = await run.call.record(
            max_seconds=node.max_seconds, beep=node.beep, silence_timeout=node.silence_timeout
        )
        if recording is None:
            return _Step("no_message", "nothing recorded")
        message = {
            "recording_id": recording.recording_id,
            "duration_seconds": recording.duration_seconds,
            "mailbox": node.mailbox.model_dump(),
            "caller": run.call.ani,
            "caller_withheld": run.call.ani is None,
            "dnis": run.call.dnis,
            "at": self._clock().astimezone(UTC).isoformat(),
        }
        run.call.data["voicemail"] = message
        await self._emit(run, VOICEMAIL_RECORDED, **message)
        return _Step("next", "recorded", input=recording.recording_id)

    async def _callback(self, run: _Run, node: CallbackNode, label: str) -> _Step:
        key = await self._one_key(run, node.prompts, node.input_timeout)
        if key != node.accept_key:
            return _Step("declined", "declined" if key else "no_input", input=key)
        number = run.call.ani
        if number is None:
            digits = await run.call.collect(
                self._prompts(run, node.number_prompts),
                max_digits=_CALLBACK_NUMBER_DIGITS,
                timeout=node.input_timeout,
                inter_digit_timeout=node.input_timeout,
                terminator="#",
            )
            digits = digits.split("#", 1)[0]
            if len(digits) < 3 or not digits.isdigit():
                return _Step("declined", "no number", input=key)
            number = digits
        request = {
            "number": number,
            "queue": node.queue,
            "caller_withheld": run.call.ani is None,
            "requested_at": self._clock().astimezone(UTC).isoformat(),
        }
        run.call.data["callback"] = request
        run.ivr["inputs"][label] = key
        await self._emit(run, CALLBACK_REQUESTED, **request)
        if node.confirm_prompts:
            await run.call.play(self._prompts(run, node.confirm_prompts))
        return _Step("accepted", "accepted", input=key)

    async def _subflow(self, run: _Run, flow: Flow, node: SubflowNode, depth: int) -> _Step:
        if depth + 1 > self.limits.max_subflow_depth:
            return _Step("default", "sub-flow too deep")
        subflow = self._flows(node.flow) if callable(self._flows) else self._flows.get(node.flow)
        if subflow is None:
            _log.warning("ivr unknown sub-flow", flow=node.flow, call_id=run.call.call_id)
            return _Step("default", "unknown flow")
        await self._walk(run, subflow, depth + 1)
        return _Step("next", "returned")

    async def _language(self, run: _Run, node: LanguageNode, label: str) -> _Step:
        failures = 0
        while True:
            key = await self._one_key(run, node.prompts, node.input_timeout)
            if key in node.options:
                language: Language = node.options[key]
                run.call.language = language
                run.call.data["language"] = language
                run.ivr["inputs"][label] = key
                return _Step("next", "chosen", input=key)
            failures += 1
            if failures > node.retries:
                return _Step("next", "no_match" if key else "no_input", input=key)

    # --- helpers -------------------------------------------------------------------------------------------

    async def _answer(self, run: _Run) -> None:
        if not run.answered:
            await run.call.answer()
            run.answered = True

    @staticmethod
    def _call_values(call: CallControl) -> dict[str, Any]:
        return {
            "ani": call.ani,
            "dnis": call.dnis,
            "call_id": call.call_id,
            "tenant": call.tenant,
            "language": call.language,
            "region": call.region,
        }

    def _prompts(self, run: _Run, prompts: Sequence[PromptSpec]) -> list[Prompt]:
        call = run.call
        values = self._call_values(call)
        rendered: list[Prompt] = []
        for prompt in prompts:
            if isinstance(prompt, TtsPrompt):
                text, language = _localized(prompt.text, call.language)
                rendered.append(Speech(render(text, values, call.data), language))
            elif isinstance(prompt, FilePrompt):
                ref, language = _localized(prompt.file, call.language)
                rendered.append(AudioFile(ref, language if isinstance(prompt.file, dict) else None))
            elif isinstance(prompt, TonePrompt):
                rendered.append(Tone(tuple(prompt.frequencies), prompt.duration_ms))
            else:
                rendered.append(Silence(prompt.duration_ms))
        return rendered

    async def _emit(self, run: _Run, event_type: str, **fields: Any) -> None:
        # The event log is the record, but its failure must not drop the call (FM-02): log and go on.
        try:
            async with asyncio.timeout(self.limits.control_timeout):
                await run.call.event(event_type, **fields)
        except Exception as error:
            _log.warning(
                "ivr event not recorded", event_type=event_type, call_id=run.call.call_id, error=repr(error)
            )

    async def _hangup(self, run: _Run, cause: str) -> None:
        try:
            async with asyncio.timeout(self.limits.control_timeout):
                await run.call.hangup(cause)
        except Exception as error:
            _log.warning("ivr hangup failed", call_id=run.call.call_id, cause=cause, error=repr(error))


class _TooLarge(Exception):
    pass


def _localized(text: LocalizedText, language: Language) -> tuple[str, Language]:
    if isinstance(text, str):
        return text, language
    if language in text:
        return text[language], language
    for other, value in text.items():
        return value, other
    return "", language


def _node_type(node: NodeBase) -> str:
    return str(getattr(node, "type", type(node).__name__))


def _node_fields(flow: Flow, node: NodeBase) -> dict[str, Any]:
    # Field names of hotline.events.models.IvrNodeEntered / IvrNodeExited.
    node_type = _node_type(node)
    return {"flow_id": flow.id, "flow_version": flow.version, "node_id": node.id, "node_type": node_type}


def _clip(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1] + "…"
