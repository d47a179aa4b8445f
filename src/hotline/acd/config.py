"""ACD configuration as data (principle 5, ACD-01/02/08/10/18/19, AGT-02/03/09).

Models (pydantic v2, unknown fields refused):

- :class:`Queue`: ``name``, ``strategy`` (:data:`STRATEGIES`, ``longest_idle`` by default, SPEC §20),
  ``wrap_up_seconds`` (5; ACD-08), ``acw_mode`` (``none`` | ``timed`` | ``mandatory``; ACD-10),
  ``ring_timeout``, ``max_wait`` and ``max_length`` with their final destinations (ACD-19), the service
  level threshold ``service_level_seconds`` (T, 20) and ``service_level_target`` (percent, 80),
  ``short_abandon_seconds`` (S, 5), ``overflow`` rules (ACD-06/07/21), ``music``, default ``skills`` and
  ``priority``, ``join_when_no_agents``, ``sticky_seconds`` (ACD-04), ``announce_every_seconds`` and
  ``vip_boost`` (ACD-03).
- :class:`Skill`: ``id``, ``name``.
- :class:`Agent`: ``id`` (the agent number, 工号), ``name``, ``password_hash`` (argon2; a document may give
  ``password`` instead, which is checked and hashed on validation and never kept), ``skills`` (skill id →
  :class:`AgentSkill` level and preference 1-9; a bare number is the level), ``queues``, default
  ``extension``; a static agent (like a static queue member) has a ``device`` (``sip:agent@host:port``,
  ``extension:1001``...) and ``login_on_start``: logged in there and ready whenever the configuration loads.
- :class:`ReasonCode`: not-ready reasons and call dispositions (``kind``).
- :class:`QueueDestination`: where a call goes when a queue is full or waited too long; written
  ``"voicemail"``, ``"callback"``, ``"hangup"``, ``"queue:<name>"`` or ``"flow:<id>"``.

Passwords: :func:`hash_password`, :func:`verify_password`, :func:`password_problem` (TEN-09: more than 6
characters mixing letters and digits).

Cross-references (a queue naming a missing skill...) are checked by ``hotline.tenancy.config_document``,
which sees the whole tenant.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from hotline.switch.control import SkillExpression

# Queue, skill and reason-code ids: what flows and other objects refer to them by.
CONFIG_ID_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
ConfigId = Annotated[str, Field(pattern=CONFIG_ID_PATTERN)]
# Agent numbers (工号) are usually digits, sometimes with letters.
AGENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
AgentId = Annotated[str, Field(pattern=AGENT_ID_PATTERN)]
EXTENSION_NUMBER_PATTERN: Final = r"^[0-9]{2,10}$"

Strategy = Literal[
    "longest_idle", "round_robin", "linear", "ring_all", "random", "fewest_calls", "least_talk", "best_skill"
]
STRATEGIES: Final = (
    "longest_idle",
    "round_robin",
    "linear",
    "ring_all",
    "random",
    "fewest_calls",
    "least_talk",
    "best_skill",
)
AcwMode = Literal["none", "timed", "mandatory"]
DestinationKind = Literal["voicemail", "callback", "hangup", "queue", "flow"]
_DESTINATIONS_WITH_REF: Final = ("queue", "flow")


class _Model(BaseModel):
    # Agent numbers and extensions are easily written as YAML integers; they are text to us.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


# --- passwords (argon2id) ----------------------------------------------------------------------------------

# argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane): about 0.1 s a hash on a small busy server,
# so importing many agents stays quick while each guess still costs an attacker as much.
_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


def password_problem(password: str) -> str | None:
    """Why `password` is too weak for a login (TEN-09), or None."""
    if len(password) <= 6:
        return "password must be longer than 6 characters"
    if len(password) > 128:
        return "password must be at most 128 characters"
    if not (_LETTER.search(password) and _DIGIT.search(password)):
        return "password must mix letters and digits"
    return None


def hash_password(password: str) -> str:
    """An argon2id hash in PHC string form (salted; parameters inside)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# --- queues ------------------------------------------------------------------------------------------------


