"""The call-control API: what IVR, ACD and outbound may do with a call (DESIGN.md, "Doors").

Rooms above the switch see a call only through :class:`CallControl`; they never touch SIP or RTP objects,
so another media engine can sit behind the same API. The switch implements the protocol; the IVR
(``hotline.ivr.interpreter``) is its first user.

Public API:

- :class:`CallControl` (``typing.Protocol``): identity and call data (``call_id``, ``tenant``, ``ani``,
  ``dnis``, ``region``, ``data``, ``language``), media (``answer``, ``play``, ``collect``, ``record``),
  hand-offs (``queue``, ``transfer``, ``hangup``), ``event`` and the caller's hang-up (``hung_up``,
  ``wait_hung_up``).
- Prompts handed to ``play``/``collect``, already rendered: :class:`Speech`, :class:`AudioFile`,
  :class:`Tone`, :class:`Silence` (union :data:`Prompt`).
- :class:`RecordingRef` (``record`` result), :class:`QueueRequest` / :class:`QueueOutcome` (``queue``),
  :class:`TransferTarget` (``transfer``), skill requirements :data:`SkillExpression` (ACD-02).
- :class:`CallGone`: raised by any operation once the call has ended.

Contract for implementers:

- Every operation resolves in bounded time (FM-05) and may be cancelled (the IVR watchdog, the caller's
  hang-up). Cancellation must undo what the operation started: stop playback, stop recording, leave the
  queue.
- Once the caller has hung up, pending and later media operations raise :class:`CallGone`; ``hung_up``
  is true and ``wait_hung_up()`` returns. ``event`` and ``hangup`` keep working (hangup is a no-op).
- ``data`` is the call-attached data (IVR-07, FM-11/FM-12): a JSON-compatible dict that follows the call to
  the agent, through transfers and overflow, and into the CDR. Callers mutate it in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

# DTMF keys a caller can press.
DTMF_KEYS = frozenset("0123456789*#")


class CallGone(Exception):
    """The call ended (the caller hung up or the call was released) while an operation was pending."""


# --- prompts, rendered: variables are already substituted and the language is chosen -------------------


@dataclass(frozen=True, slots=True)
class Speech:
    """Text spoken by the TTS engine (espeak-ng) in ``language``."""

    text: str
    language: Language


@dataclass(frozen=True, slots=True)
class AudioFile:
    """A prompt from the tenant's prompt library, by reference (IVR-03: replaced without republishing)."""

    ref: str
    language: Language | None = None


@dataclass(frozen=True, slots=True)
class Tone:
    """A tone of one or more summed frequencies (Hz), e.g. the voicemail beep."""

    frequencies: tuple[float, ...]
    duration_ms: int


@dataclass(frozen=True, slots=True)
class Silence:
    duration_ms: int


Prompt = Speech | AudioFile | Tone | Silence


@dataclass(frozen=True, slots=True)
class RecordingRef:
    """A stored recording (voicemail is stored like any call recording)."""

    recording_id: str
    duration_seconds: float


# --- skills (ACD-02): AND/OR/NOT with minimum levels; JSON form used in IVR flows too -------------------


class _FrozenModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SkillAtLeast(_FrozenModel):
    """The agent holds ``skill`` at ``min_level`` or higher (levels 1-9, 9 highest)."""

    skill: str = Field(min_length=1, max_length=64)
    min_level: int = Field(default=1, ge=1, le=9)


class AllSkills(_FrozenModel):
    all: list[SkillExpression] = Field(min_length=1, max_length=32)


class AnySkill(_FrozenModel):
    any: list[SkillExpression] = Field(min_length=1, max_length=32)


class NotSkill(_FrozenModel):
    """Excludes agents who match the inner expression (e.g. hold the skill)."""

    not_: SkillExpression = Field(alias="not")

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


SkillExpression = Annotated[SkillAtLeast | AllSkills | AnySkill | NotSkill, Field(union_mode="left_to_right")]

AllSkills.model_rebuild()
AnySkill.model_rebuild()
NotSkill.model_rebuild()


# --- queue and transfer ------------------------------------------------------------------------------------

