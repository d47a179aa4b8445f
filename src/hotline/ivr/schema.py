"""IVR flows as versioned JSON documents (pydantic v2 models; :func:`flow_json_schema` exports JSON Schema).

A :class:`Flow` has an ``id``, ``name``, ``version`` (its revision), ``schema_version`` (the document
format, 1), an ``entry`` node id, a ``default_exit`` and ``nodes``. Every node has an ``id``, a
``type``, a ``timeout`` in seconds (the most one visit may take) and ``exits``; every ``exits`` object
has a ``default``. When a document leaves them out they are filled in: the timeout from the node's own
waits, the default exit from the flow's ``default_exit`` (itself ``"@hangup"`` unless set), so no node
lacks either (IVR-17, FM-03). A named exit left empty falls back to the default exit.

An exit target is a node id or a reserved target: ``"@hangup"`` (end the call) or ``"@return"`` (end
this flow: back to the calling sub-flow node, or to whoever started the flow).

Node types (``type``): ``play``, ``menu``, ``collect``, ``set``, ``branch``, ``lookup``, ``queue``,
``transfer``, ``voicemail``, ``callback``, ``subflow``, ``language``, ``hangup``. Prompts (``kind``):
``tts`` (text with ``{variables}``, one text or one per language), ``file`` (a prompt-library
reference), ``tone``, ``silence``.

Models check structure only (types, ranges, enumerations); ``hotline.ivr.validator`` checks meaning
(targets, reachability, loops, prompts, regexes, sub-flow references) and lists every problem at once.
"""

from __future__ import annotations

from datetime import time
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hotline.switch.control import Language, SkillExpression, TransferKind

HANGUP: Final = "@hangup"
RETURN: Final = "@return"
RESERVED_TARGETS: Final = frozenset({HANGUP, RETURN})
SCHEMA_VERSION: Final = 1
MAX_NODES: Final = 500
# Branch subject "tier" reads this call-data path; a CRM lookup maps the customer's tier into it.
CUSTOMER_TIER_PATH: Final = "customer.tier"