class QueueDestination(_Model):
    """A final destination (ACD-19). Text form: ``voicemail``, ``callback``, ``hangup``, ``queue:<name>``,
    ``flow:<id>``."""

    kind: DestinationKind
    ref: str | None = Field(default=None, pattern=CONFIG_ID_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            kind, _, ref = value.partition(":")
            return {"kind": kind.strip(), "ref": ref.strip() or None}
        return value

    @model_validator(mode="after")
    def _ref_matches_kind(self) -> QueueDestination:
        if self.kind in _DESTINATIONS_WITH_REF and not self.ref:
            raise ValueError(f"a {self.kind} destination names one: write {self.kind}:<id>")
        if self.kind not in _DESTINATIONS_WITH_REF and self.ref:
            raise ValueError(f"a {self.kind} destination takes no name")
        return self

    @model_serializer
    def _as_text(self) -> str:
        return f"{self.kind}:{self.ref}" if self.ref else self.kind

    def __str__(self) -> str:
        return self._as_text()


class OverflowRule(_Model):
    """After ``after_seconds`` in the queue the call is also offered to ``queues``, keeping its place
    (ACD-06). With ``when_waiting_over`` / ``when_idle_at_least`` the rule applies only while this queue
    has more than that many waiting and the target has at least that many idle agents (ACD-07);
    ``when_expected_wait_over`` (seconds, MET-09) and ``when_no_agents`` (nobody logged in) are further
    conditions (ACD-21). A rule with a ``destination`` instead takes the call out of the queue to an IVR
    flow, voicemail or elsewhere (the flow's ``overflow`` exit)."""

    after_seconds: float = Field(default=0.0, ge=0, le=14_400)
    queues: list[ConfigId] = Field(default_factory=list, max_length=10)
    destination: QueueDestination | None = None
    when_waiting_over: int | None = Field(default=None, ge=0, le=100_000)
    when_idle_at_least: int | None = Field(default=None, ge=1, le=100_000)
    when_expected_wait_over: float | None = Field(default=None, ge=0, le=14_400)
    when_no_agents: bool = False

    @model_validator(mode="after")
    def _somewhere_to_go(self) -> OverflowRule:
        if not self.queues and self.destination is None:
            raise ValueError("an overflow rule names queues or a destination")
        return self


class Queue(_Model):
    name: ConfigId
    display_name: str = Field(default="", max_length=200)
    strategy: Strategy = "longest_idle"
    # ACD-08: no new offer for this long after a call; the timed ACW length (ACD-10).
    wrap_up_seconds: float = Field(default=5.0, ge=0, le=3600)
    acw_mode: AcwMode = "timed"
    ring_timeout: float = Field(default=20.0, gt=0, le=300)
    max_wait: float = Field(default=300.0, gt=0, le=14_400)
    on_max_wait: QueueDestination | None = None
    max_length: int | None = Field(default=None, ge=1, le=100_000)
    on_full: QueueDestination | None = None
    service_level_seconds: float = Field(default=20.0, gt=0, le=3600)
    service_level_target: float = Field(default=80.0, ge=0, le=100)
    short_abandon_seconds: float = Field(default=5.0, ge=0, le=600)
    overflow: list[OverflowRule] = Field(default_factory=list, max_length=10)
    music: str | None = Field(default=None, min_length=1, max_length=200)
    skills: SkillExpression | None = None
    priority: int = Field(default=0, ge=0, le=100)
    # Dispositions (AGT-09) agents must give for this queue's calls.
    disposition_required: bool = False
    # Whether calls may join while no agent is logged in; if not, they get the flow's "unavailable" exit.
    join_when_no_agents: bool = True
    # Sticky routing (ACD-04): offer a caller to the agent who served them last, for this long (0: off).
    sticky_seconds: float = Field(default=0.0, ge=0, le=3600)
    # Position and expected-wait announcements to waiting callers every so often (0: never).
    announce_every_seconds: float = Field(default=45.0, ge=0, le=3600)
    # Priority points per VIP level of the caller (call data "vip_level", 0-9), ACD-03/05.
    vip_boost: int = Field(default=10, ge=0, le=100)


# --- skills, agents, reason codes --------------------------------------------------------------------------


class Skill(_Model):
    id: ConfigId
    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=2000)


class AgentSkill(_Model):
    """ACD-02: level 1-9 (9 highest) and preference 1-9."""

    level: int = Field(ge=1, le=9)
    preference: int = Field(default=5, ge=1, le=9)

    @model_validator(mode="before")
    @classmethod
    def _from_level(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"level": value}
        return value


class Agent(_Model):
    id: AgentId
    name: str = Field(default="", max_length=200)
    password_hash: str | None = Field(default=None, max_length=512)
    # Only on the way in: checked, hashed into password_hash, then forgotten (never stored or exported).
    password: str | None = Field(default=None, exclude=True, repr=False)
    skills: dict[ConfigId, AgentSkill] = Field(default_factory=dict, max_length=100)
    queues: list[ConfigId] = Field(default_factory=list, max_length=100)
    extension: str | None = Field(default=None, pattern=EXTENSION_NUMBER_PATTERN)
    enabled: bool = True
    device: str | None = Field(default=None, max_length=256)
    login_on_start: bool = False

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from hotline.acd.agents import AcdError, parse_device  # agents imports this module

        try:
            return str(parse_device(value))
        except AcdError as error:
            raise ValueError(error.message) from None

    @field_validator("password")
    @classmethod
    def _strong_password(cls, value: str | None) -> str | None:
        problem = password_problem(value) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _hash_plain_password(self) -> Agent:
        if self.password is not None:
            if self.password_hash is not None:
                raise ValueError("give password or password_hash, not both")
            self.password_hash = hash_password(self.password)
            self.password = None
        if self.login_on_start and self.device is None:
            raise ValueError("login_on_start needs a device to log in on")
        return self

    @field_validator("password_hash")
    @classmethod
    def _argon2_hash(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("$argon2"):
            raise ValueError("password_hash must be an argon2 hash; give password to set a new one")
        return value

    @field_validator("queues")
    @classmethod
    def _unique_queues(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a queue is listed twice")
        return value

    @field_serializer("skills")
    def _compact_skills(self, skills: dict[str, AgentSkill]) -> dict[str, int | dict[str, int]]:
        # A bare level reads best in YAML; the preference only when it is not the default.
        return {
            skill: held.level
            if held.preference == 5
            else {"level": held.level, "preference": held.preference}
            for skill, held in skills.items()
        }

    def check_password(self, password: str) -> bool:
        return self.password_hash is not None and verify_password(self.password_hash, password)


class ReasonCode(_Model):
    """A not-ready reason (AGT-03: 小休, 就餐, 培训...) or a call disposition (AGT-09)."""

    code: ConfigId
    name: str = Field(min_length=1, max_length=100)
    name_en: str = Field(default="", max_length=100)
    kind: Literal["not_ready", "disposition"] = "not_ready"
    # A supervisor is alerted when an agent stays in this not-ready reason longer (None: no limit).
    max_minutes: int | None = Field(default=None, ge=1, le=1440)
