"""The whole-tenant configuration document: import/export round trips, all-or-nothing imports with every
problem listed, flow versions (IVR-15), on SQLite files and PostgreSQL schemas (`storage` fixture)."""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline.storage import Storage
from hotline.tenancy import TenancyService, config_store
from hotline.tenancy.config_document import (
    ConfigSyntaxError,
    TenantConfig,
    dump_document,
    export_tenant,
    import_tenant,
    load_tenant_config,
    parse_document,
    publish_flow,
    save_flow_draft,
    validate_config,
)

YAML_DOCUMENT = """
schema_version: 1
settings:
  sip_domain: Acme.Example.com
numbers:
  - {number: 400-123-4567, target: flow:main}
  - {number: 4001, target: queue:support}
  - {number: 9196, target: echo, public: false}
  - {number: 9197, target: readback, public: false}
trunks:
  - name: telecom
    kind: ip
    host: 198.51.100.10
    channel_limit: 30
    caller_id: {default: "4001234567", allowed: ["02155501*"]}
  - {name: backup, kind: register, host: sip.backup.example, username: acme, password: trunkpass, priority: 5}
extensions:
  - {number: 1001, password: ext1001pw, name: 前台 Reception, agent: 8001}
  - {number: 1002, password: ext1002pw, outbound_trunk: backup}
calendars:
  - id: office
    timezone: Asia/Shanghai
    weekly: {1: [{start: 09:00, end: 18:00}], 2: [{start: 09:00, end: 12:00}, {start: 13:00, end: 18:00}]}
    holidays: [{name: 国庆节, start: 2024-10-01, end: 2024-10-07}]
flows:
  - id: main
    entry: hours
    nodes:
      - id: hours
        type: branch
        rules: [{when: [{subject: calendar, calendar: office}], goto: menu}]
        exits: {otherwise: closed}
      - id: menu
        type: menu
        prompts: [{kind: tts, text: {zh: 销售请按1，技术支持请按2, en: "Sales 1, support 2"}}]
        options: {1: sales, 2: support, 0: operator}
      - {id: sales, type: queue, queue: sales, skills: {all: [{skill: sales, min_level: 3}]}}
      - {id: support, type: queue, queue: support, overflow_queues: [sales], overflow_after: 60}
      - id: operator
        type: transfer
        target: {kind: extension, address: "1001"}
      - {id: closed, type: hangup, prompts: [{kind: tts, text: 现在是非工作时间}]}
skills:
  - {id: sales, name: 销售}
  - {id: support, name: 技术支持}
queues:
  - {name: sales, strategy: round_robin, skills: {skill: sales}, on_max_wait: voicemail}
  - name: support
    acw_mode: mandatory
    wrap_up_seconds: 4
    max_length: 20
    on_full: queue:sales
    overflow: [{after_seconds: 30, queues: [sales], when_waiting_over: 25, when_idle_at_least: 4}]
agents:
  - {id: 8001, name: 张三, password: agent8001pw, skills: {sales: 7, support: {level: 3, preference: 1}},
     queues: [sales, support], extension: 1001}
  - {id: 8002, name: 李四, password: agent8002pw, skills: {support: 9}, queues: [support]}
reason_codes:
  - {code: meal, name: 就餐, name_en: Meal, max_minutes: 60}
  - {code: resolved, name: 已解决, kind: disposition}
"""


def unordered(dump: dict[str, Any]) -> dict[str, Any]:
    """Sections compared regardless of order (exports list items by name)."""
    return {
        key: sorted(value, key=lambda item: json.dumps(item, sort_keys=True, default=str))
        if isinstance(value, list)
        else value
        for key, value in dump.items()
    }


def document() -> dict[str, Any]:
    return parse_document(YAML_DOCUMENT)


@pytest.fixture
async def tenancy(storage: Storage) -> TenancyService:
    service = TenancyService(storage)
    await service.create_tenant("acme", "Acme")
    return service


