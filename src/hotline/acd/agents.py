"""The agent state machine (AGT-03, ACD-08/09/10/11, SUP-05): states with timestamps and reason codes.

- :data:`AgentState`: the states the CTI protocol shows (``docs/cti.md``): ``logged_out``, ``ready``,
  ``not_ready``, ``reserved``, ``ringing``, ``on_call``, ``on_hold``, ``wrap_up``, ``outbound``.
  :data:`EVENT_STATES` maps them to the AGT-03 names of the ``agent.state_changed`` event (``reserved`` and
  ``ringing`` are both ``ringing`` there, ``on_call`` is ``talking``, ``on_hold`` is ``hold``, ``outbound``
  is ``dialing``).
- :class:`AgentStatus`: one logged-in (or logged-out) agent: state, reason, since (monotonic and wall clock),
  current call and queue, device, queues, a state to take after the current call (``pending``), idle time
  for longest-idle routing and today's figures (AGT-08). :meth:`AgentStatus.change` is the only way to move
  it; a move the table :data:`ALLOWED` does not hold raises :class:`InvalidTransition`.
- :class:`Device` and :func:`parse_device`: ``browser``, ``extension:1001``, ``sip:agent@host:port``,
  ``external:13800000000``.
- :class:`AcdError`: every refused ACD operation (``code`` in snake_case and a sentence), which the CTI
  gateway turns into ``{"ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

from hotline.acd.config import AgentSkill

AgentState = Literal[
    "logged_out", "ready", "not_ready", "reserved", "ringing", "on_call", "on_hold", "wrap_up", "outbound"
]
AGENT_STATES: Final[tuple[AgentState, ...]] = (
    "logged_out",
    "ready",
    "not_ready",
    "reserved",
    "ringing",
    "on_call",
    "on_hold",
    "wrap_up",
    "outbound",
)
# Busy with a call the ACD gave: the watchdog checks these have a live call (zero stuck states).
OFFER_STATES: Final = frozenset({"reserved", "ringing"})
CALL_STATES: Final = frozenset({"on_call", "on_hold"})
BUSY_STATES: Final = OFFER_STATES | CALL_STATES

# AGT-03 names used by the event log (hotline.events.models.AgentState).
EVENT_STATES: Final[Mapping[str, str]] = {
    "logged_out": "logged_out",
    "ready": "ready",
    "not_ready": "not_ready",
    "reserved": "ringing",
    "ringing": "ringing",
    "on_call": "talking",
    "on_hold": "hold",
    "wrap_up": "wrap_up",
    "outbound": "dialing",
}
# ...and back, for restoring agents from the log after a restart.
FROM_EVENT_STATES: Final[Mapping[str, AgentState]] = {
    "logged_out": "logged_out",
    "ready": "ready",
    "not_ready": "not_ready",
    "away": "not_ready",
    "ringing": "ringing",
    "talking": "on_call",
    "hold": "on_hold",
    "wrap_up": "wrap_up",
    "dialing": "outbound",
    "roaming": "ready",
    "non_acd": "not_ready",
}

ALLOWED: Final[Mapping[str, frozenset[str]]] = {
    "logged_out": frozenset({"not_ready", "ready"}),
    "ready": frozenset({"not_ready", "reserved", "logged_out", "outbound"}),
    "not_ready": frozenset({"ready", "not_ready", "logged_out", "outbound"}),
    "reserved": frozenset({"ringing", "ready", "not_ready", "logged_out"}),
    "ringing": frozenset({"on_call", "ready", "not_ready", "logged_out"}),
    "on_call": frozenset({"on_hold", "wrap_up", "ready", "not_ready", "logged_out"}),
    "on_hold": frozenset({"on_call", "wrap_up", "ready", "not_ready", "logged_out"}),
    "wrap_up": frozenset({"ready", "not_ready", "logged_out"}),
    "outbound": frozenset({"wrap_up", "ready", "not_ready", "logged_out"}),
}

# Reasons the ACD itself gives for not-ready (tenants define their own for agents, AGT-03).
NO_ANSWER: Final = "no_answer"  # ACD-09 (久叫不应)
REJECTED: Final = "rejected"
UNREACHABLE: Final = "unreachable"
SUPERVISOR: Final = "supervisor"
SYSTEM_REASONS: Final = frozenset({NO_ANSWER, REJECTED, UNREACHABLE, SUPERVISOR, "restart"})


class AcdError(Exception):
    """A refused ACD operation: ``code`` (snake_case) and a sentence for the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidTransition(AcdError):
    def __init__(self, agent_id: str, from_state: str, to_state: str) -> None:
        super().__init__("invalid_state", f"agent {agent_id} cannot go from {from_state} to {to_state}")
        self.from_state = from_state
        self.to_state = to_state


# --- devices -----------------------------------------------------------------------------------------------

DeviceKind = Literal["browser", "extension", "sip", "external"]
_EXTENSION = re.compile(r"^[0-9]{2,10}$")
_EXTERNAL = re.compile(r"^\+?[0-9]{3,20}$")
_SIP = re.compile(r"^sip:[A-Za-z0-9._~!$&'()*+,;=%-]+@[A-Za-z0-9.\-\[\]:]+$")


@dataclass(frozen=True, slots=True)
class Device:
    """Where an agent takes calls: the browser (WebRTC), an extension, a static SIP URI or an outside
    number (a roaming agent, 漫游)."""

    kind: DeviceKind
    address: str = ""

    def __str__(self) -> str:
        if self.kind == "browser":
            return "browser"
        if self.kind == "sip":
            return self.address
        return f"{self.kind}:{self.address}"