QueueResult = Literal["answered", "abandoned", "timeout", "overflow", "unavailable"]


@dataclass(frozen=True, slots=True)
class QueueRequest:
    """Hand the call to the ACD.

    ``priority`` runs from 0 (lowest) to 100 (ACD-03). ``overflow_queues`` are also queued after
    ``overflow_after_seconds`` (ACD-06). After ``max_wait_seconds`` the ACD returns ``timeout`` so the
    flow can take the call to its final destination (ACD-19).
    """

    queue: str
    priority: int = 0
    skills: SkillExpression | None = None
    max_wait_seconds: float = 300.0
    overflow_queues: tuple[str, ...] = ()
    overflow_after_seconds: float | None = None
    music: str | None = None
    announce_position: bool = True


@dataclass(frozen=True, slots=True)
class QueueOutcome:
    """How the queue ended for this call.

    ``answered``: an agent has the call (the IVR is done). ``abandoned``: the caller hung up while
    waiting. ``timeout``: the maximum wait passed. ``overflow``: the ACD diverted the call to
    ``overflow_target`` and hands it back to the flow. ``unavailable``: the queue refused the call
    (closed, full, no agents logged in).
    """

    result: QueueResult
    agent: str | None = None
    overflow_target: str | None = None
    waited_seconds: float = 0.0


TransferKind = Literal["extension", "agent", "external"]


@dataclass(frozen=True, slots=True)
class TransferTarget:
    """Where to send the call: an extension, an agent id, or an external number."""

    kind: TransferKind
    address: str


# --- the protocol ------------------------------------------------------------------------------------------


@runtime_checkable
class CallControl(Protocol):
    """One call, as the IVR, the ACD and outbound see it."""

    @property
    def call_id(self) -> str: ...

    @property
    def tenant(self) -> str: ...

    @property
    def ani(self) -> str | None:
        """The caller's number; ``None`` when withheld (TEL-04, FM-10)."""

    @property
    def dnis(self) -> str:
        """The dialled number."""

    @property
    def region(self) -> str | None:
        """The caller's region, derived by the switch from the area code or mobile segment (TEL-06)."""

    @property
    def data(self) -> dict[str, Any]:
        """Call-attached data, mutated in place; JSON-compatible values only."""

    # The caller's language, "zh" or "en"; the IVR's language node sets it.
    language: Language

    @property
    def hung_up(self) -> bool:
        """True once the caller has hung up or the call was released."""

    async def wait_hung_up(self) -> None:
        """Return when the caller hangs up (at once if already gone)."""

    async def answer(self) -> None:
        """Answer the call; a no-op when already answered."""

    async def play(self, prompts: Sequence[Prompt], *, interruptible: bool = False) -> str | None:
        """Play the prompts in order. If ``interruptible``, the first key pressed stops playback and is
        returned; otherwise keys are discarded and ``None`` is returned."""

    async def collect(
        self,
        prompts: Sequence[Prompt],
        *,
        max_digits: int,
        timeout: float,
        inter_digit_timeout: float,
        terminator: str | None = "#",
    ) -> str:
        """Play ``prompts`` (a key press stops them and counts as the first digit), then gather keys.

        Waits ``timeout`` seconds for the first key after the prompts and ``inter_digit_timeout`` between
        keys; stops at ``max_digits`` or the ``terminator`` (not included). Returns the keys, ``""`` if none.
        """

    async def record(self, *, max_seconds: float, beep: bool, silence_timeout: float) -> RecordingRef | None:
        """Record the caller (voicemail), stored like a call recording; ``None`` if nothing was said."""

    async def queue(self, request: QueueRequest) -> QueueOutcome:
        """Hand the call to the ACD and wait until it is answered or comes back."""

    async def transfer(self, target: TransferTarget) -> bool:
        """Transfer the call; True once the target has it (the caller's owner is then the target)."""

    async def hangup(self, cause: str) -> None:
        """Release the call with ``cause`` (kept in the CDR)."""

    async def event(self, event_type: str, /, **fields: Any) -> None:
        """Append an event about this call (e.g. ``ivr.node_entered``) to the tenant's event log."""
