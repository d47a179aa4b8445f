"""Typed domain events, named `domain.verb`.

Every event carries:

- `type`: its name, e.g. `"call.started"` (the discriminator of `AnyEvent`);
- `id`: a sortable UUIDv7, generated when the event is built;
- `tenant`: the tenant slug; the event is stored in that tenant's log only;
- `seq`: the per-tenant sequence number, `None` until `EventLog.append` assigns it;
- `occurred_at` (UTC wall clock), `monotonic` (`time.monotonic()`) and `boot_id` (which monotonic clock):
  durations are measured on the monotonic clock when both ends share a `boot_id`, else on the wall clock
  (see `elapsed_seconds`).

Events are frozen. `parse_event(json_or_dict)` turns stored or received data back into the right class;
`event.model_dump_json()` and `parse_event` round-trip exactly. `EVENT_TYPES` maps names to classes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    field_validator,
    model_validator,
)

from hotline.events.ids import BOOT_ID, new_id

TenantId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")]
Identifier = Annotated[str, Field(min_length=1, max_length=64)]
Direction = Literal["inbound", "outbound", "internal"]
AnsweredBy = Literal["system", "agent"]
DequeueOutcome = Literal["answered", "abandoned", "overflowed", "timeout", "diverted"]
OfferFailure = Literal["ring_no_answer", "rejected", "unreachable"]
HangupSide = Literal["customer", "agent", "system", "external"]
LegKind = Literal["customer", "agent", "external", "supervisor"]
LegDirection = Literal["inbound", "outbound"]
TransferKind = Literal["blind", "attended"]
TransferTarget = Literal["agent", "queue", "flow", "external"]
DataSource = Literal["ivr", "agent", "api", "system"]
WrapupEndedBy = Literal["agent", "timer", "supervisor", "system"]
# AGT-03: the time-stamped agent states.
AgentState = Literal[
    "logged_out",
    "ready",
    "not_ready",
    "away",
    "ringing",
    "talking",
    "hold",
    "wrap_up",
    "dialing",
    "roaming",
    "non_acd",
]


class EndCause:
    """Well-known `call.ended` / `leg.ended` causes (carriers may add their own strings)."""

    NORMAL: Final = "normal_clearing"
    BUSY: Final = "busy"
    NO_ANSWER: Final = "no_answer"
    REJECTED: Final = "rejected"
    FAILED: Final = "failed"
    MAX_DURATION: Final = "max_duration"
    FORCE_RELEASE: Final = "force_release"
    # Synthesised at startup for calls that were live when the node stopped (FM-15).
    NODE_RESTART: Final = "node_restart"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields common to every event. Build a concrete subclass, never this one."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    type: str
    id: Identifier = Field(default_factory=new_id)
    tenant: TenantId
    seq: int | None = Field(default=None, ge=1)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    monotonic: float = Field(default_factory=time.monotonic)
    boot_id: str = Field(default=BOOT_ID, min_length=1, max_length=64)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def with_seq(self, seq: int) -> Self:
        """This event as logged under `seq`."""
        if seq < 1:
            raise ValueError("seq starts at 1")
        return self.model_copy(update={"seq": seq})


class CallEvent(Event):
    call_id: Identifier


# ----------------------------------------------------------------------------------------------- calls


class CallStarted(CallEvent):
    """A call entered the switch. TEL-04/FM-10: ANI is present, or the call is flagged withheld."""

    type: Literal["call.started"] = "call.started"
    direction: Direction
    ani: str = Field(default="", max_length=64)
    withheld: bool = False
    dnis: str = Field(max_length=64)
    region: str | None = Field(default=None, max_length=64)
    trunk: str | None = Field(default=None, max_length=128)
    # What the called number maps to, e.g. "flow:main" (TEL-05); None for calls without a number.
    entry_target: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _ani_or_withheld(self) -> CallStarted:
        if not self.ani and not self.withheld:
            raise ValueError("ani is empty: a call without a caller number must be flagged withheld")
        return self


class CallAnswered(CallEvent):
    """The call was answered by the system (IVR) or connected to an agent."""

    type: Literal["call.answered"] = "call.answered"
    by: AnsweredBy
    agent_id: Identifier | None = None
    leg_id: Identifier | None = None
    queue_id: Identifier | None = None

    @model_validator(mode="after")
    def _agent_answer_names_agent(self) -> CallAnswered:
        if self.by == "agent" and self.agent_id is None:
            raise ValueError("an agent answer names the agent (agent_id)")
        return self


class CallQueued(CallEvent):
    """The call entered an agent queue. Carries the queue's thresholds in force (MET-01/MET-02)."""

    type: Literal["call.queued"] = "call.queued"
    queue_id: Identifier
    priority: int = Field(default=0, ge=0, le=100)
    skills: list[str] = Field(default_factory=list)
    # ACD-06: queued to a further group while keeping its first place.
    overflow: bool = False
    service_level_seconds: float = Field(default=20.0, ge=0)
    short_abandon_seconds: float = Field(default=5.0, ge=0)