NODE_ID_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
Target = Annotated[str, Field(min_length=1, max_length=64)]
Seconds = Annotated[float, Field(gt=0, le=86_400)]
JsonScalar = str | int | float | bool | None
LocalizedText = str | dict[Language, str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- prompts -------------------------------------------------------------------------------------------


class TtsPrompt(_Model):
    """Spoken text; ``{ani}``, ``{data.balance}``... are substituted. One text, or one per language."""

    kind: Literal["tts"]
    text: LocalizedText


class FilePrompt(_Model):
    """A recorded prompt from the tenant's library, by reference; or one reference per language."""

    kind: Literal["file"]
    file: LocalizedText


class TonePrompt(_Model):
    kind: Literal["tone"]
    frequencies: list[Annotated[float, Field(ge=20, le=4000)]] = Field(
        default_factory=lambda: [1000.0], min_length=1, max_length=4
    )
    duration_ms: int = Field(default=500, ge=10, le=10_000)


class SilencePrompt(_Model):
    kind: Literal["silence"]
    duration_ms: int = Field(ge=10, le=60_000)


PromptSpec = Annotated[TtsPrompt | FilePrompt | TonePrompt | SilencePrompt, Field(discriminator="kind")]
Prompts = Annotated[list[PromptSpec], Field(max_length=20)]


# --- branch conditions ---------------------------------------------------------------------------------

ValueOp = Literal["eq", "ne", "in", "not_in", "exists", "missing", "lt", "le", "gt", "ge", "prefix"]


class ValueCondition(_Model):
    """Compare a call value: call data (``key`` is the path), ANI, DNIS, caller region (TEL-06), customer
    tier (``customer.tier`` in call data) or language. ``missing`` on ``ani`` means a withheld number."""

    subject: Literal["data", "ani", "dnis", "region", "tier", "language"]
    key: str | None = None
    op: ValueOp = "eq"
    value: JsonScalar | list[JsonScalar] = None


class CalendarCondition(_Model):
    """True when the named tenant calendar is in ``state`` now (IVR-06)."""

    subject: Literal["calendar"]
    calendar: str = Field(min_length=1, max_length=64)
    state: Literal["open", "closed"] = "open"


class TimeCondition(_Model):
    """Time of day in the tenant's zone, ``start`` inclusive to ``end`` exclusive; may wrap midnight."""

    subject: Literal["time"]
    start: time
    end: time


class WeekdayCondition(_Model):
    """ISO weekdays in the tenant's zone, 1 = Monday."""

    subject: Literal["weekday"]
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(min_length=1, max_length=7)


Condition = Annotated[
    ValueCondition | CalendarCondition | TimeCondition | WeekdayCondition, Field(discriminator="subject")
]


class BranchRule(_Model):
    """Go to ``goto`` when every condition in ``when`` holds; rules are tried in order."""

    when: list[Condition] = Field(min_length=1, max_length=10)
    goto: Target


# --- exits ---------------------------------------------------------------------------------------------


class Exits(_Model):
    """``default`` is taken on timeout and whenever a named exit is empty."""

    default: Target | None = None


class NextExits(Exits):
    next: Target | None = None


class MenuExits(Exits):
    no_input: Target | None = None
    no_match: Target | None = None


class CollectExits(Exits):
    next: Target | None = None
    invalid: Target | None = None
    no_input: Target | None = None


class BranchExits(Exits):
    otherwise: Target | None = None


class LookupExits(Exits):
    next: Target | None = None
    fallback: Target | None = None


class QueueExits(Exits):
    timeout: Target | None = None
    overflow: Target | None = None
    unavailable: Target | None = None


class TransferExits(Exits):
    failed: Target | None = None


class VoicemailExits(Exits):
    next: Target | None = None
    no_message: Target | None = None


class CallbackExits(Exits):
    accepted: Target | None = None
    declined: Target | None = None


# --- nodes ---------------------------------------------------------------------------------------------


class NodeBase(_Model):
    id: NodeId
    name: str = Field(default="", max_length=200)
    timeout: Seconds = 30.0
    # Reaching this node counts as self-service success (IVR-16, RPT-06).
    self_service_success: bool = False
    exits: Exits = Field(default_factory=Exits)

    # The exit a timeout of the whole node takes.
    timeout_exit: ClassVar[str] = "default"
    # Prompt lists that must not be empty.
    required_prompts: ClassVar[tuple[str, ...]] = ()

    def default_timeout(self) -> float:
        return 30.0

    @model_validator(mode="after")
    def _fill_timeout(self) -> NodeBase:
        if "timeout" not in self.model_fields_set:
            self.timeout = min(self.default_timeout(), 86_400.0)
        return self

    def named_exits(self) -> dict[str, str | None]:
        """Exit fields as written (``exits.<name>``, ``options.<digit>``, ``rules.<n>.goto``)."""
        return {f"exits.{name}": value for name, value in self.exits.model_dump().items()}

    def exit_target(self, exit_name: str) -> str:
        """Where the named exit (``next``, ``no_input``, ``default``...) leads, falling back to default."""
        chosen = getattr(self.exits, exit_name, None) if exit_name != "default" else None
        return chosen or self.exits.default or HANGUP

    def all_targets(self) -> dict[str, str]:
        """Every edge out of this node after defaults apply: field name -> target."""
        targets: dict[str, str] = {}
        for field_name, value in self.named_exits().items():
            if field_name.startswith("exits."):
                targets[field_name] = self.exit_target(field_name.removeprefix("exits."))
            elif value:
                targets[field_name] = value
        return targets

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        """Prompt lists by field name (for validation)."""
        return {}


class PlayNode(NodeBase):
    type: Literal["play"]
    required_prompts: ClassVar[tuple[str, ...]] = ("prompts",)
    prompts: Prompts
    interruptible: bool = False
    exits: NextExits = Field(default_factory=NextExits)

    def default_timeout(self) -> float:
        return 300.0

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts}


class MenuNode(NodeBase):
    """Play the menu, wait for one key (IVR-02). Invalid keys and silence are retried ``retries`` times,
    with ``invalid_prompts``/``timeout_prompts`` before the menu again; ``repeat_key`` replays it."""

    type: Literal["menu"]
    required_prompts: ClassVar[tuple[str, ...]] = ("prompts",)
    prompts: Prompts
    options: dict[str, Target] = Field(default_factory=dict, max_length=12)
    input_timeout: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=2, ge=0, le=5)
    invalid_prompts: Prompts = Field(default_factory=list)
    timeout_prompts: Prompts = Field(default_factory=list)
    repeat_key: str | None = None
    interruptible: bool = True
    exits: MenuExits = Field(default_factory=MenuExits)

    def default_timeout(self) -> float:
        # Each attempt: the prompts (allow a minute) and the wait for a key; repeats add up to 3 attempts.
        return (self.retries + 4) * (60.0 + self.input_timeout)

    def named_exits(self) -> dict[str, str | None]:
        named: dict[str, str | None] = {f"options.{key}": value for key, value in self.options.items()}
        return named | super().named_exits()

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {
            "prompts": self.prompts,
            "invalid_prompts": self.invalid_prompts,
            "timeout_prompts": self.timeout_prompts,
        }


