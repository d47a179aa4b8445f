"""Users and roles through the API (TEN-04/05/06/07/10)."""

from __future__ import annotations

from tests.api.world import PASSWORD, World, sign_in, signed_in

NEW_USER = {
    "username": "wang.li",
    "password": "Wang2024li",
    "display_name": "王丽",
    "roles": ["team_leader"],
    "department": "north",
    "permissions": ["numbers.full"],
}


async def test_an_admin_manages_users_and_every_change_is_audited(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    created = await admin.post("/api/v1/users", json=NEW_USER)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["username"] == "wang.li" and user["roles"] == ["team_leader"] and "password_hash" not in user
    assert (await admin.post("/api/v1/users", json=NEW_USER)).status_code == 409

    async with world.client() as client:
        session = (await sign_in(client, "acme", "wang.li", "Wang2024li")).json()["user"]
        assert session["data_scope"] == "department" and "numbers.full" in session["permissions"]
        assert "users.manage" not in session["permissions"]

    listed = (await admin.get("/api/v1/users", params={"limit": 2})).json()
    assert listed["total"] == 6 and len(listed["items"]) == 2
    changed = await admin.put(
        "/api/v1/users/wang.li",
        json={**NEW_USER, "password": None, "roles": ["supervisor"], "data_scope": "all"},
    )
    assert changed.status_code == 200 and changed.json()["roles"] == ["supervisor"]
    async with world.client() as client:
        # The password stayed; the roles changed.
        session = (await sign_in(client, "acme", "wang.li", "Wang2024li")).json()["user"]
        assert session["roles"] == ["supervisor"] and session["data_scope"] == "all"
    assert (await admin.delete("/api/v1/users/wang.li")).status_code == 204
    assert (await admin.get("/api/v1/users/wang.li")).status_code == 404
    async with world.client() as client:
        assert (await sign_in(client, "acme", "wang.li", "Wang2024li")).status_code == 401
    actions = [entry["action"] for entry in (await admin.get("/api/v1/audit")).json()["items"]]
    assert [action for action in actions if action.startswith("user.")] == [
        "user.delete",
        "user.update",
        "user.create",
    ]


async def test_user_bodies_are_validated_field_by_field(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    cases = [
        ({**NEW_USER, "roles": ["wizard"]}, "roles.0"),
        ({**NEW_USER, "roles": []}, "roles"),
        ({**NEW_USER, "username": "no spaces"}, "username"),
        ({**NEW_USER, "password": "abcdefgh"}, "password"),
        ({**NEW_USER, "agent_id": "7777"}, "agent_id"),
        ({**NEW_USER, "data_scope": "galaxy"}, "data_scope"),
        ({**NEW_USER, "permissions": ["everything"]}, "permissions.0"),
    ]
    for body, field in cases:
        response = await admin.post("/api/v1/users", json=body)
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["error"]["fields"], (field, response.json())
    # An agent id already linked to another user.
    taken = await admin.post("/api/v1/users", json={**NEW_USER, "agent_id": "8002"})
    assert taken.status_code == 409 and "agent_id" in taken.json()["error"]["fields"]


async def test_only_a_platform_admin_grants_platform_admin(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    response = await admin.post("/api/v1/users", json={**NEW_USER, "roles": ["platform_admin"]})
    assert response.status_code == 403


async def test_admins_keep_themselves_and_the_tenant_keeps_an_admin(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    assert (await admin.delete("/api/v1/users/admin")).status_code == 409
    demote = await admin.put("/api/v1/users/admin", json={"roles": ["supervisor"]})
    assert demote.status_code == 409 and demote.json()["error"]["code"] == "self"
    root2 = {**NEW_USER, "username": "root2", "roles": ["tenant_admin"], "password": PASSWORD}
    assert (await admin.post("/api/v1/users", json=root2)).status_code == 201
    second = await signed_in(world, "acme", "root2")
    assert (await second.delete("/api/v1/users/admin")).status_code == 204
    last = await second.delete("/api/v1/users/root2")
    assert last.status_code == 409


async def test_users_are_read_by_supervisors_and_managed_by_admins_only(world: World) -> None:
    supervisor = await signed_in(world, "acme", "super")
    assert (await supervisor.get("/api/v1/users")).status_code == 200
    assert (await supervisor.post("/api/v1/users", json=NEW_USER)).status_code == 403
    assert (await supervisor.get("/api/v1/audit")).status_code == 403
    agent = await signed_in(world, "acme", "8001")
    assert (await agent.get("/api/v1/users")).status_code == 403


async def test_an_agent_user_can_be_linked_to_a_configured_agent(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    body = {**NEW_USER, "username": "bob", "roles": ["agent", "team_leader"], "agent_id": "8003"}
    assert (await admin.post("/api/v1/users", json=body)).status_code == 201
    async with world.client() as client:
        session = (await sign_in(client, "acme", "bob", "Wang2024li")).json()["user"]
        assert session["agent_id"] == "8003" and set(session["roles"]) == {"agent", "team_leader"}
    # The agent's own login (its agent id) still works too.
    async with world.client() as client:
        assert (await sign_in(client, "acme", "8003", PASSWORD)).status_code == 200