class CallDequeued(CallEvent):
    """The call left a queue. `target` says where a timeout or diversion sent it (e.g. "voicemail")."""

    type: Literal["call.dequeued"] = "call.dequeued"
    queue_id: Identifier
    outcome: DequeueOutcome
    agent_id: Identifier | None = None
    target: str | None = Field(default=None, max_length=128)


class CallOffered(CallEvent):
    """An agent was reserved and their leg is ringing. Carries the screen pop (ANI, DNIS, region, call data;
    AGT-07, FM-10/11); `leg_id` is None while the agent's leg is still being set up."""

    type: Literal["call.offered"] = "call.offered"
    agent_id: Identifier
    leg_id: Identifier | None = None
    queue_id: Identifier | None = None
    ani: str = Field(default="", max_length=64)
    withheld: bool = False
    dnis: str = Field(default="", max_length=64)
    region: str | None = Field(default=None, max_length=64)
    waited_seconds: float = Field(default=0.0, ge=0)
    device: str | None = Field(default=None, max_length=256)
    data: dict[str, JsonValue] = Field(default_factory=dict)


class CallOfferFailed(CallEvent):
    """An offer ended without an answer; the call goes back to the queue head (FM-06, ACD-09)."""

    type: Literal["call.offer_failed"] = "call.offer_failed"
    agent_id: Identifier
    leg_id: Identifier | None = None
    reason: OfferFailure
    queue_id: Identifier | None = None


class CallHeld(CallEvent):
    type: Literal["call.held"] = "call.held"
    leg_id: Identifier | None = None
    agent_id: Identifier | None = None


class CallResumed(CallEvent):
    type: Literal["call.resumed"] = "call.resumed"
    leg_id: Identifier | None = None
    agent_id: Identifier | None = None


class CallTransferred(CallEvent):
    """The call was handed on; the call id and its data go with it."""

    type: Literal["call.transferred"] = "call.transferred"
    kind: TransferKind
    target_type: TransferTarget
    target: str = Field(min_length=1, max_length=128)
    from_agent_id: Identifier | None = None
    leg_id: Identifier | None = None


class CallDataChanged(CallEvent):
    """Call-attached data changed: `values` are set (merged), `removed` keys are dropped."""

    type: Literal["call.data_changed"] = "call.data_changed"
    values: dict[str, JsonValue] = Field(default_factory=dict)
    removed: list[str] = Field(default_factory=list)
    source: DataSource = "system"


class CallEnded(CallEvent):
    type: Literal["call.ended"] = "call.ended"
    cause: str = Field(default=EndCause.NORMAL, min_length=1, max_length=64)
    hangup_side: HangupSide
    sip_status: int | None = Field(default=None, ge=100, le=699)


# ------------------------------------------------------------------------------------------------- IVR


class IvrNodeEntered(CallEvent):
    """IVR-16: every step is logged."""

    type: Literal["ivr.node_entered"] = "ivr.node_entered"
    flow_id: Identifier
    flow_version: int = Field(ge=0)
    node_id: Identifier
    node_type: str = Field(min_length=1, max_length=32)