class CollectNode(NodeBase):
    """Gather ``min_digits``..``max_digits`` keys, check ``pattern`` (full match), store them at
    ``store_as`` in call data. ``sensitive`` keeps the digits out of events (PINs)."""

    type: Literal["collect"]
    required_prompts: ClassVar[tuple[str, ...]] = ("prompts",)
    prompts: Prompts
    store_as: str = Field(min_length=1, max_length=200)
    min_digits: int = Field(default=1, ge=0, le=32)
    max_digits: int = Field(default=16, ge=1, le=32)
    terminator: Literal["#", "*"] | None = "#"
    input_timeout: float = Field(default=5.0, gt=0, le=60)
    inter_digit_timeout: float = Field(default=3.0, gt=0, le=30)
    pattern: str | None = Field(default=None, max_length=1000)
    retries: int = Field(default=2, ge=0, le=5)
    invalid_prompts: Prompts = Field(default_factory=list)
    timeout_prompts: Prompts = Field(default_factory=list)
    sensitive: bool = False
    exits: CollectExits = Field(default_factory=CollectExits)

    def default_timeout(self) -> float:
        attempt = 60.0 + self.input_timeout + self.max_digits * self.inter_digit_timeout
        return (self.retries + 1) * attempt

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {
            "prompts": self.prompts,
            "invalid_prompts": self.invalid_prompts,
            "timeout_prompts": self.timeout_prompts,
        }


class SetNode(NodeBase):
    """Assign call data: path -> value; string values are templates (``"{ani}"``)."""

    type: Literal["set"]
    assignments: dict[str, JsonScalar] = Field(min_length=1, max_length=50)
    exits: NextExits = Field(default_factory=NextExits)

    def default_timeout(self) -> float:
        return 5.0


class BranchNode(NodeBase):
    type: Literal["branch"]
    rules: list[BranchRule] = Field(min_length=1, max_length=50)
    exits: BranchExits = Field(default_factory=BranchExits)

    def default_timeout(self) -> float:
        return 5.0

    def named_exits(self) -> dict[str, str | None]:
        named: dict[str, str | None] = {f"rules.{i}.goto": rule.goto for i, rule in enumerate(self.rules)}
        return named | super().named_exits()


class LookupNode(NodeBase):
    """HTTP GET/POST to an integrator's URL (IVR-04, IVR-10). ``params`` (query) and ``body`` (POST JSON)
    values are templates. ``response_map`` copies response JSON fields (dotted paths) into call data
    paths. A timeout (the node's ``timeout``), a non-2xx status or a bad body takes ``fallback``."""

    type: Literal["lookup"]
    url: str = Field(min_length=1, max_length=2000)
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str] = Field(default_factory=dict, max_length=20)
    body: dict[str, str] | None = Field(default=None, max_length=50)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    response_map: dict[str, str] = Field(default_factory=dict, max_length=50)
    timeout: float = Field(default=5.0, gt=0, le=60)
    exits: LookupExits = Field(default_factory=LookupExits)

    timeout_exit: ClassVar[str] = "fallback"

    def default_timeout(self) -> float:
        return 5.0


class QueueNode(NodeBase):
    """Hand the call to the ACD (DESIGN "A call's walk" 4). Answered ends the flow; ``timeout`` after
    ``max_wait`` leads to the final destination (ACD-19: voicemail, callback, another queue)."""

    type: Literal["queue"]
    queue: str = Field(min_length=1, max_length=64)
    priority: int = Field(default=0, ge=0, le=100)
    skills: SkillExpression | None = None
    max_wait: float = Field(default=300.0, gt=0, le=14_400)
    overflow_queues: list[str] = Field(default_factory=list, max_length=10)
    overflow_after: float | None = Field(default=None, gt=0, le=14_400)
    music: str | None = None
    announce_position: bool = True
    exits: QueueExits = Field(default_factory=QueueExits)

    timeout_exit: ClassVar[str] = "timeout"

    def default_timeout(self) -> float:
        return self.max_wait + 60.0


class TransferTargetSpec(_Model):
    kind: TransferKind
    # A template, so a lookup can choose the agent or number: "{data.customer.agent}".
    address: str = Field(min_length=1, max_length=200)


class TransferNode(NodeBase):
    type: Literal["transfer"]
    target: TransferTargetSpec
    prompts: Prompts = Field(default_factory=list)
    exits: TransferExits = Field(default_factory=TransferExits)

    def default_timeout(self) -> float:
        return 120.0

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts}


