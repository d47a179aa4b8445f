"""A tenant's whole configuration as one YAML or JSON document (principle 5, TEN-11, FM-14, FM-20).

    config = await export_tenant(storage, "acme")            # a dict; dump_document(config) for YAML
    result = await import_tenant(storage, tenancy, "acme", parse_document(text), directory=directory)
    if not result.ok:
        for problem in result.problems: print(problem)      # "flows[main].nodes[menu].options.1: ..."

The document has these sections (all optional on import; an absent section means "none"):

    schema_version: 1
    settings:     {sip_domain: acme.example.com}
    numbers:      [{number: "4001", target: flow:main}, {number: "9196", target: echo, public: false}]
    trunks:       [hotline.switch.directory.Trunk ...]
    extensions:   [hotline.switch.directory.Extension ...]
    calendars:    [hotline.ivr.calendar.BusinessCalendar ...]
    flows:        [hotline.ivr.schema.Flow ...]
    skills, queues, agents, reason_codes: hotline.acd.config models

Import is all-or-nothing: :func:`validate_config` checks every item on its own (so one broken item does
not hide the others), runs the IVR validator on each flow, then checks cross-references (a number
pointing to a missing flow, a queue naming a missing skill, an agent in a missing queue, two extensions
with one number...); :func:`import_tenant` adds the platform checks (a public number or SIP domain held
by another tenant). Every problem comes back at once, each with its path. Only a document without problems
is applied: the tenant's database in one transaction (flows that changed get a new published version,
IVR-15), the platform's number map and SIP domain in one transaction around it. Import replaces: objects
missing from the document are removed (flows are retired, their history kept).

Agents' passwords are exported as argon2 hashes (``password_hash``); a document may give ``password``
instead. Extensions' SIP passwords are exported as they are stored (the document is a secret).

Also: :func:`load_tenant_config` (the parsed configuration, for the ACD and others),
:func:`set_sip_domain`, :func:`save_flow_draft` and :func:`publish_flow` (drafts and publishing, IVR-15),
:func:`parse_document` / :func:`dump_document` (YAML with YAML 1.2 scalars: ``18:00`` stays text, ``0755``
is not a number, duplicate keys are errors).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hotline.acd.config import Agent, Queue, QueueDestination, ReasonCode, Skill
from hotline.ivr.calendar import BusinessCalendar
from hotline.ivr.schema import (
    CallbackNode,
    Flow,
    Node,
    NodeBase,
    QueueNode,
    TransferNode,
    VoicemailNode,
)
from hotline.ivr.validator import FlowProblem, validate_document
from hotline.log import get_logger
from hotline.storage.engines import Storage
from hotline.switch.control import AllSkills, AnySkill, NotSkill, SkillAtLeast, SkillExpression
from hotline.switch.directory import Directory, Extension, NumberEntry, NumberTarget, Trunk, check_host
from hotline.tenancy import config_store
from hotline.tenancy.models import NumberRecord, TenantRecord
from hotline.tenancy.service import TenancyService, TenantNotFound, normalize_number

log = get_logger(__name__)

SCHEMA_VERSION: Final = 1
SECTIONS: Final = (
    "settings",
    "numbers",
    "trunks",
    "extensions",
    "calendars",
    "flows",
    "skills",
    "queues",
    "agents",
    "reason_codes",
)
_TOP_LEVEL: Final = ("schema_version", *SECTIONS)
_ModelT = TypeVar("_ModelT", bound=BaseModel)


# --- the document model ------------------------------------------------------------------------------------


class TenantSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sip_domain: str | None = Field(default=None, max_length=253)

    @field_validator("sip_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = check_host(value).lower().rstrip(".")
        if "." not in value:
            raise ValueError("a SIP domain has at least two labels, e.g. acme.example.com")
        return value


class TenantConfig(BaseModel):
    """A tenant's whole configuration, validated."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    settings: TenantSettings = Field(default_factory=TenantSettings)
    numbers: list[NumberEntry] = Field(default_factory=list)
    trunks: list[Trunk] = Field(default_factory=list)
    extensions: list[Extension] = Field(default_factory=list)
    calendars: list[BusinessCalendar] = Field(default_factory=list)
    flows: list[Flow] = Field(default_factory=list)
    skills: list[Skill] = Field(default_factory=list)
    queues: list[Queue] = Field(default_factory=list)
    agents: list[Agent] = Field(default_factory=list)
    reason_codes: list[ReasonCode] = Field(default_factory=list)

    def to_document(self) -> dict[str, Any]:
        """The document form: every section, items without their default values."""
        document: dict[str, Any] = {
            "schema_version": self.schema_version,
            "settings": self.settings.model_dump(mode="json", exclude_defaults=True),
        }
        for section in SECTIONS[1:]:
            document[section] = [
                item.model_dump(mode="json", exclude_defaults=True) for item in getattr(self, section)
            ]
        for flow, model in zip(document["flows"], self.flows, strict=True):
            # The live version's number, always shown (an import ignores it: a changed flow gets the next).
            flow["version"] = model.version
            flow["nodes"] = [_readable_node(node) for node in flow["nodes"]]
        return document


