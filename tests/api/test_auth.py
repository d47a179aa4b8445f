"""Sign-in, sessions, lockout, password policy, API keys (TEN-01/05/09/10, AGT-02, docs/cti.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from hotline.tenancy.users import login_throttle_table, users_table
from tests.api.world import PASSWORD, World, add_user, sign_in, signed_in


async def test_sign_in_sets_an_http_only_cookie_and_describes_the_user(world: World) -> None:
    async with world.client() as client:
        response = await sign_in(client, "acme", "admin")
        assert response.status_code == 200
        body = response.json()
        assert body["user"]["username"] == "admin"
        assert body["user"]["roles"] == ["tenant_admin"]
        assert body["user"]["agent_id"] is None
        assert body["tenant"] == {"id": "acme", "name": "Acme 有限公司"}
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("hotline_session=acme.")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        again = await client.get("/api/v1/session")
        assert again.status_code == 200 and again.json() == body


async def test_agents_sign_in_with_their_agent_id_and_configured_password(world: World) -> None:
    async with world.client() as client:
        response = await sign_in(client, "acme", "8001")
        assert response.status_code == 200, response.text
        user = response.json()["user"]
        assert user["agent_id"] == "8001" and user["roles"] == ["agent"] and user["display_name"] == "Ann"
        assert user["data_scope"] == "self" and "numbers.full" not in user["permissions"]


async def test_wrong_credentials_get_401_in_the_one_error_format(world: World) -> None:
    async with world.client() as client:
        for tenant, username, password in [
            ("acme", "admin", "Wrong1234"),
            ("acme", "nobody", PASSWORD),
            ("nowhere", "admin", PASSWORD),
            ("Bad Tenant!", "admin", PASSWORD),
            ("acme", "spaces are not names", PASSWORD),
        ]:
            response = await sign_in(client, tenant, username, password)
            assert response.status_code == 401, (tenant, username)
            assert response.json()["error"]["code"] == "bad_credentials"
            assert response.json()["error"]["message"]
        assert (await client.get("/api/v1/session")).status_code == 401
        assert (await client.get("/api/v1/session")).json()["error"]["code"] == "not_signed_in"


async def test_five_failures_lock_the_user_for_fifteen_minutes_even_with_the_right_password(
    world: World,
) -> None:
    async with world.client() as client:
        codes = [(await sign_in(client, "acme", "super", f"Wrong{n}xyz")).status_code for n in range(5)]
        assert codes == [401, 401, 401, 401, 423]
        locked = await sign_in(client, "acme", "super", PASSWORD)
        assert locked.status_code == 423
        assert locked.json()["error"]["code"] == "locked"
        retry = int(locked.headers["retry-after"])
        assert 14 * 60 <= retry <= 15 * 60
        # Other users and the same name in another tenant are not affected.
        assert (await sign_in(client, "acme", "admin")).status_code == 200
        assert (await sign_in(client, "beta", "admin")).status_code == 200
        # When the lock has run out the right password works again, and the count starts afresh.
        async with world.storage.tenant_session("acme") as session:
            await session.execute(
                update(login_throttle_table).values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert (await sign_in(client, "acme", "super", PASSWORD)).status_code == 200
        assert (await sign_in(client, "acme", "super", "Wrong9xyz")).status_code == 401
    async with world.client() as admin:
        await sign_in(admin, "acme", "admin")
        actions = [entry["action"] for entry in (await admin.get("/api/v1/audit?limit=50")).json()["items"]]
        assert actions.count("login.failed") == 5 and "login.locked" in actions


async def test_sign_out_ends_the_session_on_the_server(world: World) -> None:
    client = await signed_in(world, "acme", "super")
    cookie = client.cookies.get("hotline_session")
    response = await client.delete("/api/v1/session")
    assert response.status_code == 204
    assert (await client.get("/api/v1/session")).status_code == 401
    # The old cookie is dead even if a copy of it is replayed.
    async with world.client() as thief:
        thief.cookies.set("hotline_session", cookie or "")
        assert (await thief.get("/api/v1/session")).status_code == 401


async def test_a_session_cookie_only_works_in_its_own_tenant(world: World) -> None:
    client = await signed_in(world, "acme", "admin")
    value = client.cookies.get("hotline_session") or ""
    token = value.split(".", 1)[1]
    async with world.client() as forged:
        forged.cookies.set("hotline_session", f"beta.{token}")
        assert (await forged.get("/api/v1/session")).status_code == 401
        forged.cookies.set("hotline_session", "garbage")
        assert (await forged.get("/api/v1/queues")).status_code == 401


async def test_disabled_users_cannot_sign_in_and_lose_their_sessions(world: World) -> None:
    client = await signed_in(world, "acme", "quinn")
    async with world.storage.tenant_session("acme") as session:
        await session.execute(
            update(users_table).where(users_table.c.username == "quinn").values(enabled=False)
        )
    assert (await client.get("/api/v1/session")).status_code == 401
    async with world.client() as other:
        assert (await sign_in(other, "acme", "quinn")).status_code == 401


async def test_expired_passwords_are_flagged_and_can_be_changed_under_the_policy(world: World) -> None:
    async with world.storage.tenant_session("acme") as session:
        await session.execute(
            update(users_table)
            .where(users_table.c.username == "super")
            .values(password_changed_at=datetime.now(UTC) - timedelta(days=91))
        )
    client = await signed_in(world, "acme", "super")
    assert (await client.get("/api/v1/session")).json()["user"]["must_change_password"] is True
    weak = await client.put(
        "/api/v1/session/password", json={"current_password": PASSWORD, "new_password": "abcdefgh"}
    )
    assert weak.status_code == 422
    assert "digit" in weak.json()["error"]["fields"]["new_password"]
    wrong = await client.put(
        "/api/v1/session/password", json={"current_password": "Nope12345", "new_password": "Better2024x"}
    )
    assert wrong.status_code == 422 and "current_password" in wrong.json()["error"]["fields"]
    done = await client.put(
        "/api/v1/session/password", json={"current_password": PASSWORD, "new_password": "Better2024x"}
    )
    assert done.status_code == 204
    assert (await client.get("/api/v1/session")).json()["user"]["must_change_password"] is False
    async with world.client() as other:
        assert (await sign_in(other, "acme", "super", PASSWORD)).status_code == 401
        assert (await sign_in(other, "acme", "super", "Better2024x")).status_code == 200


async def test_an_agent_changes_the_password_kept_in_the_configuration(world: World) -> None:
    client = await signed_in(world, "acme", "8003")
    done = await client.put(
        "/api/v1/session/password", json={"current_password": PASSWORD, "new_password": "Agent8003new"}
    )
    assert done.status_code == 204, done.text
    async with world.client() as other:
        assert (await sign_in(other, "acme", "8003", "Agent8003new")).status_code == 200
        assert (await sign_in(other, "acme", "8003", PASSWORD)).status_code == 401


async def test_the_tenant_sets_its_password_policy(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    policy = (await admin.get("/api/v1/password-policy")).json()
    assert policy["min_length"] == 7 and policy["lockout_threshold"] == 5 and policy["lockout_minutes"] == 15
    bad = await admin.put("/api/v1/password-policy", json={**policy, "min_length": 2})
    assert bad.status_code == 422 and "min_length" in bad.json()["error"]["fields"]
    stricter = await admin.put(
        "/api/v1/password-policy", json={**policy, "min_length": 12, "require_symbols": True}
    )
    assert stricter.status_code == 200
    created = await admin.post(
        "/api/v1/users", json={"username": "neo", "password": "Short1x", "roles": ["agent"]}
    )
    assert created.status_code == 422
    assert "12 characters" in created.json()["error"]["fields"]["password"]
    assert "symbol" in created.json()["error"]["fields"]["password"]
    supervisor = await signed_in(world, "acme", "super")
    assert (await supervisor.get("/api/v1/password-policy")).status_code == 403


async def test_api_keys_authenticate_integrations_and_can_be_revoked(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    created = await admin.post("/api/v1/api-keys", json={"name": "crm", "roles": ["supervisor"]})
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("hk.acme.")
    listed = (await admin.get("/api/v1/api-keys")).json()
    assert listed["total"] == 1 and "key" not in listed["items"][0] and "key_hash" not in listed["items"][0]
    async with world.client(authorization=f"Bearer {key}") as integration:
        assert (await integration.get("/api/v1/queues")).status_code == 200
        assert (await integration.post("/api/v1/skills", json={"id": "vip"})).status_code == 403
        session = (await integration.get("/api/v1/session")).json()
        assert session["user"]["username"] == "apikey:crm" and session["tenant"]["id"] == "acme"
        assert (await admin.delete(f"/api/v1/api-keys/{created.json()['id']}")).status_code == 204
        assert (await integration.get("/api/v1/queues")).status_code == 401
    # A key naming another tenant is just a wrong key.
    async with world.client(authorization="Bearer " + key.replace("hk.acme.", "hk.beta.")) as forged:
        assert (await forged.get("/api/v1/queues")).status_code == 401


async def test_a_key_gets_no_permission_its_creator_lacks(world: World) -> None:
    await add_user(world.storage, "acme", "keymaker", ["supervisor"], permissions=[])
    async with world.storage.tenant_session("acme") as session:
        await session.execute(
            update(users_table).where(users_table.c.username == "keymaker").values(roles=["supervisor"])
        )
    admin = await signed_in(world, "acme", "admin")
    assert (
        await admin.post("/api/v1/api-keys", json={"name": "x", "roles": ["platform_admin"]})
    ).status_code == 201
    supervisor = await signed_in(world, "acme", "keymaker")
    assert (
        await supervisor.post("/api/v1/api-keys", json={"name": "x", "roles": ["agent"]})
    ).status_code == 403


async def test_changes_from_another_site_with_the_cookie_are_refused(world: World) -> None:
    admin = await signed_in(world, "acme", "admin")
    evil = await admin.post("/api/v1/skills", json={"id": "vip"}, headers={"origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin"
    own = await admin.post("/api/v1/skills", json={"id": "vip"}, headers={"origin": "http://testserver"})
    assert own.status_code == 201
    # Reading is harmless (the browser keeps the answer from the other site).
    assert (await admin.get("/api/v1/skills", headers={"origin": "https://evil.example"})).status_code == 200


async def test_a_suspended_tenant_cannot_sign_in(world: World) -> None:
    await world.tenancy.set_status("beta", "suspended")
    async with world.client() as client:
        response = await sign_in(client, "beta", "admin")
        assert response.status_code == 403 and response.json()["error"]["code"] == "tenant_inactive"