class Mailbox(_Model):
    """Whose voicemail (IVR-09): a queue's, an agent's or the tenant's."""

    kind: Literal["queue", "agent", "tenant"] = "tenant"
    id: str | None = Field(default=None, max_length=64)


class VoicemailNode(NodeBase):
    type: Literal["voicemail"]
    prompts: Prompts = Field(default_factory=list)
    mailbox: Mailbox = Field(default_factory=Mailbox)
    max_seconds: float = Field(default=120.0, gt=0, le=600)
    beep: bool = True
    silence_timeout: float = Field(default=5.0, gt=0, le=60)
    exits: VoicemailExits = Field(default_factory=VoicemailExits)

    def default_timeout(self) -> float:
        return self.max_seconds + 120.0

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts}


class CallbackNode(NodeBase):
    """Offer a callback (IVR-08, ACD-15): ``accept_key`` accepts. The number is the ANI; when it is
    withheld the caller keys one in after ``number_prompts``. ``confirm_prompts`` follow acceptance."""

    type: Literal["callback"]
    required_prompts: ClassVar[tuple[str, ...]] = ("prompts",)
    prompts: Prompts
    queue: str = Field(min_length=1, max_length=64)
    accept_key: str = "1"
    input_timeout: float = Field(default=5.0, gt=0, le=60)
    number_prompts: Prompts = Field(default_factory=list)
    confirm_prompts: Prompts = Field(default_factory=list)
    exits: CallbackExits = Field(default_factory=CallbackExits)

    def default_timeout(self) -> float:
        return 180.0 + 2 * self.input_timeout

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts, "number_prompts": self.number_prompts}


class SubflowNode(NodeBase):
    """Run flow ``flow``; when it reaches ``@return`` continue at ``next``. ``timeout`` bounds it all."""

    type: Literal["subflow"]
    flow: str = Field(min_length=1, max_length=64)
    exits: NextExits = Field(default_factory=NextExits)

    def default_timeout(self) -> float:
        return 900.0


def _default_language_options() -> dict[str, Language]:
    return {"1": "zh", "2": "en"}


class LanguageNode(NodeBase):
    """Let the caller choose the language; without a valid choice the call keeps its language."""

    type: Literal["language"]
    required_prompts: ClassVar[tuple[str, ...]] = ("prompts",)
    prompts: Prompts
    options: dict[str, Language] = Field(default_factory=_default_language_options, max_length=12)
    input_timeout: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=1, ge=0, le=5)
    exits: NextExits = Field(default_factory=NextExits)

    def default_timeout(self) -> float:
        return (self.retries + 1) * (60.0 + self.input_timeout)

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts}


class HangupNode(NodeBase):
    type: Literal["hangup"]
    prompts: Prompts = Field(default_factory=list)
    cause: str = Field(default="normal", min_length=1, max_length=100)

    def default_timeout(self) -> float:
        return 60.0

    def prompt_lists(self) -> dict[str, list[PromptSpec]]:
        return {"prompts": self.prompts}


Node = Annotated[
    PlayNode
    | MenuNode
    | CollectNode
    | SetNode
    | BranchNode
    | LookupNode
    | QueueNode
    | TransferNode
    | VoicemailNode
    | CallbackNode
    | SubflowNode
    | LanguageNode
    | HangupNode,
    Field(discriminator="type"),
]
NODE_TYPES: Final = (
    "play",
    "menu",
    "collect",
    "set",
    "branch",
    "lookup",
    "queue",
    "transfer",
    "voicemail",
    "callback",
    "subflow",
    "language",
    "hangup",
)


class FlowHeader(_Model):
    """A flow document without its nodes."""

    schema_version: Literal[1] = SCHEMA_VERSION
    id: NodeId
    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)
    version: int = Field(default=1, ge=1)
    entry: str = Field(min_length=1, max_length=64)
    default_exit: Target = HANGUP


class Flow(FlowHeader):
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)

    @model_validator(mode="after")
    def _fill_default_exits(self) -> Flow:
        fill_default_exits(self.nodes, self.default_exit)
        return self

    def node_map(self) -> dict[str, NodeBase]:
        return {node.id: node for node in self.nodes}


def fill_default_exits(nodes: list[Node], default_exit: str) -> None:
    for node in nodes:
        if node.exits.default is None:
            node.exits.default = default_exit


def flow_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a flow document, for editors and integrators."""
    return Flow.model_json_schema()