class IvrNodeExited(CallEvent):
    """IVR-16: the node's input and why it was left; `self_service_success` feeds MET-31."""

    type: Literal["ivr.node_exited"] = "ivr.node_exited"
    flow_id: Identifier
    flow_version: int = Field(ge=0)
    node_id: Identifier
    node_type: str = Field(min_length=1, max_length=32)
    input: str | None = Field(default=None, max_length=256)
    exit_reason: str = Field(min_length=1, max_length=32)
    next_node_id: Identifier | None = None
    self_service_success: bool = False


class IvrFlowStarted(CallEvent):
    type: Literal["ivr.flow_started"] = "ivr.flow_started"
    flow_id: Identifier
    flow_version: int = Field(ge=0)


class IvrFlowEnded(CallEvent):
    """The flow finished: `outcome` is handed_off, hung_up, caller_hung_up, returned, watchdog or error."""

    type: Literal["ivr.flow_ended"] = "ivr.flow_ended"
    flow_id: Identifier
    flow_version: int = Field(ge=0)
    outcome: str = Field(min_length=1, max_length=32)
    cause: str = Field(min_length=1, max_length=64)
    visits: int = Field(ge=0)
    seconds: float = Field(ge=0)
    last_node: str | None = Field(default=None, max_length=64)
    # the node ids the caller went through (IVR-16), "flow/node" inside sub-flows
    path: list[str] = Field(default_factory=list, max_length=1000)


class IvrWatchdog(CallEvent):
    """FM-03: the watchdog freed a call held too long in the IVR."""

    type: Literal["ivr.watchdog"] = "ivr.watchdog"
    flow_id: Identifier
    reason: str = Field(min_length=1, max_length=256)
    node: str | None = Field(default=None, max_length=64)
    visits: int = Field(ge=0)
    seconds: float = Field(ge=0)


class IvrError(CallEvent):
    type: Literal["ivr.error"] = "ivr.error"
    flow_id: Identifier
    node: str | None = Field(default=None, max_length=64)
    error: str = Field(min_length=1, max_length=128)
    message: str = Field(default="", max_length=500)


class IvrVoicemailRecorded(CallEvent):
    """IVR-09: a voicemail message, which becomes a work item with the caller's number and the time."""

    type: Literal["ivr.voicemail_recorded"] = "ivr.voicemail_recorded"
    recording_id: Identifier
    duration_seconds: float = Field(ge=0)
    mailbox: dict[str, JsonValue] = Field(default_factory=dict)
    caller: str | None = Field(default=None, max_length=64)
    caller_withheld: bool = False
    dnis: str = Field(default="", max_length=64)
    at: AwareDatetime


class IvrCallbackRequested(CallEvent):
    """ACD-15: the caller asked to be called back, keeping their place in `queue`."""

    type: Literal["ivr.callback_requested"] = "ivr.callback_requested"
    number: str = Field(min_length=1, max_length=64)
    queue: str | None = Field(default=None, max_length=64)
    caller_withheld: bool = False
    requested_at: AwareDatetime


# ------------------------------------------------------------------------------------------------ legs


class LegCreated(CallEvent):
    type: Literal["leg.created"] = "leg.created"
    leg_id: Identifier
    kind: LegKind
    direction: LegDirection
    endpoint: str = Field(min_length=1, max_length=256)
    agent_id: Identifier | None = None


class LegAnswered(CallEvent):
    type: Literal["leg.answered"] = "leg.answered"
    leg_id: Identifier


class LegEnded(CallEvent):
    type: Literal["leg.ended"] = "leg.ended"
    leg_id: Identifier
    cause: str = Field(default=EndCause.NORMAL, min_length=1, max_length=64)
    sip_status: int | None = Field(default=None, ge=100, le=699)


# ------------------------------------------------------------------------------------------ recordings


class RecordingStarted(CallEvent):
    type: Literal["recording.started"] = "recording.started"
    recording_id: Identifier
    path: str = Field(min_length=1, max_length=512)
    format: str = Field(min_length=1, max_length=16)
    leg_id: Identifier | None = None


