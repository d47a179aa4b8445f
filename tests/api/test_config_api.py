"""Configuration resources: every kind listed, read, created, replaced and removed through the API, with
roles, validation (422 naming the field), pagination, references (409 in use), flows with drafts and
publishing, the whole document and the audit trail (TEN-02/10/11/12, API-01, IVR-15, FM-14)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.world import PASSWORD, World, sign_in, signed_in

# kind -> (key, a new valid object, a change to it, (field, bad value))
KINDS: dict[str, tuple[str, dict[str, Any], dict[str, Any], tuple[str, Any]]] = {
    "extensions": (
        "1009",
        {"number": "1009", "password": "Desk9pass99", "name": "Lobby"},
        {"name": "Front desk"},
        ("password", "short1"),
    ),
    "trunks": (
        "carrier",
        {"name": "carrier", "kind": "ip", "host": "192.0.2.10"},
        {"channel_limit": 30},
        ("port", 70000),
    ),
    "numbers": (
        "9100",
        {"number": "9100", "target": "echo", "public": False},
        {"target": "readback"},
        ("target", "nowhere:x"),
    ),
    "queues": (
        "vip",
        {"name": "vip", "display_name": "VIP"},
        {"wrap_up_seconds": 30},
        ("wrap_up_seconds", -1),
    ),
    "skills": ("vip", {"id": "vip", "name": "VIP"}, {"name": "Very important"}, ("id", "9bad id")),
    "agents": (
        "8009",
        {"id": "8009", "name": "Nina", "password": "Nina2024pw", "queues": ["sales"]},
        {"name": "Nina Wu"},
        ("skills", {"sales": 12}),
    ),
    "reason-codes": ("lunch", {"code": "lunch", "name": "午餐"}, {"name": "就餐"}, ("kind", "holiday")),
    "calendars": (
        "weekend",
        {"id": "weekend", "name": "Weekend", "weekly": {"6": [{"start": "10:00", "end": "16:00"}]}},
        {"name": "Saturdays"},
        ("timezone", "Mars/Olympus"),
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_kind_can_be_listed_created_read_replaced_and_removed(world: World, kind: str) -> None:
    key, new, change, (field, bad) = KINDS[kind]
    admin = await signed_in(world, "acme", "admin")
    before = (await admin.get(f"/api/v1/{kind}")).json()
    created = await admin.post(f"/api/v1/{kind}", json=new)
    assert created.status_code == 201, created.text
    listed = (await admin.get(f"/api/v1/{kind}")).json()
    assert listed["total"] == before["total"] + 1
    assert key in [str(item[next(iter(new))]) for item in listed["items"]]
    fetched = await admin.get(f"/api/v1/{kind}/{key}")
    assert fetched.status_code == 200
    shown = fetched.json()
    # Scalars come back as written (the agent's password never does); structures in their full form.
    assert all(
        shown[name] == value for name, value in new.items() if isinstance(value, str) and name != "password"
    )

    again = await admin.post(f"/api/v1/{kind}", json=new)
    assert again.status_code == 409 and again.json()["error"]["code"] == "exists"

    invalid = await admin.put(f"/api/v1/{kind}/{key}", json={**new, field: bad})
    assert invalid.status_code == 422, invalid.text
    error = invalid.json()["error"]
    assert error["code"] == "invalid"
    assert any(path == field or path.startswith(f"{field}.") for path in error["fields"]), error

    replaced = await admin.put(f"/api/v1/{kind}/{key}", json={**new, **change})
    assert replaced.status_code == 200, replaced.text
    stored = (await admin.get(f"/api/v1/{kind}/{key}")).json()
    assert all(stored[name] == value for name, value in change.items())

    removed = await admin.delete(f"/api/v1/{kind}/{key}")
    assert removed.status_code == 204
    assert (await admin.get(f"/api/v1/{kind}/{key}")).status_code == 404
    assert (await admin.get(f"/api/v1/{kind}/{key}")).json()["error"]["code"] == "not_found"
    assert (await admin.delete(f"/api/v1/{kind}/{key}")).status_code == 404

    audit = (await admin.get("/api/v1/audit", params={"limit": 10})).json()["items"]
    actions = [(entry["action"], entry["target"]) for entry in audit]
    for action in ("config.create", "config.update", "config.delete"):
        assert (action, f"{kind}/{key}") in actions


async def test_lists_page_with_offset_and_limit_and_refuse_bad_paging(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    full = (await admin.get("/api/v1/agents")).json()
    assert full["total"] == 3 and [agent["id"] for agent in full["items"]] == ["8001", "8002", "8003"]
    page = (await admin.get("/api/v1/agents", params={"offset": 1, "limit": 1})).json()
    assert page == {"items": [full["items"][1]], "total": 3}
    assert (await admin.get("/api/v1/agents", params={"offset": 5})).json() == {"items": [], "total": 3}
    for params, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"offset": -1}, "offset")):
        response = await admin.get("/api/v1/agents", params=params)
        assert response.status_code == 422 and field in response.json()["error"]["fields"]


async def test_roles_decide_who_reads_and_who_changes(world: World) -> None:
    for username, can_read in (("super", True), ("lead", True), ("quinn", True), ("8001", False)):
        client = await signed_in(world, "acme", username)
        assert (await client.get("/api/v1/agents")).status_code == (200 if can_read else 403), username
        response = await client.post("/api/v1/skills", json={"id": "x1"})
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    async with world.client() as anonymous:
        assert (await anonymous.get("/api/v1/queues")).status_code == 401


async def test_agents_read_the_reason_codes_and_queues_their_desktop_needs(world: World) -> None:
    agent = await signed_in(world, "acme", "8001")
    codes = (await agent.get("/api/v1/reason-codes", params={"limit": 200})).json()
    assert {code["code"]: code["kind"] for code in codes["items"]} == {
        "break": "not_ready",
        "resolved": "disposition",
    }
    assert (await agent.get("/api/v1/queues/sales")).json()["display_name"] == "销售"
    for path in ("/api/v1/extensions", "/api/v1/trunks", "/api/v1/users", "/api/v1/flows", "/api/v1/skills"):
        assert (await agent.get(path)).status_code == 403, path
    assert (await agent.put("/api/v1/reason-codes/break", json={"name": "x"})).status_code == 403


async def test_secrets_are_hidden_from_readers_and_hashes_from_everyone(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    supervisor = await signed_in(world, "acme", "super")
    assert (await admin.get("/api/v1/extensions/1001")).json()["password"] == "Sip12345pw"
    assert (await supervisor.get("/api/v1/extensions/1001")).json()["password"] == "********"
    for client in (admin, supervisor):
        agent = (await client.get("/api/v1/agents/8001")).json()
        assert "password_hash" not in agent and "password" not in agent


async def test_replacing_an_agent_without_a_password_keeps_it_and_a_new_one_replaces_it(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    agent = (await admin.get("/api/v1/agents/8001")).json()
    assert (await admin.put("/api/v1/agents/8001", json={**agent, "name": "Ann Li"})).status_code == 200
    async with world.client() as client:
        response = await sign_in(client, "acme", "8001")
        assert response.status_code == 200 and response.json()["user"]["display_name"] == "Ann Li"
    weak = await admin.put("/api/v1/agents/8001", json={**agent, "password": "abc"})
    assert weak.status_code == 422 and "password" in weak.json()["error"]["fields"]
    assert (
        await admin.put("/api/v1/agents/8001", json={**agent, "password": "Fresh2024ab"})
    ).status_code == 200
    async with world.client() as client:
        assert (await sign_in(client, "acme", "8001", PASSWORD)).status_code == 401
        assert (await sign_in(client, "acme", "8001", "Fresh2024ab")).status_code == 200


async def test_a_key_that_differs_from_the_url_is_refused(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    response = await admin.put("/api/v1/skills/sales", json={"id": "support", "name": "x"})
    assert response.status_code == 422 and "id" in response.json()["error"]["fields"]
    # Without the key in the body the URL's is used.
    assert (await admin.put("/api/v1/skills/sales", json={"name": "销售"})).json()["id"] == "sales"


async def test_references_are_checked_against_the_whole_configuration(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    dangling = await admin.post("/api/v1/queues", json={"name": "gold", "skills": {"skill": "nonexistent"}})
    assert dangling.status_code == 422
    assert "no skill 'nonexistent'" in dangling.json()["error"]["fields"]["skills"]
    unknown_queue = await admin.post("/api/v1/agents", json={"id": "8010", "queues": ["nowhere"]})
    assert unknown_queue.status_code == 422 and "queues" in unknown_queue.json()["error"]["fields"]
    in_use = await admin.delete("/api/v1/skills/support")
    assert in_use.status_code == 409
    error = in_use.json()["error"]
    assert error["code"] == "in_use"
    assert any(path.startswith("queues[support]") for path in error["fields"]), error
    assert (await admin.get("/api/v1/skills/support")).status_code == 200


async def test_bodies_that_are_not_json_objects_get_clear_errors(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    broken = await admin.post(
        "/api/v1/skills", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "bad_json"
    listed = await admin.post("/api/v1/skills", json=["a"])
    assert listed.status_code == 422 and "" in listed.json()["error"]["fields"]
    unknown = await admin.post("/api/v1/skills", json={"id": "ok", "colour": "red"})
    assert unknown.status_code == 422 and "colour" in unknown.json()["error"]["fields"]


async def test_numbers_are_found_by_any_spelling_and_public_ones_reach_the_platform(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    created = await admin.post("/api/v1/numbers", json={"number": "400-820-8820", "target": "flow:main"})
    assert created.status_code == 201, created.text
    canonical = created.json()["number"]
    assert canonical == "+864008208820"
    assert (await admin.get("/api/v1/numbers/4008208820")).json()["number"] == canonical
    route = await world.tenancy.lookup_number("4008208820")
    assert route is not None and route.tenant == "acme" and route.target == "main"
    # Another tenant cannot take it.
    beta = await signed_in(world, "beta", "admin")
    taken = await beta.post("/api/v1/numbers", json={"number": "4008208820", "target": "flow:main"})
    assert taken.status_code == 422 and "belongs to another tenant" in str(taken.json()["error"]["fields"])