async def revision_of(storage: Storage, tenant: str) -> int:
    async with storage.tenant_session(tenant) as session:
        return await config_store.read_revision(session)


async def test_import_export_import_round_trip(storage: Storage, tenancy: TenancyService) -> None:
    first = await import_tenant(storage, tenancy, "acme", document())
    assert first.ok, first.problems
    assert first.applied and first.revision == 1 and first.flows_published == {"main": 1}

    exported = await export_tenant(storage, "acme")
    assert exported["settings"] == {"sip_domain": "acme.example.com"}
    assert [entry["number"] for entry in exported["numbers"]] == ["+864001234567", "4001", "9196", "9197"]
    agent = next(agent for agent in exported["agents"] if agent["id"] == "8001")
    assert agent["password_hash"].startswith("$argon2id$") and "password" not in agent
    assert agent["skills"] == {"sales": 7, "support": {"level": 3, "preference": 1}}
    assert exported["flows"][0]["version"] == 1

    # What was exported means what was imported (agents' plain passwords became hashes).
    original = TenantConfig.model_validate(
        {**document(), "agents": [{**a, "password_hash": None} for a in document()["agents"]]}
    )
    back = TenantConfig.model_validate(exported)
    assert unordered(back.model_dump(exclude={"agents"})) == unordered(
        original.model_dump(exclude={"agents"})
    )
    assert unordered(back.model_dump(include={"agents": {"__all__": {"password_hash"}}})) != unordered(
        original.model_dump(include={"agents": {"__all__": {"password_hash"}}})
    )
    assert unordered(back.model_dump(exclude={"agents": {"__all__": {"password_hash"}}})) == unordered(
        original.model_dump(exclude={"agents": {"__all__": {"password_hash"}}})
    )

    again = await import_tenant(storage, tenancy, "acme", copy.deepcopy(exported))
    assert again.ok, again.problems
    assert again.changed == 0 and again.flows_published == {} and again.revision == 1
    assert await export_tenant(storage, "acme") == exported

    # Through YAML and JSON text as well.
    assert parse_document(dump_document(exported)) == exported
    assert parse_document(dump_document(exported, format="json"), format="json") == exported


async def test_every_problem_is_listed_with_its_path_and_nothing_applied(
    storage: Storage, tenancy: TenancyService
) -> None:
    assert (await import_tenant(storage, tenancy, "acme", document())).ok
    before = await export_tenant(storage, "acme")

    bad = document()
    bad["flows"][0]["nodes"][1]["options"]["1"] = "salse"  # IVR validator: missing node
    bad["flows"][0]["nodes"][2]["queue"] = "salez"  # cross-reference: missing queue
    bad["numbers"].append({"number": "4002", "target": "flow:nowhere"})  # number -> missing flow
    bad["numbers"].append({"number": "1002", "target": "echo", "public": False})  # clashes with an extension
    bad["numbers"].append({"number": "4001", "target": "echo"})  # duplicate number
    bad["queues"][0]["skills"] = {"skill": "cooking"}  # queue -> missing skill
    bad["agents"][1]["queues"].append("billing")  # agent in a missing queue
    bad["agents"][1]["extension"] = "1001"  # 8001 already sits at 1001
    bad["agents"][1]["password"] = "weak"  # its own problem, reported with its references
    bad["extensions"].append({"number": "1001", "password": "dupe1001x"})  # duplicate extension
    bad["extensions"].append({"number": "1003", "password": "short"})  # pydantic: too short
    bad["trunks"][0]["transport"] = "carrier-pigeon"  # pydantic: enumeration
    bad["calendars"][0]["timezone"] = "Mars/Olympus"
    bad["reason_codes"] = "meal"  # not a list
    bad["colour"] = "blue"  # unknown section

    result = await import_tenant(storage, tenancy, "acme", bad)
    assert not result.ok and not result.applied
    messages = {str(problem) for problem in result.problems}
    expected = {
        "flows[main].nodes[menu].options.1: exit goes to missing node 'salse'",
        "flows[main].nodes[sales].queue: no queue 'salez'",
        "numbers[4002].target: no flow 'nowhere'",
        "numbers[1002]: 1002 is also an extension",
        "numbers[4001]: numbers has '4001' more than once",
        "queues[sales].skills: no skill 'cooking'",
        "agents[8002].queues: no queue 'billing'",
        "agents[8002].extension: extension 1001 is already agent 8001's",
        "agents[8002].password: password must be longer than 6 characters",
        "extensions[1001]: extensions has '1001' more than once",
        "extensions[1003].password: String should have at least 8 characters",
        "reason_codes: must be a list, not text",
    }
    assert expected <= messages, expected - messages
    paths = {problem.path for problem in result.problems}
    assert "trunks[telecom].transport" in paths
    assert "calendars[office].timezone" in paths
    assert "colour" in paths
    # Nothing was applied: configuration and revision as before.
    assert await export_tenant(storage, "acme") == before
    assert await revision_of(storage, "acme") == 1


