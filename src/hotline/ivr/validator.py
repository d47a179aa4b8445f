"""Validate IVR flows on save, listing every problem at once with the node it belongs to.

- :func:`validate_document(document, flow_exists=None, calendars=None) -> (Flow | None, problems)`:
  a JSON text or a parsed dict. Each node is parsed on its own, so one broken node does not hide the
  problems of the others; graph checks (reachability, loops) run once every node parses.
- :func:`validate_flow(flow, ...) -> list[FlowProblem]`: the same checks on a parsed :class:`Flow`.
- :func:`load_flow(document, ...) -> Flow`: raises :class:`InvalidFlow` carrying the problems.

``flow_exists`` answers whether a sub-flow id names a flow of the tenant (a callable or a collection);
``calendars`` holds the tenant's calendar ids. When either is ``None`` that check is skipped.

A :class:`FlowProblem` has a ``code`` for programs, a short English ``message``, the ``node_id`` (or
``None`` for the flow itself) and the ``field`` (dotted, e.g. ``options.1``, ``prompts.0.text``).
Codes: ``json``, ``schema``, ``duplicate_id``, ``missing_entry``, ``missing_target``, ``unreachable``,
``loop_without_exit``, ``missing_prompt``, ``invalid_template``, ``invalid_regex``, ``unsafe_regex``,
``digit_range``, ``invalid_key``, ``no_options``, ``invalid_data_path``, ``invalid_condition``,
``unknown_calendar``, ``invalid_url``, ``invalid_field``, ``unknown_flow``, ``recursive_subflow``,
``timeout_too_short``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from hotline.ivr.patterns import digit_pattern_problem
from hotline.ivr.schema import (
    RESERVED_TARGETS,
    BranchNode,
    CalendarCondition,
    CallbackNode,
    CollectNode,
    FilePrompt,
    Flow,
    FlowHeader,
    HangupNode,
    LanguageNode,
    LocalizedText,
    LookupNode,
    MenuNode,
    Node,
    NodeBase,
    PromptSpec,
    QueueNode,
    SetNode,
    SubflowNode,
    TransferNode,
    TtsPrompt,
    ValueCondition,
    VoicemailNode,
    fill_default_exits,
)
from hotline.ivr.variables import RESERVED_DATA_KEY, is_data_path, template_problems
from hotline.switch.control import DTMF_KEYS

FlowExists = Callable[[str], bool] | Collection[str]

_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)
_RESPONSE_PATH = re.compile(r"[^.\s]{1,100}(?:\.[^.\s]{1,100}){0,15}")
# Node types that can end a run by themselves (hang-up, or hand the call to someone else).
_TERMINAL_TYPES = (HangupNode, QueueNode, TransferNode)


@dataclass(frozen=True, slots=True)
class FlowProblem:
    code: str
    message: str
    node_id: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id}" if self.node_id else "flow"
        if self.field:
            where += f", {self.field}"
        return f"{where}: {self.message}"


class InvalidFlow(ValueError):
    def __init__(self, problems: list[FlowProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


def load_flow(
    document: str | bytes | Mapping[str, Any],
    *,
    flow_exists: FlowExists | None = None,
    calendars: Collection[str] | None = None,
) -> Flow:
    flow, problems = validate_document(document, flow_exists=flow_exists, calendars=calendars)
    if problems or flow is None:
        raise InvalidFlow(problems)
    return flow


def validate_document(
    document: str | bytes | Mapping[str, Any],
    *,
    flow_exists: FlowExists | None = None,
    calendars: Collection[str] | None = None,
) -> tuple[Flow | None, list[FlowProblem]]:
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            return None, [FlowProblem("json", f"not valid JSON: {error.msg} (line {error.lineno})")]
        except UnicodeDecodeError:
            return None, [FlowProblem("json", "not valid UTF-8")]
    if not isinstance(document, Mapping):
        return None, [FlowProblem("json", "a flow must be a JSON object")]

    problems: list[FlowProblem] = []
    raw_nodes = document.get("nodes")
    nodes: list[Node] = []
    failed_ids: set[str] = set()
    if not isinstance(raw_nodes, list) or not raw_nodes:
        problems.append(FlowProblem("schema", "a flow needs a list of at least one node", field="nodes"))
        raw_nodes = []
    for index, raw in enumerate(raw_nodes):
        raw_id = raw.get("id") if isinstance(raw, Mapping) else None
        node_id = raw_id if isinstance(raw_id, str) and raw_id else None
        try:
            nodes.append(_NODE_ADAPTER.validate_python(raw))
        except ValidationError as error:
            if node_id:
                failed_ids.add(node_id)
            node_type = raw.get("type") if isinstance(raw, Mapping) else None
            problems.extend(_schema_problems(error, node_id, strip=node_type, prefix=f"nodes.{index}"))

    header: FlowHeader | None = None
    try:
        header = FlowHeader.model_validate({k: v for k, v in document.items() if k != "nodes"})
    except ValidationError as error:
        problems.extend(_schema_problems(error, None, strip=None, prefix=None))

    if header is not None:
        fill_default_exits(nodes, header.default_exit)
    problems.extend(
        _semantic_problems(
            header,
            nodes,
            failed_ids,
            graph=header is not None and not failed_ids and bool(nodes),
            flow_exists=flow_exists,
            calendars=calendars,
        )
    )
    if problems:
        return None, problems
    try:
        return Flow.model_validate(document), []
    except ValidationError as error:  # only whole-document limits can get here (e.g. too many nodes)
        return None, _schema_problems(error, None, strip=None, prefix=None)


def validate_flow(
    flow: Flow, *, flow_exists: FlowExists | None = None, calendars: Collection[str] | None = None
) -> list[FlowProblem]:
    return _semantic_problems(
        flow, flow.nodes, set(), graph=True, flow_exists=flow_exists, calendars=calendars
    )


# --- helpers -------------------------------------------------------------------------------------------


def _schema_problems(
    error: ValidationError, node_id: str | None, *, strip: object, prefix: str | None
) -> list[FlowProblem]:
    problems = []
    for detail in error.errors(include_url=False):
        loc = list(detail["loc"])
        if loc and strip is not None and loc[0] == strip:
            loc = loc[1:]  # the discriminator tag pydantic puts first
        field = ".".join(str(part) for part in loc) or None
        if node_id is None and prefix:
            field = f"{prefix}.{field}" if field else prefix
        problems.append(FlowProblem("schema", detail["msg"], node_id, field))
    return problems


def _exists(flow_exists: FlowExists, flow_id: str) -> bool:
    if callable(flow_exists):
        return bool(flow_exists(flow_id))
    return flow_id in flow_exists


def _semantic_problems(
    header: FlowHeader | None,
    nodes: list[Node],
    failed_ids: set[str],
    *,
    graph: bool,
    flow_exists: FlowExists | None,
    calendars: Collection[str] | None,
) -> list[FlowProblem]:
    problems: list[FlowProblem] = []
    by_id: dict[str, NodeBase] = {}
    for node in nodes:
        if node.id in by_id or node.id in failed_ids:
            problems.append(
                FlowProblem("duplicate_id", f"node id {node.id!r} is used more than once", node.id, "id")
            )
        else:
            by_id[node.id] = node
    known = set(by_id) | failed_ids

    if header is not None and known:  # with no nodes at all, "needs a node" says it already
        if header.entry not in known:
            problems.append(
                FlowProblem("missing_entry", f"entry node {header.entry!r} does not exist", None, "entry")
            )
        if header.default_exit not in RESERVED_TARGETS and header.default_exit not in known:
            problems.append(
                FlowProblem(
                    "missing_target",
                    f"default exit {header.default_exit!r} does not exist",
                    None,
                    "default_exit",
                )
            )

    for node in nodes:
        problems.extend(_target_problems(node, known))
        problems.extend(_prompt_problems(node))
        problems.extend(_node_problems(node, header, flow_exists, calendars))

    if graph and header is not None and header.entry in by_id:
        problems.extend(_graph_problems(header.entry, nodes, by_id))
    return problems


def _target_problems(node: NodeBase, known: set[str]) -> Iterable[FlowProblem]:
    for field, target in node.all_targets().items():
        if target.startswith("@"):
            if target not in RESERVED_TARGETS:
                yield FlowProblem(
                    "missing_target", f"unknown target {target!r} (use @hangup or @return)", node.id, field
                )
        elif target not in known:
            yield FlowProblem("missing_target", f"exit goes to missing node {target!r}", node.id, field)


def _text_problems(node_id: str, field: str, text: LocalizedText, what: str) -> Iterable[FlowProblem]:
    texts = {"": text} if isinstance(text, str) else {f".{lang}": value for lang, value in text.items()}
    if not texts:
        yield FlowProblem("missing_prompt", f"empty {what}", node_id, field)
    for suffix, value in texts.items():
        if not value.strip():
            yield FlowProblem("missing_prompt", f"empty {what}", node_id, field + suffix)
        elif what == "text":
            for message in template_problems(value):
                yield FlowProblem("invalid_template", message, node_id, field + suffix)


def _prompt_problems(node: NodeBase) -> Iterable[FlowProblem]:
    prompt_lists: dict[str, list[PromptSpec]] = node.prompt_lists()
    for list_field, prompts in prompt_lists.items():
        if not prompts and list_field in node.required_prompts:
            yield FlowProblem("missing_prompt", "no prompt to play", node.id, list_field)
        for index, prompt in enumerate(prompts):
            if isinstance(prompt, TtsPrompt):
                yield from _text_problems(node.id, f"{list_field}.{index}.text", prompt.text, "text")
            elif isinstance(prompt, FilePrompt):
                yield from _text_problems(
                    node.id, f"{list_field}.{index}.file", prompt.file, "file reference"
                )


def _key_problems(node_id: str, keys: Iterable[str], field: str) -> Iterable[FlowProblem]:
    for key in keys:
        if key not in DTMF_KEYS:
            yield FlowProblem(
                "invalid_key", f"{key!r} is not a phone key (0-9, * or #)", node_id, f"{field}.{key}"
            )


def _data_path_problem(node_id: str, path: str, field: str) -> FlowProblem | None:
    if not is_data_path(path):
        return FlowProblem(
            "invalid_data_path", f"{path!r} is not a data path like customer.tier", node_id, field
        )
    if path.split(".", 1)[0] == RESERVED_DATA_KEY:
        return FlowProblem(
            "invalid_data_path", f"{RESERVED_DATA_KEY!r} data is kept by the IVR itself", node_id, field
        )
    return None


def _node_problems(
    node: NodeBase,
    header: FlowHeader | None,
    flow_exists: FlowExists | None,
    calendars: Collection[str] | None,
) -> Iterable[FlowProblem]:
    explicit_timeout = "timeout" in node.model_fields_set

    def too_short(needed: float, what: str) -> FlowProblem | None:
        if explicit_timeout and node.timeout < needed:
            return FlowProblem(
                "timeout_too_short", f"timeout {node.timeout:g}s is shorter than {what}", node.id, "timeout"
            )
        return None

    checks: list[FlowProblem | None] = []
    if isinstance(node, MenuNode):
        if not node.options:
            checks.append(FlowProblem("no_options", "menu has no options", node.id, "options"))
        checks.extend(_key_problems(node.id, node.options, "options"))
        if node.repeat_key is not None:
            if node.repeat_key not in DTMF_KEYS:
                checks.append(
                    FlowProblem("invalid_key", "repeat key is not a phone key", node.id, "repeat_key")
                )
            elif node.repeat_key in node.options:
                checks.append(
                    FlowProblem("invalid_key", "repeat key is also an option", node.id, "repeat_key")
                )
        checks.append(too_short(node.input_timeout * (node.retries + 1), "the input waits it contains"))
    elif isinstance(node, LanguageNode):
        if not node.options:
            checks.append(FlowProblem("no_options", "language choice has no options", node.id, "options"))
        checks.extend(_key_problems(node.id, node.options, "options"))
        checks.append(too_short(node.input_timeout * (node.retries + 1), "the input waits it contains"))
    elif isinstance(node, CollectNode):
        if node.min_digits > node.max_digits:
            checks.append(
                FlowProblem("digit_range", "min_digits is larger than max_digits", node.id, "min_digits")
            )
        if node.pattern is not None:
            problem = digit_pattern_problem(node.pattern)
            if problem is not None:
                code = "invalid_regex" if problem.startswith("invalid regex") else "unsafe_regex"
                checks.append(FlowProblem(code, problem, node.id, "pattern"))
        checks.append(_data_path_problem(node.id, node.store_as, "store_as"))
        checks.append(too_short(node.input_timeout * (node.retries + 1), "the input waits it contains"))
    elif isinstance(node, CallbackNode):
        if node.accept_key not in DTMF_KEYS:
            checks.append(FlowProblem("invalid_key", "accept key is not a phone key", node.id, "accept_key"))
        checks.append(too_short(node.input_timeout, "the input wait"))
    elif isinstance(node, SetNode):
        for path, value in node.assignments.items():
            checks.append(_data_path_problem(node.id, path, f"assignments.{path}"))
            if isinstance(value, str):
                checks.extend(
                    FlowProblem("invalid_template", message, node.id, f"assignments.{path}")
                    for message in template_problems(value)
                )
    elif isinstance(node, BranchNode):
        checks.extend(_branch_problems(node, calendars))
    elif isinstance(node, LookupNode):
        checks.extend(_lookup_problems(node))
    elif isinstance(node, QueueNode):
        if node.overflow_after is not None and not node.overflow_queues:
            checks.append(
                FlowProblem(
                    "invalid_field", "overflow_after needs overflow_queues", node.id, "overflow_after"
                )
            )
        checks.append(too_short(node.max_wait, "max_wait"))
    elif isinstance(node, TransferNode):
        checks.extend(
            FlowProblem("invalid_template", message, node.id, "target.address")
            for message in template_problems(node.target.address)
        )
    elif isinstance(node, VoicemailNode):
        if node.mailbox.kind != "tenant" and not node.mailbox.id:
            checks.append(
                FlowProblem(
                    "invalid_field", f"a {node.mailbox.kind} mailbox needs an id", node.id, "mailbox.id"
                )
            )
        checks.append(too_short(node.max_seconds, "max_seconds"))
    elif isinstance(node, SubflowNode):
        if header is not None and node.flow == header.id:
            checks.append(FlowProblem("recursive_subflow", "a flow cannot call itself", node.id, "flow"))
        elif flow_exists is not None and not _exists(flow_exists, node.flow):
            checks.append(FlowProblem("unknown_flow", f"no flow named {node.flow!r}", node.id, "flow"))
    return [check for check in checks if check is not None]


def _branch_problems(node: BranchNode, calendars: Collection[str] | None) -> Iterable[FlowProblem]:
    for rule_index, rule in enumerate(node.rules):
        for condition_index, condition in enumerate(rule.when):
            field = f"rules.{rule_index}.when.{condition_index}"
            if isinstance(condition, CalendarCondition):
                if calendars is not None and condition.calendar not in calendars:
                    yield FlowProblem(
                        "unknown_calendar", f"no calendar named {condition.calendar!r}", node.id, field
                    )
            elif isinstance(condition, ValueCondition):
                yield from _value_condition_problems(node.id, field, condition)


def _value_condition_problems(node_id: str, field: str, condition: ValueCondition) -> Iterable[FlowProblem]:
    if condition.subject == "data":
        if condition.key is None:
            yield FlowProblem("invalid_condition", "a data condition needs a key", node_id, f"{field}.key")
        elif not is_data_path(condition.key):
            yield FlowProblem(
                "invalid_condition", f"{condition.key!r} is not a data path", node_id, f"{field}.key"
            )
    elif condition.key is not None:
        yield FlowProblem("invalid_condition", "key is only for data conditions", node_id, f"{field}.key")
    is_list = isinstance(condition.value, list)
    if condition.op in ("in", "not_in") and not is_list:
        yield FlowProblem(
            "invalid_condition", f"{condition.op} needs a list of values", node_id, f"{field}.value"
        )
    elif condition.op not in ("in", "not_in", "exists", "missing"):
        if is_list:
            yield FlowProblem(
                "invalid_condition", f"{condition.op} needs a single value", node_id, f"{field}.value"
            )
        elif condition.value is None:
            yield FlowProblem("invalid_condition", f"{condition.op} needs a value", node_id, f"{field}.value")


def _lookup_problems(node: LookupNode) -> Iterable[FlowProblem]:
    try:
        url = httpx.URL(node.url)
        valid_url = url.scheme in ("http", "https") and bool(url.host)
    except (httpx.InvalidURL, ValueError):
        valid_url = False
    if not valid_url:
        yield FlowProblem("invalid_url", "url must be an http:// or https:// address", node.id, "url")
    for path, source in node.response_map.items():
        problem = _data_path_problem(node.id, path, f"response_map.{path}")
        if problem is not None:
            yield problem
        if not _RESPONSE_PATH.fullmatch(source):
            yield FlowProblem(
                "invalid_field", f"{source!r} is not a response field path", node.id, f"response_map.{path}"
            )
    for name, values in (("params", node.params), ("body", node.body or {})):
        for key, value in values.items():
            for message in template_problems(value):
                yield FlowProblem("invalid_template", message, node.id, f"{name}.{key}")


def _graph_problems(entry: str, nodes: list[Node], by_id: dict[str, NodeBase]) -> Iterable[FlowProblem]:
    edges = {
        node_id: [t for t in node.all_targets().values() if t in by_id] for node_id, node in by_id.items()
    }
    reachable = {entry}
    pending = [entry]
    while pending:
        for target in edges[pending.pop()]:
            if target not in reachable:
                reachable.add(target)
                pending.append(target)
    for node in nodes:
        if node.id in by_id and node.id not in reachable and by_id[node.id] is node:
            yield FlowProblem("unreachable", "no path from the entry node leads here", node.id)

    # Nodes that can end the run: terminal types, or an exit to @hangup/@return.
    ending = {
        node_id
        for node_id, node in by_id.items()
        if isinstance(node, _TERMINAL_TYPES)
        or any(t in RESERVED_TARGETS for t in node.all_targets().values())
    }
    incoming: dict[str, list[str]] = {node_id: [] for node_id in by_id}
    for source, targets in edges.items():
        for target in targets:
            incoming[target].append(source)
    can_end = set(ending)
    pending = list(ending)
    while pending:
        for source in incoming[pending.pop()]:
            if source not in can_end:
                can_end.add(source)
                pending.append(source)
    trapped = [node.id for node in nodes if node.id in reachable and node.id not in can_end]
    for component in _cycles(trapped, edges):
        members = ", ".join(component)
        yield FlowProblem("loop_without_exit", f"loop with no way out through {members}", component[0])


def _cycles(node_ids: list[str], edges: Mapping[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of the subgraph on ``node_ids`` that contain a cycle (Tarjan,
    iterative), each in flow order."""
    members = set(node_ids)
    position = {node_id: i for i, node_id in enumerate(node_ids)}
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in node_ids:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node_id, next_edge = work.pop()
            if next_edge == 0:
                index_of[node_id] = low[node_id] = counter
                counter += 1
                stack.append(node_id)
                on_stack.add(node_id)
            successors = [t for t in edges[node_id] if t in members]
            if next_edge < len(successors):
                work.append((node_id, next_edge + 1))
                successor = successors[next_edge]
                if successor not in index_of:
                    work.append((successor, 0))
                elif successor in on_stack:
                    low[node_id] = min(low[node_id], index_of[successor])
                continue
            if low[node_id] == index_of[node_id]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                if len(component) > 1 or node_id in successors:
                    components.append(sorted(component, key=position.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node_id])
    return components