def parse_device(text: str) -> Device:
    """``browser``, ``extension:1001``, ``sip:agent@host:port``, ``external:13800000000``; else AcdError."""
    value = text.strip()
    if value == "browser":
        return Device("browser")
    kind, _, address = value.partition(":")
    if kind == "extension" and _EXTENSION.fullmatch(address):
        return Device("extension", address)
    if kind == "external" and _EXTERNAL.fullmatch(address):
        return Device("external", address)
    if kind == "sip" and _SIP.fullmatch(value) and len(value) <= 256:
        return Device("sip", value)
    raise AcdError(
        "bad_device",
        f"device {text!r} is not one of browser, extension:<number>, sip:<user>@<host>[:port], "
        "external:<number>",
    )


# --- the agent ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateChange:
    """One move of the state machine, as the event log records it."""

    agent_id: str
    from_state: AgentState
    to_state: AgentState
    reason: str | None
    call_id: str | None
    at: datetime
    changed_by: str | None = None
    device: str | None = None
    queues: tuple[str, ...] | None = None


@dataclass
class AgentFigures:
    """Today's figures for one agent (AGT-08, MET-08/11/13)."""

    offers: int = 0
    offers_answered: int = 0
    offers_no_answer: int = 0
    calls_handled: int = 0
    talk_seconds: float = 0.0
    hold_seconds: float = 0.0
    wrap_up_seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        handled = self.calls_handled
        return {
            "offers": self.offers,
            "offers_answered": self.offers_answered,
            "offers_no_answer": self.offers_no_answer,
            "calls_handled": handled,
            "talk_seconds": round(self.talk_seconds, 3),
            "wrap_up_seconds": round(self.wrap_up_seconds, 3),
            "average_talk_seconds": round(self.talk_seconds / handled, 3) if handled else None,
            "average_wrap_up_seconds": round(self.wrap_up_seconds / handled, 3) if handled else None,
            "answer_rate": round(self.offers_answered / self.offers, 4) if self.offers else None,
        }


@dataclass(eq=False)
class AgentStatus:
    """One agent's live state. Only :meth:`change` moves ``state``; ``token`` changes with every move, so
    index entries made for an earlier state are recognised as stale."""

    agent_id: str
    name: str = ""
    skills: Mapping[str, AgentSkill] = field(default_factory=dict)
    # The agents' order in the configuration: a queue's "linear" order (ACD-04).
    rank: int = 0
    state: AgentState = "logged_out"
    reason: str | None = None
    since: float = 0.0
    since_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    call_id: str | None = None
    queue_id: str | None = None
    device: Device | None = None
    queues: tuple[str, ...] = ()
    # Queues given at login (None: the configured ones, which follow configuration changes).
    chosen_queues: tuple[str, ...] | None = None
    # A state to take when the current call (and its wrap-up) ends: not_ready or logged_out.
    pending: tuple[AgentState, str | None, str | None] | None = None
    logged_in_at: float | None = None
    idle_since: float = 0.0
    # round robin with memory: when this agent was last offered a call of each queue (a counter).
    last_offered: dict[str, int] = field(default_factory=dict)
    figures: AgentFigures = field(default_factory=AgentFigures)
    answered_at: float | None = None
    wrap_up_started: float | None = None
    wrap_up_deadline: float | None = None
    token: int = 0
    enabled: bool = True

    @property
    def logged_in(self) -> bool:
        return self.state != "logged_out"

    @property
    def busy(self) -> bool:
        return self.state in BUSY_STATES

    def change(
        self,
        to_state: AgentState,
        now: float,
        *,
        reason: str | None = None,
        call_id: str | None = None,
        changed_by: str | None = None,
        wall: datetime | None = None,
    ) -> StateChange:
        """Move to `to_state` at monotonic `now`; InvalidTransition for a move AGT-03 does not allow."""
        if to_state not in ALLOWED[self.state]:
            raise InvalidTransition(self.agent_id, self.state, to_state)
        at = wall or datetime.now(UTC)
        from_state = self.state
        login = from_state == "logged_out"
        concerns = call_id if call_id is not None else self.call_id
        self.state = to_state
        self.reason = reason if to_state == "not_ready" else None
        self.call_id = concerns if to_state in BUSY_STATES or to_state == "wrap_up" else None
        if to_state not in BUSY_STATES and to_state != "wrap_up":
            self.queue_id = None
        self.since = now
        self.since_wall = at
        self.token += 1
        if to_state == "logged_out":
            self.pending = None
            self.logged_in_at = None
        elif login:
            self.logged_in_at = now
        # Longest idle (ACD-04, §20) counts from the end of the last call or the last not-ready; a lost
        # ring-all race or a withdrawn offer does not restart it.
        if to_state == "ready" and from_state not in OFFER_STATES:
            self.idle_since = now
        return StateChange(
            self.agent_id,
            from_state,
            to_state,
            self.reason,
            concerns,
            at,
            changed_by,
            str(self.device) if login and self.device is not None else None,
            self.queues if login else None,
        )

    def view(self) -> dict[str, object]:
        """The ``agent.state`` CTI event's fields (docs/cti.md) plus pending state, device, queues and
        today's figures."""
        return {
            "type": "agent.state",
            "agent_id": self.agent_id,
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "since": self.since_wall.isoformat(),
            "call_id": self.call_id,
            "queue": self.queue_id,
            "pending": self.pending[0] if self.pending else None,
            "device": str(self.device) if self.device is not None and self.logged_in else None,
            "queues": list(self.queues) if self.logged_in else [],
            "figures": self.figures.as_dict(),
        }