class RecordingStopped(CallEvent):
    type: Literal["recording.stopped"] = "recording.stopped"
    recording_id: Identifier
    path: str = Field(min_length=1, max_length=512)
    format: str = Field(min_length=1, max_length=16)
    duration_seconds: float = Field(ge=0)
    size_bytes: int | None = Field(default=None, ge=0)
    leg_id: Identifier | None = None


# ---------------------------------------------------------------------------------------------- agents


class AgentStateChanged(Event):
    """AGT-03. `call_id` names the call that caused the change (ringing, talking, wrap-up), if any."""

    type: Literal["agent.state_changed"] = "agent.state_changed"
    agent_id: Identifier
    from_state: AgentState
    to_state: AgentState
    reason_code: str | None = Field(default=None, max_length=64)
    call_id: Identifier | None = None
    # SUP-05: who forced the change (a supervisor's user name), None when the agent or the ACD did.
    changed_by: str | None = Field(default=None, max_length=64)
    # The login's device and queues, so the ACD can restore its agents after a restart.
    device: str | None = Field(default=None, max_length=256)
    queues: list[str] | None = None


class AgentWrapupEnded(Event):
    """After-call work finished; carries the disposition (AGT-09)."""

    type: Literal["agent.wrapup_ended"] = "agent.wrapup_ended"
    agent_id: Identifier
    call_id: Identifier | None = None
    disposition: str | None = Field(default=None, max_length=128)
    fields: dict[str, JsonValue] = Field(default_factory=dict)
    ended_by: WrapupEndedBy = "agent"


AnyEvent = Annotated[
    CallStarted
    | CallAnswered
    | CallQueued
    | CallDequeued
    | CallOffered
    | CallOfferFailed
    | CallHeld
    | CallResumed
    | CallTransferred
    | CallDataChanged
    | CallEnded
    | IvrNodeEntered
    | IvrNodeExited
    | IvrFlowStarted
    | IvrFlowEnded
    | IvrWatchdog
    | IvrError
    | IvrVoicemailRecorded
    | IvrCallbackRequested
    | LegCreated
    | LegAnswered
    | LegEnded
    | RecordingStarted
    | RecordingStopped
    | AgentStateChanged
    | AgentWrapupEnded,
    Field(discriminator="type"),
]

_any_event: TypeAdapter[Event] = TypeAdapter(AnyEvent)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        CallStarted,
        CallAnswered,
        CallQueued,
        CallDequeued,
        CallOffered,
        CallOfferFailed,
        CallHeld,
        CallResumed,
        CallTransferred,
        CallDataChanged,
        CallEnded,
        IvrNodeEntered,
        IvrNodeExited,
        IvrFlowStarted,
        IvrFlowEnded,
        IvrWatchdog,
        IvrError,
        IvrVoicemailRecorded,
        IvrCallbackRequested,
        LegCreated,
        LegAnswered,
        LegEnded,
        RecordingStarted,
        RecordingStopped,
        AgentStateChanged,
        AgentWrapupEnded,
    )
}


def parse_event(data: str | bytes | Mapping[str, Any]) -> Event:
    """Stored or received data back to its event class; raises pydantic.ValidationError when invalid."""
    if isinstance(data, str | bytes):
        return _any_event.validate_json(data)
    return _any_event.validate_python(data)


def event_call_id(event: Event) -> str | None:
    """The call an event concerns, if any."""
    value = getattr(event, "call_id", None)
    return value if isinstance(value, str) else None


def elapsed_seconds(start: Event, end: Event) -> float:
    """Seconds from `start` to `end`: monotonic when both read the same clock, else wall clock; never < 0."""
    return clock_seconds(
        start.occurred_at, start.monotonic, start.boot_id, end.occurred_at, end.monotonic, end.boot_id
    )


def clock_seconds(
    start_at: datetime,
    start_monotonic: float,
    start_boot_id: str,
    end_at: datetime,
    end_monotonic: float,
    end_boot_id: str,
) -> float:
    """`elapsed_seconds` on raw timestamps."""
    if start_boot_id == end_boot_id:
        seconds = end_monotonic - start_monotonic
    else:
        seconds = (end_at - start_at).total_seconds()
    return max(0.0, seconds)
