"""Validation on save: every problem listed at once, each with its node id and field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hotline.ivr.schema import Flow, flow_json_schema
from hotline.ivr.validator import FlowProblem, InvalidFlow, load_flow, validate_document, validate_flow
from tests.ivr.flows import demo_flow, tts


def problems_of(document: dict[str, Any], **kwargs: Any) -> set[tuple[str, str | None, str | None]]:
    flow, problems = validate_document(document, **kwargs)
    assert (flow is None) == bool(problems)
    return {(p.code, p.node_id, p.field) for p in problems}


def test_demo_flow_is_valid() -> None:
    flow, problems = validate_document(demo_flow(), flow_exists={"demo"}, calendars={"office"})
    assert problems == []
    assert flow is not None and flow.version == 3


def test_every_error_class_is_listed_together() -> None:
    document = {
        "id": "broken",
        "entry": "start",
        "nodes": [
            {
                "id": "start",
                "type": "menu",
                "prompts": [tts("   ")],  # empty text
                "options": {"1": "pin", "x": "ghost", "12": "pin"},  # not digits, missing node
                "exits": {"no_input": "spin_a"},
            },
            {
                "id": "pin",
                "type": "collect",
                "prompts": [{"kind": "file", "file": ""}],  # empty file reference
                "store_as": "pin",
                "pattern": "[0-9",  # invalid regex
                "exits": {"next": "sub"},
            },
            {"id": "sub", "type": "subflow", "flow": "nowhere", "exits": {"next": "start"}},
            {"id": "pin", "type": "play", "prompts": [tts("dup")]},  # duplicate id
            {"id": "island", "type": "hangup"},  # unreachable
            # A loop with no way out: each exit, default included, stays inside.
            {
                "id": "spin_a",
                "type": "set",
                "assignments": {"x": 1},
                "exits": {"next": "spin_b", "default": "spin_b"},
            },
            {
                "id": "spin_b",
                "type": "set",
                "assignments": {"x": 2},
                "exits": {"next": "spin_a", "default": "spin_a"},
            },
            {
                "id": "when",
                "type": "branch",
                "rules": [{"when": [{"subject": "calendar", "calendar": "nope"}], "goto": "start"}],
                "exits": {"otherwise": "start"},
            },
        ],
    }
    found = problems_of(document, flow_exists={"other"}, calendars={"office"})
    expected = {
        ("missing_prompt", "start", "prompts.0.text"),
        ("invalid_key", "start", "options.x"),
        ("invalid_key", "start", "options.12"),
        ("missing_target", "start", "options.x"),
        ("missing_prompt", "pin", "prompts.0.file"),
        ("invalid_regex", "pin", "pattern"),
        ("unknown_flow", "sub", "flow"),
        ("duplicate_id", "pin", "id"),
        ("unreachable", "island", None),
        ("unreachable", "when", None),
        ("loop_without_exit", "spin_a", None),
        ("unknown_calendar", "when", "rules.0.when.0"),
    }
    assert expected <= found, expected - found
    messages = [str(p) for p in validate_document(document, flow_exists={"other"})[1]]
    assert any("loop with no way out through spin_a, spin_b" in m for m in messages)
    assert all(len(m) < 140 for m in messages)


def test_schema_errors_in_one_node_do_not_hide_others() -> None:
    document = {
        "id": "f",
        "entry": "a",
        "nodes": [
            {"id": "a", "type": "menu", "prompts": [tts("hi")], "options": {"1": "b"}, "retries": 99},
            {"id": "b", "type": "teleport"},
            {"id": "c", "type": "play", "prompts": [tts("")], "exits": {"next": "zzz"}},
        ],
    }
    found = problems_of(document)
    assert ("schema", "a", "retries") in found
    assert any(code == "schema" and node == "b" for code, node, _ in found)
    assert ("missing_prompt", "c", "prompts.0.text") in found
    assert ("missing_target", "c", "exits.next") in found
    # "b" failed to parse, so exits to it are not reported as missing.
    assert not any(code == "missing_target" and node == "a" for code, node, _ in found)


def test_flow_level_problems() -> None:
    found = problems_of(
        {"id": "f", "entry": "nowhere", "default_exit": "gone", "nodes": [{"id": "a", "type": "hangup"}]}
    )
    assert ("missing_entry", None, "entry") in found
    assert ("missing_target", None, "default_exit") in found
    assert problems_of({"id": "f", "entry": "a", "nodes": []}) == {("schema", None, "nodes")}
    assert validate_document("{not json")[1][0].code == "json"
    assert validate_document("[1, 2]")[1][0].code == "json"


@pytest.mark.parametrize(
    ("node", "code", "field"),
    [
        (
            {"type": "collect", "prompts": [tts("x")], "store_as": "a", "pattern": "(\\d*)*#"},
            "unsafe_regex",
            "pattern",
        ),
        (
            {"type": "collect", "prompts": [tts("x")], "store_as": "a", "min_digits": 9, "max_digits": 4},
            "digit_range",
            "min_digits",
        ),
        ({"type": "collect", "prompts": [tts("x")], "store_as": "ivr.path"}, "invalid_data_path", "store_as"),
        ({"type": "collect", "prompts": [], "store_as": "a"}, "missing_prompt", "prompts"),
        ({"type": "menu", "prompts": [tts("x")], "options": {}}, "no_options", "options"),
        (
            {"type": "menu", "prompts": [tts("x")], "options": {"1": "end"}, "repeat_key": "1"},
            "invalid_key",
            "repeat_key",
        ),
        (
            {"type": "menu", "prompts": [tts("x")], "options": {"1": "end"}, "timeout": 2},
            "timeout_too_short",
            "timeout",
        ),
        ({"type": "play", "prompts": [tts("余额 {data.balance")]}, "invalid_template", "prompts.0.text"),
        ({"type": "play", "prompts": [tts("hello {0}")]}, "invalid_template", "prompts.0.text"),
        ({"type": "play", "prompts": [tts("hello {secret}")]}, "invalid_template", "prompts.0.text"),
        ({"type": "set", "assignments": {"bad path!": 1}}, "invalid_data_path", "assignments.bad path!"),
        ({"type": "lookup", "url": "ftp://example.com/x"}, "invalid_url", "url"),
        (
            {"type": "lookup", "url": "http://127.0.0.1/x", "response_map": {"ivr": "a"}},
            "invalid_data_path",
            "response_map.ivr",
        ),
        ({"type": "queue", "queue": "q", "max_wait": 600, "timeout": 30}, "timeout_too_short", "timeout"),
        ({"type": "voicemail", "mailbox": {"kind": "queue"}}, "invalid_field", "mailbox.id"),
        (
            {"type": "callback", "prompts": [tts("x")], "queue": "q", "accept_key": "A"},
            "invalid_key",
            "accept_key",
        ),
        ({"type": "subflow", "flow": "f"}, "recursive_subflow", "flow"),
        (
            {
                "type": "branch",
                "rules": [{"when": [{"subject": "data", "op": "eq", "value": 1}], "goto": "end"}],
            },
            "invalid_condition",
            "rules.0.when.0.key",
        ),
        (
            {
                "type": "branch",
                "rules": [{"when": [{"subject": "ani", "op": "in", "value": "021"}], "goto": "end"}],
            },
            "invalid_condition",
            "rules.0.when.0.value",
        ),
        (
            {"type": "play", "prompts": [tts("x")], "exits": {"next": "@elsewhere"}},
            "missing_target",
            "exits.next",
        ),
    ],
)
def test_each_node_check(node: dict[str, Any], code: str, field: str) -> None:
    document = {"id": "f", "entry": "n", "nodes": [{"id": "n", **node}, {"id": "end", "type": "hangup"}]}
    found = problems_of(document)
    assert (code, "n", field) in found, found


def test_load_flow_raises_with_all_problems() -> None:
    document = demo_flow()
    document["nodes"][2]["options"]["5"] = "missing"
    document["nodes"][2]["prompts"] = []
    with pytest.raises(InvalidFlow) as caught:
        load_flow(json.dumps(document))
    codes = {p.code for p in caught.value.problems}
    assert codes == {"missing_target", "missing_prompt"}
    assert "node main" in str(caught.value)


def test_validate_flow_on_a_parsed_flow_and_resolver_callable() -> None:
    flow = Flow.model_validate(
        {"id": "f", "entry": "s", "nodes": [{"id": "s", "type": "subflow", "flow": "greeting"}]}
    )
    assert validate_flow(flow, flow_exists=lambda flow_id: flow_id == "greeting") == []
    assert [p.code for p in validate_flow(flow, flow_exists=lambda flow_id: False)] == ["unknown_flow"]


def test_defaults_are_filled_so_every_node_has_timeout_and_default_exit() -> None:
    flow = load_flow({**demo_flow(), "default_exit": "bye"})
    for node in flow.nodes:
        assert node.timeout > 0
        assert node.exits.default == "bye"
    menu = flow.node_map()["main"]
    assert menu.timeout >= 3 * 5  # long enough for all its waits
    queue = flow.node_map()["sales"]
    assert queue.timeout > 120  # longer than max_wait
    # The filled document round-trips and still validates.
    again, problems = validate_document(flow.model_dump_json())
    assert problems == [] and again == flow


def test_json_schema_lists_every_node_type() -> None:
    schema = flow_json_schema()
    node_schema = schema["properties"]["nodes"]["items"]
    assert set(node_schema["discriminator"]["mapping"]) == {
        "play", "menu", "collect", "set", "branch", "lookup", "queue", "transfer",
        "voicemail", "callback", "subflow", "language", "hangup",
    }  # fmt: skip
    json.dumps(schema)  # serialisable


def test_problem_str_is_readable() -> None:
    assert str(FlowProblem("unreachable", "no path leads here", "n")) == "node n: no path leads here"
    assert str(FlowProblem("missing_entry", "entry missing", None, "entry")) == "flow, entry: entry missing"