def _readable_node(node: dict[str, Any]) -> dict[str, Any]:
    # What a node is first, where it leads last (the model's field order puts the common fields first).
    first = {key: node[key] for key in ("id", "type") if key in node}
    last = {key: node[key] for key in ("timeout", "exits") if key in node}
    middle = {key: value for key, value in node.items() if key not in first and key not in last}
    return first | middle | last


@dataclass(frozen=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass
class ImportResult:
    problems: list[ConfigProblem] = field(default_factory=list)
    applied: bool = False
    revision: int | None = None
    changed: int = 0
    flows_published: dict[str, int] = field(default_factory=dict)
    flows_retired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ConfigSyntaxError(ValueError):
    """The text is not a YAML/JSON document of the expected shape; the message says where."""


# --- parsing and dumping text ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 core scalars: no sexagesimal numbers (18:00 would be 1080), no yes/no/on/off
    booleans, no leading-zero numbers (a phone number 0755... stays text), no implicit timestamps; and
    duplicate keys are errors instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # unhashable keys get SafeLoader's own error
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_REPLACED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        # Only what YAML 1.1 also reads as a float, so whatever PyYAML's dumper leaves unquoted reads back
        # as the text it was.
        r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _text_keys(value: Any) -> Any:
    # Menu options and the like are written `1: sales`; keys are text to the models.
    if isinstance(value, dict):
        return {
            (str(key) if isinstance(key, int | float) and not isinstance(key, bool) else key): _text_keys(
                item
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_text_keys(item) for item in value]
    return value


def parse_document(text: str | bytes, *, format: Literal["yaml", "json"] = "yaml") -> dict[str, Any]:
    """Parse a configuration document; raises ConfigSyntaxError saying where it is broken. YAML is the
    default (JSON is YAML too, mostly); ``format="json"`` parses strict JSON."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise ConfigSyntaxError(f"the document is not UTF-8 text (byte {error.start})") from None
    if format == "json":
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigSyntaxError(
                f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
    else:
        try:
            document = yaml.load(text, Loader=_Loader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = " ".join(part for part in (error.context, error.problem) if part)
            raise ConfigSyntaxError(f"not valid YAML{where}: {what}") from None
        except yaml.YAMLError as error:
            raise ConfigSyntaxError(f"not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ConfigSyntaxError(
            "the document must be a mapping with the sections "
            + ", ".join(SECTIONS)
            + f" (got {_kind(document)})"
        )
    return dict(_text_keys(document))


def dump_document(document: Mapping[str, Any], *, format: Literal["yaml", "json"] = "yaml") -> str:
    if format == "json":
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    return yaml.safe_dump(dict(document), allow_unicode=True, sort_keys=False, width=110)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    return {list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


# --- validation --------------------------------------------------------------------------------------------

# section -> (model, the field that names an item)
_ITEM_MODELS: Final[dict[str, tuple[type[BaseModel], str]]] = {
    "numbers": (NumberEntry, "number"),
    "trunks": (Trunk, "name"),
    "extensions": (Extension, "number"),
    "calendars": (BusinessCalendar, "id"),
    "skills": (Skill, "id"),
    "queues": (Queue, "name"),
    "agents": (Agent, "id"),
    "reason_codes": (ReasonCode, "code"),
}


def _clean_message(message: str) -> str:
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _pydantic_problems(error: ValidationError, label: str) -> list[ConfigProblem]:
    problems = []
    for detail in error.errors(include_url=False):
        parts = [str(part) for part in detail["loc"] if not str(part).startswith("function-")]
        path = ".".join([label, *parts]) if parts else label
        problems.append(ConfigProblem(path, _clean_message(detail["msg"])))
    return problems


def _raw_key(raw: Any, key_field: str) -> str | None:
    if isinstance(raw, Mapping):
        key = raw.get(key_field)
        if isinstance(key, str | int) and not isinstance(key, bool) and str(key).strip():
            return str(key).strip()
    return None


def _label(section: str, raw: Any, index: int, key_field: str) -> str:
    key = _raw_key(raw, key_field)
    return f"{section}[{key}]" if key is not None else f"{section}[{index}]"


@dataclass
class _Section:
    """What one section's validation produced."""

    items: list[Any] = field(default_factory=list)
    # Each item's path label, as written ("numbers[400-123-4567]").
    labels: list[str] = field(default_factory=list)
    # Flows only: every node that parses, by flow label, also of flows with other problems.
    flow_nodes: list[tuple[str, list[NodeBase]]] = field(default_factory=list)
    # Names of every item written, valid or not: references are checked against these, so a broken
    # item gives its own problems but no "missing" ones elsewhere.
    names: set[str] = field(default_factory=set)


def _section_items(document: Mapping[str, Any], section: str, problems: list[ConfigProblem]) -> list[Any]:
    raw = document.get(section)
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(ConfigProblem(section, f"must be a list, not {_kind(raw)}"))
        return []
    return raw


def _validate_items(document: Mapping[str, Any], section: str, problems: list[ConfigProblem]) -> _Section:
    model, key_field = _ITEM_MODELS[section]
    result = _Section()
    seen: set[str] = set()
    for index, raw in enumerate(_section_items(document, section, problems)):
        label = _label(section, raw, index, key_field)
        raw_name = _raw_key(raw, key_field)
        if raw_name is not None:
            result.names.add(raw_name)
        try:
            item = model.model_validate(raw)
        except ValidationError as error:
            problems.extend(_pydantic_problems(error, label))
            # Without its broken fields the item may still parse: then its references are checked too,
            # so one round of fixes is enough. (The document is refused anyway.)
            partial = _without_broken_fields(model, raw, error)
            if partial is not None:
                result.items.append(partial)
                result.labels.append(label)
            continue
        name = str(getattr(item, key_field))
        result.names.add(name)
        if name in seen:
            problems.append(ConfigProblem(label, f"{section} has {name!r} more than once"))
            continue
        seen.add(name)
        result.items.append(item)
        result.labels.append(label)
    return result


def _without_broken_fields(model: type[BaseModel], raw: Any, error: ValidationError) -> BaseModel | None:
    details = error.errors()
    if not isinstance(raw, Mapping) or any(not detail["loc"] for detail in details):
        return None  # not a mapping, or the item as a whole is wrong
    broken = {detail["loc"][0] for detail in details}
    try:
        return model.model_validate({key: value for key, value in raw.items() if key not in broken})
    except ValidationError:
        return None


def _flow_problem(flow_label: str, problem: FlowProblem) -> ConfigProblem:
    path = flow_label
    if problem.node_id:
        path += f".nodes[{problem.node_id}]"
    if problem.field:
        path += f".{problem.field}"
    return ConfigProblem(path, problem.message)


def _validate_flows(
    document: Mapping[str, Any], calendar_names: set[str], problems: list[ConfigProblem]
) -> _Section:
    raws = _section_items(document, "flows", problems)
    result = _Section()
    result.names = {key for raw in raws if (key := _raw_key(raw, "id")) is not None}
    seen: set[str] = set()
    for index, raw in enumerate(raws):
        label = _label("flows", raw, index, "id")
        if not isinstance(raw, Mapping):
            problems.append(ConfigProblem(label, f"a flow must be a mapping, not {_kind(raw)}"))
            continue
        flow, flow_problems = validate_document(raw, flow_exists=result.names, calendars=calendar_names)
        problems.extend(_flow_problem(label, problem) for problem in flow_problems)
        if flow is None:
            result.flow_nodes.append((label, _parsable_nodes(raw)))
            continue
        if flow.id in seen:
            problems.append(ConfigProblem(label, f"flows has {flow.id!r} more than once"))
            continue
        seen.add(flow.id)
        result.items.append(flow)
        result.labels.append(label)
        result.flow_nodes.append((label, list(flow.nodes)))
    return result


_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)


def _parsable_nodes(raw: Mapping[str, Any]) -> list[NodeBase]:
    """The nodes of a flow with problems that parse on their own, for the cross-reference checks."""
    nodes: list[NodeBase] = []
    raw_nodes = raw.get("nodes")
    for raw_node in raw_nodes if isinstance(raw_nodes, list) else []:
        try:
            nodes.append(_NODE_ADAPTER.validate_python(raw_node))
        except ValidationError:
            continue  # the IVR validator has reported it
    return nodes


def _skill_names(expression: SkillExpression | None) -> list[str]:
    if expression is None:
        return []
    if isinstance(expression, SkillAtLeast):
        return [expression.skill]
    if isinstance(expression, AllSkills):
        return [name for part in expression.all for name in _skill_names(part)]
    if isinstance(expression, AnySkill):
        return [name for part in expression.any for name in _skill_names(part)]
    if isinstance(expression, NotSkill):
        return _skill_names(expression.not_)
    return []


class _References:
    """Cross-reference checks over the whole document."""

    def __init__(self, sections: Mapping[str, _Section], problems: list[ConfigProblem]) -> None:
        self.sections = sections
        self.problems = problems

    def names(self, section: str) -> set[str]:
        return self.sections[section].names

    def labelled(self, section: str) -> Iterable[tuple[Any, str]]:
        return zip(self.sections[section].items, self.sections[section].labels, strict=True)

    def require(self, path: str, section: str, name: str | None, what: str) -> None:
        if name is not None and name not in self.names(section):
            self.problems.append(ConfigProblem(path, f"no {what} {name!r}"))

    def target(self, path: str, target: NumberTarget) -> None:
        what = {
            "flow": ("flows", "flow"),
            "queue": ("queues", "queue"),
            "extension": ("extensions", "extension"),
        }
        if target.kind in what:
            section, noun = what[target.kind]
            self.require(path, section, target.ref, noun)

    def destination(self, path: str, destination: QueueDestination | None, own_queue: str) -> None:
        if destination is None:
            return
        if destination.kind == "queue":
            if destination.ref == own_queue:
                self.problems.append(ConfigProblem(path, "a queue cannot send calls to itself"))
            self.require(path, "queues", destination.ref, "queue")
        elif destination.kind == "flow":
            self.require(path, "flows", destination.ref, "flow")

    def skills(self, path: str, expression: SkillExpression | None) -> None:
        for name in dict.fromkeys(_skill_names(expression)):
            self.require(path, "skills", name, "skill")

    def check(self) -> None:
        extension_numbers = self.names("extensions")
        for entry, label in self.labelled("numbers"):
            self.target(f"{label}.target", entry.target)
            if entry.number in extension_numbers:
                self.problems.append(ConfigProblem(label, f"{entry.number} is also an extension"))

        agents: dict[str, Agent] = {agent.id: agent for agent in self.sections["agents"].items}
        for extension, label in self.labelled("extensions"):
            self.require(f"{label}.agent", "agents", extension.agent, "agent")
            self.require(f"{label}.outbound_trunk", "trunks", extension.outbound_trunk, "trunk")
            agent = agents.get(extension.agent) if extension.agent else None
            if agent is not None and agent.extension is not None and agent.extension != extension.number:
                self.problems.append(
                    ConfigProblem(
                        f"{label}.agent",
                        f"agent {agent.id} has extension {agent.extension}, not {extension.number}",
                    )
                )

        for queue, label in self.labelled("queues"):
            self.skills(f"{label}.skills", queue.skills)
            for index, rule in enumerate(queue.overflow):
                for target in rule.queues:
                    path = f"{label}.overflow.{index}.queues"
                    if target == queue.name:
                        self.problems.append(ConfigProblem(path, "a queue cannot overflow to itself"))
                    else:
                        self.require(path, "queues", target, "queue")
            self.destination(f"{label}.on_max_wait", queue.on_max_wait, queue.name)
            self.destination(f"{label}.on_full", queue.on_full, queue.name)

        extension_owner: dict[str, str] = {}
        for agent, label in self.labelled("agents"):
            for skill in agent.skills:
                self.require(f"{label}.skills.{skill}", "skills", skill, "skill")
            for queue_name in agent.queues:
                self.require(f"{label}.queues", "queues", queue_name, "queue")
            if agent.extension is not None:
                self.require(f"{label}.extension", "extensions", agent.extension, "extension")
                other = extension_owner.setdefault(agent.extension, agent.id)
                if other != agent.id:
                    self.problems.append(
                        ConfigProblem(
                            f"{label}.extension", f"extension {agent.extension} is already agent {other}'s"
                        )
                    )

        for flow_label, nodes in self.sections["flows"].flow_nodes:
            for node in nodes:
                self.flow_node(f"{flow_label}.nodes[{node.id}]", node)

    def flow_node(self, label: str, node: NodeBase) -> None:
        if isinstance(node, QueueNode):
            self.require(f"{label}.queue", "queues", node.queue, "queue")
            for name in node.overflow_queues:
                self.require(f"{label}.overflow_queues", "queues", name, "queue")
            self.skills(f"{label}.skills", node.skills)
        elif isinstance(node, CallbackNode):
            self.require(f"{label}.queue", "queues", node.queue, "queue")
        elif isinstance(node, TransferNode) and "{" not in node.target.address:
            # A templated address is chosen at run time (e.g. by a lookup); a literal one must exist.
            if node.target.kind == "extension":
                self.require(f"{label}.target.address", "extensions", node.target.address, "extension")
            elif node.target.kind == "agent":
                self.require(f"{label}.target.address", "agents", node.target.address, "agent")
        elif isinstance(node, VoicemailNode) and node.mailbox.id is not None:
            if node.mailbox.kind == "queue":
                self.require(f"{label}.mailbox.id", "queues", node.mailbox.id, "queue")
            elif node.mailbox.kind == "agent":
                self.require(f"{label}.mailbox.id", "agents", node.mailbox.id, "agent")


def validate_config(document: Mapping[str, Any]) -> tuple[TenantConfig | None, list[ConfigProblem]]:
    """Check a whole document without touching any database: every problem, each with its path."""
    problems: list[ConfigProblem] = []
    if not isinstance(document, Mapping):
        return None, [ConfigProblem("", f"the document must be a mapping, not {_kind(document)}")]
    for key in document:
        if key not in _TOP_LEVEL:
            problems.append(
                ConfigProblem(str(key), "unknown section; the sections are " + ", ".join(SECTIONS))
            )
    version = document.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        problems.append(
            ConfigProblem("schema_version", f"this Hotline reads schema version {SCHEMA_VERSION}")
        )

    settings = TenantSettings()
    raw_settings = document.get("settings")
    if raw_settings is not None:
        try:
            settings = TenantSettings.model_validate(raw_settings)
        except ValidationError as error:
            problems.extend(_pydantic_problems(error, "settings"))

    sections = {section: _validate_items(document, section, problems) for section in _ITEM_MODELS}
    sections["flows"] = _validate_flows(document, sections["calendars"].names, problems)
    _References(sections, problems).check()
    if problems:
        return None, problems
    config = TenantConfig.model_validate(
        {"settings": settings, **{section: result.items for section, result in sections.items()}}
    )
    return config, []


# --- reading and writing a tenant --------------------------------------------------------------------------

_STORED_KINDS: Final = {
    "extensions": ("extension", "number"),
    "trunks": ("trunk", "name"),
    "calendars": ("calendar", "id"),
    "skills": ("skill", "id"),
    "queues": ("queue", "name"),
    "agents": ("agent", "id"),
    "reason_codes": ("reason_code", "code"),
}


def _stored(items: Sequence[BaseModel], key_field: str) -> dict[str, dict[str, Any]]:
    return {str(getattr(item, key_field)): item.model_dump(mode="json") for item in items}


def _parse_stored(
    tenant: str, kind: str, documents: Mapping[str, Any], model: type[_ModelT]
) -> list[_ModelT]:
    parsed = []
    for key, document in documents.items():
        try:
            parsed.append(model.model_validate(document))
        except ValidationError as error:
            # Written valid; a later, stricter model may refuse it. Say so rather than fail the export.
            log.error("config.stored_object_invalid", tenant=tenant, kind=kind, key=key, error=str(error))
    return parsed


async def load_tenant_config(storage: Storage, tenant: str) -> TenantConfig:
    """The tenant's live configuration. Raises TenantNotFound when the platform has no such tenant."""
    async with storage.platform_session() as platform:
        record = await platform.get(TenantRecord, tenant)
        if record is None:
            raise TenantNotFound(f"tenant {tenant!r} does not exist")
        sip_domain = record.sip_domain
        public = (
            await platform.scalars(
                select(NumberRecord).where(NumberRecord.tenant_id == tenant).order_by(NumberRecord.number)
            )
        ).all()
        public_entries = [
            NumberEntry(
                number=number.number,
                target=NumberTarget.from_platform(number.target_type, number.target),
                public=True,
            )
            for number in public
        ]
    async with storage.tenant_session(tenant) as session:
        objects = await config_store.read_objects(session)
        flows = await config_store.read_live_flows(session)
    numbers = public_entries + _parse_stored(tenant, "number", objects.get("number", {}), NumberEntry)
    sections: dict[str, Any] = {
        section: _parse_stored(tenant, kind, objects.get(kind, {}), _ITEM_MODELS[section][0])
        for section, (kind, _key) in _STORED_KINDS.items()
    }
    return TenantConfig(
        settings=TenantSettings(sip_domain=sip_domain),
        numbers=sorted(numbers, key=lambda entry: entry.number),
        flows=_parse_stored(tenant, "flow", flows, Flow),
        **sections,
    )


async def export_tenant(storage: Storage, tenant: str) -> dict[str, Any]:
    """The tenant's configuration as a document (dict); :func:`dump_document` makes it YAML or JSON."""
    return (await load_tenant_config(storage, tenant)).to_document()


class _Rejected(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems


async def import_tenant(
    storage: Storage,
    tenancy: TenancyService,
    tenant: str,
    document: Mapping[str, Any],
    *,
    directory: Directory | None = None,
) -> ImportResult:
    """Validate `document` whole and, only when it has no problem, make it the tenant's configuration."""
    # Validation hashes agents' passwords (argon2, CPU-bound): off the event loop that carries calls.
    config, problems = await asyncio.to_thread(validate_config, document)
    if config is None:
        return ImportResult(problems=problems)
    return await apply_config(storage, tenancy, tenant, config, directory=directory)


async def apply_config(
    storage: Storage,
    tenancy: TenancyService,
    tenant: str,
    config: TenantConfig,
    *,
    directory: Directory | None = None,
) -> ImportResult:
    """Apply an already validated configuration (platform checks still apply)."""
    result = ImportResult()
    public = {entry.number: entry for entry in config.numbers if entry.public}
    try:
        async with storage.platform_session() as platform:
            platform_changes = await _apply_platform(platform, tenant, config, public)
            await platform.flush()
            async with storage.tenant_session(tenant) as session:
                result.changed = await config_store.replace_objects(
                    session,
                    {
                        "number": _stored([e for e in config.numbers if not e.public], "number"),
                        **{
                            kind: _stored(getattr(config, section), key)
                            for section, (kind, key) in _STORED_KINDS.items()
                        },
                    },
                )
                result.flows_published, result.flows_retired = await config_store.replace_live_flows(
                    session, {flow.id: flow.model_dump(mode="json") for flow in config.flows}
                )
                result.changed += platform_changes + len(result.flows_published) + len(result.flows_retired)
                if result.changed:
                    result.revision = await config_store.bump_revision(session)
                else:
                    result.revision = await config_store.read_revision(session)
            # The tenant's transaction has committed; the platform's commits as this block ends.
    except _Rejected as rejected:
        return ImportResult(problems=rejected.problems)
    except IntegrityError:
        return ImportResult(
            problems=[
                ConfigProblem("numbers", "another change took one of these numbers meanwhile; try again")
            ]
        )
    result.applied = True
    log.info(
        "config.imported",
        tenant=tenant,
        revision=result.revision,
        changed=result.changed,
        flows_published=result.flows_published,
    )
    if directory is not None:
        await directory.reload_platform()
        await directory.reload_tenant(tenant)
    return result


async def _apply_platform(
    platform: AsyncSession, tenant: str, config: TenantConfig, public: Mapping[str, NumberEntry]
) -> int:
    """The platform's part: the tenant's public numbers and SIP domain. Raises _Rejected with every
    conflict found."""
    problems: list[ConfigProblem] = []
    record = await platform.get(TenantRecord, tenant, with_for_update=True)
    if record is None:
        raise _Rejected([ConfigProblem("", f"tenant {tenant!r} does not exist")])
    if record.status == "closed":
        raise _Rejected([ConfigProblem("", f"tenant {tenant!r} is closed")])
    domain = config.settings.sip_domain
    if domain is not None:
        holder = await platform.scalar(
            select(TenantRecord.id).where(TenantRecord.sip_domain == domain, TenantRecord.id != tenant)
        )
        if holder is not None:
            problems.append(ConfigProblem("settings.sip_domain", f"{domain} is another tenant's SIP domain"))
    held = {
        number.number: number
        for number in (
            await platform.scalars(
                select(NumberRecord).where(
                    (NumberRecord.tenant_id == tenant) | NumberRecord.number.in_(list(public))
                )
            )
        ).all()
    }
    for number, entry in public.items():
        existing = held.get(number)
        if existing is not None and existing.tenant_id != tenant:
            problems.append(
                ConfigProblem(f"numbers[{entry.number}]", "this number belongs to another tenant")
            )
    if problems:
        raise _Rejected(problems)

    changes = 0
    if record.sip_domain != domain:
        record.sip_domain = domain
        changes += 1
    for number, existing in held.items():
        if existing.tenant_id == tenant and number not in public:
            await platform.delete(existing)
            changes += 1
    for number, entry in public.items():
        existing = held.get(number)
        target_type, target = entry.target.kind, entry.target.platform_target()
        if existing is None:
            _canonical, kind = normalize_number(number)
            platform.add(
                NumberRecord(
                    number=number,
                    kind=kind,
                    tenant_id=tenant,
                    target_type=target_type,
                    target=target,
                    created_at=datetime.now(UTC),
                )
            )
            changes += 1
        elif (existing.target_type, existing.target) != (target_type, target):
            existing.target_type, existing.target = target_type, target
            changes += 1
    return changes


def normalize_sip_domain(domain: str) -> str:
    """The domain as stored (lower case, no trailing dot); ValueError with a sentence when it is not one."""
    try:
        normalized = TenantSettings(sip_domain=domain).sip_domain
    except ValidationError as error:
        raise ValueError(f"SIP domain {domain!r}: {_clean_message(error.errors()[0]['msg'])}") from None
    assert normalized is not None
    return normalized


async def set_sip_domain(storage: Storage, tenant: str, domain: str | None) -> str | None:
    """Set (or clear) the tenant's SIP domain; returns it normalised. Raises ValueError with a sentence."""
    normalized = normalize_sip_domain(domain) if domain is not None else None
    async with storage.platform_session() as platform:
        record = await platform.get(TenantRecord, tenant)
        if record is None:
            raise TenantNotFound(f"tenant {tenant!r} does not exist")
        if normalized is not None:
            holder = await platform.scalar(
                select(TenantRecord.id).where(
                    TenantRecord.sip_domain == normalized, TenantRecord.id != tenant
                )
            )
            if holder is not None:
                raise ValueError(f"{normalized} is another tenant's SIP domain")
        record.sip_domain = normalized
    return normalized


# --- flow drafts and publishing (IVR-15) -------------------------------------------------------------------


async def save_flow_draft(
    storage: Storage, tenant: str, document: Mapping[str, Any]
) -> tuple[int | None, list[ConfigProblem]]:
    """Validate a flow against the tenant's live configuration and store it as a new draft version
    (calls keep using the published one). Returns (version, []) or (None, problems)."""
    config = await load_tenant_config(storage, tenant)
    flow_id = _raw_key(document, "id")
    label = f"flows[{flow_id}]" if flow_id else "flows[0]"
    flow_names = {flow.id for flow in config.flows} | ({flow_id} if flow_id else set())
    flow, flow_problems = validate_document(
        document, flow_exists=flow_names, calendars={calendar.id for calendar in config.calendars}
    )
    problems = [_flow_problem(label, problem) for problem in flow_problems]
    if flow is not None:
        sections = _sections_of(config)
        sections["flows"] = _Section(items=[flow], labels=[label], names=flow_names)
        checker = _References(sections, problems)
        for node in flow.nodes:
            checker.flow_node(f"{label}.nodes[{node.id}]", node)
    if problems or flow is None:
        return None, problems
    async with storage.tenant_session(tenant) as session:
        version = await config_store.save_flow_version(session, flow.model_dump(mode="json"), "draft")
    return version, []


async def publish_flow(
    storage: Storage, tenant: str, flow_id: str, version: int, *, directory: Directory | None = None
) -> list[ConfigProblem]:
    """Make a stored version live for new calls (a draft, or an older version to roll back to)."""
    label = f"flows[{flow_id}]"
    config = await load_tenant_config(storage, tenant)
    async with storage.tenant_session(tenant) as session:
        stored = await config_store.read_flow_version(session, flow_id, version)
        if stored is None:
            return [ConfigProblem(label, f"flow {flow_id!r} has no version {version}")]
        # The rest of the configuration may have moved since the draft was saved: check again.
        flow, flow_problems = validate_document(
            stored[1],
            flow_exists={flow.id for flow in config.flows} | {flow_id},
            calendars={calendar.id for calendar in config.calendars},
        )
        problems = [_flow_problem(label, problem) for problem in flow_problems]
        if flow is not None:
            sections = _sections_of(config)
            checker = _References(sections, problems)
            for node in flow.nodes:
                checker.flow_node(f"{label}.nodes[{node.id}]", node)
        if problems:
            return problems
        await config_store.publish_flow_version(session, flow_id, version)
        await config_store.bump_revision(session)
    if directory is not None:
        await directory.reload_tenant(tenant)
    return []


def _sections_of(config: TenantConfig) -> dict[str, _Section]:
    sections: dict[str, _Section] = {}
    for section, (_model, key_field) in {**_ITEM_MODELS, "flows": (Flow, "id")}.items():
        items = list(getattr(config, section))
        names = [str(getattr(item, key_field)) for item in items]
        sections[section] = _Section(
            items=items, labels=[f"{section}[{name}]" for name in names], names=set(names)
        )
    return sections


def problems_text(problems: Iterable[ConfigProblem]) -> str:
    return "\n".join(str(problem) for problem in problems)


__all__ = [
    "SCHEMA_VERSION",
    "SECTIONS",
    "ConfigProblem",
    "ConfigSyntaxError",
    "ImportResult",
    "TenantConfig",
    "TenantSettings",
    "apply_config",
    "dump_document",
    "export_tenant",
    "import_tenant",
    "load_tenant_config",
    "normalize_sip_domain",
    "parse_document",
    "problems_text",
    "publish_flow",
    "save_flow_draft",
    "set_sip_domain",
    "validate_config",
]