async def test_platform_conflicts_reject_the_whole_import(storage: Storage, tenancy: TenancyService) -> None:
    await tenancy.create_tenant("bolt", "Bolt")
    bolt = {"settings": {"sip_domain": "acme.example.com"}, "numbers": [{"number": "4001", "target": "echo"}]}
    assert (await import_tenant(storage, tenancy, "bolt", bolt)).ok

    result = await import_tenant(storage, tenancy, "acme", document())
    assert {str(problem) for problem in result.problems} == {
        "numbers[4001]: this number belongs to another tenant",
        "settings.sip_domain: acme.example.com is another tenant's SIP domain",
    }
    assert (await export_tenant(storage, "acme"))["extensions"] == []
    assert [route.number for route in await tenancy.numbers_of("acme")] == []
    assert await revision_of(storage, "acme") == 0

    missing = await import_tenant(storage, tenancy, "ghost", {})
    assert [str(problem) for problem in missing.problems] == ["tenant 'ghost' does not exist"]


async def test_import_replaces_and_flows_keep_their_history(
    storage: Storage, tenancy: TenancyService
) -> None:
    assert (await import_tenant(storage, tenancy, "acme", document())).ok
    smaller = document()
    smaller["numbers"] = [entry for entry in smaller["numbers"] if entry["number"] != 4001]
    smaller["extensions"] = smaller["extensions"][:1]
    smaller["flows"][0]["nodes"][5]["prompts"][0]["text"] = "下班了"
    result = await import_tenant(storage, tenancy, "acme", smaller)
    assert result.ok, result.problems
    assert result.flows_published == {"main": 2} and result.revision == 2

    config = await load_tenant_config(storage, "acme")
    assert [extension.number for extension in config.extensions] == ["1001"]
    assert [route.number for route in await tenancy.numbers_of("acme")] == ["+864001234567"]
    assert config.flows[0].version == 2

    # Dropping a flow retires it; its history stays, and re-adding it continues the numbering.
    without_flow = copy.deepcopy(smaller)
    without_flow["flows"] = []
    without_flow["numbers"] = [entry for entry in without_flow["numbers"] if "flow:" not in entry["target"]]
    assert (await import_tenant(storage, tenancy, "acme", without_flow)).flows_retired == ["main"]
    async with storage.tenant_session("acme") as session:
        assert [(v, s) for v, s, _at in await config_store.flow_history(session, "main")] == [
            (1, "retired"),
            (2, "retired"),
        ]
    assert (await import_tenant(storage, tenancy, "acme", smaller)).flows_published == {"main": 3}


async def test_flow_drafts_do_not_touch_live_calls_until_published(
    storage: Storage, tenancy: TenancyService
) -> None:
    assert (await import_tenant(storage, tenancy, "acme", document())).ok
    draft = copy.deepcopy(document()["flows"][0])
    draft["nodes"][5]["prompts"][0]["text"] = "节日快乐"
    version, problems = await save_flow_draft(storage, "acme", draft)
    assert problems == [] and version == 2
    live = (await load_tenant_config(storage, "acme")).flows[0]
    assert live.version == 1  # new calls still get version 1

    broken = copy.deepcopy(draft)
    broken["nodes"][2]["queue"] = "nowhere"
    version, problems = await save_flow_draft(storage, "acme", broken)
    assert version is None
    assert [str(problem) for problem in problems] == ["flows[main].nodes[sales].queue: no queue 'nowhere'"]

    assert await publish_flow(storage, "acme", "main", 2) == []
    live = (await load_tenant_config(storage, "acme")).flows[0]
    assert live.version == 2
    assert await publish_flow(storage, "acme", "main", 1) == []  # roll back
    assert (await load_tenant_config(storage, "acme")).flows[0].version == 1
    assert [str(p) for p in await publish_flow(storage, "acme", "main", 9)] == [
        "flows[main]: flow 'main' has no version 9"
    ]


def test_yaml_reads_what_people_write() -> None:
    parsed = parse_document(
        "calendars:\n  - {id: office, weekly: {1: [{start: 09:00, end: 18:00}]}}\n"
        "numbers:\n  - {number: 075512345678, target: echo}\n"
        "trunks: []\nextensions: []\n"
    )
    # 18:00 is not the sexagesimal number 1080, 0755... is not octal, menu/weekday keys are text.
    assert parsed["calendars"][0]["weekly"] == {"1": [{"start": "09:00", "end": "18:00"}]}
    assert parsed["numbers"][0]["number"] == "075512345678"
    config, problems = validate_config(parsed)
    assert problems == [] and config is not None
    assert str(config.calendars[0].weekly[1][0].end) == "18:00:00"
    assert config.numbers[0].number == "+8675512345678"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("numbers: [\n  {number: 1\n", "line 3"),
        ("numbers: []\nnumbers: []\n", "duplicate key 'numbers'"),
        ("- just\n- a list\n", "must be a mapping"),
        ("", "an empty document"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_broken_text_gives_a_clear_error(text: str | bytes, message: str) -> None:
    with pytest.raises(ConfigSyntaxError, match=message):
        parse_document(text)


def test_json_errors_say_where() -> None:
    with pytest.raises(ConfigSyntaxError, match="line 2, column"):
        parse_document('{"numbers": [],\n "trunks": ]}', format="json")


TRICKY_TEXT = [
    "18:00",
    "09:00:00",
    "yes",
    "no",
    "on",
    "0755",
    "1e3",
    "1.5e3",
    "~",
    "null",
    "",
    " x ",
    "#1",
    "- a",
]
names = st.one_of(
    st.sampled_from(TRICKY_TEXT), st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
)


@given(names=st.lists(names, min_size=1, max_size=5), fmt=st.sampled_from(["yaml", "json"]))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_exported_text_reads_back_as_written(names: list[str], fmt: Literal["yaml", "json"]) -> None:
    config, problems = validate_config(
        {
            "extensions": [
                {"number": str(1001 + index), "password": "abc12345x", "name": name.strip()[:100]}
                for index, name in enumerate(names)
            ],
            "skills": [{"id": f"s{index}", "name": name[:200]} for index, name in enumerate(names)],
            "reason_codes": [
                {"code": f"r{index}", "name": name.strip()[:100] or "x", "name_en": name[:100]}
                for index, name in enumerate(names)
            ],
        }
    )
    assert config is not None, problems
    exported = config.to_document()
    text = dump_document(exported, format=fmt)
    assert parse_document(text, format=fmt) == exported
    again, problems = validate_config(parse_document(text, format=fmt))
    assert again is not None and again == config
